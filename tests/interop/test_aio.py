"""kitex_fast.aio against real Kitex servers (Go, tests/interop/go), on both implementations and on
asyncio's default loop and uvloop: many calls at once on every server variant and framing it
answers (one call per connection on default servers, many on mux connections), mux replies out of
order, cancellation storms, a stalled server, a server killed under load. The connection model
itself, counted by the servers: tests/interop/test_connection_model.py."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

import peers
from peers import sleep_call, sleep_reply
from kitex_fast import InvokeRequest, KitexError, KitexOutputBinding, RPCTimeoutError
from kitex_fast import aio
from kitex_fast.aio import Client
from kitex_fast.testing import echo_request, read_echo_reply

pytestmark = pytest.mark.interop

# Which framings each server variant answers (docs/protocol.md §1, §1.1, §9.2; the sync driver's
# tests/interop/test_binding_interop.py proves the same table).
VARIANTS = [
    ("default", "framed"),
    ("default", "buffered"),
    ("default", "ttheader"),
    ("default", "ttheader-framed"),
    ("meta", "framed"),
    ("meta", "buffered"),
    ("meta", "ttheader"),
    ("meta", "ttheader-framed"),
    ("mux", "ttheader"),
    ("mux", "ttheader-framed"),
    ("generic-v1", "framed"),
    ("generic-v1", "ttheader"),
    ("generic-v1", "ttheader-framed"),
    ("multi", "framed"),
    ("multi", "buffered"),
    ("multi", "ttheader"),
    ("multi", "ttheader-framed"),
]



async def _many(client: Client, n: int) -> None:
    replies = await asyncio.gather(*(client.call("echo", echo_request("m%d-%s" % (i, "x" * (i % 97)))) for i in range(n)))
    for i, reply in enumerate(replies):
        assert read_echo_reply(reply) == "m%d-%s,hi Kitex" % (i, "x" * (i % 97))


@pytest.mark.parametrize("mode,transport", [("default", "framed"), ("mux", "ttheader")])
def test_concurrent_calls_are_each_matched_to_their_reply(impl, aio_loop, kitex_server, mode, transport):
    server = kitex_server(mode, "echo")

    async def main():
        async with Client("echo", server.address, transport=transport, mux_connection=mode == "mux",
                          max_connections=4, max_in_flight=64, connect_timeout=2.0,
                          implementation=impl.name) as client:
            await _many(client, 1000)
            assert len(client._pool._all) <= 4

    aio_loop(main)


@pytest.mark.slow
@pytest.mark.parametrize("mode,transport", VARIANTS)
def test_10000_concurrent_calls_on_every_variant_and_framing(impl, aio_default, kitex_server, mode, transport):
    server = kitex_server(mode, "echo")

    async def main():
        # mux: many calls per connection; every other server: one call per connection at a
        # time, so most of the 10,000 wait for one of the 64 connections
        mux = mode == "mux"
        async with Client("echo", server.address, transport=transport, mux_connection=mux,
                          max_connections=8 if mux else 64, max_in_flight=256,
                          connect_timeout=2.0, implementation=impl.name) as client:
            await _many(client, 10000)
            assert len(client._pool._all) <= (8 if mux else 64)

    aio_default(main)


def test_mux_replies_arrive_out_of_order_and_still_match(impl, aio_loop, kitex_server):
    server = kitex_server("mux", "rich")
    rng = random.Random(11)
    sleeps = [rng.randrange(0, 60) for _ in range(60)]
    sleeps[0] = 300  # the first call surely finishes last

    async def main():
        done = []

        async def one(i):
            reply = await client.call("sleep", sleep_call(sleeps[i]))
            done.append(i)
            return reply

        async with Client("rich", server.address, transport="ttheader", mux_connection=True,
                          max_connections=1, connect_timeout=2.0, implementation=impl.name) as client:
            replies = await asyncio.gather(*(one(i) for i in range(len(sleeps))))
            assert len(client._pool._all) == 1  # all of them on one connection
        return replies, done

    replies, done = aio_loop(main)
    assert [sleep_reply(r) for r in replies] == ["slept %d" % s for s in sleeps]
    assert done != sorted(done) and done[-1] == 0, "replies came in request order"


@pytest.mark.filterwarnings("error")
def test_cancellation_storm_then_1000_more_calls_succeed_in_order(impl, aio_loop, kitex_server):
    _storm(aio_loop, impl, kitex_server("default", "echo"), "framed", "echo")


@pytest.mark.filterwarnings("error")
def test_cancellation_storm_then_1000_more_calls_succeed_out_of_order(impl, aio_default, kitex_server):
    _storm(aio_default, impl, kitex_server("mux", "rich"), "ttheader", "sleep")


def _storm(runner, impl, server, transport, method):
    """Cancel a random half of 1,000 calls mid-flight, then 1,000 more succeed on the same client
    (in asyncio debug mode, warnings as errors: nothing left pending or unretrieved)."""
    rng = random.Random(3)
    n = 1000

    def request(i):
        return sleep_call(rng.randrange(0, 20)) if method == "sleep" else echo_request("c%d" % i)

    async def main():
        async with Client("x", server.address, transport=transport, max_connections=4, max_in_flight=128,
                          mux_connection=transport == "ttheader", connect_timeout=2.0,
                          implementation=impl.name) as client:
            tasks = [asyncio.ensure_future(client.call(method, request(i))) for i in range(n)]
            await asyncio.sleep(0.02)
            cancelled = set(rng.sample(range(n), n // 2))
            for i in cancelled:
                tasks[i].cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            # most of them were cut off mid-flight: sent, reply not yet there
            assert sum(isinstance(r, asyncio.CancelledError) for r in results) >= n // 4
            for i, result in enumerate(results):
                if isinstance(result, BaseException):
                    assert isinstance(result, asyncio.CancelledError) and i in cancelled, result
                elif method == "echo":
                    assert read_echo_reply(result) == "c%d,hi Kitex" % i
            more = await asyncio.gather(*(client.call("echo" if method == "echo" else "sleep",
                                                      echo_request("d%d" % i) if method == "echo" else sleep_call(0))
                                          for i in range(1000)))
            if method == "echo":
                assert [read_echo_reply(r) for r in more] == ["d%d,hi Kitex" % i for i in range(1000)]
            else:
                assert all(sleep_reply(r) == "slept 0" for r in more)

    runner(main, debug=True)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("pipelining", [False, True], ids=["pingpong", "pipelining"])
def test_stalled_server_times_out_within_the_deadline_then_recovers(impl, aio_loop, kitex_server, pipelining):
    server = kitex_server("default", "rich")

    async def main():
        async with Client("rich", server.address, rpc_timeout=0.3, max_connections=1 if pipelining else 8,
                          pipelining=pipelining, connect_timeout=2.0, implementation=impl.name) as client:
            start = time.monotonic()
            results = await asyncio.gather(
                client.call("sleep", sleep_call(3000)),
                *(client.call("sleep", sleep_call(0)) for _ in range(5)),
                return_exceptions=True,
            )
            elapsed = time.monotonic() - start
            assert isinstance(results[0], RPCTimeoutError) and results[0].sent
            if pipelining:
                # the head-of-line cost: on a default (in-order) server the rest wait behind it
                assert all(isinstance(r, RPCTimeoutError) and r.sent for r in results), results
            else:
                # each on a connection of its own: only the stalled call is late
                assert all(sleep_reply(r) == "slept 0" for r in results[1:]), results
            assert elapsed < 2.5  # at the deadline, long before the server's 3 s answer
            # the stalled connection is retired; a new one serves the next call
            assert sleep_reply(await client.call("sleep", sleep_call(1))) == "slept 1"

    aio_loop(main, debug=True)


def test_server_killed_under_load_every_call_ends_typed_and_the_client_recovers(impl, aio_loop, go_peers):
    server = peers.KitexServer("default", "echo").start()
    port = server.port
    outcomes = {"ok": 0, "error": 0}

    async def main():
        nonlocal server
        stop = asyncio.Event()

        async def worker(w):
            i = 0
            while not stop.is_set():
                try:
                    reply = await client.call("echo", echo_request("w%d-%d" % (w, i)))
                    assert read_echo_reply(reply) == "w%d-%d,hi Kitex" % (w, i)
                    outcomes["ok"] += 1
                except KitexError:  # typed, never anything else
                    outcomes["error"] += 1
                    await asyncio.sleep(0.01)
                i += 1

        async with Client("echo", "127.0.0.1:%d" % port, rpc_timeout=2.0, connect_timeout=0.5,
                          implementation=impl.name) as client:
            workers = [asyncio.ensure_future(worker(w)) for w in range(32)]
            await asyncio.sleep(0.3)
            before = outcomes["ok"]
            server._proc.kill()  # SIGKILL mid-load: no graceful close
            await asyncio.sleep(0.3)
            assert outcomes["error"] > 0
            server.stop()
            server = peers.KitexServer("default", "echo", "-listen", "127.0.0.1:%d" % port).start()
            recovered = outcomes["ok"]
            deadline = time.monotonic() + 10
            while outcomes["ok"] < recovered + 100 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*workers)
            assert before > 0 and outcomes["ok"] >= recovered + 100, outcomes

    try:
        aio_loop(main)
    finally:
        server.stop()


def test_async_binding_matches_the_sync_binding_on_a_real_server(impl, aio_loop, kitex_server):
    server = kitex_server("meta", "echo")
    meta = {"hostPorts": server.address, "destService": "echo", "methodName": "echo",
            "version": "v1", "transport": "ttheader", "header.trace": "t1", "connectTimeout": "2s"}
    request = InvokeRequest("get", echo_request("dapr"), meta)

    async def main():
        async with aio.KitexOutputBinding(implementation=impl.name) as binding:
            return await asyncio.gather(*(binding.invoke(request) for _ in range(50)))

    responses = aio_loop(main)
    with KitexOutputBinding(implementation=impl.name) as sync:
        expected = sync.invoke(request)
    for response in responses:
        assert read_echo_reply(response.data) == "dapr,hi Kitex"
        assert {k: v for k, v in response.metadata.items() if k != "seqId"} == {
            k: v for k, v in expected.metadata.items() if k != "seqId"
        }
    assert response.metadata["intHeader.22"] == "2"  # MsgType = reply (ServerTTHeaderHandler)
