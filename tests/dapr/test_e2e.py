"""End to end: Dapr Python SDK -> real daprd v1.18.0 -> `kitex-fast component` -> real Kitex (Go).

One component + daprd stack per implementation for the session (conftest.py); the component runs on
the implementation of the ``impl`` id (``c`` / ``py``), so every case runs on both.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import grpc
import pytest
import thriftpy2
from thriftpy2.utils import deserialize, serialize

import peers
import stack
from kitex_fast import (
    ApplicationError,
    BizStatusError,
    ConnectError,
    MetadataError,
    RPCTimeoutError,
    codec,
)
from kitex_fast.dapr import error_from_text
from kitex_fast.testing import echo_request, read_echo_reply

RICH = thriftpy2.load(str(Path(peers.GO_DIR) / "idl" / "rich.thrift"), module_name="rich_dapr_thrift")

# Which framings each Kitex server variant answers (as tests/interop/test_binding_interop.py).
FRAMINGS = [
    ("default", t) for t in ("framed", "buffered", "ttheader", "ttheader-framed")
] + [
    ("meta", t) for t in ("framed", "buffered", "ttheader", "ttheader-framed")
] + [
    ("mux", t) for t in ("ttheader", "ttheader-framed")
] + [
    ("generic-v1", t) for t in ("framed", "ttheader", "ttheader-framed")
]


def echo_meta(address: str, **extra: str) -> dict:
    out = {"hostPorts": address, "destService": "echo", "methodName": "echo", "version": "v1"}
    out.update(extra)
    return out


def rich_call(method: str, **args: object) -> bytes:
    body = serialize(getattr(RICH.Rich, method + "_args")(**args))
    return codec.build_message(codec.CALL, method, 0, body)


def rich_result(method: str, reply: bytes):
    header = codec.parse_message(reply)
    return deserialize(getattr(RICH.Rich, method + "_result")(), bytes(reply[header.body_offset:]))


def sdk_error(sdk, binding: str, data: bytes, metadata: dict):
    """The SDK caller's view of a failed call: (grpc code, daprd's text, the typed error)."""
    with pytest.raises(grpc.RpcError) as info:
        sdk.invoke_binding(binding, "get", data=data, binding_metadata=metadata)
    err = info.value
    details = err.details()
    return err.code(), details, error_from_text(details)


# -- registration ---------------------------------------------------------------------------------

def test_daprd_registers_and_inits_every_instance(dapr) -> None:
    log = dapr.daprd.log()
    assert ("pluggable component 'kitex' was successfully registered for "
            "'dapr.proto.components.v1.OutputBinding'") in log
    for name in stack_instances(dapr):
        assert "successful init for output binding (%s (bindings.kitex/v1))" % name in log
        assert "instance %r initialised" % name in dapr.component.log()
    assert "kitex_fast component: serving bindings.kitex on %s" % dapr.component.socket in dapr.component.log()


def stack_instances(dapr) -> list:
    return sorted(p.stem for p in Path(dapr.resources).glob("*.yaml"))


# -- the Dapr scenario on every framing -----------------------------------------------------------

@pytest.mark.parametrize("variant, transport", FRAMINGS, ids=["%s-%s" % f for f in FRAMINGS])
def test_echo_scenario_on_every_framing(sdk, impl, kitex_servers, variant, transport) -> None:
    server = kitex_servers[variant]
    response = sdk.invoke_binding(
        "kitex", "get", data=echo_request("hello dapr", implementation=impl.name),
        binding_metadata=echo_meta(server.address, transport=transport, responseMetadata="true"))
    assert read_echo_reply(response.data, implementation=impl.name) == "hello dapr,hi Kitex"
    # Response metadata (asked for: the component's default is none) reaches the SDK as binding_metadata.
    assert response.binding_metadata["transport"] == transport
    assert response.binding_metadata["messageType"] == "reply"


def test_no_response_metadata_by_default(sdk, impl, kitex_servers) -> None:
    # As from Dapr's Go binding: daprd would make every entry a gRPC response header.
    response = sdk.invoke_binding(
        "kitex", "get", data=echo_request("plain", implementation=impl.name),
        binding_metadata=echo_meta(kitex_servers["default"].address))
    assert read_echo_reply(response.data, implementation=impl.name) == "plain,hi Kitex"
    assert dict(response.binding_metadata) == {}


def test_rich_idl_round_trip(sdk, kitex_servers) -> None:
    value = RICH.AllTypes(
        flag=True, tiny=-7, small=-300, medium=1 << 30, large=-(1 << 62), ratio=2.5, text="héllo",
        blob=b"\x00\xff\x80", numbers=[1, -2, 3], tags={"a", "b"},
        index={"k": RICH.Inner(id=1, name="one")}, inner=RICH.Inner(id=2, name="two"),
        color=RICH.Color.BLUE, inners=[RICH.Inner(id=3, name="three")], nested={5: ["x", "y"]},
    )
    response = sdk.invoke_binding(
        "kitex", "get", data=rich_call("roundtrip", value=value),
        binding_metadata=echo_meta(kitex_servers["rich"].address, destService="rich", methodName="roundtrip"))
    # thriftpy2 reads a set back as a list: compare with its own local round trip.
    assert rich_result("roundtrip", response.data).success == deserialize(RICH.AllTypes(), serialize(value))


# -- component defaults from the YAML --------------------------------------------------------------

def test_yaml_defaults_apply_per_instance(sdk, impl) -> None:
    # kitex-mux's YAML has the mux server, destService, methodName and transport ttheader: the
    # request carries none of them, and a mux server answers only TTHeader.
    response = sdk.invoke_binding("kitex-mux", "get", data=echo_request("defaults", implementation=impl.name))
    assert read_echo_reply(response.data, implementation=impl.name) == "defaults,hi Kitex"
    assert response.binding_metadata["transport"] == "ttheader"


def test_two_yamls_one_socket_keep_their_own_defaults(sdk) -> None:
    # Same socket, same request; only the instances' rpcTimeout (200ms vs 5s) and transport differ.
    data = rich_call("sleep", millis=600)
    code, details, err = sdk_error(sdk, "kitex-rich-fast", data, {"methodName": "sleep"})
    assert code == grpc.StatusCode.INTERNAL
    assert "code = DeadlineExceeded" in details
    assert isinstance(err, RPCTimeoutError)
    response = sdk.invoke_binding("kitex-rich-patient", "get", data=data, binding_metadata={"methodName": "sleep"})
    assert rich_result("sleep", response.data).success == "slept 600"
    assert response.binding_metadata["transport"] == "ttheader"
    assert sdk.invoke_binding("kitex-rich-fast", "get", data=rich_call("sleep", millis=1),
                              binding_metadata={"methodName": "sleep"}).binding_metadata["transport"] == "framed"


# -- every error class, as the SDK caller sees it --------------------------------------------------

def test_missing_metadata(sdk, impl) -> None:
    code, details, err = sdk_error(sdk, "kitex", echo_request("x", implementation=impl.name),
                                   {"destService": "echo", "methodName": "echo", "version": "v1"})
    assert code == grpc.StatusCode.INTERNAL
    assert re.search(r"error invoking output binding kitex: rpc error: code = InvalidArgument "
                     r"desc = MetadataError: dapr binding kitex: missing metadata field hostPorts", details)
    assert isinstance(err, MetadataError) and "missing metadata field hostPorts" in str(err)


def test_unsupported_operation_is_refused_by_daprd(sdk) -> None:
    # ListOperations said ["get"]: daprd refuses anything else before calling the component.
    with pytest.raises(grpc.RpcError) as info:
        sdk.invoke_binding("kitex", "create", data=b"x", binding_metadata={})
    assert "does not support operation create" in info.value.details()


def test_connection_refused(sdk, impl) -> None:
    port = stack.free_port()
    code, details, err = sdk_error(sdk, "kitex", echo_request("x", implementation=impl.name),
                                   echo_meta("127.0.0.1:%d" % port))
    assert "code = Unavailable desc = ConnectError: " in details
    assert isinstance(err, ConnectError)
    assert "127.0.0.1:%d" % port in details


def test_rpc_timeout(sdk, kitex_servers) -> None:
    code, details, err = sdk_error(sdk, "kitex", rich_call("sleep", millis=800),
                                   echo_meta(kitex_servers["rich"].address, destService="rich",
                                             methodName="sleep", rpcTimeout="150ms"))
    assert "code = DeadlineExceeded desc = RPCTimeoutError: " in details
    assert isinstance(err, RPCTimeoutError)


def test_unknown_method_is_application_exception_type_20(sdk, impl, kitex_servers) -> None:
    code, details, err = sdk_error(sdk, "kitex", echo_request("x", implementation=impl.name),
                                   echo_meta(kitex_servers["default"].address, methodName="nope"))
    assert "code = Unimplemented desc = ApplicationError type=20: " in details
    assert isinstance(err, ApplicationError)
    assert (err.type_code, err.message) == (20, "unknown service , method nope")


def test_handler_error_is_application_exception_type_6(sdk, kitex_servers) -> None:
    code, details, err = sdk_error(sdk, "kitex", rich_call("fail", message="boom"),
                                   echo_meta(kitex_servers["rich"].address, destService="rich", methodName="fail"))
    assert "code = Unknown desc = ApplicationError type=6: " in details
    assert isinstance(err, ApplicationError) and err.type_code == 6 and err.message == "biz error: boom"


def test_biz_status(sdk, kitex_servers) -> None:
    code, details, err = sdk_error(
        sdk, "kitex", rich_call("biz", code=404, message="no such user", extra={"user": "ann"}),
        echo_meta(kitex_servers["rich"].address, destService="rich", methodName="biz", transport="ttheader"))
    assert "code = FailedPrecondition desc = BizStatusError status=404: " in details
    assert isinstance(err, BizStatusError)
    assert (err.status_code, err.message, err.extra) == (404, "no such user", {"user": "ann"})


def test_failures_are_logged_with_the_destination(dapr, sdk, impl) -> None:
    port = stack.free_port()
    sdk_error(sdk, "kitex", echo_request("x", implementation=impl.name), echo_meta("127.0.0.1:%d" % port))
    deadline = time.monotonic() + 5
    wanted = "WARNING kitex_fast.dapr: instance 'kitex': call to echo.echo@127.0.0.1:%d failed: ConnectError" % port
    while wanted not in dapr.component.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wanted in dapr.component.log()


# -- trace context ---------------------------------------------------------------------------------

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def tracepeer(daprd_binary):
    server = stack.trace_peer()
    yield server
    server.stop()


def metainfo_seen(reply: bytes) -> dict:
    text = read_echo_reply(reply)
    _, _, pairs = text.partition("|")
    return dict(p.split("=", 1) for p in pairs.split(";") if p)


@pytest.mark.parametrize("transport", ["ttheader", "ttheader-framed"])
def test_trace_context_reaches_kitex_metainfo(sdk, impl, tracepeer, transport) -> None:
    # What Kitex's OpenTelemetry server middleware extracts the span context from.
    response = sdk.invoke_binding("kitex", "get", data=echo_request("t", implementation=impl.name),
                                  binding_metadata=echo_meta(tracepeer.address, transport=transport,
                                                             traceparent=TRACEPARENT, baggage="user=ann"))
    seen = metainfo_seen(response.data)
    assert seen.get("traceparent") == TRACEPARENT
    assert seen.get("baggage") == "user=ann"


def test_untraced_calls_forward_no_trace_context(sdk, impl, tracepeer) -> None:
    # daprd's own traceparent for an untraced call is all zeros: not a context, not forwarded.
    response = sdk.invoke_binding("kitex", "get", data=echo_request("u", implementation=impl.name),
                                  binding_metadata=echo_meta(tracepeer.address, transport="ttheader"))
    assert "traceparent" not in metainfo_seen(response.data)


# -- HTTP API --------------------------------------------------------------------------------------

def test_http_with_base64_opt_in(dapr, impl, kitex_servers) -> None:
    request = echo_request("over http", implementation=impl.name)
    status, headers, body = dapr.daprd.http_invoke("kitex", {
        "operation": "get", "data": base64.b64encode(request).decode(),
        "metadata": echo_meta(kitex_servers["default"].address, dataEncoding="base64", responseMetadata="true")})
    assert status == 200, body
    # daprd writes the reply raw: binary intact.
    assert read_echo_reply(body, implementation=impl.name) == "over http,hi Kitex"
    assert headers.get("Metadata.transport") == "framed"


def test_http_without_opt_in_gets_a_clear_error(dapr, kitex_servers) -> None:
    status, _, body = dapr.daprd.http_invoke("kitex", {
        "operation": "get", "data": "not thrift",
        "metadata": echo_meta(kitex_servers["default"].address)})
    assert status == 500
    assert b"ERR_INVOKE_OUTPUT_BINDING" in body and b"ProtocolError" in body


def test_http_bad_base64_is_invalid_argument(dapr, kitex_servers) -> None:
    status, _, body = dapr.daprd.http_invoke("kitex", {
        "operation": "get", "data": "***",
        "metadata": echo_meta(kitex_servers["default"].address, dataEncoding="base64")})
    assert status == 500
    assert b"InvalidArgument" in body and b"not valid base64" in body


# -- concurrency -----------------------------------------------------------------------------------

def test_16_concurrent_sdk_callers_each_get_their_own_reply(dapr, impl, kitex_servers) -> None:
    address = kitex_servers["default"].address

    def caller(n: int) -> list:
        out = []
        with dapr.daprd.client() as client:
            for i in range(10):
                message = "caller %d call %d" % (n, i)
                response = client.invoke_binding(
                    "kitex", "get", data=echo_request(message, implementation=impl.name),
                    binding_metadata=echo_meta(address, transport="ttheader" if n % 2 else "framed"))
                out.append((message, read_echo_reply(response.data, implementation=impl.name)))
        return out

    with ThreadPoolExecutor(16) as pool:
        results = [f.result(timeout=120) for f in [pool.submit(caller, n) for n in range(16)]]
    pairs = [pair for result in results for pair in result]
    assert len(pairs) == 160
    assert all(reply == message + ",hi Kitex" for message, reply in pairs)


def test_a_slow_call_does_not_block_others(sdk, impl, kitex_servers, dapr) -> None:
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(lambda: dapr.daprd.client().invoke_binding(
            "kitex-rich-patient", "get", data=rich_call("sleep", millis=2500),
            binding_metadata={"methodName": "sleep"}))
        time.sleep(0.2)
        started = time.monotonic()
        response = sdk.invoke_binding("kitex", "get", data=echo_request("quick", implementation=impl.name),
                                      binding_metadata=echo_meta(kitex_servers["default"].address))
        quick = time.monotonic() - started
        assert read_echo_reply(response.data, implementation=impl.name) == "quick,hi Kitex"
        assert not slow.done(), "the quick call waited for the slow one (took %.2f s)" % quick
        assert rich_result("sleep", slow.result(timeout=30).data).success == "slept 2500"


# -- restarts --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_component_restarted_while_daprd_runs(daprd_binary, impl, kitex_servers) -> None:
    with stack.DaprStack(daprd_binary, {"kitex": {}}, implementation=impl.name) as s:
        meta = echo_meta(kitex_servers["default"].address)
        with s.daprd.client() as client:
            data = echo_request("before", implementation=impl.name)
            assert read_echo_reply(client.invoke_binding("kitex", "get", data=data, binding_metadata=meta).data) == "before,hi Kitex"
            assert s.component.stop() == 0
            with pytest.raises(grpc.RpcError) as info:
                client.invoke_binding("kitex", "get", data=data, binding_metadata=meta)
            assert "Unavailable" in info.value.details()
            s.component.start()
            # daprd's gRPC channel to the socket failed during the outage and waits out grpc-go's
            # reconnect backoff (1 s base, ±20 % jitter) before it dials again.
            time.sleep(1.5)
            data = echo_request("after", implementation=impl.name)
            response = client.invoke_binding("kitex", "get", data=data, binding_metadata=meta)
            assert read_echo_reply(response.data) == "after,hi Kitex"
        assert "was never initialised by this process" in s.component.log()


@pytest.mark.slow
def test_kitex_server_killed_and_restarted_under_load(dapr, impl) -> None:
    port = stack.free_port()
    listen = ("-listen", "127.0.0.1:%d" % port)
    server = peers.KitexServer("default", "echo", *listen).start()
    meta = echo_meta("127.0.0.1:%d" % port, rpcTimeout="2s")
    stop = threading.Event()
    outcomes: list = []

    def caller(n: int) -> None:
        with dapr.daprd.client() as client:
            i = 0
            while not stop.is_set():
                message = "load %d-%d" % (n, i)
                i += 1
                try:
                    response = client.invoke_binding("kitex", "get", data=echo_request(message, implementation=impl.name),
                                                     binding_metadata=meta)
                    outcomes.append(("ok", read_echo_reply(response.data) == message + ",hi Kitex"))
                except grpc.RpcError as exc:
                    outcomes.append(("error", error_from_text(exc.details())))

    try:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(caller, n) for n in range(8)]
            time.sleep(0.7)
            server._proc.kill()  # no goodbye: connections die mid-call
            server._proc.wait()
            server.stop()
            time.sleep(0.5)
            server = peers.KitexServer("default", "echo", *listen).start()
            restarted_at = len(outcomes)
            time.sleep(1.5)
            stop.set()
            done, not_done = wait(futures, timeout=60)
            assert not not_done, "a caller hung"
            for f in done:
                f.result()
    finally:
        stop.set()
        server.stop()
    oks = [good for kind, good in outcomes if kind == "ok"]
    errors = [err for kind, err in outcomes if kind == "error"]
    assert oks and all(oks), "a reply did not match its request"
    assert errors, "killing the server failed no call: the test proved nothing"
    assert all(err is not None for err in errors), "an error did not come from the component"
    # Calls succeed again once the server is back.
    assert any(kind == "ok" for kind, _ in outcomes[restarted_at:])
