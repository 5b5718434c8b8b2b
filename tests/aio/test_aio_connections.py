"""The asyncio driver's connection model against the Python test server (a thread per connection,
requests answered one after the other, as a default Kitex server): one call per connection by
default, the cap on open connections, idle connections bounded in number and time, and the
options that choose mux or pipelining. Real Kitex: tests/interop/test_connection_model.py."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from kitex_fast import ConnectionLimitError, InvokeRequest, MetadataError, RPCTimeoutError
from kitex_fast.aio import Client, KitexOutputBinding
from kitex_fast.testing import KitexTestServer, echo_handler, echo_request, read_echo_args, read_echo_reply

CONNECT = 2.0


class Counting:
    """An echo handler that records how many requests it holds at once; ``gate`` holds them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.gate = threading.Event()
        self.gate.set()
        self.barrier = None
        self.seen = []  # every request's argument, in arrival order

    def __call__(self, request):
        delay = read_echo_args(request.body)
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.seen.append(delay)
        try:
            if delay.startswith("wait"):
                self.gate.wait(30)
            elif delay == "together":  # answered once this many are in the handler at once
                self.barrier.wait(30)
            elif delay.startswith("sleep"):
                time.sleep(float(delay[5:]))
            return echo_handler(request)
        finally:
            with self.lock:
                self.now -= 1


@pytest.fixture
def counting(impl):
    handler = Counting()
    with KitexTestServer({"echo": handler}, service="echo", implementation=impl.name) as srv:
        handler.server = srv
        yield handler
        handler.gate.set()


def test_each_concurrent_call_gets_a_connection_of_its_own(impl, aio_loop, counting):
    # The handler answers only once all 32 are in it at once (a barrier, not a timing): calls
    # queued behind each other on a connection would never get there.
    counting.barrier = threading.Barrier(32)

    async def main():
        async with Client("echo", counting.server.address, connect_timeout=CONNECT, rpc_timeout=60.0,
                          implementation=impl.name) as c:
            replies = await asyncio.gather(*(c.call("echo", echo_request("together")) for _ in range(32)))
            assert all(read_echo_reply(r) == "together,hi Kitex" for r in replies)
            # then one at a time: the same idle connection each time
            for i in range(5):
                assert read_echo_reply(await c.call("echo", echo_request("s%d" % i))) == "s%d,hi Kitex" % i
            return c._pool.idle_count

    assert aio_loop(main) == 32  # no pool_size: every connection the burst used stays idle
    assert counting.most == 32


def test_waiting_calls_take_released_connections_in_turn(impl, aio_default, counting):
    async def main():
        async with Client("echo", counting.server.address, max_connections=2, connect_timeout=CONNECT,
                          implementation=impl.name) as c:
            replies = await asyncio.gather(*(c.call("echo", echo_request("w%d" % i)) for i in range(100)))
            assert [read_echo_reply(r) for r in replies] == ["w%d,hi Kitex" % i for i in range(100)]
            assert len(c._pool._all) <= 2

    aio_default(main)
    assert counting.most <= 2


def test_the_cap_gives_a_typed_error_at_the_deadline_and_a_cancelled_waiter_passes_its_turn(
    impl, aio_loop, counting
):
    counting.gate.clear()

    async def main():
        async with Client("echo", counting.server.address, max_connections=1, rpc_timeout=None,
                          connect_timeout=CONNECT, implementation=impl.name) as c:
            held = asyncio.ensure_future(c.call("echo", echo_request("wait")))
            await asyncio.sleep(0.1)
            with pytest.raises(ConnectionLimitError) as limit:
                await c.invoke("echo", echo_request("x"), rpc_timeout=0.1)
            assert not limit.value.sent and isinstance(limit.value, TimeoutError)
            assert "all 1 connections allowed per endpoint" in str(limit.value)
            cancelled = asyncio.ensure_future(c.call("echo", echo_request("gone")))
            patient = asyncio.ensure_future(c.call("echo", echo_request("next")))
            await asyncio.sleep(0.05)
            cancelled.cancel()
            counting.gate.set()
            assert read_echo_reply(await held) == "wait,hi Kitex"
            assert read_echo_reply(await asyncio.wait_for(patient, 5)) == "next,hi Kitex"
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            assert len(c._pool._all) == 1

    aio_loop(main)


async def _until(predicate, what, limit=10.0):
    """Wait (bounded) until ``predicate()`` holds: a count, never a timing assertion."""
    for _ in range(int(limit / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting for " + what)


def test_a_waiter_handed_a_connection_after_its_deadline_sends_nothing(impl, aio_loop, counting):
    # Issue 24 item 13. The only connection (max_connections=1) is released while two calls wait
    # for it: the first with a deadline that passes while the loop is busy (the release wakes it
    # in time, but it runs only after its deadline), the second with none. Before: the first sent
    # its request anyway and failed RPCTimeoutError(sent=True), the request on the wire. Now it
    # fails ConnectionLimitError(sent=False) with nothing written, and the connection goes on to
    # the next live waiter.
    async def main():
        async with Client("echo", counting.server.address, max_connections=1, rpc_timeout=None,
                          connect_timeout=CONNECT, implementation=impl.name) as c:
            assert read_echo_reply(await c.call("echo", echo_request("warm"))) == "warm,hi Kitex"
            pool = c._pool
            held = pool.take()  # this test holds the only connection, as a call in flight would
            assert held is not None
            late = asyncio.ensure_future(c.invoke("echo", echo_request("late"), rpc_timeout=0.2))
            await _until(lambda: len(pool.waiters) == 1, "the first waiter")
            patient = asyncio.ensure_future(c.call("echo", echo_request("patient")))
            await _until(lambda: len(pool.waiters) == 2, "the second waiter")
            pool.release(held)  # hands the connection to the oldest waiter, in time...
            time.sleep(0.4)  # ...which runs only after its deadline: this step blocks the loop
            with pytest.raises(ConnectionLimitError) as limit:
                await late
            assert not limit.value.sent
            assert read_echo_reply(await asyncio.wait_for(patient, 10)) == "patient,hi Kitex"
            assert len(pool._all) == 1 and pool.idle_count == 1
        assert counting.seen == ["warm", "patient"]  # "late" never reached the server

    aio_loop(main)


def test_a_pipelining_waiter_woken_after_its_deadline_sends_nothing(impl, aio_default, counting):
    # The same for SharedPool: one connection with room for one call. The held call's reply and
    # the waiter's deadline fall due in one loop iteration (the loop is blocked past both);
    # asyncio runs the reply's callback first, and the protocol wakes the waiter from there, in
    # time. Before, the waiter then wrote its request after its deadline.
    counting.gate.clear()

    async def main():
        async with Client("echo", counting.server.address, pipelining=True, max_in_flight=1,
                          max_connections=1, rpc_timeout=None, connect_timeout=CONNECT,
                          implementation=impl.name) as c:
            held = asyncio.ensure_future(c.call("echo", echo_request("wait")))
            await _until(lambda: counting.now == 1, "the held call in the handler")
            late = asyncio.ensure_future(c.invoke("echo", echo_request("late"), rpc_timeout=0.2))
            await _until(lambda: len(c._pool.waiters) == 1, "the waiter")
            counting.gate.set()
            time.sleep(0.4)  # the reply arrives and the waiter's deadline passes: the loop is blocked
            with pytest.raises(RPCTimeoutError) as timeout:
                await late
            assert not timeout.value.sent and "nothing was sent" in str(timeout.value)
            assert read_echo_reply(await held) == "wait,hi Kitex"
            assert read_echo_reply(await c.call("echo", echo_request("next"))) == "next,hi Kitex"
        assert counting.seen == ["wait", "next"]

    aio_default(main)


DEFAULT_METADATA = {"destService": "echo", "methodName": "echo", "version": "v1"}  # + hostPorts


def test_steady_concurrency_above_ten_opens_no_connection_after_warm_up(impl, aio_loop, counting):
    # Issue 26: with Kitex's 10 idle per endpoint, 32 callers would connect and close 22
    # connections every round. At defaults (the Go binding's four metadata keys) the connections
    # of the warm-up round stay idle and serve every later round: the same 32, none opened or
    # closed. Each round holds all 32 calls in the handler at once (a barrier), so each needs a
    # connection of its own.
    counting.barrier = threading.Barrier(32)
    meta = dict(DEFAULT_METADATA, hostPorts=counting.server.address)

    async def main():
        async with KitexOutputBinding(implementation=impl.name) as binding:
            async def one_round():
                responses = await asyncio.gather(
                    *(binding.invoke(InvokeRequest("get", echo_request("together"), meta)) for _ in range(32))
                )
                assert all(read_echo_reply(r.data) == "together,hi Kitex" for r in responses)

            await one_round()
            (client,) = binding._clients.values()
            pool = client._pool
            warm = set(pool._all)
            assert len(warm) == 32 and pool.idle_count == 32
            for _ in range(3):
                await one_round()
                assert set(pool._all) == warm  # no connection opened, none closed
            assert pool.idle_count == 32

    aio_loop(main)
    assert counting.seen.count("together") == 4 * 32


def test_an_explicit_pool_size_still_caps_the_idle_connections(impl, aio_default, counting):
    counting.barrier = threading.Barrier(8)
    meta = dict(DEFAULT_METADATA, hostPorts=counting.server.address, poolSize="2")

    async def main():
        async with KitexOutputBinding(implementation=impl.name) as binding:
            await asyncio.gather(
                *(binding.invoke(InvokeRequest("get", echo_request("together"), meta)) for _ in range(8))
            )
            (client,) = binding._clients.values()
            await _until(lambda: len(client._pool._all) == 2, "the 6 connections over poolSize to close")
            assert client._pool.idle_count == 2

    aio_default(main)


def test_at_defaults_the_idle_connections_of_a_burst_close_after_max_idle_time(impl, aio_default, counting):
    counting.barrier = threading.Barrier(16)

    async def main():
        async with Client("echo", counting.server.address, max_idle_time=0.3, rpc_timeout=60.0,
                          connect_timeout=CONNECT, implementation=impl.name) as c:
            await asyncio.gather(*(c.call("echo", echo_request("together")) for _ in range(16)))
            assert c._pool.idle_count == 16
            await _until(lambda: not c._pool._all, "the idle connections to close")
            assert c._pool.idle_count == 0
            assert read_echo_reply(await c.call("echo", echo_request("again"))) == "again,hi Kitex"

    aio_default(main)


def test_idle_connections_close_after_max_idle_time(impl, aio_loop, counting):
    async def main():
        async with Client("echo", counting.server.address, pool_size=3, max_idle_time=0.2,
                          connect_timeout=CONNECT, implementation=impl.name) as c:
            await asyncio.gather(*(c.call("echo", echo_request("sleep0.1")) for _ in range(8)))
            assert c._pool.idle_count == 3  # at most pool_size kept
            await asyncio.sleep(0.5)
            assert c._pool.idle_count == 0 and c._pool._all == set()
            # and the next call simply opens a new one
            assert read_echo_reply(await c.call("echo", echo_request("again"))) == "again,hi Kitex"

    aio_loop(main)


@pytest.mark.parametrize("options", [{"pipelining": True}, {"mux_connection": True, "transport": "ttheader"}],
                         ids=["pipelining", "mux"])
def test_shared_connections_close_after_max_idle_time_too(impl, aio_default, options):
    # The Python test server answers in order, which a mux client accepts as well.
    with KitexTestServer({"echo": echo_handler}, service="echo", implementation=impl.name) as srv:
        async def main():
            async with Client("echo", srv.address, max_idle_time=0.2, connect_timeout=CONNECT,
                              implementation=impl.name, **options) as c:
                await asyncio.gather(*(c.call("echo", echo_request("m%d" % i)) for i in range(20)))
                assert len(c._pool._all) == 1
                await asyncio.sleep(0.5)
                assert c._pool._all == set()
                assert read_echo_reply(await c.call("echo", echo_request("again"))) == "again,hi Kitex"

        aio_default(main)


def test_a_pool_size_of_zero_keeps_no_idle_connection(impl, aio_default, counting):
    async def main():
        async with Client("echo", counting.server.address, pool_size=0, connect_timeout=CONNECT,
                          implementation=impl.name) as c:
            for i in range(3):
                assert read_echo_reply(await c.call("echo", echo_request("z%d" % i))) == "z%d,hi Kitex" % i
                assert c._pool.idle_count == 0

    aio_default(main)


def test_connection_options_are_validated_before_any_io(impl):
    base = dict(connect_timeout=CONNECT, implementation=impl.name)
    with pytest.raises(MetadataError, match="mux_connection needs transport ttheader"):
        Client("echo", "127.0.0.1:1", mux_connection=True, **base)
    with pytest.raises(MetadataError, match="mux_connection needs transport ttheader"):
        Client("echo", "127.0.0.1:1", mux_connection=True, transport="buffered", **base)
    with pytest.raises(MetadataError, match="exclude each other"):
        Client("echo", "127.0.0.1:1", mux_connection=True, pipelining=True, transport="ttheader", **base)
    with pytest.raises(MetadataError, match="pipelining must be True or False"):
        Client("echo", "127.0.0.1:1", pipelining="yes", **base)
    for bad in (0, -1, 65536, 2.0, True):
        with pytest.raises(MetadataError, match="max_connections must be an int in 1-65535"):
            Client("echo", "127.0.0.1:1", max_connections=bad, **base)
    Client("echo", "127.0.0.1:1", mux_connection=True, transport="ttheader-framed", **base)


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"muxConnection": "true"}, "muxConnection needs transport ttheader or ttheader-framed"),
        ({"muxConnection": "true", "transport": "buffered"}, "muxConnection needs transport ttheader"),
        ({"muxConnection": "yes"}, "muxConnection: 'yes' is not true or false"),
        ({"pipelining": "maybe"}, "pipelining: 'maybe' is not true or false"),
        ({"muxConnection": "true", "pipelining": "true", "transport": "ttheader"}, "exclude each other"),
        ({"maxConnections": "0"}, "maxConnections: '0' is not a whole number in 1-65535"),
        ({"maxconnections": "4"}, "did you mean 'maxConnections'"),
    ],
)
def test_binding_metadata_for_the_connection_model_is_strict(impl, aio_default, extra, message):
    meta = {"hostPorts": "127.0.0.1:1", "destService": "echo", "methodName": "echo", "version": "v1"}
    meta.update(extra)

    async def main():
        async with KitexOutputBinding(implementation=impl.name) as binding:
            with pytest.raises(MetadataError, match=message):
                await binding.invoke(InvokeRequest("get", echo_request("x"), meta))
            with pytest.raises(MetadataError, match=message):
                await binding.init(meta)

    aio_default(main)
