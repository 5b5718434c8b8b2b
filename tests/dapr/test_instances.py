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
    # (101 evictions: the first ten are logged, then one in a thousand, and every initialised one)
    assert len(evictions) == 10 and "(10 dropped so far)" in evictions[-1].getMessage()
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
        finally:
            assert c.stop() == 0
        # The first ten evictions are logged one by one, the rest counted (issue 24 item 14).
        assert c.log().count("dropping the least recently used") == 10
        assert "192 component instances were dropped (--max-instances 8)" in c.log()
