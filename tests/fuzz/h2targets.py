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

- ``route-metadata``: random metadata maps through the compiled server's Invoke path (the real
  ``h2server.App`` and component rules, a real Kitex-compatible server on loopback). Each input is
  one Invoke whose metadata the bytes describe, sent on one connection beside a well-formed echo
  call; the invariant (issue 24): the random call's stream ends with a grpc-status, whatever it
  carries, and the echo call beside it succeeds. Destinations are drawn from loopback addresses
  only (the test server, a refused port, or text that does not parse): nothing leaves the host.

Selected from ``targets.py`` like the codec targets (byte 0 names the target, byte 1 is a knob).
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

Record = List[Tuple[Any, ...]]


class FuzzFailure(AssertionError):
    pass


def extension() -> Optional[Any]:
    try:
        from kitex_fast.dapr import h2server
    except ImportError:
        return None
    return h2server._load()


def pb_invoke(ext: Any, knob: int, data: bytes) -> Record:
    try:
        got = ext.protobuf.decode_invoke_request(data)
    except ext.protobuf.ProtobufError as exc:
        return [("error", str(exc))]
    except BaseException as exc:
        raise FuzzFailure("decode_invoke_request raised %s: %s" % (type(exc).__name__, exc)) from exc
    back = ext.protobuf.decode_invoke_request(ext.protobuf.encode_invoke_response(*got))
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


def _expected(ext: Any, data: bytes, limit: int) -> Tuple[Any, ...]:
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
        values = ext.protobuf.decode_invoke_request(data[5:])
    except ext.protobuf.ProtobufError:
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


def grpc_unary(ext: Any, knob: int, data: bytes) -> Record:
    limit = MAX_MESSAGES[knob % 3]
    chunk = (knob // 3) + 1
    body = b"".join(_frame(0, 0, 1, data[i:i + 1000]) for i in range(0, len(data), 1000))
    wire = REQUEST_HEAD + body + _frame(0, 1, 1, b"")
    app = _App()
    transport = _Transport()
    conn = ext.server.Connection(app, max_message=limit)
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


# -- random metadata through the compiled Invoke path -------------------------------------------

# Keys the component reads (and a few it must ignore or treat specially), picked by a byte.
ROUTE_KEYS = (
    "hostPorts", "destService", "methodName", "version", "transport", "rpcTimeout", "connectTimeout",
    "maxFrameSize", "poolSize", "maxIdleTime", "maxConnections", "muxConnection", "pipelining",
    "idlService", "fromService", "logID", "header.x", "header.", "intHeader.5", "intHeader.x",
    "intHeader.99999", "dataEncoding", "traceparent", "tracestate", "baggage", "rpctimeout",
    "HostPorts", "other", "",
)
# Values that hit the parsers' edges; otherwise the input's bytes are the value.
ROUTE_VALUES = (
    "", "0", "-1", "--5", "\u00b2", "\u0664", "\uff14", "1e3", "9" * 5000, "30s", "1h", "0.5ms",
    "99999999999999999999s", "ttheader", "framed", "buffered", "ttheader-framed", "true", "false",
    "base64", "00-00000000000000000000000000000000-0000000000000000-00",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", " echo", "echo\n", "x" * 70000,
)
_ROUTE: List[Any] = []  # (event loop, App, test server) made at the first input, kept for all


def _route_env(ext: Any) -> Tuple[Any, Any, Any]:
    if not _ROUTE:
        import asyncio
        import atexit
        import logging

        from kitex_fast.dapr.core import Component
        from kitex_fast.dapr.h2server import App
        from kitex_fast.testing import KitexTestServer, echo_handler

        # (a line per refused call would drown the run's output; a crash, a bug, still shows)
        logging.getLogger("kitex_fast.dapr").setLevel(logging.ERROR)
        loop = asyncio.new_event_loop()
        server = KitexTestServer({"echo": echo_handler}, service="echo").start()
        app = loop.run_until_complete(_make_app(App, Component, ext))
        _ROUTE.extend((loop, app, server))

        def close() -> None:
            loop.run_until_complete(app.component.close())
            server.stop()
            loop.close()

        atexit.register(close)
    return _ROUTE[0], _ROUTE[1], _ROUTE[2]


async def _make_app(app_type: Any, component_type: Any, ext: Any) -> Any:
    return app_type(component_type(max_instances=8), ext)


def _route_metadata_of(data: bytes, address: str) -> dict:
    """The metadata map that ``data`` describes: (key byte, value byte, length byte, bytes)..."""
    md = {"hostPorts": address, "destService": "echo", "methodName": "echo", "version": "v1"}
    pos = 0
    while pos + 3 <= len(data) and len(md) < 24:
        key = ROUTE_KEYS[data[pos] % len(ROUTE_KEYS)]
        pick, n = data[pos + 1], data[pos + 2]
        raw = data[pos + 3:pos + 3 + n]
        pos += 3 + n
        if key == "":
            key = raw.decode("utf-8", "replace")
        if pick < 64:
            value = ROUTE_VALUES[pick % len(ROUTE_VALUES)]
        elif pick < 96 and key == "hostPorts":
            value = ("127.0.0.1:1", address + "," + address, "127.0.0.1:" + address.rpartition(":")[2] + "x",
                     "127.0.0.1\x00.example.com:1", "[::1]:1")[pick % 5]
        else:
            value = raw.decode("utf-8", "replace")
        if key == "hostPorts" and pick >= 96:
            value = "127.0.0.1:" + value  # (text only: a port, maybe not one, always loopback)
        md[key] = value
    md.pop("registry", None)  # (never a registry: that would go to the network)
    return md


def _invoke_body(data: bytes, metadata: dict) -> bytes:
    from kitex_fast.dapr import h2server

    ext = h2server._load()
    message = ext.protobuf.encode_invoke_response(data, metadata, "get")  # (InvokeRequest's layout)
    return b"\x00" + len(message).to_bytes(4, "big") + message


def route_metadata(ext: Any, knob: int, data: bytes) -> Record:
    # A real round trip per input costs milliseconds, a thousand codec inputs' time: this target
    # runs on one knob in 8, so the codec targets keep most of the fuzz run's bounded budget.
    if knob & 0x38:
        return [("skipped",)]
    import asyncio

    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import h2.settings

    from kitex_fast.testing import echo_request, read_echo_reply

    loop, app, server = _route_env(ext)
    fuzzed = _route_metadata_of(data, server.address)
    healthy = {"hostPorts": server.address, "destService": "echo", "methodName": "echo", "version": "v1"}
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    client.initiate_connection()
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 24})
    timeout = ("5S", "100m", "99999999H", None)[knob % 4]  # (knob bits 0-1; 3-5 select the run)
    streams: dict = {}
    pending: dict = {}  # stream id -> request bytes not sent yet (HTTP/2 flow control)

    def send_some() -> None:
        for sid, body in list(pending.items()):
            room = min(client.local_flow_control_window(sid), client.max_outbound_frame_size)
            if room <= 0:
                continue
            part, rest = body[:room], body[room:]
            try:
                client.send_data(sid, part, end_stream=not rest)
            except h2.exceptions.StreamClosedError:  # (refused early, e.g. too large: it has its status)
                rest = b""
            if rest:
                pending[sid] = rest
            else:
                del pending[sid]

    for name, md, payload in (("fuzzed", fuzzed, echo_request("f")), ("healthy", healthy, echo_request("h"))):
        sid = client.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", PATH.decode()), (":authority", "kitex"),
                   ("content-type", "application/grpc"), ("te", "trailers"), ("x-component-instance", "fuzz")]
        if timeout is not None and name == "fuzzed":  # (the healthy call has all the time it needs)
            headers.append(("grpc-timeout", timeout))
        client.send_headers(sid, headers)
        pending[sid] = _invoke_body(payload, md)
        streams[sid] = name
    status: dict = {}
    replies: dict = {}

    async def exchange() -> None:
        transport = _Transport()
        conn = app.protocol()
        conn.connection_made(transport)
        send_some()
        conn.data_received(client.data_to_send())
        deadline = loop.time() + 20
        while len(status) < 2 and loop.time() < deadline:
            await asyncio.sleep(0.002)
            out, transport.out = bytes(transport.out), bytearray()
            for event in client.receive_data(out) if out else ():
                sid = getattr(event, "stream_id", None)
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    for k, v in event.headers:
                        if k == "grpc-status":
                            status[sid] = v
                elif isinstance(event, h2.events.DataReceived):
                    replies[sid] = replies.get(sid, b"") + event.data
                    client.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.StreamReset):
                    status.setdefault(sid, "reset %d" % event.error_code)
            send_some()
            more = client.data_to_send()
            if more:
                conn.data_received(more)
        conn.connection_lost(None)

    loop.run_until_complete(exchange())
    by_name = {streams[sid]: value for sid, value in status.items()}
    shown = repr(fuzzed)
    shown = shown if len(shown) <= 600 else shown[:600] + "... (%d characters)" % len(shown)
    if "fuzzed" not in by_name:
        raise FuzzFailure("the call with metadata %s never ended (no grpc-status in 20 s)" % shown)
    if not str(by_name["fuzzed"]).isdigit():
        raise FuzzFailure("the call with metadata %s ended without a status: %s" % (shown, by_name["fuzzed"]))
    if by_name.get("healthy") != "0":
        raise FuzzFailure("a well-formed call beside metadata %s got %r" % (shown, by_name.get("healthy")))
    healthy_sid = next(sid for sid, name in streams.items() if name == "healthy")
    from kitex_fast.dapr.proto import contract as pb  # (grpcio's stubs are test dependencies)

    reply = pb.InvokeResponse.FromString(replies.get(healthy_sid, b"")[5:])
    if read_echo_reply(reply.data) != "h,hi Kitex":
        raise FuzzFailure("the well-formed call beside metadata %s got a wrong reply" % shown)
    return [("ok",)]  # (statuses depend on timing and on which path ran: not compared)


TARGETS = {"pb-invoke": pb_invoke, "grpc-unary": grpc_unary, "route-metadata": route_metadata}


def seeds() -> List[Tuple[str, int, bytes]]:
    ext = extension()
    if ext is None:
        return []
    message = ext.protobuf.encode_invoke_response(b"\x80\x01\x00\x01", {"hostPorts": "127.0.0.1:1", "k": ""}, "get")
    framed = b"\x00" + len(message).to_bytes(4, "big") + message
    return [("pb-invoke", 0, message), ("pb-invoke", 0, message + b"\x28\x01"),
            ("grpc-unary", 2, framed), ("grpc-unary", 5, framed), ("grpc-unary", 0, framed),
            ("grpc-unary", 2, b"\x01" + framed[1:]), ("grpc-unary", 2, framed + framed),
            ("grpc-unary", 2, framed[:7]), ("grpc-unary", 2, b""),
            ("route-metadata", 0, b""), ("route-metadata", 1, bytes([10, 3, 0, 8, 4, 0, 5, 8, 0])),
            ("route-metadata", 2, bytes([5, 200, 3]) + b"1ms" + bytes([4, 13, 0, 16, 200, 2]) + b"ok"),
            ("route-metadata", 3, bytes([0, 70, 0, 28, 200, 3]) + b"key" + bytes([21, 9, 0]))]
