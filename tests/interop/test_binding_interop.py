"""The binding and Client against real Kitex servers (Go, built from the Go module proxy), on both
implementations: every transport against every server variant, the error mappings, timeouts,
failover, concurrency, and byte-for-byte agreement with Kitex's own Go generic client."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import thriftpy2
from thriftpy2.utils import deserialize, serialize

from kitex_fast import (
    ApplicationError,
    BizStatusError,
    Client,
    ConnectionClosedError,
    InvokeRequest,
    KitexOutputBinding,
    RPCTimeoutError,
    TransportError,
    codec,
)
from kitex_fast.testing import echo_request, read_echo_reply

import peers
from peers import free_port


RICH = thriftpy2.load(str(Path(peers.GO_DIR) / "idl" / "rich.thrift"), module_name="rich_thrift")

# Which framings each server variant answers (docs/protocol.md §1, §1.1, §9.2).
VARIANTS = [
    ("default", "echo", ["framed", "buffered", "ttheader", "ttheader-framed"], {}),
    ("meta", "echo", ["framed", "buffered", "ttheader", "ttheader-framed"], {}),
    ("mux", "echo", ["ttheader", "ttheader-framed"], {}),
    ("generic-v1", "echo", ["framed", "ttheader", "ttheader-framed"], {}),
    ("multi", "echo", ["framed", "buffered", "ttheader", "ttheader-framed"], {}),
    ("multi", "echo", ["ttheader", "ttheader-framed"], {"idlService": "Echo"}),
]


def meta(address: str, **extra: str) -> dict:
    out = {"hostPorts": address, "destService": "echo", "methodName": "echo", "version": "v1"}
    out.update(extra)
    return out


def rich_call(method: str, **args: object) -> bytes:
    body = serialize(getattr(RICH.Rich, method + "_args")(**args))
    return codec.build_message(codec.CALL, method, 0, body)


def rich_result(method: str, reply: bytes):
    header = codec.parse_message(reply)
    return deserialize(getattr(RICH.Rich, method + "_result")(), bytes(reply[header.body_offset:]))


def all_types():
    return RICH.AllTypes(
        flag=True, tiny=-7, small=-300, medium=1 << 30, large=-(1 << 62), ratio=2.5, text="héllo",
        blob=b"\x00\xff\x80", numbers=[1, -2, 3], tags={"a", "b"},
        index={"k": RICH.Inner(id=1, name="one")}, inner=RICH.Inner(id=2, name="two"),
        color=RICH.Color.BLUE, inners=[RICH.Inner(id=3, name="three")], nested={5: ["x", "y"]},
    )


@pytest.fixture
def binding(impl):
    with KitexOutputBinding(implementation=impl.name) as b:
        yield b


@pytest.mark.parametrize(
    "mode, service, transports, extra", VARIANTS, ids=["%s%s" % (v[0], "-isn" if v[3] else "") for v in VARIANTS]
)
def test_dapr_echo_scenario(binding, kitex_server, mode, service, transports, extra) -> None:
    server = kitex_server(mode, service)
    for transport in transports:
        response = binding.invoke(
            InvokeRequest("get", echo_request("hello dapr"), meta(server.address, transport=transport, **extra))
        )
        assert read_echo_reply(response.data) == "hello dapr,hi Kitex", transport
        assert response.metadata["transport"] == transport


def test_generic_v1_server_refuses_buffered(binding, kitex_server) -> None:
    # Kitex: "Binary generic calls only support Framed or TTHeader requests" (docs/protocol.md §1.1).
    server = kitex_server("generic-v1", "echo")
    with pytest.raises((TransportError, ApplicationError)):
        binding.invoke(InvokeRequest("get", echo_request("x"), meta(server.address, transport="buffered", rpcTimeout="3s")))


@pytest.mark.parametrize("transport", ["framed", "buffered", "ttheader", "ttheader-framed"])
def test_every_thrift_type_round_trips(impl, kitex_server, transport) -> None:
    server = kitex_server("default", "rich")
    value = all_types()
    with Client("rich", server.address, transport=transport, implementation=impl.name) as client:
        reply = client.call("roundtrip", rich_call("roundtrip", value=value))
    # thriftpy2 reads a set back as a list: compare with its own local round trip.
    assert rich_result("roundtrip", reply).success == deserialize(RICH.AllTypes(), serialize(value))


@pytest.mark.parametrize("size", [64 * 1024, 3 * 1024 * 1024])
def test_large_payloads(impl, kitex_server, size) -> None:
    server = kitex_server("default", "echo")
    text = "x" * size
    with Client("echo", server.address, implementation=impl.name) as client:
        assert read_echo_reply(client.call("echo", echo_request(text))) == text + ",hi Kitex"


def test_declared_exception_is_data(impl, kitex_server) -> None:
    server = kitex_server("default", "rich")
    with Client("rich", server.address, implementation=impl.name) as client:
        reply = client.call("raise_declared", rich_call("raise_declared", code=7, reason="nope"))
    result = rich_result("raise_declared", reply)
    assert (result.err.code, result.err.reason) == (7, "nope")


@pytest.mark.parametrize("mode, transport", [("default", "framed"), ("meta", "ttheader"), ("meta", "buffered")])
def test_unknown_method_is_type_20(binding, kitex_server, mode, transport) -> None:
    # With the meta handler the TTHeader reply also carries crrst=1 before Kitex closes.
    server = kitex_server(mode, "echo")
    for _ in range(3):
        with pytest.raises(ApplicationError) as err:
            binding.invoke(InvokeRequest("get", echo_request("x"), meta(server.address, methodName="nope", transport=transport)))
        assert err.value.type_code == 20
        assert err.value.message == "unknown service , method nope"
        # Kitex closes that connection; the binding dropped it, so the next call just works.
        response = binding.invoke(InvokeRequest("get", echo_request("x"), meta(server.address, transport=transport)))
        assert read_echo_reply(response.data) == "x,hi Kitex"


def test_generic_v1_handler_error_with_seq_id_0_is_accepted(binding, kitex_server) -> None:
    # Kitex's V1 generic server answers handler errors with seq id 0 in the payload.
    server = kitex_server("generic-v1", "echo")
    with pytest.raises(ApplicationError) as err:
        binding.invoke(InvokeRequest("get", echo_request("x"), meta(server.address, methodName="nope")))
    assert err.value.type_code == 6
    assert err.value.message.startswith("biz error: generic-v1: unknown method")


def test_isn_naming_a_service_without_the_method_is_type_1(binding, kitex_server) -> None:
    server = kitex_server("multi", "echo")
    with pytest.raises(ApplicationError) as err:
        binding.invoke(InvokeRequest("get", echo_request("x"), meta(server.address, transport="ttheader", idlService="Rich")))
    assert err.value.type_code == 1
    assert err.value.message == "unknown method echo (service Rich)"


def test_handler_error_is_type_6_and_keeps_the_connection(impl, kitex_server) -> None:
    server = kitex_server("default", "rich")
    with Client("rich", server.address, implementation=impl.name) as client:
        with pytest.raises(ApplicationError) as err:
            client.call("fail", rich_call("fail", message="boom"))
        assert (err.value.type_code, err.value.message) == (6, "biz error: boom")
        assert client._pool._pools[0].idle_count == 1
        reply = client.call("sleep", rich_call("sleep", millis=1))
        assert rich_result("sleep", reply).success == "slept 1"


def test_handler_panic_is_an_application_error(impl, kitex_server) -> None:
    server = kitex_server("default", "rich")
    with Client("rich", server.address, implementation=impl.name) as client:
        with pytest.raises(ApplicationError) as err:
            client.call("crash", rich_call("crash", message="kaput"))
    assert err.value.type_code == 6
    assert "kaput" in err.value.message


def test_undecodable_args_are_type_7(impl, kitex_server) -> None:
    # A well-formed struct whose map key type contradicts the IDL (map<i32,...> for
    # map<string,string>): valid Thrift, so it passes our checks; Kitex's generated decoder fails.
    server = kitex_server("default", "rich")
    args = bytes.fromhex("0d0003080b00000001") + b"\x7f\xff\xff\xff" + bytes.fromhex("0000000178") + b"\x00"
    with Client("rich", server.address, implementation=impl.name) as client:
        with pytest.raises(ApplicationError) as err:
            client.call("biz", codec.build_message(codec.CALL, "biz", 0, args))
    assert err.value.type_code == 7


def test_biz_status_over_ttheader(binding, kitex_server) -> None:
    server = kitex_server("meta", "rich")
    data = rich_call("biz", code=404, message="no such user", extra={"user": "ann"})
    with pytest.raises(BizStatusError) as err:
        binding.invoke(InvokeRequest("get", data, meta(server.address, destService="rich", methodName="biz", transport="ttheader")))
    assert (err.value.status_code, err.value.message, err.value.extra) == (404, "no such user", {"user": "ann"})


def test_biz_status_over_framed_is_an_empty_result(binding, kitex_server) -> None:
    # Kitex PR #1501: business errors only travel over TTHeader; framed callers see an empty result.
    server = kitex_server("meta", "rich")
    data = rich_call("biz", code=404, message="no such user", extra={})
    response = binding.invoke(InvokeRequest("get", data, meta(server.address, destService="rich", methodName="biz")))
    assert rich_result("biz", response.data).success is None


def test_meta_server_reply_headers_reach_response_metadata(binding, kitex_server) -> None:
    server = kitex_server("meta", "echo")
    response = binding.invoke(InvokeRequest("get", echo_request("x"), meta(server.address, transport="ttheader")))
    assert response.metadata["intHeader.22"] == "2"  # MsgType = reply (ServerTTHeaderHandler)


def test_stalled_server_hits_the_rpc_timeout(impl, kitex_server) -> None:
    server = kitex_server("default", "rich")
    with Client("rich", server.address, rpc_timeout=0.3, implementation=impl.name) as client:
        start = time.monotonic()
        with pytest.raises(RPCTimeoutError) as err:
            client.call("sleep", rich_call("sleep", millis=3000))
        elapsed = time.monotonic() - start
    assert err.value.sent
    assert elapsed < 2.5  # gave up at the deadline, long before the server's 3 s answer


def test_size_limited_server_closes_without_reply(impl, kitex_server) -> None:
    server = kitex_server("sizelimit", "echo", "-max-size", "1024")
    with Client("echo", server.address, implementation=impl.name) as client:
        assert read_echo_reply(client.call("echo", echo_request("small"))) == "small,hi Kitex"
        with pytest.raises(ConnectionClosedError) as err:
            client.call("echo", echo_request("x" * 4096))
        assert err.value.sent


def test_connection_refused_fails_over(binding, kitex_server) -> None:
    server = kitex_server("default", "echo")
    hosts = "127.0.0.1:%d,%s" % (free_port(), server.address)
    for _ in range(4):
        response = binding.invoke(InvokeRequest("get", echo_request("x"), meta(hosts)))
        assert read_echo_reply(response.data) == "x,hi Kitex"


@pytest.mark.parametrize("transport", ["framed", "ttheader"])
def test_threads_share_one_binding(binding, kitex_server, transport) -> None:
    server = kitex_server("default", "echo")
    metadata = meta(server.address, transport=transport)
    errors: list = []

    def worker(n: int) -> None:
        try:
            for i in range(1000):
                text = "%d:%d" % (n, i)
                response = binding.invoke(InvokeRequest("get", echo_request(text), metadata))
                assert read_echo_reply(response.data) == text + ",hi Kitex"
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[:3]


@pytest.mark.parametrize("transport", ["framed", "ttheader"])
def test_threads_share_one_client_on_the_call_path(impl, kitex_server, transport) -> None:
    """8 threads x 1,000 calls on one Client: each gets its own reply, and the full Python path
    runs only when a thread finds no idle connection (the compiled call path takes the rest)."""
    server = kitex_server("default", "echo")
    errors: list = []
    with Client("echo", server.address, transport=transport, implementation=impl.name,
                connect_timeout=5) as client:
        full = [0]
        original = client._exchange

        def counted(*args):
            full[0] += 1
            return original(*args)

        client._exchange = counted  # type: ignore[method-assign]

        def worker(n: int) -> None:
            try:
                for i in range(1000):
                    text = "%d:%d" % (n, i)
                    assert read_echo_reply(client.call("echo", echo_request(text))) == text + ",hi Kitex"
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    assert not errors, errors[:3]
    assert 1 <= full[0] <= 400, full[0]  # connects only: at most 10 idle kept, 8 threads


def _normalised(reply: bytes) -> bytes:
    """The reply with its seq id zeroed: the Go client and we stamp our own ids."""
    header = codec.parse_message(reply)
    out = bytearray(reply)
    out[header.body_offset - 4:header.body_offset] = b"\x00\x00\x00\x00"
    return bytes(out)


@pytest.mark.parametrize("transport", ["framed", "ttheader"])
@pytest.mark.parametrize("case", ["echo", "rich"])
def test_reply_bytes_match_the_go_reference_client(impl, kitex_server, transport, case) -> None:
    if case == "echo":
        server, method, request = kitex_server("default", "echo"), "echo", echo_request("hello dapr")
    else:
        server, method, request = kitex_server("default", "rich"), "roundtrip", rich_call("roundtrip", value=all_types())
    go_reply, go_error = peers.ref_call(server.address, service=case, method=method, request=request, transport=transport)
    assert go_error is None, go_error
    with Client(case, server.address, transport=transport, implementation=impl.name) as client:
        ours = client.call(method, request)
    assert _normalised(ours) == _normalised(go_reply)
