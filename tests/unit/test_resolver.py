"""The resolver layer without etcd: Kitex's weighted round robin, registry URLs and values, and a
user's own Resolver driving a Client (both implementations) through set changes. The etcd resolver
against a real etcd and real Kitex servers: tests/interop/test_registry.py."""

from __future__ import annotations

import collections
import random
import threading
from typing import Callable, Dict, List, Optional, Tuple

import pytest

from kitex_fast import Client, MetadataError
from kitex_fast.errors import NoInstanceError, ResolveError
from kitex_fast.pool import Endpoint
from kitex_fast.resolver import (
    DEFAULT_PREFIX,
    MAX_SCHEDULE,
    Instance,
    parse_instance,
    parse_registry,
    wrr_schedule,
)
from kitex_fast.testing import KitexTestServer, echo_handler, echo_request, read_echo_reply


def ins(port: int, weight: int = 10) -> Instance:
    return Instance(Endpoint("127.0.0.1", port), weight)


def test_wrr_is_kitexs_smooth_weighted_round_robin() -> None:
    cycle = wrr_schedule([ins(1, 10), ins(2, 30)], random.Random(0))
    assert len(cycle) == 4 and collections.Counter(cycle) == {0: 1, 1: 3}
    # smooth: the heavy one is never picked three times in a row across the cycle's seam
    assert collections.Counter(wrr_schedule([ins(1, 5), ins(2, 1), ins(3, 1)], random.Random(1))) == {0: 5, 1: 1, 2: 1}


def test_wrr_equal_weights_is_round_robin_and_skips_weight_0() -> None:
    assert wrr_schedule([ins(1), ins(2), ins(3)]) == [0, 1, 2]
    assert wrr_schedule([ins(1, 0), ins(2, -1), ins(3, 7)]) == [2]
    assert wrr_schedule([ins(1, 0)]) == []


def test_wrr_cycle_is_bounded() -> None:
    cycle = wrr_schedule([ins(1, 1), ins(2, 1_000_003), ins(3, 999_983)])
    assert len(cycle) <= MAX_SCHEDULE + 3 and 0 in cycle


def test_wrr_for_8000_instances_keeps_kitexs_proportions_in_bounded_length() -> None:
    # Issue 24 item 12: the smooth WRR loop was O(length x instances) (2.75 s for the first
    # call), and its 4,096-entry cap scaled 8,000 instances of weights 10 and 20 to weight 1 each.
    instances = [ins(1 + i % 60000, 10 if i % 2 else 20) for i in range(8000)]
    cycle = wrr_schedule(instances, random.Random(3))
    assert len(cycle) == 12000 <= max(MAX_SCHEDULE, 4 * len(instances)) + len(instances)
    counts = collections.Counter(cycle)
    assert all(counts[i] == (1 if i % 2 else 2) for i in range(8000))
    # spread: no instance waits much longer than total/weight picks for its next turn
    last: Dict[int, int] = {}
    for pos, i in enumerate(cycle + cycle):
        if i in last:
            assert pos - last[i] <= 2 * 12000 // counts[i], (i, pos - last[i])
        last[i] = pos


def test_wrr_past_the_cap_keeps_every_instance_and_roughly_its_share() -> None:
    instances = [ins(i + 1, w) for i, w in enumerate([1, 7, 1000, 1001, 5000])]
    cycle = wrr_schedule(instances, random.Random(0))
    counts = collections.Counter(cycle)
    assert len(cycle) <= MAX_SCHEDULE + len(instances) and set(counts) == {0, 1, 2, 3, 4}
    assert counts[4] / len(cycle) == pytest.approx(5000 / 7009, rel=0.01)


def test_wrr_huge_weights_from_a_users_resolver_do_not_overflow() -> None:
    cycle = wrr_schedule([ins(1, 10**400), ins(2, 1), ins(3, True)])  # (True is no weight)
    assert set(cycle) == {0, 1} and len(cycle) <= MAX_SCHEDULE + 2


@pytest.mark.parametrize("url", ["http://127.0.0.1:2379", "consul://a:1", "etcd://", "etcd://a",
                                 "etcd://a:1/path", "etcd://user@a:1", "", 5])
def test_registry_url_must_be_etcd(url: object) -> None:
    with pytest.raises(MetadataError, match="registry"):
        parse_registry(url)


def test_registry_url_and_prefix() -> None:
    spec = parse_registry("etcd://127.0.0.1:2379,[::1]:2380/")
    assert spec.endpoints == (Endpoint("127.0.0.1", 2379), Endpoint("::1", 2380))
    assert spec.prefix == DEFAULT_PREFIX and str(spec) == "etcd://127.0.0.1:2379,[::1]:2380"
    assert parse_registry("ETCD://a:1", "my/prefix/").prefix == "my/prefix"
    with pytest.raises(MetadataError, match="registryPrefix"):
        parse_registry("etcd://a:1", " ")


def test_registry_values_as_registry_etcd_writes_them() -> None:
    value = b'{"network":"tcp","address":"10.0.0.1:8888","weight":30,"tags":{"zone":"a"}}'
    assert parse_instance(b"k", value) == Instance(Endpoint("10.0.0.1", 8888), 30, {"zone": "a"}, "tcp")
    # weight <= 0 or missing: registry-etcd's resolver uses its default weight, 10
    assert parse_instance(b"k", b'{"network":"tcp","address":"a:1","weight":0,"tags":null}').weight == 10
    for bad in (b"{", b"[]", b'{"address":5}', b'{"address":"a"}', b'{"address":"a:1","weight":"x"}',
                b'{"address":"a:1","network":"unix"}', b'{"address":"a:1","tags":{"k":1}}'):
        with pytest.raises(ValueError):
            parse_instance(b"k", bad)


class ManualResolver:
    """A user's own registry: instance sets pushed by hand."""

    description = "manual"

    def __init__(self, instances: Optional[Tuple[Instance, ...]] = None) -> None:
        self.instances = instances
        self.listeners: List[Callable[[Tuple[Instance, ...]], None]] = []
        self.closed = False

    def resolve(self, service: str, timeout: Optional[float]) -> Tuple[Instance, ...]:
        if self.instances is None:
            raise ResolveError("manual: nothing yet for %s" % service)
        return self.instances

    def subscribe(self, service: str, listener: Callable[[Tuple[Instance, ...]], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def close(self) -> None:
        self.closed = True

    def push(self, instances: Tuple[Instance, ...]) -> None:
        self.instances = instances
        for listener in list(self.listeners):
            listener(instances)


def test_a_users_resolver_drives_the_client(impl) -> None:
    servers = [KitexTestServer({"echo": echo_handler}, service="echo", implementation=impl.name) for _ in range(3)]
    for s in servers:
        s.start()
    try:
        a, b, c = (Instance(Endpoint("127.0.0.1", s.port), 10) for s in servers)
        resolver = ManualResolver()
        client = Client("echo", registry=resolver, implementation=impl.name)
        with pytest.raises(ResolveError, match="nothing yet"):
            client.call("echo", echo_request("x"))
        resolver.push((a,))
        assert read_echo_reply(client.call("echo", echo_request("x"))).startswith("x")

        def counts(n: int) -> Dict[int, int]:
            before = [s.calls for s in servers]
            for _ in range(n):
                client.call("echo", echo_request("y"))
            return {i: s.calls - before[i] for i, s in enumerate(servers)}

        resolver.push((a, b._replace(weight=30)))
        assert counts(400) == {0: 100, 1: 300, 2: 0}
        resolver.push((c,))  # a and b leave: their idle connections close, c takes everything
        assert counts(50) == {0: 0, 1: 0, 2: 50}
        resolver.push((c._replace(weight=0),))  # weight <= 0 is skipped (Kitex's balancer)
        with pytest.raises(NoInstanceError, match="no live instance of service 'echo' in manual"):
            client.call("echo", echo_request("z"))
        resolver.push((a, c))
        assert counts(40) == {0: 20, 1: 0, 2: 20}
        client.close()
        assert resolver.listeners == [] and not resolver.closed  # shared: its owner closes it
    finally:
        for s in servers:
            s.stop()


def test_swaps_under_concurrent_calls_lose_no_call(impl) -> None:
    servers = [KitexTestServer({"echo": echo_handler}, service="echo", implementation=impl.name) for _ in range(3)]
    for s in servers:
        s.start()
    try:
        instances = [Instance(Endpoint("127.0.0.1", s.port), 10) for s in servers]
        resolver = ManualResolver((instances[0],))
        errors: List[BaseException] = []
        done = collections.Counter()
        stop = threading.Event()
        with Client("echo", registry=resolver, implementation=impl.name) as client:
            def caller() -> None:
                while not stop.is_set():
                    try:
                        client.call("echo", echo_request("c"))
                        done["ok"] += 1
                    except BaseException as exc:  # noqa: BLE001
                        errors.append(exc)

            threads = [threading.Thread(target=caller) for _ in range(8)]
            for t in threads:
                t.start()
            rng = random.Random(7)
            for _ in range(200):
                resolver.push(tuple(rng.sample(instances, rng.randint(1, 3))))
            stop.set()
            for t in threads:
                t.join()
        assert errors == [] and done["ok"] > 0
    finally:
        for s in servers:
            s.stop()


def test_a_registry_excludes_host_ports_and_carries_its_own_prefix() -> None:
    r = ManualResolver((ins(1), ins(2)))
    with pytest.raises(MetadataError, match="exactly one"):
        Client("echo", "127.0.0.1:1", registry=r)
    with pytest.raises(MetadataError, match="registry_prefix"):
        Client("echo", registry=r, registry_prefix="p")
