"""The compiled component server (``--server compiled``: libnghttp2 + ``_h2server.pyx``) on its own:
HTTP/2 conformance (h2spec), gRPC semantics a grpcio client sees, the protobuf codec against
protobuf's own encoding, and hostile bytes on the socket. The shared behaviour (every component
and daprd test) runs on both servers through the ``impl`` fixture of this folder's conftest."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import stack
from kitex_fast.dapr import h2server

HERE = Path(__file__).resolve().parent

# h2spec cases that do not apply, with the reason. Keyed by "<section>/<case number>".
H2SPEC_EXCLUDED = {
    # libnghttp2 ignores a HEADERS frame on a lower, never-opened stream id instead of failing the
    # connection (lib/nghttp2_session.c session_on_request_headers_received: "we only use
    # connection error if stream ID refers idle stream, or we are sure that stream is
    # half-closed(remote) or closed. Otherwise we just ignore HEADERS for now"), so that late
    # trailers after a RST_STREAM cannot kill a connection. Harmless for gRPC clients.
    "http2/5.1.1/2": "nghttp2 ignores HEADERS on a lower stream id by design",
}


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def compiled():
    why_not = h2server.unavailable()
    if why_not:
        if os.environ.get("KITEX_FAST_EXPECT_H2SERVER") == "1":
            pytest.fail("the compiled component server was expected: %s" % why_not, pytrace=False)
        pytest.skip(why_not)


def test_the_start_log_names_the_server(dapr, impl) -> None:
    assert re.search(r"serving bindings\.kitex on .* server %s" % impl.server, dapr.component.log())


def test_h2spec_passes_every_applicable_case(compiled) -> None:
    binary = os.environ.get("H2SPEC") or shutil.which("h2spec") or str(HERE / "bin" / "h2spec")
    if not os.path.exists(binary):
        _unavailable("h2spec is not built: tests/run.sh installs it into tests/dapr/bin (Go module proxy)")
    with tempfile.TemporaryDirectory(prefix="kf-h2spec-") as d:
        c = stack.Component(os.path.join(d, "sockets"), server="compiled",
                            extra=["--listen-tcp", "127.0.0.1:0"]).start()
        try:
            port = int(re.search(r"also listening on tcp 127\.0\.0\.1:(\d+)", c.log()).group(1))
            report = os.path.join(d, "h2spec.xml")
            proc = subprocess.run([binary, "-h", "127.0.0.1", "-p", str(port), "-o", "5", "-j", report],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
            cases = {}
            for suite in ET.parse(report).getroot():
                for n, case in enumerate(suite.findall("testcase"), 1):
                    bad = case.find("error") if case.find("error") is not None else case.find("failure")
                    cases["%s/%d" % (suite.get("package"), n)] = (case.get("classname"), bad, case.find("skipped"))
            assert c.proc.poll() is None, "the server died under h2spec:\n" + c.log()[-3000:]
        finally:
            assert c.stop() == 0
    failed = {k: (name, bad.text) for k, (name, bad, _) in cases.items() if bad is not None}
    unexpected = {k: v for k, v in failed.items() if k not in H2SPEC_EXCLUDED}
    assert not unexpected, "h2spec failures:\n%s\n%s" % (unexpected, proc.stdout.decode(errors="replace")[-4000:])
    skipped = [k for k, (_, _, skip) in cases.items() if skip is not None]
    assert len(cases) >= 145 and not skipped, (len(cases), skipped)
    # Keep the exclusion list honest: a case that starts passing leaves it.
    assert set(failed) == set(H2SPEC_EXCLUDED), set(H2SPEC_EXCLUDED) - set(failed)


# -- the protobuf codec against protobuf's own encoding ----------------------------------------

def _text(rng, n):
    alphabet = "abcXYZ09-_./ é漢\U0001f600\x00\x7f"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, n)))


def _varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _unknown_fields(rng, low=4):
    """Random fields with numbers the message does not declare, of every wire type."""
    out = b""
    for _ in range(rng.randint(0, 3)):
        field = rng.randint(low, 5000)
        wire = rng.choice((0, 1, 2, 5))
        out += _varint(field << 3 | wire)
        if wire == 0:
            out += _varint(rng.getrandbits(rng.choice((7, 32, 64))))
        elif wire == 1:
            out += rng.randbytes(8)
        elif wire == 5:
            out += rng.randbytes(4)
        else:
            blob = rng.randbytes(rng.randint(0, 20))
            out += _varint(len(blob)) + blob
    return out


def _map_entry(rng, field, key, value, unknown=False):
    """A map entry as any encoder may write it: parts in either order, a part left out when
    empty (and unknown fields inside when asked)."""
    parts = []
    if key or rng.random() < 0.5:
        k = key.encode()
        parts.append(b"\x0a" + _varint(len(k)) + k)
    if value or rng.random() < 0.5:
        v = value.encode()
        parts.append(b"\x12" + _varint(len(v)) + v)
    if unknown:
        parts.append(_unknown_fields(rng, 3))
    rng.shuffle(parts)
    body = b"".join(parts)
    return _varint(field << 3 | 2) + _varint(len(body)) + body


def test_protobuf_codec_matches_protobuf_on_random_messages(compiled) -> None:
    import random

    from kitex_fast.dapr.proto import contract as pb

    ext = h2server._load()
    rng = random.Random(18)
    for _ in range(400):
        data = rng.randbytes(rng.choice((0, 1, 7, 200, 5000)))
        metadata = {_text(rng, 12): _text(rng, 30) for _ in range(rng.randint(0, 6))}
        text = _text(rng, 20)
        # Encoding: every field byte for byte as protobuf writes it, map entries in key order
        # (the wire format leaves map order open; upb's deterministic mode sorts "ab" before "a").
        expected = b"".join(
            [pb.InvokeResponse(data=data).SerializeToString()]
            + [pb.InvokeResponse(metadata={k: metadata[k]}).SerializeToString()
               for k in sorted(metadata, key=lambda k: k.encode())]
            + [pb.InvokeResponse(content_type=text).SerializeToString()])
        if len(metadata) < 2:
            assert expected == pb.InvokeResponse(data=data, metadata=metadata, content_type=text).SerializeToString()
        assert ext.protobuf.encode_invoke_response(data, metadata, text) == expected
        assert ext.protobuf.encode_invoke_response(data, metadata, text, True) == b"\0" + len(expected).to_bytes(4, "big") + expected
        operations = [_text(rng, 8) for _ in range(rng.randint(0, 4))]
        assert ext.protobuf.encode_strings(operations) == pb.ListOperationsResponse(operations=operations).SerializeToString()
        # Decoding: the same values protobuf reads, unknown fields, repeated scalars (the last
        # wins) and any field order included.
        fields = [b"\x0a" + _varint(len(data)) + data] if data or rng.random() < 0.3 else []
        fields += [_map_entry(rng, 2, k, v) for k, v in metadata.items()]
        op = text.encode()
        fields += [b"\x1a" + _varint(len(op)) + op]
        fields += [_unknown_fields(rng)]
        rng.shuffle(fields)
        raw = b"".join(fields)
        ref = pb.InvokeRequest.FromString(raw)
        assert ext.protobuf.decode_invoke_request(raw) == (ref.data, dict(ref.metadata), ref.operation)
        props = b"".join(_map_entry(rng, 1, k, v) for k, v in metadata.items()) + _unknown_fields(rng, 2)
        init = b"\x0a" + _varint(len(props)) + props + _unknown_fields(rng, 2)
        assert ext.protobuf.decode_init_request(init) == dict(pb.OutputBindingInitRequest.FromString(init).metadata.properties)
        # Unknown fields inside a map entry: the entry stays (as protobuf-go, daprd's own, and C++
        # read it; Python's upb moves such an entry whole into the unknown fields instead).
        entry = _map_entry(rng, 2, "k", "v", unknown=True)
        assert ext.protobuf.decode_invoke_request(entry + raw)[1].get("k", "v") == "v"
        # Damaged bytes: our decoder refuses them (ProtobufError) or reads what protobuf reads
        # (map entries aside: damage inside one can make upb move it to the unknown fields).
        cut = bytearray(raw[:rng.randint(0, len(raw))])
        if cut and rng.random() < 0.5:
            cut[rng.randrange(len(cut))] = rng.randrange(256)
        try:
            got = ext.protobuf.decode_invoke_request(bytes(cut))
        except ext.protobuf.ProtobufError:
            continue
        ref = pb.InvokeRequest.FromString(bytes(cut))
        assert (got[0], got[2]) == (ref.data, ref.operation) and set(ref.metadata) <= set(got[1])


def test_response_entries_short_and_long_encode_as_protobuf(compiled) -> None:
    # _put_entry assembles an entry up to 256 bytes of key + value on the stack and appends the
    # rest piece by piece: both, and the sizes around the switch, byte for byte as protobuf.
    from kitex_fast.dapr.proto import contract as pb

    ext = h2server._load()
    for klen, vlen in ((0, 0), (1, 0), (0, 1), (128, 128), (128, 129), (200, 57), (1, 300), (300, 1),
                       (127, 0), (5, 70000)):
        metadata = {"k" * klen: "v" * vlen}
        expected = pb.InvokeResponse(data=b"d", metadata=metadata, content_type="c").SerializeToString()
        assert ext.protobuf.encode_invoke_response(b"d", metadata, "c") == expected, (klen, vlen)


def test_repeated_metadata_texts_come_back_equal_and_shared(compiled) -> None:
    # The decoder keeps recent map texts (_protobuf._map_text): a repeated ASCII key or value is
    # the same str object (decoded and hashed once); a text that lands in the same slot with other
    # bytes, a non-ASCII one, a long one, and invalid UTF-8 decode as if nothing were kept.
    ext = h2server._load()

    def request(pairs):
        return b"".join(b"\x12" + _varint(len(e)) + e for e in (
            b"\x0a" + _varint(len(k)) + k + b"\x12" + _varint(len(v)) + v for k, v in pairs))

    def decode(pairs):
        return ext.protobuf.decode_invoke_request(request(pairs))[1]

    first = decode([(b"hostPorts", b"127.0.0.1:8888"), (b"version", b"v1")])
    again = decode([(b"version", b"v1"), (b"hostPorts", b"127.0.0.1:8888")])
    assert first == again == {"hostPorts": "127.0.0.1:8888", "version": "v1"}
    assert [k for k in first][0] is [k for k in again][1]  # "hostPorts", the same object
    assert first["hostPorts"] is again["hostPorts"]
    # Same length, first, middle and last byte (one slot), other bytes: never the kept one.
    for text in (b"aXbYc", b"aZbWc", b"aXbYc", b"aQbQc"):
        assert decode([(b"k", text)]) == {"k": text.decode()}
    for text in ("caf\u00e9", "caf\u00e9", "x" * 65, "x" * 65, "\u65e5\u672c"):
        assert decode([(b"k", text.encode())]) == {"k": text}
    assert decode([(b"k", b"")]) == {"k": ""}
    decode([(b"k", b"ab\x41cd")])  # "abAcd" kept; 0x81 = 0x41 + 64 lands in its slot, invalid
    with pytest.raises(ext.protobuf.ProtobufError, match="not valid UTF-8"):
        decode([(b"k", b"ab\x81cd")])


def test_routes_that_differ_only_in_version_share_one_fast_route(compiled) -> None:
    # version is required and checked, but sent nowhere: a caller cycling versions of one
    # destination keeps one FastRoute (h2server._shared_route), not one a version; any key that
    # changes the call keeps its own, and a route of a retired client is not handed out again.
    import asyncio

    from kitex_fast.dapr import core

    async def main() -> None:
        component = core.Component(max_clients=2)
        app = h2server.App(component, h2server._load())
        await component.init_status("kitex", {})
        table = app.fast_instance("kitex")

        def route(**changes: str):
            metadata = {"hostPorts": "127.0.0.1:1", "destService": "echo", "methodName": "echo",
                        "version": "v1", "traceparent": core.UNTRACED, **changes}
            key = frozenset((k, v) for k, v in metadata.items() if app.fast_key("kitex", k) == component.KEY_ROUTE)
            return app.fast_route("kitex", metadata, key)

        first = route()
        assert first is not None and all(route(version="v%d" % i) is first for i in range(2, 50))
        assert len(table.routes) == 49 and len(table.shared) == 1
        other = route(methodName="other")
        assert other is not None and other is not first and other.options.method_name == "other"
        assert route(rpcTimeout="5s") not in (None, first, other)
        assert route(version="") is None  # (still checked: the general path answers it)
        route(hostPorts="127.0.0.1:2")
        route(hostPorts="127.0.0.1:3")  # (max_clients 2: the first destination's client is retired)
        assert first.client.retired
        again = route(version="v50")
        assert again is not None and again is not first and not again.client.retired
        assert route(version="v51") is again
        await component.close()

    asyncio.run(main())


def test_grpc_message_is_percent_encoded(compiled) -> None:
    ext = h2server._load()
    assert ext.server.percent_encode("a b%c\né") == b"a b%25c%0A%C3%A9"


# -- gRPC semantics through grpcio, on the compiled server -------------------------------------

@pytest.fixture
def compiled_component(compiled):
    with tempfile.TemporaryDirectory(prefix="kf-h2-") as d:
        c = stack.Component(os.path.join(d, "sockets"), server="compiled").start()
        try:
            yield c
        finally:
            assert c.stop() == 0


def _stub(component):
    import grpc

    from kitex_fast.dapr.proto import contract as pb

    return grpc.insecure_channel("unix:" + component.socket, options=[("grpc.max_send_message_length", -1)]), pb


def test_too_large_a_message_is_refused_with_resource_exhausted(compiled_component) -> None:
    import grpc

    ch, pb = _stub(compiled_component)
    with ch:
        stub = pb.OutputBindingStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            stub.Invoke(pb.InvokeRequest(operation="get", data=b"x" * (4 * 1024 * 1024 + 1)), timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in info.value.details()
        assert list(stub.ListOperations(pb.ListOperationsRequest(), timeout=30).operations) == ["get"]


def test_compressed_messages_are_refused_with_unimplemented(compiled_component) -> None:
    import grpc

    ch, pb = _stub(compiled_component)
    with ch:
        stub = pb.OutputBindingStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            stub.Invoke(pb.InvokeRequest(operation="get", data=b"y" * 4096), timeout=30,
                        compression=grpc.Compression.Gzip)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "compressed" in info.value.details()


def test_unknown_methods_and_non_ascii_errors(compiled_component) -> None:
    import grpc

    ch, pb = _stub(compiled_component)
    with ch:
        nope = ch.unary_unary("/dapr.proto.components.v1.OutputBinding/Nope",
                              request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as info:
            nope(b"", timeout=30)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # A status text with non-ASCII travels percent-encoded and arrives as it was.
        with pytest.raises(grpc.RpcError) as info:
            pb.OutputBindingStub(ch).Invoke(pb.InvokeRequest(operation="get", data=b"x", metadata={
                "hostPorts": "127.0.0.1:1", "destService": "é", "methodName": "m", "version": "v1",
                "rpcTimeout": "soon\u00e9"}), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'soon\u00e9'" in info.value.details()


# -- hostile bytes on the socket: each gets an error, nothing is kept ----------------------------

class RawClient:
    """A plain HTTP/2 client (python-hyper h2) on the component's socket, to send what no gRPC
    client would."""

    INVOKE = "/dapr.proto.components.v1.OutputBinding/Invoke"

    def __init__(self, path: str) -> None:
        import socket

        import h2.config
        import h2.connection

        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.sock.settimeout(30)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def open(self, path: str = INVOKE, data: bytes = b"", end: bool = False, extra=()) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                                     (":authority", "kitex"), ("content-type", "application/grpc"),
                                     ("te", "trailers"), ("x-component-instance", "hostile"), *extra],
                               end_stream=end and not data)
        if data:
            self.conn.send_data(sid, data, end_stream=end)
        return sid

    def until(self, done) -> list:
        """Events until ``done(events)`` or the server closes (then also a None)."""
        import h2.exceptions

        events: list = []
        while not done(events):
            data = self.sock.recv(1 << 16)
            if not data:
                events.append(None)
                break
            try:
                events += self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                # frames after the server's GOAWAY (h2 has closed the connection): not ours to judge
                events.append(None)
                break
            self.flush()
        return events

    def close(self) -> None:
        self.sock.close()


def _proc_usage(pid: int):
    """(RSS in KiB, open fds) of a process, from /proc."""
    with open("/proc/%d/status" % pid) as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir("/proc/%d/fd" % pid))


def _ended(sid):
    import h2.events

    return lambda events: any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid
                              or e is None for e in events)


def _status(events, sid) -> str:
    import h2.events

    for e in events:
        if isinstance(e, (h2.events.ResponseReceived, h2.events.TrailersReceived)) and e.stream_id == sid:
            for k, v in e.headers:
                if k == "grpc-status":
                    return v
    return ""


def test_hostile_input_gets_errors_and_leaves_nothing_behind(compiled_component) -> None:
    import socket

    import h2.events

    c = compiled_component
    pid = c.proc.pid

    def rounds():
        # 1. Garbage instead of the HTTP/2 preface: the connection is closed.
        s = socket.socket(socket.AF_UNIX)
        s.connect(c.socket)
        s.settimeout(30)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 4)
        while s.recv(1 << 16):
            pass
        s.close()
        # 2. A 100 MiB length prefix: RESOURCE_EXHAUSTED at once, then RST_STREAM (no 100 MiB wait).
        client = RawClient(c.socket)
        sid = client.open(data=b"\x00" + (100 << 20).to_bytes(4, "big") + b"abc")
        client.flush()
        events = client.until(_ended(sid))
        assert _status(events, sid) == "8", events
        # 3. Half-open streams: a request that stops in the middle of its message, then one that
        # never sends a message at all; the client goes away with both open.
        client.open(data=b"\x00\x00\x00\x00\x64" + b"x" * 10)
        client.open()
        client.flush()
        # 4. 10,000 streams opened and abandoned (RST_STREAM CANCEL half way through the message),
        # in batches within the connection's flow-control window (65,535 bytes until the
        # server's WINDOW_UPDATEs are read). That is the "rapid reset" attack (CVE-2023-44487):
        # libnghttp2 ends such a connection with GOAWAY INTERNAL_ERROR after a burst of 1,000
        # resets (lib/nghttp2_session.c session_update_stream_reset_ratelim, nghttp2 1.57.0;
        # Debian's 1.52.0-1+deb12u1 carries it); the client then reconnects and goes on.
        abandoned, goaways = 0, []
        while abandoned < 10000:
            for _ in range(250):
                sid = client.open(data=b"\x00\x00\x00\x10\x00" + b"y" * 100)
                client.conn.reset_stream(sid, error_code=8)
            abandoned += 250
            client.flush()
            ping = b"%08d" % abandoned
            client.conn.ping(ping)
            client.flush()
            events = client.until(lambda ev: any(e is None or isinstance(e, h2.events.ConnectionTerminated)
                                                 or isinstance(e, h2.events.PingAckReceived) and e.ping_data == ping
                                                 for e in ev))
            ended = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
            if ended or None in events:
                goaways += [e.error_code for e in ended]
                client.close()
                client = RawClient(c.socket)
        assert set(goaways) <= {2, 11}, goaways  # INTERNAL_ERROR (the reset limit) or ENHANCE_YOUR_CALM
        sid = client.open("/dapr.proto.components.v1.OutputBinding/ListOperations", data=b"\x00" * 5, end=True)
        client.flush()
        events = client.until(_ended(sid))
        assert _status(events, sid) == "0", events
        assert any(isinstance(e, h2.events.DataReceived) and e.data == b"\x00\x00\x00\x00\x05\x0a\x03get" for e in events)
        client.close()
        # 5. A client that connects and goes away mid-preface.
        s = socket.socket(socket.AF_UNIX)
        s.connect(c.socket)
        s.sendall(b"PRI * HTTP/2.0\r\n")
        s.close()

    rounds()  # warm-up: first-use allocations (code paths, free lists, the instance's binding)
    before = _proc_usage(pid)
    for _ in range(3):
        rounds()
    deadline = 200  # the server closes its side of each connection when it sees the client's EOF
    while _proc_usage(pid)[1] > before[1] and deadline:
        import time

        time.sleep(0.05)
        deadline -= 1
    after = _proc_usage(pid)
    assert after[1] <= before[1], "fds leaked: %s -> %s" % (before, after)
    # 30,000 more abandoned streams and 3 more 100 MiB prefixes: a leak of even 100 bytes a
    # stream would show as 3 MiB.
    assert after[0] - before[0] < 3 * 1024, "RSS grew from %d to %d KiB" % (before[0], after[0])
    print("component RSS %d -> %d KiB, fds %d -> %d" % (before[0], after[0], before[1], after[1]))
    assert c.proc.poll() is None
    assert "not HTTP/2" in c.log()


def test_a_malformed_grpc_timeout_is_refused_with_internal(compiled_component) -> None:
    import h2.events

    client = RawClient(compiled_component.socket)
    try:
        for value in ("", "5", "123456789S", "1x", "-1S", "1.5S", "éS"):
            sid = client.open("/dapr.proto.components.v1.OutputBinding/ListOperations", data=b"\x00" * 5,
                              end=True, extra=[("grpc-timeout", value)])
            client.flush()
            events = client.until(_ended(sid))
            assert _status(events, sid) == "13", (value, events)
            trailers = [dict(e.headers) for e in events
                        if isinstance(e, (h2.events.TrailersReceived, h2.events.ResponseReceived)) and e.stream_id == sid]
            assert any("malformed grpc-timeout" in t.get("grpc-message", "") for t in trailers), (value, trailers)
        # A well-formed one is served.
        sid = client.open("/dapr.proto.components.v1.OutputBinding/ListOperations", data=b"\x00" * 5,
                          end=True, extra=[("grpc-timeout", "99999999n")])
        client.flush()
        assert _status(client.until(_ended(sid)), sid) == "0"
    finally:
        client.close()


def test_connections_past_the_bound_are_closed_and_the_first_ones_served(compiled) -> None:
    import socket

    with tempfile.TemporaryDirectory(prefix="kf-h2-") as d:
        c = stack.Component(os.path.join(d, "sockets"), server="compiled", extra=["--max-connections", "3"]).start()
        try:
            held = [RawClient(c.socket) for _ in range(3)]
            extra = socket.socket(socket.AF_UNIX)
            extra.connect(c.socket)
            extra.settimeout(30)
            try:
                assert extra.recv(100) == b""  # closed at once, before the server's preface
            except ConnectionResetError:
                pass  # (the same: closed at once)
            extra.close()
            for client in held:  # the first three are served
                sid = client.open("/dapr.proto.components.v1.OutputBinding/ListOperations", data=b"\x00" * 5, end=True)
                client.flush()
                assert _status(client.until(_ended(sid)), sid) == "0"
            held.pop().close()
            deadline = time.monotonic() + 10
            while True:  # once one closes (the server sees it a moment later), a new one is served
                client = None
                try:
                    client = RawClient(c.socket)
                    sid = client.open("/dapr.proto.components.v1.OutputBinding/ListOperations", data=b"\x00" * 5, end=True)
                    client.flush()
                    events = client.until(_ended(sid))
                except (ConnectionResetError, BrokenPipeError):
                    events, sid = [None], 0  # refused: still at the bound
                if _status(events, sid) == "0" or time.monotonic() > deadline:
                    break
                if client is not None:
                    client.close()
                time.sleep(0.05)
            assert _status(events, sid) == "0", events
            held.append(client)
            for client in held:
                client.close()
        finally:
            assert c.stop() == 0
        assert "connections are open on the socket already" in c.log()


def test_the_compiled_server_runs_on_uvloop_when_installed(compiled_component) -> None:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        expected = "asyncio loop"
    else:
        expected = "uvloop loop"
    assert "server compiled (libnghttp2, %s)" % expected in compiled_component.log()


def test_listen_tcp_takes_ascii_digits_only() -> None:
    # (the package's one number check, pool.ascii_int: int() would read "\uff14\uff10" as port 40)
    assert h2server._tcp("127.0.0.1:0") == ("127.0.0.1", 0)
    assert h2server._tcp(":8080") == ("127.0.0.1", 8080)
    for bad in ("127.0.0.1:\uff14\uff10", "127.0.0.1:+5", "127.0.0.1: 5", "127.0.0.1:5_0", "127.0.0.1:65536",
                "127.0.0.1:"):
        with pytest.raises(ValueError, match="--listen-tcp"):
            h2server._tcp(bad)


def test_the_compiled_rooms_import_down_only(compiled) -> None:
    # _h2server -> _invoke -> _protobuf, and none of them holds anything of the package above it
    # (core, binding, errors come in from h2server.App): no module and no object defined there.
    import types

    ext = h2server._load()
    below = {"_h2server": {"kitex_fast.dapr._invoke", "kitex_fast.dapr._protobuf"},
             "_invoke": {"kitex_fast.dapr._protobuf"}, "_protobuf": set()}
    for module in (ext.server, ext.invoke, ext.protobuf):
        short = module.__name__.rpartition(".")[2]
        allowed = below[short] | {module.__name__}
        for name, value in vars(module).items():
            if isinstance(value, types.ModuleType):
                assert not value.__name__.startswith("kitex_fast") or value.__name__ in allowed, (short, name)
            owner = getattr(value, "__module__", None)
            if isinstance(owner, str) and owner.startswith("kitex_fast"):
                assert owner in allowed, (short, name, owner)
