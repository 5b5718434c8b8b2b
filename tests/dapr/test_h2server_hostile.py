"""Hostile clients on the component's socket (issue 24): what one connection or call does ends in
its own status, and never costs another caller its reply. Real components (``stack.Component``),
grpcio and raw HTTP/2 (python-hyper h2) clients on their socket; memory bounds are RSS deltas with
generous margins, never timings."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import tempfile
import threading
import time

import pytest

import stack
from kitex_fast.dapr import h2server
from test_h2server import RawClient, _ended, _proc_usage, _status, _stub, compiled  # noqa: F401

LIST = "/dapr.proto.components.v1.OutputBinding/ListOperations"
REFLECT = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def _server_available(server: str) -> None:
    if server == "compiled":
        why_not = h2server.unavailable()
        if why_not:
            if os.environ.get("KITEX_FAST_EXPECT_H2SERVER") == "1":
                pytest.fail("the compiled component server was expected: %s" % why_not, pytrace=False)
            pytest.skip(why_not)


@contextlib.contextmanager
def _component(server: str = "compiled", extra=(), implementation=None):
    with tempfile.TemporaryDirectory(prefix="kf-h2h-") as d:
        c = stack.Component(os.path.join(d, "sockets"), server=server, extra=list(extra),
                            implementation=implementation).start()
        try:
            yield c
        finally:
            assert c.stop() == 0


def _list_ok(client: RawClient) -> None:
    """The connection still serves: ListOperations answers grpc-status 0."""
    sid = client.open(LIST, data=b"\x00" * 5, end=True)
    client.flush()
    assert _status(client.until(_ended(sid)), sid) == "0"


def _sync(client: RawClient, tag: bytes) -> list:
    """Read until the server answers a PING: every frame it sent before is in (WINDOW_UPDATEs too)."""
    import h2.events

    client.conn.ping(tag)
    client.flush()
    return client.until(lambda ev: any(e is None or isinstance(e, h2.events.PingAckReceived) and e.ping_data == tag
                                       for e in ev))


def _send(client: RawClient, sid: int, data: bytes, end: bool = False) -> list:
    """DATA within the flow-control windows, waiting for the server's WINDOW_UPDATEs; the events
    read meanwhile. Stops early when the server ended or reset the stream."""
    import h2.exceptions

    events: list = []
    pos, n = 0, 0
    while pos < len(data):
        size = min(len(data) - pos, client.conn.local_flow_control_window(sid), client.conn.max_outbound_frame_size)
        if size <= 0:
            n += 1
            events += _sync(client, b"%08d" % n)
            if _ended(sid)(events):
                return events
            continue
        try:
            client.conn.send_data(sid, data[pos:pos + size])
        except h2.exceptions.StreamClosedError:
            return events
        pos += size
    if end:
        client.conn.end_stream(sid)
    client.flush()
    return events


# -- item 3: an error text of any size is sent bounded, and every stream ends -------------------

@pytest.mark.parametrize("server, calls", [("compiled", 1100), ("grpcio", 20)])
def test_huge_error_texts_are_cut_and_every_stream_ends(server, calls) -> None:
    import grpc

    _server_available(server)
    # An rpcTimeout of 12,000 "é": its MetadataError quoted it whole, 72 KB once percent-encoded,
    # more than a header block may hold: the trailers never left and the stream stayed open, until
    # the connection's 1,024 stream slots were gone (~1,030 calls).
    metadata = {"hostPorts": "127.0.0.1:1", "destService": "d", "methodName": "m", "version": "v1",
                "rpcTimeout": "\u00e9" * 12000}
    with _component(server) as c:
        ch, pb = _stub(c)
        with ch:
            stub = pb.OutputBindingStub(ch)
            for _ in range(calls):
                with pytest.raises(grpc.RpcError) as info:
                    stub.Invoke(pb.InvokeRequest(operation="get", data=b"x", metadata=metadata), timeout=30)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
                details = info.value.details()
                assert "rpcTimeout" in details and len(details.encode()) <= 1100, details[:200]
            assert list(stub.ListOperations(pb.ListOperationsRequest(), timeout=30).operations) == ["get"]


def test_status_texts_are_cut_the_same_way_on_both_servers(compiled) -> None:
    from kitex_fast.dapr import component

    ext = h2server._load()
    for text in ("", "short", "x" * 1024, "x" * 1025, "\u00e9" * 600, "\U0001f600" * 300, "a\udcff" * 600):
        ours = ext.server.status_text(text)
        assert ours == component._status_text(text)
        assert len(ours.encode("utf-8")) <= 1024 + 40
        if len(text.encode("utf-8", "backslashreplace")) > 1024:
            assert ours.endswith("(cut: %d bytes)" % len(text.encode("utf-8", "backslashreplace")))
        assert len(ext.server.percent_encode(ours)) <= 3 * 1024 + 40


# -- item 4: a peer that takes no reply bytes cannot make them pile up ---------------------------

def test_a_zero_window_client_cannot_pile_up_replies(compiled) -> None:
    import h2.events
    import h2.settings

    with _component() as c:
        pid = c.proc.pid
        healthy = RawClient(c.socket)
        _list_ok(healthy)
        client = RawClient(c.socket)
        # INITIAL_WINDOW_SIZE 0: the server may open no stream's window, so no DATA may leave.
        client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        client.flush()
        ext = h2server._load()
        request = ext.protobuf.encode_fields([(4, b"dapr.proto.components.v1.OutputBinding")], True)  # 45 bytes
        reply = len(h2server.reflection_reply(ext.protobuf.encode_fields([(4, b"dapr.proto.components.v1.OutputBinding")])))
        before = _proc_usage(pid)[0]
        # 120,000 reflection requests (5 MB) ask for 120,000 replies of 1.4 KB: 170 MB that the
        # server held before the bound. Over the reflection stream, and over new streams.
        sid, resets, sent = client.open(REFLECT), [], 0
        while sent < 120000:
            if sid is None:
                sid = client.open(REFLECT)
            events = _send(client, sid, request * 1000)
            events += _sync(client, b"s%07d" % sent)
            sent += 1000
            assert None not in events, "the server closed the zero-window connection"
            gone = [e for e in events if isinstance(e, h2.events.StreamReset) and e.stream_id == sid]
            if gone:
                resets.append(gone[0].error_code)
                sid = None
        after = _proc_usage(pid)[0]
        assert after - before < 64 * 1024, "RSS grew from %d to %d KiB (%d replies of %d bytes asked)" % (
            before, after, sent, reply)
        # Past 16 MiB of replies queued the stream is reset, and new ones are refused until it drains.
        assert resets and set(resets) <= {2, 7}, resets
        _list_ok(healthy)  # other connections are served meanwhile
        client.close()
        # Exactly past the budget on one stream: a new stream is refused (REFUSED_STREAM, never
        # processed); once the full stream is reset, new streams are served again.
        client = RawClient(c.socket)
        client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        client.flush()
        full = client.open(REFLECT)
        count = ext.server.DEFAULT_MAX_QUEUED // reply + 1
        for start in range(0, count, 1000):
            _send(client, full, request * min(1000, count - start))
        _sync(client, b"full0001")
        refused = client.open(LIST, data=b"\x00" * 5, end=True)
        client.flush()
        events = client.until(_ended(refused))
        assert [e.error_code for e in events if isinstance(e, h2.events.StreamReset) and e.stream_id == refused] == [7]
        events = _send(client, full, request)
        if not _ended(full)(events):
            events += client.until(_ended(full))
        assert any(isinstance(e, h2.events.StreamReset) and e.stream_id == full for e in events), events
        sid = client.open("/dapr.proto.components.v1.OutputBinding/Nope", data=b"\x00" * 5, end=True)
        client.flush()
        assert _status(client.until(_ended(sid)), sid) == "12"  # (trailers only: no DATA to wait for)
        client.close()
        healthy.close()
        assert c.proc.poll() is None


# -- item 6: one budget for buffered request bytes, for the whole process -----------------------

def test_request_bytes_are_bounded_for_the_process_not_per_connection(compiled) -> None:
    with _component(extra=["--max-request-buffer", "1000000"]) as c:
        first, second = RawClient(c.socket), RawClient(c.socket)
        prefix = b"\x00" + (900000).to_bytes(4, "big")
        # 600,000 bytes of a 900,000-byte message held for the first connection...
        a = first.open()
        assert _status(_send(first, a, prefix + b"a" * 600000), a) == ""
        assert _status(_sync(first, b"held0001"), a) == ""
        # ... so 600,000 more on another connection would pass 1,000,000: RESOURCE_EXHAUSTED for
        # that stream, and its connection goes on.
        b = second.open()
        events = _send(second, b, prefix + b"b" * 600000)
        if not _ended(b)(events):
            events += second.until(_ended(b))
        assert _status(events, b) == "8", events
        texts = [dict(e.headers).get("grpc-message", "") for e in events
                 if getattr(e, "stream_id", None) == b and hasattr(e, "headers")]
        assert any("request bytes already" in t for t in texts), texts
        _list_ok(second)
        # Once the first lets its bytes go, the second may hold as many.
        first.conn.reset_stream(a, error_code=8)
        first.flush()
        _sync(first, b"held0002")
        b = second.open()
        assert _status(_send(second, b, prefix + b"b" * 600000), b) == ""
        assert _status(_sync(second, b"held0003"), b) == ""
        first.close()
        second.close()


# -- item 7: silent connections do not hold their slot forever ----------------------------------

@pytest.mark.parametrize("server", ["compiled", "grpcio"])
def test_silent_and_idle_connections_are_closed(server) -> None:
    import h2.events

    _server_available(server)
    with _component(server, extra=["--handshake-timeout", "1", "--idle-timeout", "3"]) as c:
        # A squatter that sends nothing, and one that stops after the preface's first line: both
        # are closed (before, each held a --max-connections slot for good).
        for first in (b"", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):
            s = socket.socket(socket.AF_UNIX)
            s.connect(c.socket)
            s.settimeout(30)
            if first:
                s.sendall(first)
            try:
                while s.recv(1 << 16):  # the server's SETTINGS, then EOF
                    pass
            except ConnectionResetError:
                pass  # (closed as well)
            s.close()
        # An idle connection: GOAWAY NO_ERROR naming the last stream it served, then EOF.
        client = RawClient(c.socket)
        sid = client.open(LIST, data=b"\x00" * 5, end=True)
        client.flush()
        events = client.until(_ended(sid))
        assert _status(events, sid) == "0"
        events = client.until(lambda ev: None in ev)
        goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert goaway, events
        if server == "compiled":
            assert goaway[-1].error_code == 0 and goaway[-1].last_stream_id == sid, events
        # (grpcio's GOAWAY says INTERNAL_ERROR "connection idle": grpc-core's own choice)
        client.close()
        # A connection with a stream open is not idle, however long the stream takes.
        client = RawClient(c.socket)
        sid = client.open(LIST, data=b"\x00\x00")
        client.flush()
        time.sleep(4.5)
        client.conn.send_data(sid, b"\x00\x00\x00", end_stream=True)
        client.flush()
        assert _status(client.until(_ended(sid)), sid) == "0"
        client.close()
        log = c.log()
    if server == "compiled":
        assert "--handshake-timeout" in log and "--idle-timeout" in log


# -- the advertised MAX_HEADER_LIST_SIZE holds ----------------------------------------------------

def test_a_header_list_over_the_advertised_size_is_refused(compiled) -> None:
    with _component() as c:
        client = RawClient(c.socket)
        # 60 KB of headers: within 64 KiB, served.
        sid = client.open(LIST, data=b"\x00" * 5, end=True,
                          extra=[("x-pad-%d" % i, "p" * 3000) for i in range(20)])
        client.flush()
        assert _status(client.until(_ended(sid)), sid) == "0"
        # 80 KB (no one field near nghttp2's own 64 KiB per-field limit): RESOURCE_EXHAUSTED.
        sid = client.open(LIST, data=b"\x00" * 5, end=True,
                          extra=[("x-pad-%d" % i, "q" * 4000) for i in range(20)])
        client.flush()
        events = client.until(_ended(sid))
        assert _status(events, sid) == "8", events
        _list_ok(client)  # the connection goes on
        client.close()


# -- item 1, the connection's half: per-call code that raises ends only its call -----------------

def _echo_metadata(address: str, **extra: str) -> dict:
    return {"hostPorts": address, "destService": "echo", "methodName": "echo", "version": "v1", **extra}


@pytest.mark.parametrize("implementation", ["c", "py"])
def test_a_call_that_raises_leaves_the_calls_in_flight_on_its_connection(compiled, implementation) -> None:
    import grpc

    from kitex_fast.testing import KitexTestServer, echo_handler, echo_request, read_echo_reply

    release = threading.Event()

    def slow_echo(request):
        release.wait(30)
        return echo_handler(request)

    with KitexTestServer({"echo": slow_echo}, service="echo", implementation=implementation) as server, \
            _component(implementation=implementation) as c:
        ch, pb = _stub(c)
        with ch:
            stub = pb.OutputBindingStub(ch)
            data = echo_request("hi", implementation=implementation)
            healthy = [stub.Invoke.future(pb.InvokeRequest(operation="get", data=data,
                                                           metadata=_echo_metadata(server.address)), timeout=60)
                       for _ in range(3)]
            deadline = time.monotonic() + 30
            while server.calls < 3 and time.monotonic() < deadline:
                time.sleep(0.01)  # (all three are in flight at the Kitex server)
            # "--5" made the route's option parsing raise an untyped ValueError on the compiled
            # path, and the connection, with the three calls on it, was dropped.
            with pytest.raises(grpc.RpcError) as info:
                stub.Invoke(pb.InvokeRequest(operation="get", data=data, metadata=_echo_metadata(
                    server.address, maxConnections="--5")), timeout=30)
            assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL), info.value
            release.set()
            for fut in healthy:
                assert read_echo_reply(fut.result().data, implementation=implementation) == "hi,hi Kitex"
        assert c.proc.poll() is None
        assert "connection dropped" not in c.log()


class _App:
    """The Python side of a hand-driven Connection whose per-call code raises for one instance."""

    def __init__(self) -> None:
        self.crashed: list = []
        self.invoked: list = []

    def operations(self, name: str) -> list:
        if name == "hostile":
            raise RuntimeError("per-call code failed\nwith a forged line")
        return ["get"]

    def invoke(self, conn, sid, name, op, data, md, timeout):
        self.invoked.append(sid)

        class Task:
            def done(self) -> bool:
                return True

            def cancel(self) -> None:
                pass

        return Task()

    def call_crashed(self, conn, name, exc):
        self.crashed.append((name, exc))
        return 13, "%s: %s" % (type(exc).__name__, exc)

    def connection_error(self, conn, exc):
        raise AssertionError("the connection was dropped: %r" % (exc,))

    def protocol_error(self, conn, text, first):
        raise AssertionError("refused: %s" % text)

    def connection_done(self, conn) -> None:
        pass


def test_per_call_exceptions_end_one_stream_on_a_hand_driven_connection(compiled) -> None:
    """The same rule with no component rules in between: whatever per-call code raises, the
    stream gets a status and the other streams on the connection are answered."""
    import h2.config
    import h2.connection
    import h2.events

    ext = h2server._load()
    app = _App()

    class Transport:
        out = bytearray()

        def write(self, data: bytes) -> None:
            self.out += data

        def can_write_eof(self) -> bool:
            return False

        def close(self) -> None:
            pass

        abort = close

    transport = Transport()
    conn = ext.server.Connection(app)
    conn.connection_made(transport)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    client.initiate_connection()

    def headers(path: str, instance: str):
        return [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "k"),
                ("content-type", "application/grpc"), ("x-component-instance", instance)]

    message = ext.protobuf.encode_invoke_response(b"x", {}, "get", True)  # (InvokeRequest's layout)
    invoke = client.get_next_available_stream_id()
    client.send_headers(invoke, headers("/dapr.proto.components.v1.OutputBinding/Invoke", "good"))
    client.send_data(invoke, message, end_stream=True)
    hostile = client.get_next_available_stream_id()
    client.send_headers(hostile, headers(LIST, "hostile"))
    client.send_data(hostile, b"\x00" * 5, end_stream=True)
    listed = client.get_next_available_stream_id()
    client.send_headers(listed, headers(LIST, "good"))
    client.send_data(listed, b"\x00" * 5, end_stream=True)
    conn.data_received(client.data_to_send())
    assert app.invoked == [invoke]  # the Invoke in flight
    conn.reply_invoke(invoke, b"reply", {}, "")
    events = client.receive_data(bytes(transport.out))
    assert _status(events, hostile) == "13" and _status(events, listed) == "0" and _status(events, invoke) == "0"
    assert [type(exc) for _, exc in app.crashed] == [RuntimeError] and app.crashed[0][0] == "hostile"
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    # a reply that cannot be encoded (a str that is no UTF-8) ends its own stream the same way
    again = client.get_next_available_stream_id()
    client.send_headers(again, headers("/dapr.proto.components.v1.OutputBinding/Invoke", "good"))
    client.send_data(again, message, end_stream=True)
    transport.out = bytearray()
    conn.data_received(client.data_to_send())
    conn.reply_invoke(again, b"", {"k": "\udcff"}, "")
    events = client.receive_data(bytes(transport.out))
    assert _status(events, again) == "13", events
    assert conn.open_streams == 0 and conn.buffered_bytes == 0 and conn.queued_bytes == 0
    conn.connection_lost(None)


# -- item 7 with daprd: its idle connection ends with GOAWAY, and its next call reconnects --------

def test_daprd_reconnects_after_an_idle_close(impl, daprd_binary, kitex_servers) -> None:
    from kitex_fast.testing import echo_request, read_echo_reply

    body = {"operation": "get", "data": base64.b64encode(echo_request("idle", implementation=impl.name)).decode(),
            "metadata": _echo_metadata(kitex_servers["default"].address, dataEncoding="base64")}
    with stack.DaprStack(daprd_binary, {"kitex": {}}, implementation=impl.name,
                         server=impl.server, component_args=["--idle-timeout", "2"]) as dapr:
        for _ in range(2):
            status, _, reply = dapr.daprd.http_invoke("kitex", body)
            assert status == 200, reply
            assert read_echo_reply(reply, implementation=impl.name) == "idle,hi Kitex"
            deadline = time.monotonic() + 30
            while impl.server == "compiled" and "--idle-timeout" not in dapr.component.log():
                assert time.monotonic() < deadline, "no idle close:\n" + dapr.component.log()[-3000:]
                time.sleep(0.2)  # daprd's connection had no stream for 2 s: GOAWAY, closed
            if impl.server == "grpcio":
                time.sleep(3)
        assert "ERROR" not in dapr.component.log()
