"""aio's rpc timeouts on one loop timer per pool (``protocol.Deadlines``), on both twins and both
loops: a call expires at its deadline and never after it ended, whatever order the deadlines come
in; the queue of waiting calls stays bounded; one failing expiry never stops the others. The
timeouts are short but nothing checks a duration: only which calls expired, in what order."""

from __future__ import annotations

import asyncio
from typing import Any, List, Tuple

import pytest

from kitex_fast.aio import protocol


@pytest.fixture(params=["c", "py"])
def deadlines_cls(request: pytest.FixtureRequest) -> Any:
    try:
        return protocol.implementation(request.param).Deadlines
    except ImportError as exc:
        pytest.skip(str(exc))


class Proto:
    """What Deadlines calls back: ``expire(fut, budget)``, recorded in order."""

    def __init__(self, log: List[Tuple[str, Any]], name: str) -> None:
        self.log = log
        self.name = name

    def expire(self, fut: Any, budget: Any) -> None:
        self.log.append((self.name, budget))
        if not fut.done():
            fut.set_result("expired")


async def _settle(*futs: Any) -> None:
    await asyncio.wait_for(asyncio.gather(*futs), 10)


def test_calls_with_one_timeout_expire_in_order_unless_they_ended(aio_loop, deadlines_cls) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        d = deadlines_cls(loop)
        log: List[Tuple[str, Any]] = []
        futs = [loop.create_future() for _ in range(5)]
        now = loop.time()
        handles = [d.call_at(now + 0.02 + i * 0.001, Proto(log, "c%d" % i), f, 0.02) for i, f in enumerate(futs)]
        handles[0].cancel()  # the oldest ends before its deadline: it leaves the queue at once
        futs[0].set_result("replied")
        handles[3].cancel()  # one in the middle: it stays queued, skipped when its turn comes
        futs[3].set_result("replied")
        assert len(d) == 4
        await _settle(*futs)
        assert [name for name, _ in log] == ["c1", "c2", "c4"]
        assert [f.result() for f in futs] == ["replied", "expired", "expired", "replied", "expired"]
        assert len(d) == 0
        for h in handles:
            h.cancel()  # after expiry: harmless
        d.close()

    aio_loop(main)


def test_a_shorter_deadline_expires_first_and_an_emptied_queue_rearms(aio_loop, deadlines_cls) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        d = deadlines_cls(loop)
        log: List[Tuple[str, Any]] = []
        now = loop.time()
        long_fut, short_fut = loop.create_future(), loop.create_future()
        long_handle = d.call_at(now + 30.0, Proto(log, "long"), long_fut, 30.0)
        d.call_at(now + 0.01, Proto(log, "short"), short_fut, 0.01)  # earlier than the newest queued
        await _settle(short_fut)
        assert log == [("short", 0.01)] and not long_fut.done()
        # The queue empties while its timer is armed for 30 s; a 10 ms call must not wait for it.
        long_handle.cancel()
        long_fut.cancel()
        assert len(d) == 0
        again = loop.create_future()
        d.call_at(loop.time() + 0.01, Proto(log, "again"), again, 0.01)
        await _settle(again)
        assert log == [("short", 0.01), ("again", 0.01)]
        d.close()

    aio_loop(main)


def test_the_queue_is_bounded_while_an_old_call_neither_ends_nor_expires(aio_loop, deadlines_cls) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        d = deadlines_cls(loop, 4)
        log: List[Tuple[str, Any]] = []
        stuck = loop.create_future()
        d.call_at(loop.time() + 30.0, Proto(log, "stuck"), stuck, 30.0)
        futs = []
        for i in range(20):  # each ends at once, but behind the stuck one
            f = loop.create_future()
            h = d.call_at(loop.time() + 30.0, Proto(log, "c%d" % i), f, 30.0)
            h.cancel()
            futs.append(f)
            assert len(d) <= 4
        last = loop.create_future()
        d.call_at(loop.time() + 30.01, Proto(log, "own timer"), last, 0.01)  # past the limit: its own timer
        d.close()  # drops the queue and its timer; the own-timer call is the caller's to cancel
        assert len(d) == 0 and log == []
        for f in futs + [stuck, last]:
            f.cancel()

    aio_loop(main)


def test_an_expiry_that_raises_does_not_stop_the_others(deadlines_cls) -> None:
    class Broken(Proto):
        def expire(self, fut: Any, budget: Any) -> None:
            raise RuntimeError("broken expire")

    loop = asyncio.new_event_loop()
    reports: List[Any] = []
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    try:
        async def main() -> List[Tuple[str, Any]]:
            d = deadlines_cls(loop)
            log: List[Tuple[str, Any]] = []
            now = loop.time()
            first, second = loop.create_future(), loop.create_future()
            d.call_at(now + 0.01, Broken(log, "broken"), first, 0.01)
            d.call_at(now + 0.01, Proto(log, "fine"), second, 0.01)
            await _settle(second)
            first.cancel()
            return log

        assert loop.run_until_complete(main()) == [("fine", 0.01)]
    finally:
        loop.close()
    assert [type(r.get("exception")) for r in reports] == [RuntimeError]
    assert "expiring a call failed" in reports[0]["message"]
