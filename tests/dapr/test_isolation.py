"""One caller's bad input never fails another's, on both component servers (issue 24).

daprd sends every app's binding calls over one HTTP/2 connection to the component, so whatever one
call carries (a bad metadata value, a deadline at the edge of what gRPC can say, a Kitex reply
header that is not UTF-8, a huge map, a huge instance name) must end in that call's own status,
while the calls around it on the same connection get their replies. Each test runs on the compiled
server and on grpcio (the ``impl`` fixture), against real Kitex servers (tests/interop/peers.py).
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import peers
import stack
from kitex_fast import codec
from kitex_fast.dapr.proto import contract as pb
from kitex_fast.testing import echo_request, read_echo_reply

from test_e2e import echo_meta, rich_call, rich_result
from test_h2server import RawClient, _ended, _proc_usage, _status

INSTANCE = (("x-component-instance", "inst"),)


def _invoke(stub, data: bytes, metadata: dict, timeout=30.0, instance: str = "inst"):
    """(data, metadata) or (grpc code, details)."""
    try:
        r = stub.Invoke(pb.InvokeRequest(operation="get", data=data, metadata=metadata),
                        metadata=(("x-component-instance", instance),), timeout=timeout)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return r.data, dict(r.metadata)


@pytest.fixture
def component(impl):
    with tempfile.TemporaryDirectory(prefix="kf-iso-") as d:
        c = stack.Component(os.path.join(d, "sockets"), implementation=impl.name).start()
        try:
            yield c
        finally:
            assert c.stop() == 0


# Values that made the compiled route path raise an untyped error, which dropped the connection
# (issue 24 item 1; grpcio failed only the call). metadata.py's own checks decide whether they are
# INVALID_ARGUMENT (a MetadataError naming the field) or INTERNAL (any other exception): either
# way, only this call fails.
BAD = [
    {"maxConnections": "--5"},
    {"poolSize": "\u00b2"},
    {"rpcTimeout": "9" * 5000},
]


def test_bad_metadata_ends_only_its_own_call(component, kitex_servers) -> None:
    rich = kitex_servers["rich"].address
    slow = echo_meta(rich, destService="rich", methodName="sleep")
    echo = echo_meta(kitex_servers["default"].address)
    with grpc.insecure_channel("unix:" + component.socket) as ch:  # one connection for all
        stub = pb.OutputBindingStub(ch)
        for bad in BAD:
            assert read_echo_reply(_invoke(stub, echo_request("warm"), echo)[0]) == "warm,hi Kitex"
        with ThreadPoolExecutor(8) as pool:
            for round_ in range(2):  # the second time, the compiled server knows these routes
                healthy = [pool.submit(_invoke, stub, rich_call("sleep", millis=400), slow) for _ in range(4)]
                time.sleep(0.1)  # the healthy calls are in flight on the connection
                for bad in BAD:
                    out = _invoke(stub, echo_request("bad"), dict(echo, **bad))
                    assert out[0] in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL), (bad, out)
                    assert len(out[1]) < 2000, out  # the value is quoted, not pasted whole
                for fut in healthy:
                    data = fut.result(30)
                    assert isinstance(data[0], bytes), data
                    assert rich_result("sleep", data[0]).success == "slept 400"
        assert read_echo_reply(_invoke(stub, echo_request("after"), echo)[0]) == "after,hi Kitex"
    log = component.log()
    assert "connection dropped" not in log
    assert "9" * 200 not in log  # no whole value in a log line


def test_bad_metadata_through_daprd_ends_only_its_own_call(dapr, kitex_servers) -> None:
    # The real case: daprd multiplexes every app's calls on its one connection to the component.
    # Healthy calls (each SDK client its own caller) are in flight while another caller's bad
    # metadata arrives; daprd wraps our status in its INTERNAL (docs/dapr.md "Errors").
    rich = kitex_servers["rich"].address
    slow = echo_meta(rich, destService="rich", methodName="sleep")
    echo = echo_meta(kitex_servers["default"].address)

    def healthy(_: int) -> str:
        with dapr.daprd.client() as client:
            r = client.invoke_binding("kitex", "get", data=rich_call("sleep", millis=500), binding_metadata=slow)
            return str(rich_result("sleep", r.data).success)

    def bad(meta: dict) -> str:
        with dapr.daprd.client() as client:
            with pytest.raises(grpc.RpcError) as info:
                client.invoke_binding("kitex", "get", data=echo_request("bad"), binding_metadata=dict(echo, **meta))
            return str(info.value.details())

    with ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(healthy, i) for i in range(4)]
        time.sleep(0.15)
        texts = list(pool.map(bad, BAD))
        assert [c.result(60) for c in calls] == ["slept 500"] * 4
    for text in texts:
        assert "code = InvalidArgument" in text or "code = Internal desc" in text, text
        assert len(text) < 3000
    with dapr.daprd.client() as client:
        r = client.invoke_binding("kitex", "get", data=echo_request("after"), binding_metadata=echo)
        assert read_echo_reply(r.data) == "after,hi Kitex"


def _grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _raw_invoke(client: RawClient, metadata: dict, data: bytes, timeout: str):
    """(grpc-status, InvokeResponse or None) of one Invoke sent with this grpc-timeout."""
    import h2.events

    request = pb.InvokeRequest(operation="get", data=data, metadata=metadata).SerializeToString()
    sid = client.open(RawClient.INVOKE, data=_grpc_frame(request), end=True,
                      extra=[("grpc-timeout", timeout), ("x-component-instance", "inst")])
    client.flush()
    events = client.until(_ended(sid))
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)
    for e in events:
        if isinstance(e, h2.events.DataReceived):
            client.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
    client.flush()
    return _status(events, sid), (pb.InvokeResponse.FromString(body[5:]) if len(body) > 5 else None)


def test_every_grpc_timeout_gRPC_can_express_is_served(component, kitex_servers) -> None:
    # The largest values of each unit (grpc/grpc doc/PROTOCOL-HTTP2.md: TimeoutValue is at most 8
    # digits), with the default rpcTimeout (30 s), with none ("0") and with an explicit one.
    address = kitex_servers["default"].address
    client = RawClient(component.socket)
    try:
        for extra in ({}, {"rpcTimeout": "0"}, {"rpcTimeout": "2s"}, {"transport": "ttheader"},
                      {"transport": "ttheader", "rpcTimeout": "0"}):
            for timeout in ("99999999H", "99999999M", "99999999S", "99999999m", "99999999u", "99999999n"):
                for i in range(2):  # (the compiled server: the general path, then the compiled one)
                    message = "%s %s %d" % (timeout, extra, i)
                    status, reply = _raw_invoke(client, echo_meta(address, **extra), echo_request(message), timeout)
                    assert status == "0" and reply is not None, (timeout, extra, status)
                    assert read_echo_reply(reply.data) == message + ",hi Kitex"
    finally:
        client.close()


def test_a_reply_header_that_is_not_utf8_is_answered_escaped(component) -> None:
    # A real Kitex server whose TTHeader reply carries string header bytes ff fe (and a name with
    # fe): the component answers at once, with the bytes backslash-escaped (docs/dapr.md).
    with peers.KitexServer("notutf8", "echo") as server, \
            grpc.insecure_channel("unix:" + component.socket) as ch:
        stub = pb.OutputBindingStub(ch)
        meta = echo_meta(server.address, transport="ttheader", responseMetadata="true")
        for i in range(3):
            started = time.monotonic()
            out = _invoke(stub, echo_request("u%d" % i), meta, timeout=20)
            assert isinstance(out[0], bytes), out
            assert time.monotonic() - started < 10
            assert read_echo_reply(out[0]) == "u%d,hi Kitex" % i
            assert out[1]["header.not-utf8"] == "\\xff\\xfe"
            assert out[1]["header.bad-\\xfe"] == "name"


def test_huge_metadata_maps_are_not_kept(component, kitex_servers) -> None:
    # Calls whose metadata does not repeat (many distinct ignored keys, large header values, large
    # instance names) leave no cache behind: RSS stays near where it was (generous margins).
    address = kitex_servers["default"].address
    pid = component.proc.pid
    with grpc.insecure_channel("unix:" + component.socket, options=[
            ("grpc.max_send_message_length", 8 << 20), ("grpc.max_receive_message_length", 8 << 20)]) as ch:
        stub = pb.OutputBindingStub(ch)
        meta = echo_meta(address, transport="ttheader")
        for i in range(3):  # warm up: clients, connections, code paths
            _invoke(stub, echo_request("w"), dict(meta, **{"k%d" % j: "v" for j in range(20000)}))
            _invoke(stub, echo_request("w"), dict(meta, **{"header.big": "%d" % i * 60000}))
        before = _proc_usage(pid)[0]
        for i in range(16):
            ignored = {"n%d-%d" % (i, j): "v" for j in range(50000)}  # ~0.7 MB of distinct key names
            assert isinstance(_invoke(stub, echo_request("a"), dict(meta, **ignored))[0], bytes)
            big = dict(meta, **{"header.big": ("%03d" % i) * 20000})  # a 60 KB header value
            assert isinstance(_invoke(stub, echo_request("b"), big)[0], bytes)
            name = ("inst-%d-" % i) + "x" * 30000  # (grpcio's server may refuse so large a header)
            _invoke(stub, echo_request("c"), meta, instance=name)
        grown = _proc_usage(pid)[0] - before
    # Kept, these would be 16 x (50,000 key names as str objects, ~3 MB, + 60 KB values) ≈ 55 MB.
    assert grown < 25 * 1024, "RSS grew by %d KiB" % grown
    log = component.log()
    assert len(log) < 200_000, len(log)  # 16 instances named 30 KB: quoted, not written whole
    assert "x" * 1000 not in log
