"""kitex_fast.aio against the Python test server and scripted peers, on both implementations
(``impl``) and, where the loop matters, on asyncio's default loop and uvloop (``aio_loop``).
The same behaviours against real Kitex servers: tests/interop/test_aio.py."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
import time

import pytest

import kitex_fast
from kitex_fast import (
    ApplicationError,
    BizStatusError,
    ConnectError,
    MetadataError,
    ProtocolError,
    ResponseMismatchError,
    RPCTimeoutError,
    TransportError,
    codec,
)
from kitex_fast.aio import Client
from kitex_fast.aio import protocol as protocol_dispatch
from kitex_fast.testing import (
    KitexTestServer,
    echo_handler,
    echo_request,
    echo_result,
    read_echo_args,
    read_echo_reply,
)

TRANSPORTS = list(codec.TRANSPORTS)
# Connect timeout for the tests: the default (Kitex's 50 ms) counts event-loop delays too, which a
# loaded CI machine can exceed.
CONNECT = 2.0


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


def test_both_protocols_have_the_same_api(impl):
    mod = protocol_dispatch.implementation(impl.name)
    for name in protocol_dispatch.PUBLIC_API:
        assert hasattr(mod, name), name
    assert issubclass(mod.Protocol, asyncio.BufferedProtocol)  # asyncio and uvloop check this


def test_the_seq_id_of_a_reply_comes_from_the_codecs_header_parse(impl):
    # The TTHeader seq id when there is one, else the message's (parsed by the codec's parser,
    # through its C entry point in the compiled protocol); garbage is a ProtocolError that keeps
    # the protocol's text and chains the codec's.
    seq_id_of = protocol_dispatch.implementation(impl.name).seq_id_of
    c = impl.codec
    message = c.build_message(c.REPLY, "echo", 7, b"\x00")
    assert seq_id_of(c.Frame(message, "framed")) == 7
    assert seq_id_of(c.Frame(message, "ttheader", seq_id=9)) == 9
    assert seq_id_of(c.Frame(c.build_message(c.REPLY, "echo", -5), "framed")) == -5
    for garbage in (b"", b"\x80\x01\x00\x02\x00\x00\x00\x09echo", b"\x82\x21" + b"\x00" * 12,
                    b"\x80\x01\x00\x07\x00\x00\x00\x00\x00\x00\x00\x01"):
        with pytest.raises(ProtocolError) as info:
            seq_id_of(c.Frame(garbage, "framed"))
        assert str(info.value) == (
            "reply is not a strict-binary Thrift message (first bytes %s)" % garbage[:16].hex(" ")
        )
        assert isinstance(info.value.__cause__, ProtocolError)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_call_and_invoke_match_the_sync_client(impl, aio_loop, server, transport):
    request = echo_request("hello")

    async def main():
        async with Client("echo", server.address, transport=transport, implementation=impl.name, connect_timeout=CONNECT) as c:
            data = await c.call("echo", request)
            reply = await c.invoke("echo", request)
            timed = await c.invoke("echo", request, rpc_timeout=5.0)
            return data, reply, timed

    data, reply, timed = aio_loop(main)
    with kitex_fast.Client("echo", server.address, transport=transport, implementation=impl.name, connect_timeout=CONNECT) as sync:
        sync_reply = sync.invoke("echo", request)
    assert read_echo_reply(data) == "hello,hi Kitex"
    assert read_echo_reply(reply.data) == read_echo_reply(sync_reply.data) == "hello,hi Kitex"
    assert reply.transport == sync_reply.transport == transport
    assert reply.endpoint == sync_reply.endpoint == timed.endpoint == server.address
    assert reply.method == "echo" and reply.seq_id > 0
    assert dict(reply.str_headers) == dict(sync_reply.str_headers)
    assert codec.parse_message(timed.data).seq_id == timed.seq_id


# The connection models: one call per connection (the default, as Kitex's own client), and the
# opt-in pipelining (many calls in flight per connection on an in-order server).
MODELS = {"pingpong": {}, "pipelining": {"pipelining": True}}


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("transport", ["framed", "ttheader"])
def test_many_concurrent_calls_each_get_their_own_reply(impl, aio_loop, server, transport, model):
    n = 600

    async def main():
        async with Client(
            "echo", server.address, transport=transport, max_connections=3, max_in_flight=40,
            implementation=impl.name, connect_timeout=CONNECT, **MODELS[model],
        ) as c:
            replies = await asyncio.gather(*(c.call("echo", echo_request("m%d" % i)) for i in range(n)))
            assert len(c._pool._all) <= 3  # calls past the cap waited for a connection
            return replies

    replies = aio_loop(main)
    assert [read_echo_reply(r) for r in replies] == ["m%d,hi Kitex" % i for i in range(n)]


def test_remote_errors_are_the_sync_errors(impl, aio_default, server):
    async def main():
        async with Client("echo", server.address, transport="ttheader", implementation=impl.name, connect_timeout=CONNECT) as c:
            with pytest.raises(BizStatusError) as biz:
                await c.call("biz", echo_request("ann", method="biz"))
            assert biz.value.status_code == 404 and biz.value.extra == {"user": "ann"}
            with pytest.raises(ApplicationError) as app:
                await c.call("fail", echo_request("x", method="fail"))
            assert app.value.type_code == 6 and "database unavailable" in app.value.message
            with pytest.raises(ApplicationError) as unknown:
                await c.call("nosuch", echo_request("x", method="nosuch"))
            assert unknown.value.type_code in (1, 20)
            # the connection the server closed after the unknown method is not reused
            assert read_echo_reply(await c.call("echo", echo_request("after"))) == "after,hi Kitex"

    aio_default(main)


def test_bad_input_is_refused_before_anything_is_sent(impl, aio_default, server):
    with pytest.raises(MetadataError):
        Client("echo", "127.0.0.1:1", max_in_flight=0, implementation=impl.name, connect_timeout=CONNECT)
    with pytest.raises(MetadataError):
        Client("echo", "127.0.0.1:1", transport="http", implementation=impl.name, connect_timeout=CONNECT)
    with pytest.raises(MetadataError):
        Client("", "127.0.0.1:1", implementation=impl.name, connect_timeout=CONNECT)

    async def main():
        async with Client("echo", server.address, pool_size=1, implementation=impl.name, connect_timeout=CONNECT) as c:
            with pytest.raises(ProtocolError):
                await c.call("echo", "not bytes")  # type: ignore[arg-type]
            with pytest.raises(MetadataError):
                await c.call("", echo_request("x"))
            # the sync client's typed error and text, not an untyped BufferError (issue 25)
            strided = memoryview(echo_request("x") * 2)[::2]
            with pytest.raises(ProtocolError, match="the request is a non-contiguous memoryview"):
                await c.call("echo", strided)
            assert c._pool._all == set()  # refused before a connection was even needed
            with pytest.raises(ProtocolError):
                await c.call("echo", b"\x80\x01\x00\x01garbage")
            # nothing of it was sent: the connection carries the next call as usual
            assert read_echo_reply(await c.call("echo", echo_request("ok"))) == "ok,hi Kitex"
            assert len(c._pool._all) == 1

    aio_default(main)


def test_connect_failures_fail_over_and_are_typed(impl, aio_default, server):
    dead = _free_port()

    async def main():
        async with Client("echo", "127.0.0.1:%d" % dead, implementation=impl.name, connect_timeout=CONNECT) as c:
            with pytest.raises(ConnectError):
                await c.call("echo", echo_request("x"))
        # the dead endpoint first: every call fails over to the live one
        async with Client(
            "echo", ["127.0.0.1:%d" % dead, server.address], implementation=impl.name, connect_timeout=CONNECT
        ) as c:
            for i in range(4):
                assert read_echo_reply(await c.call("echo", echo_request("f%d" % i))) == "f%d,hi Kitex" % i

    aio_default(main)


def test_rpc_timeout_then_the_client_recovers(impl, aio_default, server):
    async def main():
        async with Client("echo", server.address, rpc_timeout=0.2, implementation=impl.name, connect_timeout=CONNECT) as c:
            t0 = time.monotonic()
            with pytest.raises(RPCTimeoutError) as exc:
                await c.call("slow", echo_request("1.0", method="slow"))
            assert time.monotonic() - t0 < 0.9
            assert exc.value.sent
            assert read_echo_reply(await c.call("echo", echo_request("again"))) == "again,hi Kitex"

    aio_default(main)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("model", sorted(MODELS))
def test_cancellation_storm_never_desyncs(impl, aio_loop, server, model):
    rng = random.Random(7)

    async def main():
        async with Client(
            "echo", server.address, pool_size=2, max_in_flight=30, connect_timeout=2.0,
            implementation=impl.name, **MODELS[model],
        ) as c:
            tasks = [asyncio.ensure_future(c.call("echo", echo_request("s%d" % i))) for i in range(300)]
            await asyncio.sleep(0.002)
            cancelled = set(rng.sample(range(300), 150))
            for i in cancelled:
                tasks[i].cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            # most of them were cut off mid-flight: sent, reply not yet there
            assert sum(isinstance(r, asyncio.CancelledError) for r in results) >= 50
            for i, r in enumerate(results):
                if isinstance(r, BaseException):
                    assert isinstance(r, asyncio.CancelledError) and i in cancelled
                else:
                    assert read_echo_reply(r) == "s%d,hi Kitex" % i
            more = await asyncio.gather(*(c.call("echo", echo_request("t%d" % i)) for i in range(200)))
            assert [read_echo_reply(r) for r in more] == ["t%d,hi Kitex" % i for i in range(200)]

    aio_loop(main, debug=True)


def test_a_cancelled_call_does_not_hold_up_the_next_one(impl, aio_loop):
    # A cancelled call may still be running on an in-order server (here: stalled until released);
    # a call pipelined behind it on the same connection would wait for it. The connection of a
    # cancelled call retires, as after a timeout, and the next call gets a fresh one.
    release = threading.Event()

    def handler(request):
        if read_echo_args(request.body) == "stall":
            release.wait(30)
        return echo_handler(request)

    async def main(address):
        async with Client("echo", address, connect_timeout=CONNECT, rpc_timeout=20.0, implementation=impl.name) as c:
            stalled = asyncio.ensure_future(c.call("echo", echo_request("stall")))
            await asyncio.sleep(0.2)  # sent, and stalled in the handler
            stalled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stalled
            reply = await asyncio.wait_for(c.call("echo", echo_request("next")), 5.0)
            assert read_echo_reply(reply) == "next,hi Kitex"

    with KitexTestServer({"echo": handler}, service="echo", implementation=impl.name) as srv:
        try:
            aio_loop(lambda: main(srv.address), debug=True)
        finally:
            release.set()


@pytest.mark.filterwarnings("error")
def test_close_fails_every_pending_call(impl, aio_loop, server):
    async def main():
        c = Client("echo", server.address, rpc_timeout=None, pool_size=1, implementation=impl.name, connect_timeout=CONNECT)
        tasks = [asyncio.ensure_future(c.call("slow", echo_request("0.5", method="slow"))) for _ in range(5)]
        await asyncio.sleep(0.1)
        await c.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, TransportError) for r in results), results
        with pytest.raises(TransportError):
            await c.call("echo", echo_request("x"))
        assert c._pool._all == set()

    aio_loop(main, debug=True)


# -- scripted peers -------------------------------------------------------------------------------


class AsyncPeer:
    """A framed Thrift peer on the test's own loop: ``script(reader, writer)`` per connection."""

    def __init__(self, script):
        self.script = script
        self.server = None
        self.address = ""

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._run, "127.0.0.1", 0)
        self.address = "127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]
        return self

    async def _run(self, reader, writer):
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()


async def read_framed(reader):
    size = int.from_bytes(await reader.readexactly(4), "big")
    return await reader.readexactly(size)


def framed_reply(request_message, body=b"\x00", *, seq_id=None, mtype=codec.REPLY):
    header = codec.parse_message(request_message)
    message = codec.build_message(mtype, header.name, header.seq_id if seq_id is None else seq_id, body)
    return len(message).to_bytes(4, "big") + message


def test_replies_out_of_order_are_matched_by_seq_id(impl, aio_loop):
    async def reverse(reader, writer):
        while True:
            batch = [await read_framed(reader) for _ in range(10)]
            for message in reversed(batch):
                text = read_echo_args(message[codec.parse_message(message).body_offset:])
                writer.write(framed_reply(message, echo_result(text + "!")))
            await writer.drain()

    async def main():
        async with AsyncPeer(reverse) as peer:
            async with Client("echo", peer.address, max_connections=1, pipelining=True, implementation=impl.name, connect_timeout=CONNECT) as c:
                replies = await asyncio.gather(*(c.call("echo", echo_request("o%d" % i)) for i in range(50)))
        return replies

    assert [read_echo_reply(r) for r in aio_loop(main)] == ["o%d!" % i for i in range(50)]


def test_a_reply_nobody_asked_for_closes_the_connection_with_a_typed_error(impl, aio_default):
    async def wrong_seq(reader, writer):
        message = await read_framed(reader)
        await read_framed(reader)
        writer.write(framed_reply(message, seq_id=999))
        await writer.drain()
        await reader.read()

    async def main():
        async with AsyncPeer(wrong_seq) as peer:
            async with Client("echo", peer.address, max_connections=1, pipelining=True, implementation=impl.name, connect_timeout=CONNECT) as c:
                results = await asyncio.gather(
                    c.call("echo", echo_request("a")), c.call("echo", echo_request("b")),
                    return_exceptions=True,
                )
        assert all(isinstance(r, ResponseMismatchError) for r in results), results
        assert "seq id 999" in str(results[0])

    aio_default(main)


def test_exception_with_seq_id_zero_answers_the_oldest_call(impl, aio_default):
    # Kitex builds some EXCEPTION replies with seq id 0 (kitex pkg/remote/codec/util.go).
    async def zero(reader, writer):
        first = await read_framed(reader)
        second = await read_framed(reader)
        writer.write(framed_reply(first, codec.encode_application_exception(6, "boom"), seq_id=0,
                                  mtype=codec.EXCEPTION))
        writer.write(framed_reply(second, echo_result("fine")))
        await writer.drain()
        await reader.read()

    async def main():
        async with AsyncPeer(zero) as peer:
            async with Client("echo", peer.address, max_connections=1, pipelining=True, implementation=impl.name, connect_timeout=CONNECT) as c:
                return await asyncio.gather(
                    c.call("echo", echo_request("a")), c.call("echo", echo_request("b")),
                    return_exceptions=True,
                )

    first, second = aio_default(main)
    assert isinstance(first, ApplicationError) and first.type_code == 6
    assert read_echo_reply(second) == "fine"


def test_a_peer_that_stops_reading_never_makes_the_client_buffer_without_bound(impl, aio_loop):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted = []
    stop = threading.Event()

    def accept():  # accept, never read
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except socket.timeout:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    big = echo_request("x" * (1 << 20))
    address = "127.0.0.1:%d" % listener.getsockname()[1]

    async def main():
        async with Client(
            "echo", address, max_connections=1, pipelining=True, max_in_flight=1000, rpc_timeout=1.0,
            implementation=impl.name, connect_timeout=CONNECT
        ) as c:
            calls = asyncio.gather(*(c.call("echo", big) for _ in range(64)), return_exceptions=True)
            await asyncio.sleep(0.5)  # the kernel's buffers are full by now
            (proto,) = c._pool._all
            buffered = proto.transport.get_write_buffer_size()
            return await calls, buffered

    try:
        results, buffered = aio_loop(main)
    finally:
        stop.set()
        thread.join(5)
        for s in accepted:
            s.close()
        listener.close()
    assert all(isinstance(r, RPCTimeoutError) for r in results), results
    waited = [r for r in results if not r.sent]
    assert waited, "every request was buffered: nothing waited for the peer to read"
    assert "had room" in str(waited[0]) and "nothing was sent" in str(waited[0])
    assert buffered < 64 * len(big) // 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_idle_connection_closed_by_the_server_is_replaced_silently(impl, aio_loop):
    async def one_then_close(reader, writer):
        message = await read_framed(reader)
        text = read_echo_args(message[codec.parse_message(message).body_offset:])
        writer.write(framed_reply(message, echo_result(text)))
        await writer.drain()
        # then close, as a server's idle timeout would

    async def main():
        async with AsyncPeer(one_then_close) as peer:
            async with Client("echo", peer.address, pool_size=1, implementation=impl.name, connect_timeout=CONNECT) as c:
                for i in range(3):
                    assert read_echo_reply(await c.call("echo", echo_request("i%d" % i))) == "i%d" % i
                    await asyncio.sleep(0.05)  # the server's close arrives while idle

    aio_loop(main)


def test_wrong_method_name_fails_every_call_on_the_connection(impl, aio_default):
    async def wrong_name(reader, writer):
        first = await read_framed(reader)
        await read_framed(reader)
        header = codec.parse_message(first)
        message = codec.build_message(codec.REPLY, "other", header.seq_id, b"\x00")
        writer.write(len(message).to_bytes(4, "big") + message)
        await writer.drain()
        await reader.read()

    async def main():
        async with AsyncPeer(wrong_name) as peer:
            async with Client("echo", peer.address, max_connections=1, pipelining=True, implementation=impl.name, connect_timeout=CONNECT) as c:
                return await asyncio.gather(
                    c.call("echo", echo_request("a")), c.call("echo", echo_request("b")),
                    return_exceptions=True,
                )

    results = aio_default(main)
    assert all(isinstance(r, ResponseMismatchError) for r in results), results
    assert all("wrong method name" in str(r) for r in results)


def test_a_connection_with_a_timed_out_call_closes_once_no_live_call_is_left(impl, aio_default):
    async def answer_second_only(reader, writer):
        await read_framed(reader)  # never answered
        second = await read_framed(reader)
        await asyncio.sleep(0.4)
        writer.write(framed_reply(second, echo_result("second")))
        await writer.drain()
        await reader.read()

    async def main():
        async with AsyncPeer(answer_second_only) as peer:
            async with Client("echo", peer.address, max_connections=1, pipelining=True, implementation=impl.name,
                              connect_timeout=CONNECT) as c:
                first = asyncio.ensure_future(c.invoke("echo", echo_request("a"), rpc_timeout=0.2))
                second = asyncio.ensure_future(c.invoke("echo", echo_request("b"), rpc_timeout=5.0))
                with pytest.raises(RPCTimeoutError):
                    await first
                (proto,) = c._pool._all
                assert not proto.usable and not proto.closed  # retired: no new calls, one live call
                assert read_echo_reply((await second).data) == "second"
                await asyncio.sleep(0.05)
                assert proto.closed and c._pool._all == set()  # the first's reply can never come

    aio_default(main)


def test_calls_in_flight_per_connection_stay_within_the_bound(impl, aio_default, server):
    async def main():
        async with Client("echo", server.address, max_connections=2, max_in_flight=7, pipelining=True,
                          implementation=impl.name, connect_timeout=CONNECT) as c:
            most = 0
            done = False

            async def sample():
                nonlocal most
                while not done:
                    most = max([most] + [p.load for p in c._pool._all])
                    await asyncio.sleep(0)

            sampler = asyncio.ensure_future(sample())
            replies = await asyncio.gather(*(c.call("echo", echo_request("b%d" % i)) for i in range(200)))
            done = True
            await sampler
            assert [read_echo_reply(r) for r in replies] == ["b%d,hi Kitex" % i for i in range(200)]
            assert 1 < most <= 7 and len(c._pool._all) <= 2

    aio_default(main)


# -- the common path (CallPath): a known method on an idle connection, no coroutine of ours -------


def test_call_stays_a_coroutine_function():
    # Tasks, TaskGroup and inspect-based frameworks see what they saw before the common path.
    import inspect

    assert inspect.iscoroutinefunction(Client.call) and inspect.iscoroutinefunction(Client.invoke)


def test_am_send_is_installed_on_the_compiled_exchange(impl):
    # (CPython >= 3.10) the answer of an awaited Exchange comes back without a StopIteration
    import sys

    if impl.name != "c":
        pytest.skip("a slot of the compiled type; the twin answers through StopIteration")
    assert protocol_dispatch.implementation("c")._AM_SEND is (sys.version_info >= (3, 10))


def test_the_common_path_takes_a_known_method_on_an_idle_connection(impl, aio_loop, server):
    mod = protocol_dispatch.implementation(impl.name)
    request = echo_request("p")

    async def main():
        async with Client("echo", server.address, implementation=impl.name, connect_timeout=CONNECT) as c:
            path = c._path
            assert type(path) is mod.CallPath
            assert path.start("echo", request, kitex_fast.client._UNSET, None) is None  # method not seen yet
            first = await c.invoke("echo", request)  # the full path: it caches the encoder
            exchange = c._begin("echo", request)
            assert type(exchange) is mod.Exchange
            frame, seq_id, endpoint = await exchange
            assert read_echo_reply(frame.payload) == "p,hi Kitex"
            assert seq_id == first.seq_id + 1 and endpoint == first.endpoint == server.address
            with pytest.raises(RuntimeError, match="cannot reuse an already awaited call"):
                await exchange
            # what the common path leaves to the full one: "not handled" before anything is done
            unset = kitex_fast.client._UNSET
            assert path.start("echo", memoryview(request), unset, None) is None
            assert path.start("echo", request, 0.0, None) is None  # not a validated timeout
            assert path.start("echo", request, unset, {"k": "v"}) is None  # not Headers
            assert path.start("other", request, unset, None) is None
            # no idle connection where the pool picked: False (the full path acquires there)
            taken = c._pool.take()
            assert path.start("echo", request, unset, None) is False
            c._pool.release(taken)
            # each answer is the full path's: the same reply for the same request
            again = await c.invoke("echo", request, rpc_timeout=5.0)
            assert read_echo_reply(again.data) == read_echo_reply(first.data) and len(c._pool._all) == 1

    aio_loop(main)


def test_an_unusual_reply_on_the_common_path_is_settled_as_on_the_full_one(impl, aio_loop, server):
    async def main():
        async with Client("echo", server.address, transport="ttheader", implementation=impl.name,
                          connect_timeout=CONNECT) as c:
            errors = []
            for _ in range(3):  # the full path, then the common one twice
                with pytest.raises(ApplicationError) as app:
                    await c.call("fail", echo_request("x", method="fail"))
                errors.append((type(app.value), app.value.type_code, app.value.message))
                with pytest.raises(BizStatusError) as biz:
                    await c.call("biz", echo_request("ann", method="biz"))
                errors.append((type(biz.value), biz.value.status_code, biz.value.extra))
            assert errors[0:2] == errors[2:4] == errors[4:6]
            assert len(c._pool._all) == 1  # an error answer leaves the connection clean

    aio_loop(main)


def test_a_call_cancelled_as_its_reply_arrives_gives_the_connection_back(impl, aio_loop, server):
    # The task is woken for the reply, but cancelled before it runs: the reply was read, so the
    # connection is clean and goes back to the pool (not retired as a call cut off mid-flight).
    request = echo_request("r")

    async def main():
        async with Client("echo", server.address, implementation=impl.name, connect_timeout=CONNECT) as c:
            await c.call("echo", request)
            exchange = c._begin("echo", request)
            fut = exchange.send(None)  # what the awaiting task waits on
            await asyncio.wait_for(asyncio.shield(fut), 5.0)
            with pytest.raises(asyncio.CancelledError):
                exchange.throw(asyncio.CancelledError())
            (proto,) = c._pool._all
            assert proto.usable and c._pool.idle_count == 1
            assert read_echo_reply(await c.call("echo", request)) == "r,hi Kitex"
            assert c._pool._all == {proto}

    aio_loop(main)


def test_a_call_closed_mid_flight_retires_its_connection(impl, aio_loop, server):
    # An awaiting coroutine closed (or cancelled) before the reply: the entry stays, the late
    # reply is read and dropped, and the in-order connection takes no new call meanwhile.
    slow = echo_request("0.2", method="slow")

    async def main():
        async with Client("echo", server.address, implementation=impl.name, connect_timeout=CONNECT) as c:
            await c.call("slow", echo_request("0", method="slow"))
            (first,) = c._pool._all
            exchange = c._begin("slow", slow)
            exchange.send(None)
            exchange.close()
            assert not first.usable and first.load == 1
            reply = await c.call("echo", echo_request("next"))  # on a new connection
            assert read_echo_reply(reply) == "next,hi Kitex"
            await asyncio.wait_for(first.wait_closed(), 5.0)  # closed once the late reply came
            assert first not in c._pool._all

    aio_loop(main)


def test_a_request_larger_than_the_socket_buffer_goes_out_whole(impl, aio_loop, server):
    # The compiled protocol sends on asyncio's selector transport with sendmsg() while the
    # transport holds nothing; what the kernel has no room for goes to the transport, and once
    # that is written the next request is sent directly again. Either way, on every loop and
    # implementation, the bytes arrive whole and in order on the one connection.
    big = "x" * (12 << 20)  # (more than loopback's largest send buffer)

    async def main():
        async with Client("echo", server.address, implementation=impl.name, connect_timeout=CONNECT,
                          rpc_timeout=30.0) as c:
            assert read_echo_reply(await c.call("echo", echo_request("a"))) == "a,hi Kitex"
            (proto,) = c._pool._all
            results = []
            for i in range(3):
                results.append(read_echo_reply(await c.call("echo", echo_request(big + str(i)))))
                for j in range(5):
                    text = "small %d.%d" % (i, j)
                    assert read_echo_reply(await c.call("echo", echo_request(text))) == text + ",hi Kitex"
            assert results == [big + str(i) + ",hi Kitex" for i in range(3)]
            assert c._pool._all == {proto} and proto.usable

    aio_loop(main)


def _serve_one_framed(conn):
    """Answer one Framed echo CALL on a blocking socket."""
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise EOFError("the client closed")
            data += chunk
        return data

    message = exactly(int.from_bytes(exactly(4), "big"))
    text = read_echo_args(message[codec.parse_message(message).body_offset:])
    conn.sendall(framed_reply(message, echo_result(text)))


def test_a_call_on_a_connection_the_peer_reset_goes_out_on_a_new_one(impl, aio_loop):
    # The idle connection was reset (RST) while the loop was busy: the call takes it, its write
    # fails on the spot, nothing reached the server, so the call is sent on a new connection.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(10)
    answered, reset = threading.Event(), threading.Event()
    accepted = []

    def serve():
        first, _ = listener.accept()
        accepted.append(first)
        _serve_one_framed(first)
        answered.wait(10)
        first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        first.close()  # (linger 0: a reset, not a FIN)
        reset.set()
        second, _ = listener.accept()
        accepted.append(second)
        _serve_one_framed(second)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    address = "127.0.0.1:%d" % listener.getsockname()[1]

    async def main():
        async with Client("echo", address, implementation=impl.name, connect_timeout=CONNECT,
                          rpc_timeout=10.0) as c:
            assert read_echo_reply(await c.call("echo", echo_request("one"))) == "one"
            (first,) = c._pool._all
            answered.set()
            assert reset.wait(10)
            time.sleep(0.1)  # (blocking the loop: it must not learn of the reset before the call)
            assert read_echo_reply(await c.call("echo", echo_request("two"))) == "two"
            assert first.closed and first not in c._pool._all and len(c._pool._all) == 1

    try:
        aio_loop(main)
    finally:
        thread.join(10)
        for s in accepted:
            s.close()
        listener.close()
    assert len(accepted) == 2
