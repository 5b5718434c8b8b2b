"""Component instances are bounded: a flood of distinct ``x-component-instance`` names (each one
would otherwise keep a binding and its connections) drops the least recently used, with a warning,
and closes it only once the calls running on it have ended."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile

import pytest

grpc = pytest.importorskip("grpc", reason='needs "kitex_fast[dapr]"')

import stack  # noqa: E402
from kitex_fast.dapr.core import Component  # noqa: E402
from kitex_fast.dapr.proto import contract as pb  # noqa: E402


def test_lru_bound_evicts_least_recently_used_with_a_warning(aio_default, caplog) -> None:
    async def body() -> None:
        component = Component(max_instances=3)
        await component.init("yaml", {"destService": "echo"})
        for name in ("a", "b"):
            component.instance(name)
        component.instance("yaml")  # used again: now the most recent
        component.instance("c")  # over the bound: "a" goes, the YAML instance stays
        assert component.instance_names == ["b", "c", "yaml"]
        for i in range(100):
            component.instance("flood-%d" % i)
        assert len(component.instance_names) == 3
        await component.close()

    with caplog.at_level(logging.WARNING):
        aio_default(body)
    evictions = [r for r in caplog.records if "dropping the least recently used" in r.getMessage()]
    assert len(evictions) == 101
    assert "'a'" in evictions[0].getMessage()
    assert any("'yaml' and its YAML defaults" in r.getMessage() for r in evictions)


def test_an_evicted_instance_closes_only_after_its_calls(aio_default) -> None:
    async def body() -> None:
        component = Component(max_instances=1)
        inst = component.instance("busy")
        closed = asyncio.Event()
        real_close = inst.binding.close

        async def close() -> None:
            await real_close()
            closed.set()

        inst.binding.close = close
        inst.in_flight += 1  # as invoke() does while the Kitex call runs
        component.instance("other")  # evicts "busy"
        await asyncio.sleep(0)
        assert inst.evicted and not closed.is_set()
        inst.in_flight -= 1
        component._retire(inst)  # what invoke()'s finally does for the last call
        await asyncio.wait_for(closed.wait(), 10)
        await component.close()

    aio_default(body)


def test_a_flood_of_instance_names_is_bounded_in_the_process(impl) -> None:
    with tempfile.TemporaryDirectory(prefix="kf-sock-") as d:
        c = stack.Component(os.path.join(d, "sockets"), implementation=impl.name,
                            extra=["--max-instances", "8"]).start()
        try:
            with grpc.insecure_channel("unix:" + c.socket) as ch:
                stub = pb.OutputBindingStub(ch)
                for i in range(200):
                    reply = stub.ListOperations(pb.ListOperationsRequest(), timeout=30,
                                                metadata=(("x-component-instance", "n%d" % i),))
                    assert list(reply.operations) == ["get"]
            assert c.log().count("dropping the least recently used") == 192
        finally:
            assert c.stop() == 0


def test_the_deadline_cap_repeats_for_fresh_deadlines_and_never_exceeds_them() -> None:
    from kitex_fast.dapr.core import _within_deadline

    # daprd's fresh per-call deadlines give one capped value: the binding's route cache hits.
    capped = {_within_deadline({}, {}, 29.0 + i / 997)["rpcTimeout"] for i in range(900)}
    assert capped == {"29000ms"}
    for seconds in (0.0004, 0.0123, 0.4999, 1.234, 9.99, 29.98, 123.4):
        ms = int(_within_deadline({}, {"rpcTimeout": "1h"}, seconds)["rpcTimeout"][:-2])
        assert 1 <= ms <= max(1, seconds * 1000) and ms >= min(seconds * 900, seconds * 1000 - 1)
    assert _within_deadline({"rpcTimeout": "1s"}, {}, 2.0) == {"rpcTimeout": "1s"}  # already shorter
    assert _within_deadline({"rpcTimeout": "soon"}, {}, 2.0) == {"rpcTimeout": "soon"}  # the binding reports it
