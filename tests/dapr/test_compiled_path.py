"""The compiled server's Invoke path (``_invoke.InvokePath``, which the connection hands each Invoke)
against the general one.

A call on a route the compiled server has seen, with an idle connection, runs on the compiled path
(no coroutine); everything else, and every call on the grpcio server, runs on the general path (a
coroutine through the binding). Each case below is made on both servers, through grpcio to their
sockets and real Kitex servers, with and without a gRPC deadline, and must get the same answer:
reply bytes, metadata, status code and text. The compiled server's stop line counts the calls of
each path, so a path that is never taken fails the test. Then the same through a real daprd and
the Dapr SDK.
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import peers
import stack
from kitex_fast import codec
from kitex_fast.dapr import core
from kitex_fast.dapr.proto import contract as pb
from kitex_fast.testing import KitexTestServer, echo_handler, echo_request, read_echo_reply

from test_e2e import echo_meta, rich_call

STOP_LINE = re.compile(r"served (\d+) Invoke calls on the compiled path and (\d+) on the general path")


@pytest.fixture
def compiled(impl):
    if impl.server != "compiled":
        pytest.skip("the compiled path belongs to the compiled server")
    return impl


def _counts(component: stack.Component):
    found = STOP_LINE.findall(component.log())
    assert found, "no stop line in the component log:\n" + component.log()[-3000:]
    return int(found[-1][0]), int(found[-1][1])


def _invoke(stub, data: bytes, metadata: dict, timeout=None, instance: str = "inst"):
    """(data, metadata, content_type) or (grpc code, details)."""
    try:
        r = stub.Invoke(pb.InvokeRequest(operation="get", data=data, metadata=metadata),
                        metadata=(("x-component-instance", instance),), timeout=timeout)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return r.data, dict(r.metadata), r.content_type


def _same(general, compiled_result) -> None:
    if len(general) == 2:
        assert compiled_result == general
        return
    g_data, g_meta, g_type = general
    c_data, c_meta, c_type = compiled_result
    g_meta, c_meta = dict(g_meta), dict(c_meta)
    assert c_type == g_type
    # The seq id counts per connection (in the reply message and in seqId); all else is the same.
    g_head, c_head = codec.parse_message(g_data), codec.parse_message(c_data)
    assert (c_head.name, c_head.type, c_data[c_head.body_offset:]) == (g_head.name, g_head.type, g_data[g_head.body_offset:])
    assert set(c_meta) == set(g_meta)
    if "seqId" in g_meta:  # (responseMetadata true)
        assert int(c_meta.pop("seqId")) == c_head.seq_id and int(g_meta.pop("seqId")) == g_head.seq_id
    assert c_meta == g_meta


def _cases(servers):
    default, mux, rich = servers["default"].address, servers["mux"].address, servers["rich"].address
    return [
        ("framed echo", echo_request("framed"), echo_meta(default)),
        ("framed echo, responseMetadata", echo_request("framed"), echo_meta(default, responseMetadata="true")),
        ("ttheader echo (reply headers)", echo_request("tth"), echo_meta(default, transport="ttheader")),
        ("ttheader echo (reply headers), responseMetadata", echo_request("tth"),
         echo_meta(default, transport="ttheader", responseMetadata="true")),
        ("mux connection", echo_request("mux"), echo_meta(mux, transport="ttheader", muxConnection="true")),
        ("buffered", echo_request("buf"), echo_meta(default, transport="buffered")),
        ("unknown method: exception type 20", echo_request("x"), echo_meta(default, methodName="nope")),
        ("handler error: exception type 6", rich_call("fail", message="boom"),
         echo_meta(rich, destService="rich", methodName="fail")),
        ("biz status", rich_call("biz", code=404, message="no such user", extra={"user": "ann"}),
         echo_meta(rich, destService="rich", methodName="biz", transport="ttheader")),
        ("rpc timeout", rich_call("sleep", millis=600),
         echo_meta(rich, destService="rich", methodName="sleep", rpcTimeout="100ms")),
        ("not a CALL message", b"\x80\x01\x00\x02junk", echo_meta(default)),
        ("missing metadata", echo_request("x"), {"hostPorts": default}),
        ("trace context on ttheader", echo_request("tr"), echo_meta(
            default, transport="ttheader", traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")),
        ("trace context on framed", echo_request("tr2"), echo_meta(
            default, traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")),
    ]


def test_every_case_answers_the_same_on_both_paths(compiled, kitex_servers) -> None:
    cases = _cases(kitex_servers)
    with tempfile.TemporaryDirectory(prefix="kf-fast-") as d:
        fast = stack.Component(os.path.join(d, "fast"), implementation=compiled.name, server="compiled").start()
        general = stack.Component(os.path.join(d, "general"), implementation=compiled.name, server="grpcio").start()
        try:
            with grpc.insecure_channel("unix:" + fast.socket) as fch, \
                    grpc.insecure_channel("unix:" + general.socket) as gch:
                fstub, gstub = pb.OutputBindingStub(fch), pb.OutputBindingStub(gch)
                for name, data, meta in cases:
                    for timeout in (None, 60):
                        expected = _invoke(gstub, data, meta, timeout)
                        for _ in range(3):  # the first may open the connection (general path), then idle ones
                            _same(expected, _invoke(fstub, data, meta, timeout)), (name, timeout)
                # A run on one route: all but the first take the compiled path.
                meta = echo_meta(kitex_servers["default"].address)
                for i in range(50):
                    assert read_echo_reply(_invoke(fstub, echo_request("n%d" % i), meta)[0]) == "n%d,hi Kitex" % i
        finally:
            assert general.stop() == 0
            assert fast.stop() == 0
        compiled_calls, general_calls = _counts(fast)
        # Of the 12 cases x 2 deadlines x 3 calls + 50, the ones on the compiled path: those with a
        # route (not the bad metadata, not TTHeader with a trace context) and an idle connection.
        assert compiled_calls >= 50 + 2 * 2 * 9, (compiled_calls, general_calls)
        assert general_calls >= 2 * 2, (compiled_calls, general_calls)


def _received_ms(out) -> int:
    """The RPCTimeout the "echometa" Kitex server says it received (0: none)."""
    assert len(out) == 3, out
    return int(out[1]["header.received-rpc-timeout-ms"])


def test_both_paths_send_the_kitex_server_the_same_rpc_timeout(impl, kitex_servers) -> None:
    # daprd's deadline is a value: when it is shorter than rpcTimeout, it is the call's timeout and
    # the TTHeader RPCTimeout (int key 12) the Kitex server receives, on the general path and on
    # the compiled one alike (issue 25: the compiled path used to send none after the first call).
    with peers.KitexServer("echometa", "echo") as server, tempfile.TemporaryDirectory(prefix="kf-fast-") as d:
        c = stack.Component(os.path.join(d, "sockets"), implementation=impl.name).start()
        try:
            with grpc.insecure_channel("unix:" + c.socket) as ch:
                stub = pb.OutputBindingStub(ch)
                # (the server's answer comes back in a reply header: response metadata on)
                meta = echo_meta(server.address, transport="ttheader", responseMetadata="true")
                # No deadline, the default rpcTimeout: Kitex's rule, none sent.
                for _ in range(3):
                    assert _received_ms(_invoke(stub, echo_request("a"), meta)) == 0
                # A 2 s deadline under the default 30 s: the deadline, in ms, on every call.
                # (grpc-core rounds the grpc-timeout it sends up, to at most 8 digits of a coarser
                # unit: what arrives may be a little over the client's value, never under ~1 s.)
                for _ in range(8):
                    ms = _received_ms(_invoke(stub, echo_request("b"), meta, timeout=2.0))
                    assert 1000 < ms <= 2100, ms
                # An explicit rpcTimeout shorter than the deadline: it, exactly.
                short = dict(meta, rpcTimeout="1500ms")
                for _ in range(3):
                    assert _received_ms(_invoke(stub, echo_request("c"), short, timeout=20.0)) == 1500
                # An explicit rpcTimeout longer than the deadline: the deadline.
                long = dict(meta, rpcTimeout="1h")
                for _ in range(3):
                    ms = _received_ms(_invoke(stub, echo_request("d"), long, timeout=3.0))
                    assert 2000 < ms <= 3100, ms
                # No limit (rpcTimeout 0) and a deadline: the deadline.
                none = dict(meta, rpcTimeout="0")
                for _ in range(3):
                    ms = _received_ms(_invoke(stub, echo_request("e"), none, timeout=4.0))
                    assert 3000 < ms <= 4100, ms
        finally:
            assert c.stop() == 0
        if impl.server == "compiled":
            assert _counts(c)[0] >= 10  # most of these ran on the compiled path


def test_a_traced_call_on_ttheader_forwards_its_own_trace_context(impl, kitex_servers) -> None:
    # daprd with tracing on sends a fresh traceparent on every call. On TTHeader it goes to the
    # Kitex server as transient metainfo (RPC_TRANSIT_traceparent), each call its own, on both
    # servers; on the compiled server as the call's own header block, so the route (and its
    # encoder) stays cached and the call stays compiled (issue 26: it used to leave for the
    # general path). An explicit header.RPC_TRANSIT_traceparent is the caller's and wins.
    calls = 24
    with peers.KitexServer("echometa", "echo") as server, tempfile.TemporaryDirectory(prefix="kf-fast-") as d:
        c = stack.Component(os.path.join(d, "sockets"), implementation=impl.name).start()
        try:
            with grpc.insecure_channel("unix:" + c.socket) as ch:
                stub = pb.OutputBindingStub(ch)
                meta = echo_meta(server.address, transport="ttheader", responseMetadata="true")  # (the server echoes in reply headers)
                for i in range(calls):
                    parent = "00-%032x-%016x-01" % (i + 1, i + 7)
                    out = _invoke(stub, echo_request("t%d" % i), dict(meta, traceparent=parent, tracestate="k=v%d" % i),
                                  timeout=None if i % 2 else 30.0)
                    assert len(out) == 3 and out[1]["header.received-traceparent"] == parent, (i, out)
                # daprd's all-zero traceparent of an untraced call is no context: none arrives.
                out = _invoke(stub, echo_request("u"), dict(meta, traceparent=core.UNTRACED))
                assert len(out) == 3 and "header.received-traceparent" not in out[1], out
                mine = dict(meta, traceparent="00-%032x-%016x-01" % (99, 99))
                mine["header.RPC_TRANSIT_traceparent"] = "explicit"
                for _ in range(3):
                    out = _invoke(stub, echo_request("x"), mine)
                    assert out[1]["header.received-traceparent"] == "explicit", out
        finally:
            assert c.stop() == 0
        if impl.server == "compiled":
            compiled_calls, general_calls = _counts(c)
            # the first call of each route opens its connection on the general path
            assert compiled_calls >= calls - 1 and general_calls <= 3, (compiled_calls, general_calls)


def test_a_deadline_shorter_than_rpc_timeout_bounds_the_kitex_call(compiled, kitex_servers) -> None:
    meta = echo_meta(kitex_servers["rich"].address, destService="rich", methodName="sleep", rpcTimeout="20s")
    with tempfile.TemporaryDirectory(prefix="kf-fast-") as d:
        c = stack.Component(os.path.join(d, "sockets"), implementation=compiled.name, server="compiled").start()
        try:
            with grpc.insecure_channel("unix:" + c.socket) as ch:
                stub = pb.OutputBindingStub(ch)
                assert len(_invoke(stub, rich_call("sleep", millis=1), meta)) == 3  # opens the connection
                out = _invoke(stub, rich_call("sleep", millis=3000), meta, timeout=1.0)
                assert out[0] == grpc.StatusCode.DEADLINE_EXCEEDED, out
                # Whichever came first, the Kitex call's timeout capped at the deadline (≤ 1 s)
                # or the client's reset: the call ended then, not after 3 s or 20 s.
                deadline = time.monotonic() + 10
                while not ("abandoned" in c.log() or "RPCTimeoutError" in c.log()) and time.monotonic() < deadline:
                    time.sleep(0.05)
                budgets = [int(ms) for ms in re.findall(r"RPCTimeoutError: no reply from \S+ within (\d+) ms", c.log())]
                assert budgets and max(budgets) <= 1000 or "abandoned by daprd" in c.log(), c.log()[-2000:]
        finally:
            assert c.stop() == 0
        assert _counts(c)[0] >= 1


def test_a_reset_stream_abandons_its_call_and_the_connection_recovers(compiled, kitex_servers) -> None:
    meta = echo_meta(kitex_servers["rich"].address, destService="rich", methodName="sleep")
    with tempfile.TemporaryDirectory(prefix="kf-fast-") as d:
        c = stack.Component(os.path.join(d, "sockets"), implementation=compiled.name, server="compiled").start()
        try:
            with grpc.insecure_channel("unix:" + c.socket) as ch:
                stub = pb.OutputBindingStub(ch)
                assert _invoke(stub, rich_call("sleep", millis=1), meta)[0]  # opens the connection
                fut = stub.Invoke.future(pb.InvokeRequest(operation="get", data=rich_call("sleep", millis=800),
                                                          metadata=meta),
                                         metadata=(("x-component-instance", "inst"),))
                time.sleep(0.2)
                assert fut.cancel()  # RST_STREAM CANCEL
                deadline = time.monotonic() + 10
                while "abandoned" not in c.log() and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert "abandoned by daprd" in c.log()
                for i in range(5):  # later calls get their own replies, on new or idle connections
                    out = _invoke(stub, rich_call("sleep", millis=i), meta)
                    assert len(out) == 3, out
        finally:
            assert c.stop() == 0
        assert _counts(c)[0] >= 2


def test_drain_waits_for_calls_on_the_compiled_path(compiled) -> None:
    release, entered = threading.Event(), threading.Event()

    def slow(request):
        if b"hold" in bytes(request.body):
            entered.set()
            release.wait(30)
        return echo_handler(request)

    with tempfile.TemporaryDirectory(prefix="kf-fast-") as d:
        c = stack.Component(os.path.join(d, "sockets"), implementation=compiled.name, server="compiled").start()
        try:
            with KitexTestServer({"echo": slow}, service="echo", implementation=compiled.name) as server, \
                    grpc.insecure_channel("unix:" + c.socket) as ch:
                stub = pb.OutputBindingStub(ch)
                meta = echo_meta(server.address)
                assert read_echo_reply(_invoke(stub, echo_request("warm"), meta)[0]) == "warm,hi Kitex"
                with ThreadPoolExecutor(1) as pool:
                    held = pool.submit(_invoke, stub, echo_request("hold"), meta)
                    assert entered.wait(30), "the call never reached the server"
                    c.proc.send_signal(signal.SIGTERM)
                    time.sleep(0.5)
                    assert not held.done() and c.proc.poll() is None
                    release.set()
                    assert read_echo_reply(held.result(30)[0]) == "hold,hi Kitex"
                assert c.proc.wait(20) == 0
        finally:
            release.set()
            c.stop()
        assert _counts(c)[0] >= 1


def test_daprd_calls_take_the_compiled_path(compiled, daprd_binary, kitex_servers) -> None:
    address = kitex_servers["default"].address
    with stack.DaprStack(daprd_binary, {"kitex": {}}, implementation=compiled.name, server="compiled") as s:
        def caller(n: int) -> int:
            ok = 0
            with s.daprd.client() as client:
                for i in range(20):
                    message = "caller %d call %d" % (n, i)
                    response = client.invoke_binding(
                        "kitex", "get", data=echo_request(message),
                        binding_metadata=echo_meta(address, transport="ttheader" if n % 2 else "framed"))
                    ok += read_echo_reply(response.data) == message + ",hi Kitex"
            return ok

        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(caller, range(8))) == 160
        s.daprd.stop()
        assert s.component.stop() == 0
        compiled_calls, general_calls = _counts(s.component)
    # daprd sets no deadline without a resiliency policy: every call with an idle connection
    # (all but the few that opened one) is on the compiled path.
    assert compiled_calls + general_calls == 160
    assert compiled_calls >= 100, (compiled_calls, general_calls)


def test_the_compiled_paths_deadline_rule_is_the_general_paths() -> None:
    # The compiled path takes daprd's deadline as (timeout, int headers) from binding.deadline_timeout,
    # which builds no Headers per call; it must give what the general path's rule
    # (BindingCore.deadline_call) sends: the same timeout, and on TTHeader the same RPCTimeout.
    from kitex_fast.binding import KitexOutputBinding, deadline_timeout
    from kitex_fast.metadata import parse_options

    binding = KitexOutputBinding()
    checked = 0
    for transport in ("ttheader", "framed", "ttheader-framed", "buffered"):
        for rpc_timeout in ("", "30s", "0", "5s"):
            metadata = {"hostPorts": "127.0.0.1:1", "destService": "e", "methodName": "m", "version": "v1",
                        "transport": transport}
            if rpc_timeout:
                metadata["rpcTimeout"] = rpc_timeout
            options = parse_options(metadata, {})
            for deadline in (2.0, 0.5, 0.0001, 0.0, 1e30):
                if options.rpc_timeout is not None and options.rpc_timeout <= deadline:
                    continue  # (the compiled path asks only when the deadline is the shorter)
                timeout, headers, fresh = binding.deadline_call(options, deadline)
                sent = dict(headers[1]).get(codec.INT_KEY_RPC_TIMEOUT) if fresh and headers is not None else None
                expected = (timeout, None if sent is None else {codec.INT_KEY_RPC_TIMEOUT: sent})
                assert deadline_timeout(options, deadline) == expected, (transport, rpc_timeout, deadline)
                checked += 1
    assert checked > 40
