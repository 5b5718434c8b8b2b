"""The Dapr binding end to end against the Python test server and misbehaving peers, on both
implementations. The same behaviours against real Kitex servers live in tests/interop."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from kitex_fast import (
    CONTENT_TYPE,
    ApplicationError,
    BizStatusError,
    Client,
    ConnectError,
    ConnectionClosedError,
    InvokeRequest,
    KitexOutputBinding,
    MetadataError,
    ProtocolError,
    ResponseMismatchError,
    RPCTimeoutError,
    UnsupportedOperationError,
    codec,
)
from kitex_fast.testing import (
    KitexTestServer,
    echo_handler,
    echo_request,
    echo_result,
    read_echo_args,
    read_echo_reply,
)

from .servers import ScriptedServer, free_port, read_request, reply_bytes

TRANSPORTS = list(codec.TRANSPORTS)


def biz_handler(request):
    raise BizStatusError(404, "no such user", {"user": read_echo_args(request.body)})


def fail_handler(request):
    raise RuntimeError("database unavailable")


def slow_handler(request):
    time.sleep(float(read_echo_args(request.body)))
    return echo_result("late")


@pytest.fixture
def server(impl):
    handlers = {"echo": echo_handler, "biz": biz_handler, "fail": fail_handler, "slow": slow_handler}
    with KitexTestServer(handlers, service="echo", implementation=impl.name) as srv:
        yield srv


@pytest.fixture
def binding(impl):
    with KitexOutputBinding(implementation=impl.name) as b:
        yield b


def meta(address: str, **extra: str) -> dict:
    out = {"hostPorts": address, "destService": "echo", "methodName": "echo", "version": "v1"}
    out.update(extra)
    return out


def test_operations(binding) -> None:
    assert binding.operations() == ["get"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_dapr_echo_scenario_on_every_transport(binding, server, transport) -> None:
    response = binding.invoke(InvokeRequest("get", echo_request("hello dapr"), meta(server.address, transport=transport)))
    assert read_echo_reply(response.data) == "hello dapr,hi Kitex"
    assert response.content_type == "application/vnd.apache.thrift.binary"
    assert response.metadata["transport"] == transport
    assert response.metadata["messageType"] == "reply"
    assert response.metadata["methodName"] == "echo"
    assert response.metadata["endpoint"] == server.address
    header = codec.parse_message(response.data)
    assert str(header.seq_id) == response.metadata["seqId"] and header.seq_id != 0


def test_response_metadata_off_by_request_yaml_or_surface_default(impl, server) -> None:
    request = echo_request("quiet")
    with KitexOutputBinding(implementation=impl.name) as plain:
        for extra, wanted in (({}, True), ({"responseMetadata": "false"}, False), ({"responseMetadata": "True"}, True)):
            for _ in range(2):  # a new route, then the cached route (the compiled BindingPath)
                response = plain.invoke(InvokeRequest("get", request, meta(server.address, **extra)))
                assert read_echo_reply(response.data) == "quiet,hi Kitex"
                assert bool(response.metadata) is wanted and response.content_type == CONTENT_TYPE
        plain.init({"responseMetadata": "false"})  # a YAML's default
        assert plain.invoke(InvokeRequest("get", request, meta(server.address))).metadata == {}
        assert plain.invoke(InvokeRequest("get", request, meta(server.address, responseMetadata="true"))).metadata
        with pytest.raises(MetadataError, match="metadata field responseMetadata: 'sometimes' is not true or false"):
            plain.invoke(InvokeRequest("get", request, meta(server.address, responseMetadata="sometimes")))
    # A surface's own default (the Dapr component's): below the YAML's, which may turn it back on.
    with KitexOutputBinding(implementation=impl.name, defaults={"responseMetadata": "false"}) as quiet:
        assert quiet.invoke(InvokeRequest("get", request, meta(server.address))).metadata == {}
        quiet.init({"responseMetadata": "true"})
        assert quiet.invoke(InvokeRequest("get", request, meta(server.address))).metadata["transport"] == "framed"
        quiet.init({})
        assert quiet.invoke(InvokeRequest("get", request, meta(server.address))).metadata == {}
    with pytest.raises(MetadataError, match="responseMetadata"):
        KitexOutputBinding(defaults={"responseMetadata": "maybe"})
    with KitexOutputBinding(implementation=impl.name) as b, pytest.raises(MetadataError, match="responseMetadata: 'nah'"):
        b.init({"responseMetadata": "nah"})  # a YAML's value, checked at Init


def test_unsupported_operation_lists_get(binding, server) -> None:
    with pytest.raises(UnsupportedOperationError, match="unsupported operation 'create'; supported operations: get"):
        binding.invoke(InvokeRequest("create", echo_request("x"), meta(server.address)))


def test_missing_metadata_before_any_io(binding, server) -> None:
    with pytest.raises(MetadataError, match="missing metadata field destService"):
        binding.invoke(InvokeRequest("get", echo_request("x"), {"hostPorts": server.address}))
    assert server.calls == 0


def test_method_name_metadata_is_authoritative(binding, server) -> None:
    request = echo_request("renamed", method="somethingElse")
    response = binding.invoke(InvokeRequest("get", request, meta(server.address)))
    assert read_echo_reply(response.data) == "renamed,hi Kitex"


def test_seq_id_in_data_is_replaced_and_never_zero(binding, server) -> None:
    seqs = set()
    for _ in range(3):
        response = binding.invoke(InvokeRequest("get", echo_request("x", seq_id=0), meta(server.address)))
        seqs.add(codec.parse_message(response.data).seq_id)
    assert 0 not in seqs and len(seqs) == 3


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty Thrift message"),
        (b"\x82\x21\x01\x04echo", "compact"),
        (b"GET / HTTP/1.1\r\n\r\n", "47 45 54 20"),
        (bytes.fromhex("8001000200000004") + b"echo" + b"\x00\x00\x00\x01\x00", "CALL"),
    ],
)
def test_bad_data_is_rejected_before_any_io(binding, server, data, message) -> None:
    with pytest.raises(ProtocolError, match=message):
        binding.invoke(InvokeRequest("get", data, meta(server.address)))
    assert server.calls == 0


def test_truncated_and_trailing_args_are_rejected_before_any_io(binding, server) -> None:
    good = echo_request("hello")
    for data in (good[:-1], good + b"\x00"):
        with pytest.raises(ProtocolError):
            binding.invoke(InvokeRequest("get", data, meta(server.address)))
    assert server.calls == 0


def test_text_data_is_rejected(binding, server) -> None:
    with pytest.raises(ProtocolError, match="as bytes, not str"):
        binding.invoke(InvokeRequest("get", "hello", meta(server.address)))  # type: ignore[arg-type]


def test_unknown_method_is_type_20_and_the_connection_is_dropped(binding, server) -> None:
    with pytest.raises(ApplicationError) as err:
        binding.invoke(InvokeRequest("get", echo_request("x"), meta(server.address, methodName="nope")))
    assert err.value.type_code == 20 and err.value.type_name == "UNKNOWN_SERVICE"
    assert err.value.message == "unknown service echo, method nope"
    # The server closed that connection; the next call must not trip over it.
    response = binding.invoke(InvokeRequest("get", echo_request("again"), meta(server.address)))
    assert read_echo_reply(response.data) == "again,hi Kitex"


def test_handler_error_is_type_6_and_the_connection_is_kept(impl, server) -> None:
    with Client("echo", server.address, implementation=impl.name) as client:
        with pytest.raises(ApplicationError) as err:
            client.call("fail", echo_request("x"))
        assert (err.value.type_code, err.value.message) == (6, "biz error: database unavailable")
        assert client._pool._pools[0].idle_count == 1
        assert read_echo_reply(client.call("echo", echo_request("y"))) == "y,hi Kitex"


def test_biz_status_over_ttheader(binding, server) -> None:
    with pytest.raises(BizStatusError) as err:
        binding.invoke(InvokeRequest("get", echo_request("ann"), meta(server.address, methodName="biz", transport="ttheader")))
    assert err.value.status_code == 404
    assert err.value.message == "no such user"
    assert err.value.extra == {"user": "ann"}


def test_failover_to_the_next_host(binding, server) -> None:
    dead = "127.0.0.1:%d" % free_port()
    for _ in range(4):  # round robin starts at each endpoint in turn
        response = binding.invoke(InvokeRequest("get", echo_request("x"), meta("%s,%s" % (dead, server.address))))
        assert read_echo_reply(response.data) == "x,hi Kitex"


def test_every_endpoint_refused(binding) -> None:
    a, b = free_port(), free_port()
    with pytest.raises(ConnectError, match=r"no endpoint accepted a connection \(2 tried\)"):
        binding.invoke(InvokeRequest("get", echo_request("x"), meta("127.0.0.1:%d,127.0.0.1:%d" % (a, b))))


def test_rpc_timeout(binding, server) -> None:
    start = time.monotonic()
    with pytest.raises(RPCTimeoutError):
        binding.invoke(InvokeRequest("get", echo_request("2"), meta(server.address, methodName="slow", rpcTimeout="200ms")))
    assert time.monotonic() - start < 1.9  # gave up at its deadline, not when the server answered


def test_stalled_server_mid_frame(impl) -> None:
    def script(sock):
        frame = read_request(sock)
        sock.sendall(reply_bytes(frame, b"\x00")[:7])
        time.sleep(3)

    with ScriptedServer(script) as srv, Client("echo", srv.address, rpc_timeout=0.3, implementation=impl.name) as client:
        with pytest.raises(RPCTimeoutError) as err:
            client.call("echo", echo_request("x"))
        assert err.value.sent


def test_server_closes_mid_reply(impl) -> None:
    def script(sock):
        frame = read_request(sock)
        sock.sendall(reply_bytes(frame, echo_result("partial"))[:9])

    with ScriptedServer(script) as srv, Client("echo", srv.address, implementation=impl.name) as client:
        with pytest.raises(ConnectionClosedError, match="5 of the reply's bytes|closed") as err:
            client.call("echo", echo_request("x"))
        assert err.value.sent


def test_wrong_seq_id_in_reply(impl) -> None:
    def script(sock):
        frame = read_request(sock)
        sock.sendall(reply_bytes(frame, echo_result("x"), seq_delta=1))

    with ScriptedServer(script) as srv, Client("echo", srv.address, implementation=impl.name) as client:
        with pytest.raises(ResponseMismatchError, match=r"has seq id 2, expected 1"):
            client.call("echo", echo_request("x"))
        assert client._pool._pools[0].idle_count == 0


def test_wrong_method_name_in_reply(impl) -> None:
    def script(sock):
        frame = read_request(sock)
        sock.sendall(reply_bytes(frame, echo_result("x"), name="other"))

    with ScriptedServer(script) as srv, Client("echo", srv.address, implementation=impl.name) as client:
        with pytest.raises(ResponseMismatchError, match="wrong method name in reply from .*: expected 'echo', got 'other'"):
            client.call("echo", echo_request("x"))


def test_reply_that_is_a_call(impl) -> None:
    def script(sock):
        frame = read_request(sock)
        sock.sendall(reply_bytes(frame, b"\x00", message_type=codec.CALL))

    with ScriptedServer(script) as srv, Client("echo", srv.address, implementation=impl.name) as client:
        with pytest.raises(ResponseMismatchError, match="is a call message, expected a reply"):
            client.call("echo", echo_request("x"))


def test_garbage_reply(impl) -> None:
    def script(sock):
        read_request(sock)
        sock.sendall(b"\x00\x00\x00\x08HTTP/1.1")

    with ScriptedServer(script) as srv, Client("echo", srv.address, implementation=impl.name) as client:
        with pytest.raises(ProtocolError, match="48 54 54 50"):
            client.call("echo", echo_request("x"))


def test_oversized_reply_length(impl) -> None:
    def script(sock):
        read_request(sock)
        sock.sendall(b"\x7f\xff\xff\xff\x80\x01\x00\x02")
        time.sleep(1)

    with ScriptedServer(script) as srv, Client("echo", srv.address, max_frame_size=1 << 20, implementation=impl.name) as client:
        with pytest.raises(ProtocolError, match="2147483647"):
            client.call("echo", echo_request("x"))


def test_crrst_drops_the_connection(impl) -> None:
    def script(sock):
        decoder = codec.FrameDecoder("ttheader")
        while True:
            frame = read_request(sock, decoder=decoder)
            if frame is None:
                return
            sock.sendall(reply_bytes(frame, echo_result("x"), transport="ttheader", str_headers={"crrst": "1"}))

    with ScriptedServer(script) as srv, Client("echo", srv.address, transport="ttheader", implementation=impl.name) as client:
        reply = client.invoke("echo", echo_request("x"))
        assert reply.str_headers == {"crrst": "1"}
        assert client._pool._pools[0].idle_count == 0
        client.call("echo", echo_request("y"))
        assert srv.accepted == 2


def test_idle_connection_closed_by_server_is_replaced_silently(impl) -> None:
    def script(sock):
        frame = read_request(sock)
        sock.sendall(reply_bytes(frame, echo_result("x")))
        # then close while the client holds the connection idle

    with ScriptedServer(script) as srv, Client("echo", srv.address, implementation=impl.name) as client:
        client.call("echo", echo_request("x"))
        time.sleep(0.1)
        client.call("echo", echo_request("y"))  # must not fail: the dead idle one is never written to
        assert srv.accepted == 2


def test_many_threads_share_one_binding(binding, server) -> None:
    errors = []
    metadata = meta(server.address)

    def worker(n: int) -> None:
        try:
            for i in range(150):
                text = "t%d-%d" % (n, i)
                response = binding.invoke(InvokeRequest("get", echo_request(text), metadata))
                assert read_echo_reply(response.data) == text + ",hi Kitex"
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert binding.client_count == 1


def test_client_cache_is_bounded_and_evicts_lru(impl, server) -> None:
    with KitexOutputBinding(max_clients=2, implementation=impl.name) as binding:
        for timeout in ("1s", "2s", "3s"):
            binding.invoke(InvokeRequest("get", echo_request("x"), meta(server.address, connectTimeout=timeout)))
        assert binding.client_count == 2
        # Methods, versions, rpc timeouts and headers are per call: they share a client.
        for extra in ({"version": "v2"}, {"rpcTimeout": "7s"}, {"methodName": "echo", "rpcTimeout": "0"}):
            binding.invoke(InvokeRequest("get", echo_request("x"), meta(server.address, connectTimeout="3s", **extra)))
        assert binding.client_count == 2


def test_per_call_options_share_one_pool(impl, server) -> None:
    with KitexOutputBinding(implementation=impl.name) as binding:
        for i in range(20):
            extra = {"transport": "ttheader", "rpcTimeout": "%dms" % (1000 + i), "header.n": str(i)}
            binding.invoke(InvokeRequest("get", echo_request("x"), meta(server.address, **extra)))
        assert binding.client_count == 1
        (client,) = binding._clients.values()
        assert client._pool._pools[0].idle_count == 1  # one connection served every call


def test_per_call_rpc_timeout_applies(impl, server) -> None:
    with KitexOutputBinding(implementation=impl.name) as binding:
        binding.invoke(InvokeRequest("get", echo_request("x"), meta(server.address, methodName="echo", rpcTimeout="5s")))
        start = time.monotonic()
        with pytest.raises(RPCTimeoutError):
            binding.invoke(InvokeRequest("get", echo_request("2"), meta(server.address, methodName="slow", rpcTimeout="200ms")))
        assert time.monotonic() - start < 1.9
        assert binding.client_count == 1


def test_close_closes_every_socket(impl) -> None:
    closed = threading.Event()

    def script(sock):
        frame = read_request(sock)
        sock.sendall(reply_bytes(frame, echo_result("x")))
        if sock.recv(1) == b"":
            closed.set()

    with ScriptedServer(script) as srv:
        binding = KitexOutputBinding(implementation=impl.name)
        binding.invoke(InvokeRequest("get", echo_request("x"), meta(srv.address)))
        binding.close()
        assert closed.wait(5)
        with pytest.raises(MetadataError, match="closed"):
            binding.invoke(InvokeRequest("get", echo_request("x"), meta(srv.address)))


def test_init_defaults(impl, server) -> None:
    with KitexOutputBinding(implementation=impl.name) as binding:
        binding.init({"hostPorts": server.address, "destService": "echo", "version": "v1", "transport": "ttheader"})
        response = binding.invoke(InvokeRequest("get", echo_request("x"), {"methodName": "echo"}))
        assert response.metadata["transport"] == "ttheader"
        with pytest.raises(MetadataError, match="transport: 'udp'"):
            binding.init({"transport": "udp"})


def test_connect_timeout_is_bounded(impl) -> None:
    # A listener whose backlog is full never completes the handshake on Linux for new clients.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(listener.getsockname())
            fillers.append(s)
        address = "127.0.0.1:%d" % listener.getsockname()[1]
        with Client("echo", address, connect_timeout=0.2, implementation=impl.name) as client:
            start = time.monotonic()
            with pytest.raises(ConnectError):
                client.call("echo", echo_request("x"))
            assert time.monotonic() - start < 3
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_evicted_client_still_finishes_calls_and_keeps_no_connection(impl, server) -> None:
    with Client("echo", server.address, implementation=impl.name) as client:
        client.call("echo", echo_request("x"))
        client.retire()
        assert client._pool._pools[0].idle_count == 0
        assert read_echo_reply(client.call("echo", echo_request("after"))) == "after,hi Kitex"
        assert client._pool._pools[0].idle_count == 0


def test_churning_the_client_cache_from_many_threads(impl, server) -> None:
    errors = []
    with KitexOutputBinding(max_clients=1, implementation=impl.name) as binding:
        def worker(n: int) -> None:
            try:
                for i in range(100):
                    md = meta(server.address, connectTimeout="%ds" % (1 + (n + i) % 3))
                    response = binding.invoke(InvokeRequest("get", echo_request("c%d" % i), md))
                    assert read_echo_reply(response.data) == "c%d,hi Kitex" % i
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors[:3]


def test_hostname_endpoint(binding, server) -> None:
    # "localhost" may resolve to ::1 first; nothing listens there, so the next address is tried.
    response = binding.invoke(InvokeRequest("get", echo_request("x"), meta("localhost:%d" % server.port)))
    assert read_echo_reply(response.data) == "x,hi Kitex"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_endpoint(impl) -> None:
    with KitexTestServer({"echo": echo_handler}, host="::1", implementation=impl.name) as srv:
        assert srv.address == "[::1]:%d" % srv.port
        with KitexOutputBinding(implementation=impl.name) as binding:
            response = binding.invoke(InvokeRequest("get", echo_request("v6"), meta(srv.address)))
        assert read_echo_reply(response.data) == "v6,hi Kitex"
        assert response.metadata["endpoint"] == srv.address


def test_request_bytes_is_what_goes_on_the_wire(impl) -> None:
    seen = []

    def script(sock):
        data = b""
        while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
            data += sock.recv(65536)
        seen.append(data)
        frame = codec.FrameDecoder("framed").feed(data)[0]
        sock.sendall(reply_bytes(frame, echo_result("x")))

    with ScriptedServer(script) as srv, Client("echo", srv.address, implementation=impl.name) as client:
        expected = client.request_bytes("echo", echo_request("wire"), seq_id=1)
        client.call("echo", echo_request("wire"))  # the connection's first seq id is 1
    assert seen == [expected]
    assert expected[:4] == (len(expected) - 4).to_bytes(4, "big")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds through /proc")
def test_no_file_descriptor_leaks(impl, server) -> None:
    def open_fds() -> int:
        """Client-side sockets connected to the server (its own accepted sockets live in this
        process too, and close on their own schedule)."""
        count = 0
        for name in os.listdir("/proc/self/fd"):
            try:
                fd = os.dup(int(name))
            except OSError:
                continue  # the listing's own fd, already gone
            try:
                sock = socket.socket(fileno=fd)
            except OSError:
                os.close(fd)  # not a socket
                continue
            with sock:
                try:
                    if sock.getpeername()[1] == server.port:
                        count += 1
                except (OSError, IndexError, TypeError):
                    pass  # not a connected inet socket
        return count

    before = open_fds()
    with KitexOutputBinding(max_clients=3, implementation=impl.name) as binding:
        # LRU churn: 7 destinations through 3 cached clients. Sequential calls keep at most one
        # idle connection per cached client; evicted clients must let theirs go at once, even
        # while the route cache still refers to them.
        for i in range(60):
            md = meta(server.address, connectTimeout="%dms" % (100 + i % 7))
            binding.invoke(InvokeRequest("get", echo_request("x"), md))
            assert open_fds() <= before + 3
        # Errors that make Kitex close the connection must not leave sockets behind either.
        for i in range(30):
            with pytest.raises(ApplicationError):
                binding.invoke(InvokeRequest("get", echo_request("x"), meta(server.address, methodName="nope")))
            assert open_fds() <= before + 3
    time.sleep(0.05)
    assert open_fds() <= before


# -- daprd's deadline as a value; reply headers that are not UTF-8; caches bounded in characters --


def test_a_deadline_is_the_calls_timeout_when_it_is_the_shorter(binding) -> None:
    from kitex_fast.metadata import MAX_DURATION, parse_options

    framed = parse_options(meta("127.0.0.1:1"), {})
    assert binding.deadline_call(framed, None) == (30.0, None, False)
    assert binding.deadline_call(framed, 60.0) == (30.0, None, False)  # not the shorter: nothing changes
    assert binding.deadline_call(framed, 2.5) == (2.5, None, False)  # framed: no header to carry it
    tth = parse_options(meta("127.0.0.1:1", transport="ttheader"), {})
    timeout, headers, fresh = binding.deadline_call(tth, 1.9876)
    # The value itself (no rounding to make a cache hit): RPCTimeout in whole ms, never above it.
    assert timeout == 1.9876 and fresh and dict(headers.int_headers)[codec.INT_KEY_RPC_TIMEOUT] == "1987"
    explicit = parse_options(meta("127.0.0.1:1", transport="ttheader", rpcTimeout="1500ms",
                                  fromService="me"), {})
    assert binding.deadline_call(explicit, 60.0) == (1.5, explicit.headers, False)
    timeout, headers, fresh = binding.deadline_call(explicit, 0.25)
    assert timeout == 0.25 and fresh
    assert dict(headers.int_headers) == {**explicit.headers.int_headers, codec.INT_KEY_RPC_TIMEOUT: "250"}
    assert dict(headers.str_headers) == dict(explicit.headers.str_headers)
    unlimited = parse_options(meta("127.0.0.1:1", transport="ttheader", rpcTimeout="0"), {})
    # Every deadline gRPC can express (99999999H is 3.6e11 s) is a valid timeout, and none is 0.
    for deadline in (99999999 * 3600.0, float("inf"), 0.0, -1.0, float("nan")):
        timeout, headers, _ = binding.deadline_call(unlimited, deadline)
        assert 0 < timeout <= MAX_DURATION, deadline
        assert int(dict(headers.int_headers)[codec.INT_KEY_RPC_TIMEOUT]) >= 1


def test_reply_headers_that_are_not_utf8_are_backslash_escaped() -> None:
    from types import SimpleNamespace

    from kitex_fast.binding import response_metadata
    from kitex_fast.metadata import parse_options

    options = parse_options(meta("127.0.0.1:1", transport="ttheader"), {})
    # What the codec gives for header bytes ff fe (surrogateescape), beside valid UTF-8.
    frame = SimpleNamespace(transport="ttheader", str_headers={"v": b"\xff\xfe".decode("utf-8", "surrogateescape"),
                                                                b"n\xfe".decode("utf-8", "surrogateescape"): "x",
                                                                "ok": "h\u00e9"},
                            int_headers={22: b"\xff".decode("utf-8", "surrogateescape")})
    out = response_metadata(frame, 7, "127.0.0.1:1", options)
    assert out["header.v"] == "\\xff\\xfe" and out["header.n\\xfe"] == "x" and out["header.ok"] == "h\u00e9"
    assert out["intHeader.22"] == "\\xff"
    for key, value in out.items():
        (key + value).encode("utf-8")  # everything is text a protobuf string can carry


def test_the_shape_and_route_caches_are_bounded_in_characters(impl, server) -> None:
    # Metadata that cannot repeat (thousands of distinct ignored keys, a 60 KB header value) is
    # served but not kept; what is kept stays under the binding's character budgets.
    from kitex_fast import binding as binding_module

    with KitexOutputBinding(implementation=impl.name) as b:
        base = meta(server.address, transport="ttheader")
        for i in range(6):
            ignored = {"k%d-%d" % (i, j): "v" for j in range(5000)}
            r = b.invoke(InvokeRequest("get", echo_request("a%d" % i), dict(base, **ignored)))
            assert read_echo_reply(r.data) == "a%d,hi Kitex" % i
            big = dict(base, **{"header.big": "%d" % i * 60000})
            r = b.invoke(InvokeRequest("get", echo_request("b%d" % i), big))
            assert read_echo_reply(r.data) == "b%d,hi Kitex" % i
        assert all(len(shape) < 100 for shape in b._shapes)
        assert all(sum(len(v) for v in key[1] if isinstance(v, str)) < 20000 for key in b._routes)
        assert b._shape_chars <= binding_module.MAX_SHAPE_CACHE_CHARS
        assert b._route_chars <= binding_module.MAX_ROUTE_CACHE_CHARS
        # A repeated small route is still cached: one route for many calls.
        for _ in range(5):
            b.invoke(InvokeRequest("get", echo_request("c"), base))
        assert sum(1 for key in b._routes if base["hostPorts"] in key[1]) == 1


def test_routes_that_differ_only_in_version_share_one_route(impl, server) -> None:
    # version is required and checked, but sent nowhere: a caller cycling versions of one
    # destination keeps a route key per version and one Route (options, client key, the values
    # parsed into them) for all of them; anything that changes the call keeps its own.
    with KitexOutputBinding(implementation=impl.name) as b:
        base = meta(server.address)
        for i in range(20):
            r = b.invoke(InvokeRequest("get", echo_request("v%d" % i), dict(base, version="v%d" % i)))
            assert read_echo_reply(r.data) == "v%d,hi Kitex" % i
        assert len(b._routes) == 20 and len({id(route) for route in b._routes.values()}) == 1
        r = b.invoke(InvokeRequest("get", echo_request("t"), dict(base, rpcTimeout="7s")))
        assert read_echo_reply(r.data) == "t,hi Kitex"
        assert len({id(route) for route in b._routes.values()}) == 2
        with pytest.raises(MetadataError, match="version"):
            b.invoke(InvokeRequest("get", echo_request("x"), dict(base, version=" v1")))
