"""Issue 10: the defects adversarial probing found, one test (or a few) per defect.

Each test failed before its fix on every implementation the defect affected (compiled core and
twin, through the ``impl`` fixture) and passes now. Peers here are loopback Python servers that
misbehave on purpose; the real-Kitex side of hardening is ``tests/interop/test_faults.py``.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any, List

import pytest

from kitex_fast import Client, KitexOutputBinding
from kitex_fast.binding import InvokeRequest
from kitex_fast.errors import (
    BizStatusError,
    ConnectTimeoutError,
    FrameTooLargeError,
    KitexError,
    MetadataError,
    ProtocolError,
)
from kitex_fast.testing import echo_request

from .servers import ScriptedServer, read_request, reply_bytes

LOOPBACK = "127.0.0.1"
MIB = 1 << 20
CONNECT = 5.0  # connect_timeout to the loopback servers: Kitex's 50 ms default is tight under load


def _meta(address: str, **extra: str) -> dict:
    meta = {"destService": "echo", "hostPorts": address, "methodName": "echo", "version": "v1"}
    meta.update(extra)
    return meta


def _string_field_prefix(impl: Any, declared: int) -> bytes:
    """A REPLY header and the start of a struct whose field 0 (binary) declares ``declared``
    bytes: the prefix a hostile buffered server sends before anything else."""
    header = impl.codec.build_message(impl.codec.REPLY, "echo", 1)
    return header + b"\x0b\x00\x00" + struct.pack(">i", declared)


# -- 1. buffered framing honours max_frame_size before buffering ---------------------------------


@pytest.mark.parametrize("transport", ["buffered", "auto"])
def test_buffered_declared_length_over_the_maximum_fails_at_once(impl: Any, transport: str) -> None:
    decoder = impl.codec.FrameDecoder(transport, max_frame_size=MIB)
    with pytest.raises(FrameTooLargeError) as info:
        decoder.feed(_string_field_prefix(impl, 100 * MIB))
    assert "max_frame_size 1048576" in str(info.value)
    assert decoder.pending < 64  # nothing beyond the prefix was kept waiting


def test_buffered_fixed_size_list_over_the_maximum_fails_at_once(impl: Any) -> None:
    decoder = impl.codec.FrameDecoder("buffered", max_frame_size=MIB)
    header = impl.codec.build_message(impl.codec.REPLY, "echo", 1)
    # field 0: list<i64> of 2**30 elements = 8 GiB declared
    with pytest.raises(FrameTooLargeError):
        decoder.feed(header + b"\x0f\x00\x00\x0a" + struct.pack(">i", 1 << 30))


def test_buffered_bytes_held_for_one_message_stay_under_the_maximum(impl: Any) -> None:
    """No single length is too large, but the message never ends (a list of 2**31-1 empty
    structs): the bytes buffered for it are bounded by max_frame_size."""
    decoder = impl.codec.FrameDecoder("buffered", max_frame_size=64 * 1024)
    header = impl.codec.build_message(impl.codec.REPLY, "echo", 1)
    decoder.feed(header + b"\x0f\x00\x00\x0c" + struct.pack(">i", 0x7FFFFFFF))
    with pytest.raises(FrameTooLargeError):
        for _ in range(64):
            decoder.feed(b"\x00" * 4096)
            assert decoder.pending <= 64 * 1024 + 4096


def test_buffered_client_rejects_the_hostile_prefix_instead_of_buffering(impl: Any) -> None:
    """Over a socket: the server sends only the hostile prefix and keeps the connection open.
    Before the fix the client buffered until the rpc timeout."""
    prefix = _string_field_prefix(impl, 0x7FFFFFF0)
    done = threading.Event()

    def script(sock: socket.socket) -> None:
        if read_request(sock, "buffered") is None:
            return
        sock.sendall(prefix)
        done.wait(10)

    with ScriptedServer(script) as srv, Client(
        "echo", srv.address, connect_timeout=CONNECT, transport="buffered", rpc_timeout=20.0, max_frame_size=MIB,
        implementation=impl.name,
    ) as client:
        start = time.monotonic()
        try:
            with pytest.raises(FrameTooLargeError):
                client.call("echo", echo_request("x", implementation=impl.name))
        finally:
            done.set()
        assert time.monotonic() - start < 10.0  # at once, not at the rpc timeout


# -- 2. nothing a peer sends raises outside the hierarchy ----------------------------------------


@pytest.mark.parametrize("transport", ["ttheader", "ttheader-framed"])
def test_deeply_nested_biz_extra_is_a_biz_status_error(impl: Any, transport: str) -> None:
    nested = '{"a":' * 6000 + "1" + "}" * 6000

    def script(sock: socket.socket) -> None:
        frame = read_request(sock, transport)
        if frame is not None:
            sock.sendall(reply_bytes(frame, transport=transport, str_headers={
                "biz-status": "7", "biz-message": "nope", "biz-extra": nested}))

    with ScriptedServer(script) as srv, Client(
        "echo", srv.address, connect_timeout=CONNECT, transport=transport, rpc_timeout=5.0, implementation=impl.name
    ) as client:
        with pytest.raises(BizStatusError) as info:
            client.call("echo", echo_request("x", implementation=impl.name))
    assert info.value.status_code == 7
    assert info.value.extra == {"biz-extra": nested}


# -- 3. non-finite or huge timeouts --------------------------------------------------------------


BAD_TIMEOUTS = [math.inf, -math.inf, math.nan, 1e19, -1.0, "2s", True, [1]]


@pytest.mark.parametrize("value", BAD_TIMEOUTS, ids=repr)
def test_client_rejects_bad_rpc_timeout_at_construction(impl: Any, value: Any) -> None:
    with pytest.raises(MetadataError, match="rpc_timeout"):
        Client("echo", "127.0.0.1:1", rpc_timeout=value, implementation=impl.name)


@pytest.mark.parametrize("value", [math.inf, math.nan, 1e19], ids=repr)
def test_per_call_rpc_timeout_is_checked_before_any_byte_is_sent(impl: Any, value: float) -> None:
    received: List[bytes] = []

    def script(sock: socket.socket) -> None:
        data = sock.recv(65536)
        received.append(data)

    with ScriptedServer(script) as srv, Client("echo", srv.address, connect_timeout=CONNECT, implementation=impl.name) as client:
        with pytest.raises(MetadataError, match="rpc_timeout"):
            client.invoke("echo", echo_request("x", implementation=impl.name), rpc_timeout=value)
    assert received in ([], [b""])


def test_a_long_finite_deadline_works_on_the_socket(impl: Any) -> None:
    """The transport itself: a deadline centuries away (Go's longest Duration is ~292 years)
    must bound nothing, not fail with EDOM/OverflowError after the request was sent."""
    def script(sock: socket.socket) -> None:
        frame = read_request(sock, "framed")
        if frame is not None:
            sock.sendall(reply_bytes(frame))

    with ScriptedServer(script) as srv, Client(
        "echo", srv.address, connect_timeout=CONNECT, rpc_timeout=9.2e9, implementation=impl.name
    ) as client:
        client.call("echo", echo_request("x", implementation=impl.name))


@pytest.mark.parametrize("deadline", [math.inf, math.nan, 1e30])
def test_transport_rejects_or_tolerates_odd_deadlines_before_sending(impl: Any, deadline: float) -> None:
    """Direct transport use: inf and huge deadlines mean "no limit", NaN is refused before any
    byte is written."""
    a, b = socket.socketpair()
    try:
        conn = impl.transport.Connection(a, impl.codec.FrameDecoder("framed"), "pair")
        message = impl.codec.build_message(impl.codec.REPLY, "echo", 1, b"\x00")
        if math.isnan(deadline):
            with pytest.raises(ValueError, match="deadline"):
                conn.call([b"\x00\x00\x00\x01", b"\x00"], time.monotonic() + deadline)
            assert conn.closed  # like every error out of call()
            b.settimeout(5)
            assert b.recv(10) == b""  # closed without a byte sent
        else:
            b.sendall(b"".join(bytes(p) for p in impl.codec.encode_frame("framed", message, seq_id=1)))
            frame = conn.call([b"\x00\x00\x00\x01", b"\x00"], time.monotonic() + deadline)
            assert frame.payload == message
        conn.close()
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("field", ["rpcTimeout", "connectTimeout", "maxIdleTime"])
@pytest.mark.parametrize("value", ["9" * 400 + "h", "9" * 401, "1" + "0" * 30 + "s", "300y"])
def test_metadata_durations_that_overflow_are_metadata_errors(impl: Any, field: str, value: str) -> None:
    with KitexOutputBinding(implementation=impl.name) as binding:
        with pytest.raises(MetadataError, match=field):
            binding.invoke(InvokeRequest("get", echo_request("x"), _meta("127.0.0.1:1", **{field: value})))


# -- 4. connect_timeout NaN ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.5, 1e19, "50ms"], ids=repr)
def test_client_rejects_bad_connect_timeout(impl: Any, value: Any) -> None:
    with pytest.raises(MetadataError, match="connect_timeout"):
        Client("echo", "127.0.0.1:1", connect_timeout=value, rpc_timeout=1.0, implementation=impl.name)


def test_open_connection_refuses_a_nan_timeout_before_connecting(impl: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        impl.transport.open_connection(
            socket.AF_INET, (LOOPBACK, 9), timeout=math.nan, decoder=impl.codec.FrameDecoder("framed")
        )


# -- 5. untyped errors from arguments ------------------------------------------------------------


def test_lone_surrogate_method_name_is_a_metadata_error(impl: Any) -> None:
    with KitexOutputBinding(implementation=impl.name) as binding:
        with pytest.raises(MetadataError, match="methodName"):
            binding.invoke(InvokeRequest("get", echo_request("x"), _meta("127.0.0.1:1", methodName="e\ud800")))
    with Client("echo", "127.0.0.1:1", implementation=impl.name) as client:
        with pytest.raises(MetadataError, match="method name"):
            client.call("e\ud800", echo_request("x"))


@pytest.mark.parametrize("key", [1, None, b"rpcTimeout", ("a",)], ids=repr)
def test_non_string_metadata_keys_are_metadata_errors(impl: Any, key: Any) -> None:
    meta: dict = _meta("127.0.0.1:1")
    meta[key] = "x"
    with KitexOutputBinding(implementation=impl.name) as binding:
        with pytest.raises(MetadataError, match="not a string"):
            binding.invoke(InvokeRequest("get", echo_request("x"), meta))
        with pytest.raises(MetadataError, match="not a string"):
            binding.init({key: "x"})


def test_non_contiguous_memoryview_request_is_a_protocol_error(impl: Any) -> None:
    message = echo_request("x", implementation=impl.name)
    spread = bytes(x for b in message for x in (b, 0))
    view = memoryview(spread)[::2]
    assert bytes(view) == message and not view.contiguous
    with Client("echo", "127.0.0.1:1", implementation=impl.name) as client:
        with pytest.raises(ProtocolError, match="contiguous"):
            client.call("echo", view)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"pool_size": -5}, "pool_size"),
        ({"pool_size": "10"}, "pool_size"),
        ({"max_frame_size": 0}, "max_frame_size"),
        ({"max_frame_size": -1}, "max_frame_size"),
        ({"max_frame_size": 1 << 40}, "max_frame_size"),
        ({"max_frame_size": 1.5}, "max_frame_size"),
        ({"max_idle_time": math.nan}, "max_idle_time"),
        ({"max_idle_time": -1}, "max_idle_time"),
        ({"str_headers": {1: "x"}, "transport": "ttheader"}, "str_headers"),
        ({"int_headers": {"x": "y"}, "transport": "ttheader"}, "int_headers"),
        ({"int_headers": {70000: "y"}, "transport": "ttheader"}, "int_headers"),
        ({"implementation": "rust"}, "implementation"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else v,
)
def test_client_constructor_validates_every_argument(impl: Any, kwargs: dict, field: str) -> None:
    kwargs.setdefault("implementation", impl.name)
    with pytest.raises(MetadataError, match=field):
        Client("echo", "127.0.0.1:1", **kwargs)


@pytest.mark.parametrize("host_ports", [5, None, [1, 2], b"127.0.0.1:1"], ids=repr)
def test_client_rejects_host_ports_of_the_wrong_type(impl: Any, host_ports: Any) -> None:
    with pytest.raises(MetadataError, match="hostPorts"):
        Client("echo", host_ports, implementation=impl.name)


# -- 6. a request has a size limit ---------------------------------------------------------------


@pytest.mark.parametrize("transport", ["framed", "buffered", "ttheader", "ttheader-framed"])
def test_oversized_request_is_refused_before_any_byte_is_sent(impl: Any, transport: str) -> None:
    received: List[int] = []

    def script(sock: socket.socket) -> None:
        total = 0
        sock.settimeout(1.0)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                total += len(data)
        except OSError:
            pass
        received.append(total)

    big = echo_request("x" * (2 * MIB), implementation=impl.name)
    with ScriptedServer(script) as srv:
        with Client("echo", srv.address, transport=transport, max_frame_size=MIB, connect_timeout=CONNECT,
                    implementation=impl.name) as client:
            with pytest.raises(FrameTooLargeError, match="max_frame_size 1048576"):
                client.call("echo", big)
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
    assert received in ([], [0])


def test_request_encoder_checks_the_frame_against_its_limit(impl: Any) -> None:
    message = impl.codec.build_message(impl.codec.CALL, "echo", 1, b"\x0b\x00\x01" + struct.pack(">i", 2000) + b"a" * 2000 + b"\x00")
    for transport in impl.codec.TRANSPORTS:
        ok = impl.codec.RequestEncoder(transport, max_frame_size=4096)
        assert ok.encode(message, 1)
        small = impl.codec.RequestEncoder(transport, max_frame_size=1024)
        with pytest.raises(FrameTooLargeError):
            small.encode(message, 1)


# -- 7. errors that mislead ----------------------------------------------------------------------


HTTP_REPLY = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n"


@pytest.mark.parametrize("transport", ["framed", "buffered", "ttheader", "ttheader-framed", "auto"])
def test_http_reply_is_named_with_its_first_bytes(impl: Any, transport: str) -> None:
    decoder = impl.codec.FrameDecoder(transport)
    with pytest.raises(ProtocolError) as info:
        decoder.feed(HTTP_REPLY)
    text = str(info.value)
    assert "48 54 54 50" in text, text
    assert "looks like HTTP" in text, text


def test_framed_call_to_an_http_port(impl: Any) -> None:
    def script(sock: socket.socket) -> None:
        sock.recv(65536)
        sock.sendall(HTTP_REPLY)

    with ScriptedServer(script) as srv, Client("echo", srv.address, rpc_timeout=5.0, connect_timeout=CONNECT, implementation=impl.name) as client:
        with pytest.raises(FrameTooLargeError) as info:
            client.call("echo", echo_request("x", implementation=impl.name))
    assert "framed length 1213486160 exceeds max_frame_size" in str(info.value)
    assert "48 54 54 50" in str(info.value) and "looks like HTTP" in str(info.value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="full-backlog trick is Linux's")
def test_a_deadline_that_expires_while_connecting_names_the_rpc_timeout(impl: Any) -> None:
    lsock = socket.socket()
    lsock.bind((LOOPBACK, 0))
    lsock.listen(0)
    address = lsock.getsockname()
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        time.sleep(0.05)
        with Client("echo", "%s:%d" % address, connect_timeout=10.0, rpc_timeout=0.2,
                    implementation=impl.name) as client:
            try:
                client.call("echo", echo_request("x", implementation=impl.name))
            except ConnectTimeoutError as exc:
                text = str(exc)
            else:  # pragma: no cover - a kernel that accepts beyond the backlog
                pytest.skip("this kernel completed a connect beyond a full backlog")
        assert "rpc timeout of 200 ms" in text, text
        assert "after 0 ms" not in text
    finally:
        for filler in fillers:
            filler.close()
        lsock.close()


@pytest.mark.parametrize(
    "value, on",
    [("1", True), ("true", True), ("TRUE", True), ("yes", True), (" 1 ", True),
     ("0", False), ("", False), ("false", False), ("no", False), ("off", False), (None, False)],
)
def test_no_extensions_switch_takes_only_yes_values(value: Any, on: bool) -> None:
    from kitex_fast import _dispatch

    assert _dispatch.env_flag(value) is on


def test_no_extensions_zero_keeps_the_extension() -> None:
    probe = "import kitex_fast.codec as c, kitex_fast._dispatch as d; print(d.NO_EXTENSIONS)"
    env = dict(os.environ, KITEX_FAST_NO_EXTENSIONS="0")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("kwargs", [{"max_clients": 0}, {"max_clients": "4"}, {"max_clients": 2.5},
                                    {"implementation": "rust"}], ids=repr)
def test_binding_constructor_validates_its_arguments(kwargs: dict) -> None:
    with pytest.raises(MetadataError, match=next(iter(kwargs))):
        KitexOutputBinding(**kwargs)


# -- issue 24, item 8: numbers in caller text are ASCII digits, bounded, and a MetadataError -----

# Each was accepted (or raised an untyped ValueError) before: str.isdigit() takes "²" (which int()
# then refuses), int() reads fullwidth and Arabic-Indic digits, "+5" and " 5", and "--5" passed
# lstrip("-").isdigit(); 5,000 digits passed isdigit() and int() refused them (max_str_digits).
HOSTILE_NUMBERS = ["²", "４０８３１", "٣", "--5", "+5", " 5", "5_0", "9" * 5000]


def _bad_number_fields(value: str) -> List[Any]:
    return [
        ("poolSize", {"poolSize": value}),
        ("maxConnections", {"maxConnections": value}),
        ("rpcTimeout", {"rpcTimeout": value}),
        ("connectTimeout", {"connectTimeout": value}),
        ("maxIdleTime", {"maxIdleTime": value}),
        ("rpcTimeout", {"rpcTimeout": value + "ms"}),  # Go-style durations too
        ("maxFrameSize", {"maxFrameSize": value}),
        ("maxFrameSize", {"maxFrameSize": value + "KiB"}),
        ("intHeader.", {"transport": "ttheader", "intHeader." + value: "v"}),
    ] + ([("hostPorts", {"hostPorts": "127.0.0.1:" + value})] if value == value.rstrip() else [])
    # (white space around a hostPorts entry is allowed: "a:1, b:2")


@pytest.mark.parametrize("value", HOSTILE_NUMBERS, ids=lambda v: ascii(v)[:20])
def test_numbers_in_metadata_are_ascii_digits_only(impl: Any, value: str) -> None:
    with KitexOutputBinding(implementation=impl.name) as binding:
        for field, extra in _bad_number_fields(value):
            meta = _meta("127.0.0.1:1", **extra)
            with pytest.raises(MetadataError) as info:
                binding.invoke(InvokeRequest("get", echo_request("x"), meta))
            text = str(info.value)
            assert field in text, (field, text)
            if len(value) > 64:  # quoted: cut, with the whole length
                assert "characters)" in text and len(text) < 600, text
            assert "\n" not in text


def test_ascii_numbers_still_work_at_their_bounds() -> None:
    from kitex_fast.metadata import parse_options

    options = parse_options(_meta("127.0.0.1:65535", poolSize="10000", maxConnections="1",
                                  rpcTimeout="0009223372036854", maxFrameSize="2GiB",
                                  transport="ttheader", **{"intHeader.65535": "v"}), {})
    assert options.pool_size == 10000 and options.max_connections == 1
    assert options.endpoints[0].port == 65535 and options.rpc_timeout == pytest.approx(9223372036.854)
    assert dict(options.int_headers)[65535] == "v"
    with pytest.raises(MetadataError, match="longer than Go's longest duration"):
        parse_options(_meta("127.0.0.1:1", rpcTimeout="9" * 20), {})


def test_fullwidth_port_does_not_connect(impl: Any) -> None:
    with ScriptedServer(lambda sock: None) as server:
        fullwidth = "".join(chr(0xFF10 + int(d)) for d in str(server.port))
        with pytest.raises(MetadataError, match="port '%s' that is not a number" % fullwidth):
            Client("echo", "127.0.0.1:" + fullwidth, implementation=impl.name)
        assert server.accepted == 0


@pytest.mark.parametrize("argv, text", [
    (["--pool-size", "²"], "poolSize: '²' is not a whole number"),
    (["--rpc-timeout", "9" * 5000], "rpcTimeout: '999"),
    (["--meta", "maxConnections=--5"], "maxConnections: '--5' is not a whole number"),
    (["--repeat", "2", "--pool-size", "٣"], "poolSize: '٣' is not a whole number"),
])
def test_cli_bad_numbers_are_one_line_and_exit_2(impl: Any, argv: List[str], text: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kitex_fast", "call", "--implementation", impl.name, "-e", "127.0.0.1:1",
         "-s", "echo", "-m", "echo", "--data-hex", "00"] + argv,
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and text in proc.stderr, proc.stderr
    assert proc.stderr.startswith("kitex-fast call: error: MetadataError: ") and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("value", ["٣", "+5", " 5", "²"])
def test_cli_counts_are_ascii_digits(impl: Any, value: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kitex_fast", "call", "-e", "127.0.0.1:1", "-s", "echo", "-m", "echo",
         "--data-hex", "00", "--repeat", value], capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "is not a whole number" in proc.stderr and "Traceback" not in proc.stderr


# -- issue 24, item 9: a host is a host name or an address, nothing the resolver would truncate --

BAD_HOSTS = [
    "127.0.0.1\x00.example.com", "127.0.0.1\x00", "a\tb", "a\nb", "a\rb", "a\x7fb", "a b", "a/b",
    "a@b", "a..b", "a" * 64 + ".example", "x." * 200 + "com", "é\u200bx", "[::1%\x00x]", "[::1%]",
    "[::1%a b]",
]


@pytest.mark.parametrize("host", BAD_HOSTS, ids=ascii)
def test_hosts_with_nul_control_or_odd_characters_are_refused(impl: Any, host: str) -> None:
    with ScriptedServer(lambda sock: None) as server:
        entry = "%s:%d" % (host, server.port)
        with pytest.raises(MetadataError, match="hostPorts") as info:
            Client("echo", entry, implementation=impl.name)
        assert "\n" not in str(info.value) and "\x00" not in str(info.value)
        with KitexOutputBinding(implementation=impl.name) as binding:
            with pytest.raises(MetadataError, match="hostPorts"):
                binding.invoke(InvokeRequest("get", echo_request("x"), _meta(entry)))
        assert server.accepted == 0


@pytest.mark.parametrize("host", BAD_HOSTS[:4], ids=ascii)
def test_asyncio_driver_refuses_the_same_hosts(aio_default: Any, impl: Any, host: str) -> None:
    from kitex_fast.aio import Client as AioClient

    async def main() -> None:
        with pytest.raises(MetadataError, match="hostPorts"):
            AioClient("echo", "%s:1" % host, implementation=impl.name)

    aio_default(main)


@pytest.mark.parametrize("entry", ["[::1]:1", "[fe80::1%eth0]:9", "my_host-1.example:80",
                                   "bücher.example:80", "example.com.:1", "localhost:1"])
def test_ordinary_hosts_are_still_accepted(impl: Any, entry: str) -> None:
    Client("echo", entry, implementation=impl.name).close()


# -- issue 24, item 14: a caller's value cannot forge a log line or fill one -------------------


def test_a_newline_in_dest_service_is_escaped_in_error_texts(impl: Any) -> None:
    from kitex_fast.errors import NoInstanceError

    class Empty:
        """A Resolver (kitex_fast.resolver.Resolver) whose service has no live instance."""

        description = "an empty registry"

        def resolve(self, service: str, timeout: Any) -> Any:
            return ()

        def subscribe(self, service: str, listener: Any) -> Any:
            return lambda: None

        def close(self) -> None:
            pass

    forged = "echo\n2026-01-01 ERROR forged line"
    with Client(forged, registry=Empty(), implementation=impl.name) as client:
        with pytest.raises(NoInstanceError) as info:
            client.call("echo", echo_request("x"))
    assert "\n" not in str(info.value) and "'echo\\n2026" in str(info.value)
    with pytest.raises(MetadataError) as bad:
        Client(forged, "127.0.0.1:1", transport="grpc\n" + "x" * 5000, implementation=impl.name)
    assert "\n" not in str(bad.value) and "(5005 characters)" in str(bad.value)


@pytest.mark.parametrize("meta", [
    {"poolSize": "x\ny" * 2000},
    {"transport": "ttheader", "header.a\nb": 5},
    {"transport": "ttheader", "intHeader.\n" + "1" * 3000: "v"},
    {"hostPorts": "h\nost:1"},
    {"registry": "etcd://a:1/\n" + "p" * 1000},
    {"transport": "grpc\nx"},
])
def test_metadata_errors_quote_values_escaped_and_bounded(impl: Any, meta: dict) -> None:
    with KitexOutputBinding(implementation=impl.name) as binding:
        full = _meta("127.0.0.1:1")
        if "registry" in meta:
            del full["hostPorts"]
        full.update(meta)
        with pytest.raises(MetadataError) as info:
            binding.invoke(InvokeRequest("get", echo_request("x"), full))
    text = str(info.value)
    assert "\n" not in text and len(text) < 700, text
