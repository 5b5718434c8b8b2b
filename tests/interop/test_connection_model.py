"""The connection model against real Kitex servers (Go, tests/interop/go) that count what their
handlers see (``kitexserver -stats``): a default (non-mux) Kitex server answers a connection's
requests one after the other, so calls that should run at the same time must be on connections of
their own; a mux server takes them all on a few connections. Counts, never timings.

Both implementations; the asyncio client on asyncio's loop and uvloop; the sync binding on
threads for comparison (each thread holds its own connection)."""

from __future__ import annotations

import asyncio
import os
import random
import threading

import pytest

from kitex_fast import (
    ConnectionLimitError,
    InvokeRequest,
    KitexOutputBinding,
    MetadataError,
)
from kitex_fast import aio
from kitex_fast.aio import Client
from peers import sleep_call, sleep_reply

pytestmark = pytest.mark.interop

CALLERS = 64
STATS = ("-stats", "127.0.0.1:0")



def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def default_server(kitex_server):
    server = kitex_server("default", "rich", *STATS)
    server.stats(reset=True)
    return server


@pytest.fixture
def mux_server(kitex_server):
    server = kitex_server("mux", "rich", *STATS)
    server.stats(reset=True)
    return server


def test_concurrent_calls_to_a_slow_method_run_at_the_same_time_on_a_default_server(
    impl, aio_loop, default_server
):
    # 64 callers of a 1.5 s method (long enough for all 64 to connect on a loaded machine): the server holds all 64 in its handler at once, each on a
    # connection of its own (before: up to 100 pipelined on one connection, served one by one).
    # Then a second round: at defaults the 64 connections stayed idle and serve it, so the server
    # sees no new client address (issue 26; before, 10 were kept and 54 new ones connected).
    async def main():
        async with Client("rich", default_server.address, connect_timeout=2.0, implementation=impl.name) as c:
            replies = await asyncio.gather(*(c.call("sleep", sleep_call(1500 + i)) for i in range(CALLERS)))
            first = default_server.stats()
            idle = c._pool.idle_count
            again = await asyncio.gather(*(c.call("sleep", sleep_call(100)) for _ in range(CALLERS)))
            assert all(sleep_reply(r) == "slept 100" for r in again)
            return replies, idle, first

    replies, idle, stats = aio_loop(main)
    assert [sleep_reply(r) for r in replies] == ["slept %d" % (1500 + i) for i in range(CALLERS)]
    assert stats["max_in_flight"] == CALLERS, stats
    assert stats["peers"] == CALLERS, stats
    assert idle == CALLERS  # no pool_size: as many idle as the calls in flight used
    assert default_server.stats()["peers"] == CALLERS  # the second round opened none


def test_the_sync_binding_on_threads_behaves_the_same(impl, default_server):
    meta = {"hostPorts": default_server.address, "destService": "rich", "methodName": "sleep",
            "version": "v1", "connectTimeout": "2s"}
    barrier = threading.Barrier(CALLERS)
    replies = [None] * CALLERS

    with KitexOutputBinding(implementation=impl.name) as binding:
        def worker(i):
            barrier.wait()
            replies[i] = binding.invoke(InvokeRequest("get", sleep_call(1500), meta)).data

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(CALLERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(sleep_reply(r) == "slept 1500" for r in replies)
        stats = default_server.stats()
        assert stats["max_in_flight"] == CALLERS and stats["peers"] == CALLERS, stats
        # A second round on the idle connections (the Go binding's four keys plus
        # connectTimeout; no poolSize): no new connection (issue 26).
        for i in range(CALLERS):
            replies[i] = None
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(CALLERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert all(sleep_reply(r) == "slept 1500" for r in replies)
    assert default_server.stats()["peers"] == CALLERS


@pytest.mark.parametrize("transport", ["ttheader", "ttheader-framed"])
def test_mux_carries_the_same_calls_on_a_few_connections_still_concurrently(
    impl, aio_loop, mux_server, transport
):
    async def main():
        async with Client("rich", mux_server.address, transport=transport, mux_connection=True,
                          connect_timeout=2.0, implementation=impl.name) as c:
            replies = await asyncio.gather(*(c.call("sleep", sleep_call(1500 + i)) for i in range(CALLERS)))
            return replies, len(c._pool._all)

    replies, connections = aio_loop(main)
    assert [sleep_reply(r) for r in replies] == ["slept %d" % (1500 + i) for i in range(CALLERS)]
    stats = mux_server.stats()
    assert stats["max_in_flight"] == CALLERS, stats
    assert stats["peers"] == connections <= 2, stats  # max_in_flight 100: a second at 50


def test_the_binding_takes_mux_from_metadata_and_refuses_it_without_ttheader(impl, aio_loop, mux_server):
    meta = {"hostPorts": mux_server.address, "destService": "rich", "methodName": "sleep",
            "version": "v1", "connectTimeout": "2s", "transport": "ttheader", "muxConnection": "true"}

    async def main():
        async with aio.KitexOutputBinding(implementation=impl.name) as binding:
            responses = await asyncio.gather(
                *(binding.invoke(InvokeRequest("get", sleep_call(1500), meta)) for _ in range(CALLERS))
            )
            with pytest.raises(MetadataError, match="muxConnection needs transport ttheader"):
                await binding.invoke(InvokeRequest("get", sleep_call(0), dict(meta, transport="framed")))
            return responses

    responses = aio_loop(main)
    assert all(sleep_reply(r.data) == "slept 1500" for r in responses)
    stats = mux_server.stats()
    assert stats["max_in_flight"] == CALLERS and stats["peers"] <= 2, stats


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("mode", ["default", "mux"])
def test_cancelled_calls_never_make_the_others_fail(impl, aio_loop, kitex_server, mode):
    # 200 calls to a 300 ms method, half of them cancelled after 50 ms, rpc timeout 5 s: every
    # call nobody cancelled succeeds (before: 68 of 100 failed with RPCTimeoutError, queued
    # behind cancelled calls on pipelined connections).
    server = kitex_server(mode, "rich")
    options = {"transport": "ttheader", "mux_connection": True} if mode == "mux" else {}
    rng = random.Random(17)
    n = 200

    async def main():
        async with Client("rich", server.address, rpc_timeout=5.0, connect_timeout=2.0,
                          implementation=impl.name, **options) as c:
            tasks = [asyncio.ensure_future(c.call("sleep", sleep_call(300))) for _ in range(n)]
            await asyncio.sleep(0.05)
            cancelled = set(rng.sample(range(n), n // 2))
            for i in cancelled:
                tasks[i].cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            # and the client goes on: the next calls succeed too
            more = await asyncio.gather(*(c.call("sleep", sleep_call(1)) for _ in range(20)))
            return results, cancelled, more

    results, cancelled, more = aio_loop(main, debug=True)
    for i, result in enumerate(results):
        if i in cancelled:
            assert isinstance(result, asyncio.CancelledError), result
        else:
            assert not isinstance(result, BaseException), result
            assert sleep_reply(result) == "slept 300"
    assert all(sleep_reply(r) == "slept 1" for r in more)


def test_calls_past_the_connection_cap_wait_then_fail_typed_and_no_connection_leaks(
    impl, aio_loop, default_server
):
    cap = 4

    async def main():
        # a first call on this loop, so that whatever the loop opens lazily is open already
        async with Client("rich", default_server.address, connect_timeout=2.0, implementation=impl.name) as c:
            await c.call("sleep", sleep_call(0))
        fds_before = _open_fds()
        async with Client("rich", default_server.address, max_connections=cap, rpc_timeout=None,
                          connect_timeout=2.0, implementation=impl.name) as c:
            busy = [asyncio.ensure_future(c.call("sleep", sleep_call(1500))) for _ in range(cap)]
            await asyncio.sleep(0.3)  # all four connections carry a call
            late = await asyncio.gather(
                *(c.invoke("sleep", sleep_call(0), rpc_timeout=0.3) for _ in range(6)),
                return_exceptions=True,
            )
            # one that waits long enough gets a connection as soon as a busy call ends
            waited = await c.invoke("sleep", sleep_call(2), rpc_timeout=10.0)
            done = await asyncio.gather(*busy)
            connections = len(c._pool._all)
        return fds_before, late, waited, done, connections, _open_fds()

    fds_before, late, waited, done, connections, fds_after = aio_loop(main)
    assert all(isinstance(r, ConnectionLimitError) for r in late), late
    assert all(not r.sent for r in late)
    assert "all 4 connections allowed per endpoint" in str(late[0])
    assert "max_connections" in str(late[0]) and "nothing was sent" in str(late[0])
    assert sleep_reply(waited.data) == "slept 2"
    assert all(sleep_reply(r) == "slept 1500" for r in done)
    assert connections <= cap
    assert fds_after == fds_before
    assert default_server.stats()["peers"] == cap + 1  # and the first call's
