"""The component process without daprd: the gRPC contract as daprd uses it (reflection v1alpha,
x-component-instance, Init/ListOperations/Invoke/Ping), socket hygiene, signals, the status texts,
the HTTP base64 opt-in and trace-context forwarding. Kitex peers are real Go servers where a
Kitex answer matters; the Python test server only shows what headers arrived."""

from __future__ import annotations

import base64
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest

grpc = pytest.importorskip("grpc", reason='needs "kitex_fast[dapr]"')

import stack  # noqa: E402
from kitex_fast import (  # noqa: E402
    ApplicationError,
    BizStatusError,
    ConnectError,
    ConnectionClosedError,
    ConnectTimeoutError,
    MetadataError,
    ProtocolError,
    RPCTimeoutError,
    UnsupportedOperationError,
)
from kitex_fast.dapr import error_from_text, status_of  # noqa: E402
from kitex_fast.dapr.component import build_parser  # noqa: E402
from kitex_fast.dapr.core import TRANSIENT_PREFIX, _with_trace_headers  # noqa: E402
from kitex_fast.testing import KitexTestServer, echo_handler, echo_request, read_echo_reply  # noqa: E402

from kitex_fast.dapr.proto import contract as pb  # noqa: E402

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# -- status texts (no process) ---------------------------------------------------------------------

@pytest.mark.parametrize("error, code", [
    (MetadataError("dapr binding kitex: missing metadata field hostPorts"), "INVALID_ARGUMENT"),
    (UnsupportedOperationError("dapr binding kitex: unsupported operation 'x'"), "INVALID_ARGUMENT"),
    (ConnectError("connect to 127.0.0.1:1 failed: refused"), "UNAVAILABLE"),
    (ConnectTimeoutError("connect to 10.0.0.1:1 timed out"), "UNAVAILABLE"),
    (ConnectionClosedError("peer closed", sent=True), "UNAVAILABLE"),
    (RPCTimeoutError("no reply within 0.1 s"), "DEADLINE_EXCEEDED"),
    (ApplicationError(20, "unknown service , method nope", method="nope"), "UNIMPLEMENTED"),
    (ApplicationError(6, "biz error: boom"), "UNKNOWN"),
    (ApplicationError(99, "odd"), "UNKNOWN"),
    (BizStatusError(404, "no such user", {"user": "ann", "b": "c"}), "FAILED_PRECONDITION"),
    (BizStatusError(-3, "negative", {}), "FAILED_PRECONDITION"),
    (ProtocolError("missing version in Thrift Message"), "INTERNAL"),
])
def test_status_code_and_text_round_trip(error, code) -> None:
    got_code, text = status_of(error)
    assert got_code == code
    assert text.startswith(type(error).__name__)
    # As the SDK caller sees it: daprd's INTERNAL wrapper around our status.
    wrapped = "error invoking output binding kitex: rpc error: code = X desc = " + text
    back = error_from_text(wrapped)
    assert type(back) is type(error)
    assert str(back) == str(error)
    if isinstance(error, ApplicationError):
        assert (back.type_code, back.message, back.method) == (error.type_code, error.message, error.method)
    if isinstance(error, BizStatusError):
        assert (back.status_code, back.message, back.extra) == (error.status_code, error.message, error.extra)


def test_foreign_texts_are_not_ours() -> None:
    assert error_from_text("error invoking output binding kitex: rpc error: code = Unavailable desc = "
                           "connection error: desc = \"transport: dial unix /x.sock\"") is None
    assert error_from_text("binding kitex does not support operation create") is None
    assert status_of(KeyError("x"))[0] == "INTERNAL"


@pytest.mark.parametrize("number", ["\u0663", "\uff13", "1" * 5000])  # ٣ (Arabic-Indic), ３ (fullwidth)
def test_status_fields_are_ascii_numbers_of_bounded_length(number: str) -> None:
    # int() reads other scripts' digits (int("٣") == 3) and refuses more than 4,300 digits with a
    # ValueError: neither is a text this component writes, so neither is ours.
    _, text = status_of(ApplicationError(3, "boom"))
    assert error_from_text(text).type_code == 3
    assert error_from_text(text.replace("type=3", "type=" + number)) is None
    _, text = status_of(BizStatusError(3, "no", {}))
    assert error_from_text(text.replace("status=3", "status=" + number)) is None


@pytest.mark.parametrize("mode", ["\u0666\u0666\u0660", "\uff16\uff16\uff10", "+660", " 660", "6_60", "0o660",
                                  "0680", ""])
def test_socket_mode_takes_ascii_octal_digits_only(mode: str, capsys) -> None:
    assert build_parser().parse_args(["--socket-mode", "0640"]).socket_mode == 0o640
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--socket-mode", mode])
    assert "%r is not an octal file mode (e.g. 0660)" % mode in capsys.readouterr().err


@pytest.mark.parametrize("gid", [str(0xFFFFFFFF), "9" * 5000])
def test_a_socket_group_number_past_gid_t_is_not_a_gid(gid: str, capsys) -> None:
    assert build_parser().parse_args(["--socket-group", "0042"]).socket_group == 42
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--socket-group", gid])
    assert "is not a GID" in capsys.readouterr().err


def test_socket_mode_above_0777_is_not_a_file_mode(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--socket-mode", "1777"])
    assert "'1777' is not a file mode" in capsys.readouterr().err


def test_trace_context_goes_into_ttheader_transient_headers_only() -> None:
    meta = {"traceparent": TRACEPARENT, "tracestate": "a=b", "baggage": "k=v", "transport": "ttheader"}
    out = _with_trace_headers(meta, {})
    assert out["header." + TRANSIENT_PREFIX + "traceparent"] == TRACEPARENT
    assert out["header." + TRANSIENT_PREFIX + "tracestate"] == "a=b"
    assert out["header." + TRANSIENT_PREFIX + "baggage"] == "k=v"
    assert "header.RPC_TRANSIT_traceparent" not in meta  # the caller's dict is not changed
    # Framed/Buffered have no headers; the instance default decides when the request does not.
    assert _with_trace_headers({"traceparent": TRACEPARENT}, {}) == {"traceparent": TRACEPARENT}
    assert "header.RPC_TRANSIT_traceparent" in _with_trace_headers({"traceparent": TRACEPARENT}, {"transport": "ttheader-framed"})
    # daprd's all-zero traceparent (untraced call) is not a trace context.
    zero = {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-00", "transport": "ttheader"}
    assert _with_trace_headers(zero, {}) is zero


# -- the component process -------------------------------------------------------------------------

@pytest.fixture
def folder():
    with tempfile.TemporaryDirectory(prefix="kf-sock-") as d:
        yield os.path.join(d, "sockets")


@pytest.fixture
def component(impl, folder):
    c = stack.Component(folder, implementation=impl.name)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def channel(component):
    return grpc.insecure_channel("unix:" + component.socket)


def call(ch, method: str, request, instance: str = "inst", timeout: float = 30.0):
    stub = pb.OutputBindingStub(ch)
    return getattr(stub, method)(request, metadata=(("x-component-instance", instance),), timeout=timeout)


def test_reflection_v1alpha_lists_the_output_binding(component) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with channel(component) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
    names = sorted(s.name for s in replies[0].list_services_response.service)
    assert names == ["dapr.proto.components.v1.OutputBinding", "grpc.reflection.v1alpha.ServerReflection"]


def test_socket_mode_is_0660(component) -> None:
    st = os.stat(component.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660


def test_init_list_operations_ping_and_invoke(component, impl) -> None:
    with KitexTestServer({"echo": echo_handler}, service="echo", implementation=impl.name) as server, channel(component) as ch:
        assert call(ch, "Init", pb.OutputBindingInitRequest()) == pb.OutputBindingInitResponse()  # empty Init
        assert list(call(ch, "ListOperations", pb.ListOperationsRequest()).operations) == ["get"]
        call(ch, "Ping", pb.PingRequest())
        response = call(ch, "Invoke", pb.InvokeRequest(
            operation="get", data=echo_request("hi", implementation=impl.name),
            metadata={"hostPorts": server.address, "destService": "echo", "methodName": "echo", "version": "v1",
                      "traceparent": TRACEPARENT, "tracestate": "", "user-agent": "grpc-go/1.80",
                      "dapr-authority": "x", "content-type": "application/grpc"}))
        assert read_echo_reply(response.data, implementation=impl.name) == "hi,hi Kitex"
        assert response.content_type == "application/vnd.apache.thrift.binary"
        # No response metadata by default, as Dapr's Go binding (daprd makes each entry a header).
        assert dict(response.metadata) == {}


def test_response_metadata_is_opt_in_by_request_or_yaml(component, impl) -> None:
    meta = {"destService": "echo", "methodName": "echo", "version": "v1"}
    with KitexTestServer({"echo": echo_handler}, service="echo", implementation=impl.name) as server, channel(component) as ch:
        meta["hostPorts"] = server.address
        data = echo_request("m", implementation=impl.name)
        call(ch, "Init", pb.OutputBindingInitRequest(), instance="plain")
        call(ch, "Init", pb.OutputBindingInitRequest(metadata=pb.MetadataRequest(properties={
            "responseMetadata": "true"})), instance="yaml")
        for instance, extra, wanted in (("plain", {}, False), ("plain", {"responseMetadata": "TRUE"}, True),
                                        ("yaml", {}, True), ("yaml", {"responseMetadata": "false"}, False)):
            for _ in range(3):  # the first call of a route takes the general path, later ones the compiled
                response = call(ch, "Invoke", pb.InvokeRequest(operation="get", data=data, metadata=dict(meta, **extra)),
                                instance=instance)
                assert read_echo_reply(response.data, implementation=impl.name) == "m,hi Kitex"
                assert response.content_type == "application/vnd.apache.thrift.binary"
                if wanted:
                    got = dict(response.metadata)
                    assert int(got.pop("seqId")) > 0
                    assert got == {"messageType": "reply", "methodName": "echo", "transport": "framed",
                                   "endpoint": server.address}, (instance, extra)
                else:
                    assert dict(response.metadata) == {}, (instance, extra)
        with pytest.raises(grpc.RpcError) as info:
            call(ch, "Invoke", pb.InvokeRequest(operation="get", data=data, metadata=dict(meta, responseMetadata="yes")))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "responseMetadata" in info.value.details() and "'yes'" in info.value.details()


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/PID/maps")
def test_the_component_process_loads_no_openssl(component, impl) -> None:
    # Nothing it does speaks TLS, and Python's ssl is about 4 MiB of its memory
    # (kitex_fast.dapr.eventloop): after serving a call, neither _ssl nor libssl is mapped.
    with KitexTestServer({"echo": echo_handler}, service="echo", implementation=impl.name) as server, channel(component) as ch:
        response = call(ch, "Invoke", pb.InvokeRequest(
            operation="get", data=echo_request("tls?", implementation=impl.name),
            metadata={"hostPorts": server.address, "destService": "echo", "methodName": "echo", "version": "v1"}))
        assert read_echo_reply(response.data, implementation=impl.name) == "tls?,hi Kitex"
    with open("/proc/%d/maps" % component.proc.pid) as f:
        mapped = {line.rsplit("/", 1)[-1].strip() for line in f if "/" in line}
    assert not [name for name in mapped if name.startswith(("_ssl.", "libssl", "libcrypto"))], sorted(mapped)


def test_init_errors_name_the_field(component) -> None:
    with channel(component) as ch:
        with pytest.raises(grpc.RpcError) as info:
            call(ch, "Init", pb.OutputBindingInitRequest(metadata=pb.MetadataRequest(properties={"rpcTimeout": "soon"})))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rpcTimeout" in info.value.details() and "'soon'" in info.value.details()


def test_instances_keep_separate_defaults(component, impl) -> None:
    with KitexTestServer({"echo": echo_handler}, service="echo", implementation=impl.name) as server, channel(component) as ch:
        call(ch, "Init", pb.OutputBindingInitRequest(metadata=pb.MetadataRequest(properties={
            "hostPorts": server.address, "destService": "echo", "methodName": "echo", "version": "v1"})), instance="a")
        call(ch, "Init", pb.OutputBindingInitRequest(), instance="b")
        data = echo_request("x", implementation=impl.name)
        assert read_echo_reply(call(ch, "Invoke", pb.InvokeRequest(operation="get", data=data), instance="a").data) == "x,hi Kitex"
        with pytest.raises(grpc.RpcError) as info:
            call(ch, "Invoke", pb.InvokeRequest(operation="get", data=data), instance="b")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "missing metadata field destService" in info.value.details()


def test_a_second_init_replaces_the_instance_defaults(component, impl) -> None:
    # daprd re-inits an instance when its YAML is hot-reloaded: the new defaults win.
    one = KitexTestServer({"echo": echo_handler}, service="echo", implementation=impl.name)
    two = KitexTestServer({"echo": echo_handler}, service="echo", implementation=impl.name)
    with one, two, channel(component) as ch:
        data = echo_request("x", implementation=impl.name)
        for server in (one, two):
            call(ch, "Init", pb.OutputBindingInitRequest(metadata=pb.MetadataRequest(properties={
                "hostPorts": server.address, "destService": "echo", "methodName": "echo", "version": "v1",
                "responseMetadata": "true"})), instance="a")
            response = call(ch, "Invoke", pb.InvokeRequest(operation="get", data=data), instance="a")
            assert response.metadata["endpoint"] == server.address
    assert component.log().count("instance 'a' initialised") == 2


def test_trace_context_reaches_the_server_as_ttheader_transient_metainfo(component, impl) -> None:
    seen = []

    def handler(request):
        seen.append(dict(request.str_headers))
        return echo_handler(request)

    with KitexTestServer({"echo": handler}, service="echo", implementation=impl.name) as server, channel(component) as ch:
        meta = {"hostPorts": server.address, "destService": "echo", "methodName": "echo", "version": "v1",
                "transport": "ttheader", "traceparent": TRACEPARENT, "baggage": "user=ann"}
        call(ch, "Invoke", pb.InvokeRequest(operation="get", data=echo_request("t", implementation=impl.name), metadata=meta))
    assert seen[0]["RPC_TRANSIT_traceparent"] == TRACEPARENT
    assert seen[0]["RPC_TRANSIT_baggage"] == "user=ann"


def test_grpc_deadline_bounds_the_kitex_call(impl, folder) -> None:
    # A Dapr resiliency timeout arrives as the gRPC deadline: the Kitex call must end with it, not
    # run on for the binding's own rpcTimeout (30 s by default) holding a connection and a worker.
    release = threading.Event()

    def handler(request):
        if b"stall" in request.body:
            release.wait(30)
        return echo_handler(request)

    c = stack.Component(folder, implementation=impl.name).start()
    try:
        with KitexTestServer({"echo": handler}, service="echo", implementation=impl.name) as server, channel(c) as ch:
            meta = {"hostPorts": server.address, "destService": "echo", "methodName": "echo", "version": "v1"}
            with pytest.raises(grpc.RpcError) as info:
                call(ch, "Invoke", pb.InvokeRequest(operation="get", data=echo_request("stall"), metadata=meta), timeout=0.5)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            response = call(ch, "Invoke", pb.InvokeRequest(operation="get", data=echo_request("next"), metadata=meta), timeout=10)
            assert read_echo_reply(response.data) == "next,hi Kitex"
            # Whichever came first, the capped rpcTimeout or gRPC's cancellation, is logged.
            assert "abandoned by daprd" in c.log() or "failed: RPCTimeoutError" in c.log()
    finally:
        release.set()
        c.stop()


def test_http_base64_opt_in_decodes_json_string(component, impl) -> None:
    with KitexTestServer({"echo": echo_handler}, service="echo", implementation=impl.name) as server, channel(component) as ch:
        meta = {"hostPorts": server.address, "destService": "echo", "methodName": "echo", "version": "v1",
                "dataEncoding": "base64"}
        # What daprd's HTTP API hands the component: the JSON value re-encoded, quotes included.
        data = b'"' + base64.b64encode(echo_request("b64", implementation=impl.name)) + b'"'
        response = call(ch, "Invoke", pb.InvokeRequest(operation="get", data=data, metadata=meta))
        assert read_echo_reply(response.data) == "b64,hi Kitex"
        for bad, text in ((b'{"a": 1}', "needs data to be a JSON string"), (b'"%%%"', "not valid base64")):
            with pytest.raises(grpc.RpcError) as info:
                call(ch, "Invoke", pb.InvokeRequest(operation="get", data=bad, metadata=meta))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and text in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            call(ch, "Invoke", pb.InvokeRequest(operation="get", data=data, metadata=dict(meta, dataEncoding="hex")))
        assert "dataEncoding" in info.value.details()


# -- socket hygiene and signals --------------------------------------------------------------------

def test_stale_socket_is_removed_and_served(impl, folder) -> None:
    os.makedirs(folder)
    path = os.path.join(folder, "kitex.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # the file stays, nothing listens: what a SIGKILLed component leaves
    c = stack.Component(folder, implementation=impl.name).start()
    try:
        assert "removed stale socket %s" % path in c.log()
        with channel(c) as ch:
            assert list(call(ch, "ListOperations", pb.ListOperationsRequest()).operations) == ["get"]
    finally:
        c.stop()


def test_live_socket_is_refused(component, impl, folder) -> None:
    proc = subprocess.run([sys.executable, "-m", "kitex_fast.dapr", "--socket-folder", folder,
                           "--implementation", impl.name], capture_output=True, timeout=60)
    assert proc.returncode == 1
    assert b"is served by a live process" in proc.stderr
    with channel(component) as ch:  # the first one is untouched
        assert list(call(ch, "ListOperations", pb.ListOperationsRequest()).operations) == ["get"]


def test_non_socket_file_is_refused(impl, folder) -> None:
    os.makedirs(folder)
    with open(os.path.join(folder, "kitex.sock"), "w") as f:
        f.write("not a socket")
    proc = subprocess.run([sys.executable, "-m", "kitex_fast.dapr", "--socket-folder", folder,
                           "--implementation", impl.name], capture_output=True, timeout=60)
    assert proc.returncode == 1 and b"is not a socket" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_calls_in_flight_then_exits_0_without_socket(impl, folder, sig) -> None:
    release, entered = threading.Event(), threading.Event()

    def slow(request):
        entered.set()
        release.wait(30)
        return echo_handler(request)

    c = stack.Component(folder, implementation=impl.name).start()
    try:
        with KitexTestServer({"echo": slow}, service="echo", implementation=impl.name) as server, channel(c) as ch:
            meta = {"hostPorts": server.address, "destService": "echo", "methodName": "echo", "version": "v1"}
            result = {}

            def in_flight():
                result["r"] = call(ch, "Invoke", pb.InvokeRequest(operation="get", data=echo_request("d"), metadata=meta))

            t = threading.Thread(target=in_flight)
            t.start()
            assert entered.wait(30), "the call never reached the server"
            c.proc.send_signal(sig)
            deadline = time.monotonic() + 20
            while os.path.exists(c.socket) and time.monotonic() < deadline:
                time.sleep(0.02)
            # The socket goes first, while the call is still held by the server.
            assert not os.path.exists(c.socket), "socket still there while draining"
            assert t.is_alive() and c.proc.poll() is None
            release.set()
            t.join(20)
            assert read_echo_reply(result["r"].data) == "d,hi Kitex"
            assert c.proc.wait(20) == 0
    finally:
        release.set()
        c.stop()
    assert not os.path.exists(c.socket)
    assert "stopped" in c.log()


def test_cli_subcommand_and_module_entry_point_parse_the_same_options() -> None:
    for cmd in ([sys.executable, "-m", "kitex_fast", "component", "--help"],
                [sys.executable, "-m", "kitex_fast.dapr", "--help"]):
        out = subprocess.run(cmd, capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert b"--socket-folder" in out.stdout and b"--drain-timeout" in out.stdout


def test_the_component_loads_no_module_it_has_no_use_for() -> None:
    # Each is 0.1-0.5 MiB of the component's RSS (docs/benchmarks.md, "Memory"), and only an
    # option or a request that needs it may load it: shutil (argparse's terminal width, bz2 and
    # lzma with it), json and base64 (the dataEncoding opt-in), random (a registry's weights),
    # dataclasses, and the test server's module (kitex-fast's other commands). The command line
    # is loaded first, as the container's entry point ``kitex-fast component`` loads it.
    # (ssl: tests/dapr/test_eventloop.py.)
    script = (
        "import sys\n"
        "from kitex_fast import cli\n"
        "from kitex_fast.dapr import eventloop\n"
        "eventloop.import_asyncio()  # (as the component does: asyncio's ssl imports base64)\n"
        "import asyncio\n"
        "from kitex_fast.dapr import component, core, h2server\n"
        "component.build_parser().parse_args(['--log-level', 'warning'])\n"
        "h2server.unavailable()\n"
        "c = core.Component()\n"
        "asyncio.run(c.init_status('kitex', {'hostPorts': '127.0.0.1:1', 'destService': 'echo'}))\n"
        "print(sorted(m for m in ('shutil', 'bz2', 'lzma', 'json', 'base64', 'random', 'dataclasses', "
        "'kitex_fast.testing') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
