"""Real Kitex servers (Go, built from tests/interop/go) answer what docs/protocol.md says they answer.

For each server variant: which framings it answers (always in the framing of the request), and the
error behaviours of docs/protocol.md §8 and §9.3. Requests are built with thriftpy2 (strict binary) and
framed/decoded with kitex_fast's pure-Python codec over raw sockets, so a codec bug and a Kitex
behaviour change both show up here. Where Kitex v0.16.3 differs from the spec the test follows
Kitex and says so in a comment starting with "Kitex differs".
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import thriftpy2
from thriftpy2.protocol.binary import TBinaryProtocol
from thriftpy2.transport import TMemoryBuffer

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import peers  # noqa: E402
from kitex_fast import codec  # noqa: E402

pytestmark = pytest.mark.interop

C = codec.implementation("py")
IDL = peers.GO_DIR / "idl"
ECHO = thriftpy2.load(str(IDL / "echo.thrift"), module_name="interop_echo_thrift")
RICH = thriftpy2.load(str(IDL / "rich.thrift"), module_name="interop_rich_thrift")
TRANSPORTS = ("buffered", "framed", "ttheader", "ttheader-framed")
TTHEADER = ("ttheader", "ttheader-framed")
GOLDEN = HERE.parent / "golden" / "frames.json"

# TApplicationException type codes (gopkg protocol/thrift/exception.go; 20 is Kitex's UnknownService).
UNKNOWN_METHOD, INTERNAL_ERROR, PROTOCOL_ERROR, UNKNOWN_SERVICE = 1, 6, 7, 20


# ---- building and reading messages ----------------------------------------------------------


def call_message(service: Any, method: str, seq_id: int, msg_type: int = 1, **args: Any) -> bytes:
    """A strict-binary Thrift message of ``method``'s args struct (thriftpy2 writes strict)."""
    buf = TMemoryBuffer()
    proto = TBinaryProtocol(buf, strict_read=True, strict_write=True)
    proto.write_message_begin(method, msg_type, seq_id)
    getattr(service, method + "_args")(**args).write(proto)
    proto.write_message_end()
    return buf.getvalue()


def raw_message(method: str, seq_id: int, body: bytes, msg_type: int = 1) -> bytes:
    """A strict-binary message header (docs/protocol.md §6.1) followed by ``body`` verbatim."""
    name = method.encode()
    return struct.pack(">Ii", 0x80010000 | msg_type, len(name)) + name + struct.pack(">i", seq_id) + body


def echo_call(seq_id: int, text: str = "hello") -> bytes:
    return call_message(ECHO.Echo, "echo", seq_id, req=ECHO.Request(message=text))


def sleep_call(seq_id: int, millis: int = 0) -> bytes:
    return call_message(RICH.Rich, "sleep", seq_id, millis=millis)


def read_result(service: Any, method: str, payload: bytes) -> Any:
    header = C.parse_message(payload)
    assert header.type == C.REPLY, "expected a REPLY, got %r" % (header,)
    result = getattr(service, method + "_result")()
    result.read(TBinaryProtocol(TMemoryBuffer(payload[header.body_offset:])))
    return result


def frame(transport: str, message: bytes, seq_id: int, **headers: Any) -> bytes:
    return b"".join(bytes(part) for part in C.encode_frame(transport, message, seq_id=seq_id, **headers))


class Wire:
    """One raw TCP connection to a Kitex server; frames are decoded as a Kitex server sniffs them."""

    def __init__(self, server: peers.KitexServer, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.decoder = C.FrameDecoder("auto")
        self.frames: List[Any] = []
        self.eof = False

    def __enter__(self) -> "Wire":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, transport: str, message: bytes, seq_id: int, **headers: Any) -> None:
        self.send(frame(transport, message, seq_id, **headers))

    def _fill(self, timeout: float) -> bool:
        """Read once; False on EOF/reset or timeout (``self.eof`` tells which)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.frames.extend(self.decoder.feed(data))
        return True

    def recv(self) -> Any:
        deadline = time.monotonic() + self.timeout
        while not self.frames:
            left = deadline - time.monotonic()
            if left <= 0 or not self._fill(left):
                raise AssertionError("no reply frame (%s)" % ("peer closed" if self.eof else "timeout"))
        return self.frames.pop(0)

    def expect_closed(self, timeout: Optional[float] = None) -> None:
        """The server closes the connection, and sends nothing (more) before that."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("connection still open after %.1f s" % (timeout or self.timeout))
            self._fill(left)
        assert not self.frames, "unexpected reply before close: %r" % (self.frames,)
        assert self.decoder.pending == 0, "partial frame before close"

    def expect_open(self, wait: float = 0.3) -> None:
        self._fill(wait)
        assert not self.eof, "server closed the connection"
        assert not self.frames


def exception_of(reply: Any) -> tuple:
    header = C.parse_message(reply.payload)
    assert header.type == C.EXCEPTION, "expected an EXCEPTION, got %r" % (header,)
    return C.decode_application_exception(reply.payload)


def all_types() -> Any:
    return RICH.AllTypes(
        flag=True, tiny=-128, small=-32768, medium=-(2 ** 31), large=2 ** 63 - 1, ratio=-0.5,
        text="héllo ✓", blob=b"\x00\xff\x80", numbers=[1, -2, 3], tags={"a", "b", "c"},
        index={"k1": RICH.Inner(id=1, name="one"), "k2": RICH.Inner(id=2, name="")},
        inner=RICH.Inner(id=3, name="three"), color=RICH.Color.GREEN,
        inners=[RICH.Inner(id=4, name="four"), RICH.Inner(id=5, name="five")],
        nested={-1: ["x", "y"], 2 ** 40: []},
    )


# ---- default server: every framing, answered in kind ------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_default_answers_each_framing_in_kind(kitex_server, transport):
    server = kitex_server("default", "echo")
    with Wire(server) as w:
        w.call(transport, echo_call(11), 11)
        reply = w.recv()
        assert reply.transport == transport
        assert reply.seq_id == (11 if transport in TTHEADER else None)
        # A server without ServerTTHeaderHandler writes an empty TTHeader (docs/protocol.md §9.6).
        assert (reply.str_headers, reply.int_headers, reply.acl_token) == ({}, {}, None)
        assert C.parse_message(reply.payload).seq_id == 11
        assert read_result(ECHO.Echo, "echo", reply.payload).success.message == "hello,hi Kitex"
        w.expect_open()


def test_default_mixed_framings_on_one_connection_in_order(kitex_server):
    # Detection runs per message (docs/protocol.md §9.1); pipelined requests get in-order replies (§9.2).
    server = kitex_server("default", "echo")
    with Wire(server) as w:
        w.send(b"".join(frame(t, echo_call(i + 1, t), i + 1) for i, t in enumerate(TRANSPORTS)))
        for i, t in enumerate(TRANSPORTS):
            reply = w.recv()
            assert reply.transport == t
            assert C.parse_message(reply.payload).seq_id == i + 1
            assert read_result(ECHO.Echo, "echo", reply.payload).success.message == t + ",hi Kitex"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rich_roundtrip_every_type(kitex_server, transport):
    server = kitex_server("default", "rich")
    value = all_types()
    with Wire(server) as w:
        w.call(transport, call_message(RICH.Rich, "roundtrip", 21, value=value), 21)
        reply = w.recv()
        assert reply.transport == transport
        got = read_result(RICH.Rich, "roundtrip", reply.payload).success
        assert set(got.tags) == value.tags  # thriftpy2 reads a set<> back as a list
        got.tags = value.tags
        assert got == value


def test_declared_exception_is_a_reply(kitex_server):
    server = kitex_server("default", "rich")
    with Wire(server) as w:
        w.call("framed", call_message(RICH.Rich, "raise_declared", 3, code=42, reason="nope"), 3)
        result = read_result(RICH.Rich, "raise_declared", w.recv().payload)
        assert result.success is None
        assert (result.err.code, result.err.reason) == (42, "nope")
        w.expect_open()


def test_reply_seq_id_is_the_payload_seq_id(kitex_server):
    # docs/protocol.md §7: the payload seq id overwrites the TTHeader one and is used for both.
    server = kitex_server("default", "echo")
    with Wire(server) as w:
        w.call("ttheader", echo_call(5), 99)
        reply = w.recv()
        assert reply.seq_id == 5
        assert C.parse_message(reply.payload).seq_id == 5


def test_ttheader_headers_are_accepted(kitex_server):
    server = kitex_server("default", "echo")
    with Wire(server) as w:
        w.call("ttheader", echo_call(6), 6, str_headers={"isn": "Echo", "RPC_PERSIST_k": "v"},
               int_headers={3: "caller", 6: "Echo", 9: "echo", 12: "1000"}, acl_token="token")
        assert read_result(ECHO.Echo, "echo", w.recv().payload).success.message == "hello,hi Kitex"


# ---- mux: TTHeader only, out-of-order replies ------------------------------------------------


@pytest.mark.parametrize("transport", ["buffered", "framed"])
def test_mux_refuses_non_ttheader(kitex_server, transport):
    # Log: "mux read check protocol failed, just support TTHeader"; closed without a reply.
    server = kitex_server("mux", "rich")
    with Wire(server) as w:
        w.call(transport, sleep_call(1), 1)
        w.expect_closed()


@pytest.mark.parametrize("transport", TTHEADER)
def test_mux_answers_ttheader_in_kind(kitex_server, transport):
    server = kitex_server("mux", "rich")
    with Wire(server) as w:
        w.call(transport, sleep_call(1), 1)
        reply = w.recv()
        assert (reply.transport, reply.seq_id) == (transport, 1)
        assert read_result(RICH.Rich, "sleep", reply.payload).success == "slept 0"


def test_mux_pipelined_replies_come_out_of_order_matched_by_seq_id(kitex_server):
    server = kitex_server("mux", "rich")
    millis = {1: 600, 2: 400, 3: 200, 4: 0}
    with Wire(server) as w:
        w.send(b"".join(frame("ttheader", sleep_call(seq, ms), seq) for seq, ms in millis.items()))
        order = []
        for _ in millis:
            reply = w.recv()
            seq = C.parse_message(reply.payload).seq_id
            assert reply.seq_id == seq  # TTHeader seq id = payload seq id: match on either
            assert read_result(RICH.Rich, "sleep", reply.payload).success == "slept %d" % millis[seq]
            order.append(seq)
        assert sorted(order) == [1, 2, 3, 4]
        assert order != [1, 2, 3, 4], "mux server replied in request order"
        assert order[0] == 4


def test_mux_decode_error_keeps_the_connection(kitex_server):
    # docs/protocol.md §9.2: mux read errors do not close the connection; unlike the default server,
    # an unknown method is answered (type 20) and the connection stays usable.
    server = kitex_server("mux", "rich")
    with Wire(server) as w:
        w.call("ttheader", raw_message("nope", 3, b"\x00"), 3)
        assert exception_of(w.recv()) == (UNKNOWN_SERVICE, "unknown service , method nope")
        w.call("ttheader", sleep_call(4), 4)
        assert read_result(RICH.Rich, "sleep", w.recv().payload).success == "slept 0"


# ---- V1 binary generic server (Dapr's e2e echo server) ---------------------------------------


@pytest.mark.parametrize("transport", ["framed", "ttheader", "ttheader-framed"])
def test_generic_v1_answers_framed_and_ttheader(kitex_server, transport):
    server = kitex_server("generic-v1", "echo")
    with Wire(server) as w:
        w.call(transport, echo_call(77), 77)
        reply = w.recv()
        assert reply.transport == transport
        assert C.parse_message(reply.payload).seq_id == 77
        assert read_result(ECHO.Echo, "echo", reply.payload).success.message == "hello,hi Kitex"


def test_generic_v1_refuses_buffered(kitex_server):
    # Log: "invalid trans buffer in binaryThriftCodec Unmarshal, size=0 less than 8 bytes".
    server = kitex_server("generic-v1", "echo")
    with Wire(server) as w:
        w.call("buffered", echo_call(1), 1)
        w.expect_closed()


def test_generic_v1_handler_error_has_seq_id_zero(kitex_server):
    # Kitex differs (detail the spec leaves open): the V1 codec never records the request's seq
    # id, so an EXCEPTION built by Kitex for a V1 handler error carries seq id 0 in the payload.
    server = kitex_server("generic-v1", "echo")
    with Wire(server) as w:
        w.call("framed", sleep_call(9), 9)
        reply = w.recv()
        header = C.parse_message(reply.payload)
        assert (header.type, header.name, header.seq_id) == (C.EXCEPTION, "sleep", 0)
        assert exception_of(reply) == (INTERNAL_ERROR, 'biz error: generic-v1: unknown method "sleep"')
        w.expect_open()


# ---- decode-time errors: answered when Kitex can, then the connection is closed ---------------


@pytest.mark.parametrize("transport", ["framed", "ttheader"])
@pytest.mark.parametrize("service", ["echo", "rich"])
def test_unknown_method_is_type_20_then_close(kitex_server, transport, service):
    server = kitex_server("default", service)
    with Wire(server) as w:
        w.call(transport, raw_message("nope", 3, b"\x00"), 3)
        reply = w.recv()
        header = C.parse_message(reply.payload)
        assert (header.name, header.seq_id, reply.transport) == ("nope", 3, transport)
        assert exception_of(reply) == (UNKNOWN_SERVICE, "unknown service , method nope")
        w.expect_closed()


def test_multi_isn_routes_to_each_service(kitex_server):
    server = kitex_server("multi", "echo")
    with Wire(server) as w:
        w.call("ttheader", echo_call(1), 1, str_headers={"isn": "Echo"})
        assert read_result(ECHO.Echo, "echo", w.recv().payload).success.message == "hello,hi Kitex"
        w.call("ttheader", sleep_call(2), 2, str_headers={"isn": "Rich"})
        assert read_result(RICH.Rich, "sleep", w.recv().payload).success == "slept 0"
        # Without isn (framed) or with an unknown isn, the service owning the method answers
        # (kitex server/service.go SearchService).
        w.call("framed", sleep_call(3), 3)
        assert read_result(RICH.Rich, "sleep", w.recv().payload).success == "slept 0"
        w.call("ttheader", echo_call(4), 4, str_headers={"isn": "Nope"})
        assert read_result(ECHO.Echo, "echo", w.recv().payload).success.message == "hello,hi Kitex"


def test_multi_isn_without_the_method_is_type_1_then_close(kitex_server):
    server = kitex_server("multi", "echo")
    with Wire(server) as w:
        w.call("ttheader", sleep_call(3), 3, str_headers={"isn": "Echo"})
        assert exception_of(w.recv()) == (UNKNOWN_METHOD, "unknown method sleep (service Echo)")
        w.expect_closed()


def test_multi_unknown_method_is_type_20_then_close(kitex_server):
    server = kitex_server("multi", "echo")
    with Wire(server) as w:
        w.call("framed", raw_message("nope", 3, b"\x00"), 3)
        assert exception_of(w.recv()) == (UNKNOWN_SERVICE, "unknown service , method nope")
        w.expect_closed()


BAD_STRUCT = b"\x0b\x00\x01\xff\xff\xff\xff\x00"  # field 1 as a string of length -1
SHORT_STRUCT = b"\x08\x00\x01\x00"  # field 1 i32 with 1 of its 4 bytes


@pytest.mark.parametrize("transport", ["framed", "ttheader", "ttheader-framed"])
def test_bad_struct_is_type_7_then_close(kitex_server, transport):
    server = kitex_server("default", "rich")
    with Wire(server) as w:
        w.call(transport, raw_message("sleep", 5, BAD_STRUCT), 5)
        reply = w.recv()
        assert C.parse_message(reply.payload).seq_id == 5
        assert exception_of(reply) == (
            PROTOCOL_ERROR, "*rich.RichSleepArgs field 1 skip type 11 error: invalid data length")
        w.expect_closed()


def test_truncated_struct_in_a_complete_frame_is_type_7_then_close(kitex_server):
    server = kitex_server("default", "rich")
    with Wire(server) as w:
        w.call("framed", raw_message("sleep", 5, SHORT_STRUCT), 5)
        assert exception_of(w.recv()) == (
            PROTOCOL_ERROR, "*rich.RichSleepArgs read field 1 'millis' error: ReadI32: len(buf) < 4")
        w.expect_closed()


def test_bad_struct_buffered_is_closed_without_reply(kitex_server):
    # Kitex differs from the usual rule ("struct decode failure → type 7", docs/protocol.md
    # §9.3): for Buffered the struct is skipped before decoding (§1.1, §10 skipThriftStruct) and that error gets no reply.
    server = kitex_server("default", "rich")
    with Wire(server) as w:
        w.send(raw_message("sleep", 5, BAD_STRUCT))
        w.expect_closed()


GARBAGE = {
    "http": b"GET / HTTP/1.1\r\nHost: kitex\r\n\r\n",
    "compact": b"\x82\x21\x01\x04echo\x00",
    "non-strict": struct.pack(">i", 4) + b"echo" + b"\x01" + struct.pack(">i", 1) + b"\x00",
    "apache-theader": bytes.fromhex("0000000e0fff0000000000010001000000000000"),
    # TTHeader with protocol id 2 (compact): "unsupported ProtocolID[2]"
    "ttheader-compact": bytes.fromhex("0000000e1000000000000001000102000000") + b"\x00" * 2,
    # TTHeader with an unknown info id 0x05: "invalid infoIDType[0x5]"
    "ttheader-bad-info": bytes.fromhex("00000012100000000000000100020000050000000000"),
}


@pytest.mark.parametrize("mode", ["default", "meta"])
@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_is_closed_without_reply(kitex_server, mode, kind):
    server = kitex_server(mode, "echo")
    with Wire(server) as w:
        w.send(GARBAGE[kind])
        w.expect_closed()


@pytest.mark.parametrize("msg_type", [2, 3])
def test_non_call_message_type_is_closed_without_reply(kitex_server, msg_type):
    # docs/protocol.md §6.2: the method name is not known yet, so no reply can be encoded.
    server = kitex_server("default", "echo")
    with Wire(server) as w:
        w.call("framed", call_message(ECHO.Echo, "echo", 1, msg_type=msg_type,
                                      req=ECHO.Request(message="x")), 1)
        w.expect_closed()


# ---- handler errors: answered, connection kept -------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fail_is_type_6_and_connection_stays_usable(kitex_server, transport):
    server = kitex_server("default", "rich")
    with Wire(server) as w:
        w.call(transport, call_message(RICH.Rich, "fail", 1, message="boom"), 1)
        reply = w.recv()
        assert reply.transport == transport
        assert exception_of(reply) == (INTERNAL_ERROR, "biz error: boom")
        w.call(transport, sleep_call(2), 2)
        assert read_result(RICH.Rich, "sleep", w.recv().payload).success == "slept 0"


def test_crash_is_type_6_with_the_panic_text(kitex_server):
    # docs/protocol.md §8: this is what Kitex v0.16.3 sends.
    server = kitex_server("default", "rich")
    with Wire(server) as w:
        w.call("ttheader", call_message(RICH.Rich, "crash", 1, message="boom"), 1)
        assert exception_of(w.recv()) == (
            INTERNAL_ERROR,
            "panic: [happened in biz handler, method=Rich.crash, please check the panic at the "
            "server side] boom",
        )
        w.call("framed", sleep_call(2), 2)
        assert read_result(RICH.Rich, "sleep", w.recv().payload).success == "slept 0"


# ---- meta server: ServerTTHeaderHandler ---------------------------------------------------------


@pytest.mark.parametrize("transport", TTHEADER)
def test_biz_status_over_ttheader_to_meta_server(kitex_server, transport):
    server = kitex_server("meta", "rich")
    extra = {"k": "v", "trace": "abc"}
    with Wire(server) as w:
        w.call(transport, call_message(RICH.Rich, "biz", 1, code=1001, message="no", extra=extra), 1)
        reply = w.recv()
        header = C.parse_message(reply.payload)
        assert header.type == C.REPLY
        assert reply.payload[header.body_offset:] == b"\x00"  # empty result struct
        assert reply.str_headers["biz-status"] == "1001"
        assert reply.str_headers["biz-message"] == "no"
        assert json.loads(reply.str_headers["biz-extra"]) == extra
        assert reply.int_headers == {22: "2"}
        w.expect_open()


@pytest.mark.parametrize("mode,transport", [("meta", "framed"), ("meta", "buffered"),
                                            ("default", "ttheader"), ("default", "framed")])
def test_biz_status_is_lost_without_ttheader_and_meta_handler(kitex_server, mode, transport):
    # docs/protocol.md §9.4: the client only sees an empty result struct.
    server = kitex_server(mode, "rich")
    with Wire(server) as w:
        w.call(transport, call_message(RICH.Rich, "biz", 1, code=1001, message="no", extra={}), 1)
        reply = w.recv()
        header = C.parse_message(reply.payload)
        assert header.type == C.REPLY
        assert reply.payload[header.body_offset:] == b"\x00"
        assert "biz-status" not in reply.str_headers


def test_meta_server_writes_msg_type_key(kitex_server):
    server = kitex_server("meta", "rich")
    with Wire(server) as w:
        w.call("ttheader", sleep_call(1), 1)
        reply = w.recv()
        assert (reply.str_headers, reply.int_headers) == ({}, {22: "2"})
        w.call("ttheader", call_message(RICH.Rich, "fail", 2, message="x"), 2)
        reply = w.recv()
        assert (reply.str_headers, reply.int_headers) == ({}, {22: "3"})
        assert exception_of(reply) == (INTERNAL_ERROR, "biz error: x")
        w.expect_open()


@pytest.mark.parametrize("body,expected", [
    (None, (UNKNOWN_SERVICE, "unknown service , method nope")),
    (BAD_STRUCT, (PROTOCOL_ERROR, "*rich.RichSleepArgs field 1 skip type 11 error: invalid data length")),
])
def test_meta_server_marks_crrst_after_decode_error(kitex_server, body, expected):
    # docs/protocol.md §9.5, §9.3: the error reply carries crrst=1, then the connection is closed.
    server = kitex_server("meta", "rich")
    with Wire(server) as w:
        message = raw_message("nope", 3, b"\x00") if body is None else raw_message("sleep", 3, body)
        w.call("ttheader", message, 3)
        reply = w.recv()
        assert reply.str_headers == {"crrst": "1"}
        assert reply.int_headers == {22: "3"}
        assert exception_of(reply) == expected
        w.expect_closed()


def test_default_server_sends_no_crrst(kitex_server):
    server = kitex_server("default", "rich")
    with Wire(server) as w:
        w.call("ttheader", raw_message("nope", 3, b"\x00"), 3)
        assert w.recv().str_headers == {}
        w.expect_closed()


def test_meta_server_enforces_rpc_timeout_key_through_the_context(kitex_server):
    # Int key 12 (ms) becomes the handler's context deadline (serverTimeoutMW); the handler sees
    # ctx.Done() and its error is a plain handler error: type 6, connection kept.
    server = kitex_server("meta", "rich")
    with Wire(server) as w:
        started = time.monotonic()
        w.call("ttheader", sleep_call(1, 5000), 1, int_headers={12: "100"})
        reply = w.recv()
        assert time.monotonic() - started < 4
        assert exception_of(reply) == (INTERNAL_ERROR, "biz error: context deadline exceeded")
        w.call("ttheader", sleep_call(2, 10), 2, int_headers={12: "2000"})
        assert read_result(RICH.Rich, "sleep", w.recv().payload).success == "slept 10"


def test_default_server_ignores_rpc_timeout_key(kitex_server):
    server = kitex_server("default", "rich")
    with Wire(server) as w:
        w.call("ttheader", sleep_call(1, 300), 1, int_headers={12: "50"})
        assert read_result(RICH.Rich, "sleep", w.recv().payload).success == "slept 300"


# ---- size limit ----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sizelimit(kitex_server, transport):
    server = kitex_server("sizelimit", "echo", "-max-size", "1024")
    with Wire(server) as w:
        w.call(transport, echo_call(1, "small"), 1)
        assert read_result(ECHO.Echo, "echo", w.recv().payload).success.message == "small,hi Kitex"
        w.call(transport, echo_call(2, "x" * 2000), 2)
        if transport == "buffered":
            # docs/protocol.md §1.1: the limit cannot apply to Buffered (length unknown when checked).
            assert read_result(ECHO.Echo, "echo", w.recv().payload).success.message.startswith("xxx")
        else:
            # Log: "invalid data: payload size(2028) larger than the limit(1024)"
            w.expect_closed()


# ---- the Go reference client (Dapr's Go binding) -----------------------------------------------


@pytest.mark.parametrize("transport", ["framed", "ttheader", "ttheader-framed"])
@pytest.mark.parametrize("mode", ["default", "generic-v1"])
def test_refclient_calls(kitex_server, mode, transport):
    server = kitex_server(mode, "echo")
    reply, error = peers.ref_call(server.address, service="Echo", method="echo",
                                  request=echo_call(0), transport=transport, rpc_timeout=5)
    assert error is None
    assert read_result(ECHO.Echo, "echo", reply).success.message == "hello,hi Kitex"


def test_refclient_buffered_cannot_read_the_reply(kitex_server):
    # Kitex's V1 binary-generic *client* cannot read an unframed reply (PayloadLen is 0), even
    # from a server that answered it: the Dapr binding needs Framed or TTHeader.
    server = kitex_server("default", "echo")
    reply, error = peers.ref_call(server.address, service="Echo", method="echo",
                                  request=echo_call(0), transport="buffered", rpc_timeout=5)
    assert reply is None
    assert "invalid trans buffer in binaryThriftCodec Unmarshal, size=0 less than 8 bytes" in error


def test_refclient_reports_remote_errors(kitex_server):
    server = kitex_server("default", "rich")
    reply, error = peers.ref_call(server.address, service="Rich", method="fail",
                                  request=call_message(RICH.Rich, "fail", 0, message="boom"))
    assert reply is None
    assert "biz error: boom" in error


def test_refclient_load(kitex_server):
    server = kitex_server("default", "echo")
    stats = peers.ref_load(server.address, service="Echo", method="echo", request=echo_call(0),
                           transport="ttheader", calls=200, concurrency=2)
    assert (stats["calls"], stats["concurrency"], stats["errors"]) == (200, 2, 0)
    assert stats["calls_per_s"] > 0 and stats["p50_us"] <= stats["p99_us"]


def test_server_stops_cleanly_on_sigterm(go_peers):
    server = peers.KitexServer("default", "echo").start()
    proc = server._proc
    server.stop()
    assert proc is not None and proc.returncode == 0


# ---- golden frames cannot drift -----------------------------------------------------------------


def _decoded(entry: Dict[str, Any]) -> Dict[str, Any]:
    fields = {k: v for k, v in entry.items() if k != "frame"}
    frames = C.FrameDecoder("auto").feed(bytes.fromhex(entry["frame"]))
    assert len(frames) == 1, entry["name"]
    f = frames[0]
    got = {"transport": f.transport, "payload": f.payload.hex(), "seq_id": f.seq_id,
           "flags": f.flags, "str_headers": f.str_headers,
           "int_headers": {str(k): v for k, v in f.int_headers.items()}, "acl_token": f.acl_token}
    assert got == {k: fields[k] for k in got}, entry["name"]
    return fields


def test_golden_frames_match_a_fresh_run(go_peers, tmp_path):
    fresh = json.loads(peers.run_golden(tmp_path).read_text())
    golden = json.loads(GOLDEN.read_text())
    assert fresh["generator"] == golden["generator"]
    assert fresh["messages"] == golden["messages"]
    assert fresh["structs"] == golden["structs"]
    assert [f["name"] for f in fresh["frames"]] == [f["name"] for f in golden["frames"]]
    for new, old in zip(fresh["frames"], golden["frames"]):
        if old["deterministic"]:
            assert new == old, old["name"]
        else:  # Go map order: compare what the frame says, not its bytes
            assert len(new["frame"]) == len(old["frame"]), old["name"]
            assert _decoded(new) == _decoded(old), old["name"]


def test_golden_kitex_client_framings():
    # What Kitex's client really sends for each WithTransportProtocol (docs/protocol.md §1.3):
    # TTHeader is ORed into the Framed default, so "ttheader" goes out as TTHeader+Framed.
    frames = {f["name"]: f for f in json.loads(GOLDEN.read_text())["frames"]}
    assert frames["kitex-client-framed"]["transport"] == "framed"
    assert frames["kitex-client-buffered"]["transport"] == "buffered"
    assert frames["kitex-client-ttheader"]["transport"] == "ttheader-framed"
    assert frames["kitex-client-ttheader-framed"]["transport"] == "ttheader-framed"
    meta = frames["kitex-client-ttheader-meta"]
    assert meta["int_headers"]["22"] == "1" and meta["int_headers"]["1"] == "framed"
    assert meta["str_headers"] == {}  # no isn from a generic client (cloudwego/kitex#1379)


def test_golden_matches_the_spec_example():
    # docs/protocol.md §11, derived by hand from the rules; gopkg's encoder agrees byte for byte.
    frames = {f["name"]: f for f in json.loads(GOLDEN.read_text())["frames"]}
    assert frames["spec-ttheader-isn-tomethod"]["frame"] == (
        "0000004f100000000000000100090000010001000369736e000b4563686f5365727669636510000100090004"
        "4563686f000080010001000000044563686f000000010c00010b00010000000568656c6c6f0000")
    assert frames["spec-ttheader-empty"]["frame"].startswith("0000002f1000000000000001000100000000")
    assert frames["spec-ttheader-framed"]["frame"].startswith(
        "00000033100000000000000100010000000000000021")
