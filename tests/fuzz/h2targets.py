"""Fuzz targets for the compiled component server's byte layer (``kitex_fast.dapr._h2server``).

It has no pure-Python twin, so these check it against oracles instead:

- ``pb-invoke``: the protobuf decoder either refuses bytes with ``ProtobufError`` or reads what
  protobuf itself reads (data, operation; every key protobuf keeps), and what it reads encodes
  back (InvokeResponse has InvokeRequest's field layout) to bytes that decode to the same values.
- ``grpc-unary``: an HTTP/2 connection carrying one Invoke whose DATA is the fuzz input, fed to a
  ``Connection`` in chunks: the app sees exactly the call the 5-byte gRPC prefix and the message
  describe, or the stream gets the gRPC status the rules give (UNIMPLEMENTED for a compressed flag,
  RESOURCE_EXHAUSTED over the limit, INTERNAL for a short, long or unparsable message), and no
  request byte stays buffered once the stream is over.

Selected from ``targets.py`` like the codec targets (byte 0 names the target, byte 1 is a knob).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, List, Optional, Tuple

Record = List[Tuple[Any, ...]]


class FuzzFailure(AssertionError):
    pass


def extension() -> Optional[ModuleType]:
    try:
        from kitex_fast.dapr import h2server
    except ImportError:
        return None
    return h2server._load()


def pb_invoke(ext: ModuleType, knob: int, data: bytes) -> Record:
    try:
        got = ext.decode_invoke_request(data)
    except ext.ProtobufError as exc:
        return [("error", str(exc))]
    except BaseException as exc:
        raise FuzzFailure("decode_invoke_request raised %s: %s" % (type(exc).__name__, exc)) from exc
    back = ext.decode_invoke_request(ext.encode_invoke_response(*got))
    if back != got:
        raise FuzzFailure("re-encoding changed the values: %r -> %r" % (got, back))
    try:
        from google.protobuf.message import DecodeError

        from kitex_fast.dapr.proto import contract as pb
    except ImportError:
        return [("ok",) + got]
    try:
        ref = pb.InvokeRequest.FromString(data)
    except DecodeError:
        raise FuzzFailure("protobuf refuses what we read: %s -> %r" % (data.hex(), got))
    # (upb moves a map entry with unknown fields inside to the unknown fields; protobuf-go keeps it)
    if (ref.data, ref.operation) != (got[0], got[2]) or not set(ref.metadata) <= set(got[1]):
        raise FuzzFailure("protobuf reads %r, we read %r from %s" % (ref, got, data.hex()))
    return [("ok",) + got]


# -- one Invoke over HTTP/2 ------------------------------------------------------------------

PATH = b"/dapr.proto.components.v1.OutputBinding/Invoke"
MAX_MESSAGES = (16, 1024, 4 * 1024 * 1024)


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _literal(name: bytes, value: bytes) -> bytes:
    # HPACK "literal header field without indexing, new name" (RFC 7541 6.2.2), short strings
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


REQUEST_HEAD = (
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b"")
    + _frame(1, 4, 1, b"".join(_literal(n, v) for n, v in (
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", PATH), (b":authority", b"kitex"),
        (b"content-type", b"application/grpc"), (b"te", b"trailers"), (b"x-component-instance", b"fuzz"))))
)


class _Transport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Task:
    def done(self) -> bool:
        return True

    def cancel(self) -> None:
        pass


class _App:
    def __init__(self) -> None:
        self.calls: List[Tuple[Any, ...]] = []

    def invoke(self, conn: Any, sid: int, name: str, op: str, data: bytes, md: dict, timeout: Any) -> _Task:
        self.calls.append((name, data, md, op))
        return _Task()

    def init(self, *args: Any) -> _Task:
        raise FuzzFailure("Init called for an Invoke")

    def connection_error(self, conn: Any, exc: BaseException) -> None:
        raise FuzzFailure("internal error in a callback: %r" % (exc,))

    def protocol_error(self, conn: Any, text: str, first: bytes) -> None:
        raise FuzzFailure("our own well-formed HTTP/2 was refused: %s" % text)

    def connection_done(self, conn: Any) -> None:
        pass


def _expected(ext: ModuleType, data: bytes, limit: int) -> Tuple[Any, ...]:
    """What the gRPC rules say about one unary request whose body is ``data``."""
    if len(data) < 5:
        return ("status", 13)
    n = int.from_bytes(data[1:5], "big")
    if data[0] != 0:
        return ("status", 12)
    if n > limit:
        return ("status", 8)
    if len(data) - 5 != n:
        return ("status", 13)
    try:
        values = ext.decode_invoke_request(data[5:])
    except ext.ProtobufError:
        return ("status", 13)
    return ("call", "fuzz", values[0], values[1], values[2])


def _statuses(out: bytes) -> List[int]:
    """grpc-status values in the server's HEADERS frames on stream 1 (HPACK-decoded)."""
    import hpack

    decoder = hpack.Decoder()
    statuses = []
    pos = 0
    while pos + 9 <= len(out):
        length = int.from_bytes(out[pos:pos + 3], "big")
        kind, stream = out[pos + 3], int.from_bytes(out[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        payload = out[pos + 9:pos + 9 + length]
        pos += 9 + length
        if kind == 1 and stream == 1:
            for name, value in decoder.decode(payload):
                if name == "grpc-status":
                    statuses.append(int(value))
    return statuses


def grpc_unary(ext: ModuleType, knob: int, data: bytes) -> Record:
    limit = MAX_MESSAGES[knob % 3]
    chunk = (knob // 3) + 1
    body = b"".join(_frame(0, 0, 1, data[i:i + 1000]) for i in range(0, len(data), 1000))
    wire = REQUEST_HEAD + body + _frame(0, 1, 1, b"")
    app = _App()
    transport = _Transport()
    conn = ext.Connection(app, max_message=limit)
    conn.connection_made(transport)
    for pos in range(0, len(wire), chunk):
        conn.data_received(wire[pos:pos + chunk])
    expected = _expected(ext, data, limit)
    if expected[0] == "call":
        if app.calls != [expected[1:]]:
            raise FuzzFailure("expected the call %r, the app saw %r" % (expected[1:], app.calls))
        conn.reply_invoke(1, b"r", {}, "")
        statuses = _statuses(bytes(transport.out))
        if statuses != [0]:
            raise FuzzFailure("a successful call ended with statuses %r" % statuses)
    else:
        if app.calls:
            raise FuzzFailure("the app was called (%r) where the rules say status %d" % (app.calls, expected[1]))
        statuses = _statuses(bytes(transport.out))
        if statuses != [expected[1]]:
            raise FuzzFailure("expected grpc-status %d, got %r for %s" % (expected[1], statuses, data[:64].hex()))
    if conn.buffered_bytes != 0:
        raise FuzzFailure("%d request bytes still buffered after the stream" % conn.buffered_bytes)
    conn.connection_lost(None)
    return [expected]


TARGETS = {"pb-invoke": pb_invoke, "grpc-unary": grpc_unary}


def seeds() -> List[Tuple[str, int, bytes]]:
    ext = extension()
    if ext is None:
        return []
    message = ext.encode_invoke_response(b"\x80\x01\x00\x01", {"hostPorts": "127.0.0.1:1", "k": ""}, "get")
    framed = b"\x00" + len(message).to_bytes(4, "big") + message
    return [("pb-invoke", 0, message), ("pb-invoke", 0, message + b"\x28\x01"),
            ("grpc-unary", 2, framed), ("grpc-unary", 5, framed), ("grpc-unary", 0, framed),
            ("grpc-unary", 2, b"\x01" + framed[1:]), ("grpc-unary", 2, framed + framed),
            ("grpc-unary", 2, framed[:7]), ("grpc-unary", 2, b"")]
