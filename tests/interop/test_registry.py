"""Service discovery against real parts: an etcd server started here, and real Kitex servers
(Go, Kitex v0.16.3) that register themselves with kitex-contrib/registry-etcd v0.2.6
(``tests/interop/go/cmd/etcdserver``). Calls go through the binding (``registry`` metadata), the
Client and the asyncio Client, on both implementations. Counts, never timings."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from typing import Callable, Counter, Iterator, List

import pytest

import peers
from kitex_fast import ConnectError, InvokeRequest, KitexOutputBinding, MetadataError
from kitex_fast.errors import NoInstanceError, ResolveError
from kitex_fast.testing import echo_request, read_echo_reply

PREFIX = "kitex/registry-etcd/echo/"


@pytest.fixture(scope="module")
def etcd(go_peers: object) -> Iterator[peers.EtcdServer]:
    try:
        peers.etcd_binary()
    except peers.EtcdUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    server = peers.EtcdServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def fleet(etcd: peers.EtcdServer) -> Iterator[Callable[..., peers.EtcdKitexServer]]:
    """``fleet(weight=10, lease_ttl=0, service="echo")`` -> a started, registered server; every one
    is stopped after the test and its key is gone before the next."""
    started: List[peers.EtcdKitexServer] = []

    def start(**kwargs: object) -> peers.EtcdKitexServer:
        server = peers.EtcdKitexServer(etcd.address, **kwargs)  # type: ignore[arg-type]
        started.append(server.start())
        under = "%s/%s/" % (kwargs.get("prefix") or "kitex/registry-etcd", kwargs.get("service", "echo"))
        deadline = time.monotonic() + 30
        while under + server.address not in etcd.get_prefix(under):
            assert time.monotonic() < deadline, "%r never registered" % server
            time.sleep(0.02)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
        for prefix in ("kitex/registry-etcd/", "my/prefix/"):
            for key in etcd.get_prefix(prefix):
                etcd.delete(key)  # (a killed server's key, before its lease ends)


def meta(etcd: peers.EtcdServer, **extra: str) -> dict:
    out = {"registry": etcd.url, "destService": "echo", "methodName": "echo", "version": "v1"}
    out.update(extra)
    return out


def served_by(reply: bytes) -> str:
    return peers.served_by(read_echo_reply(reply))


def test_call_by_name_through_the_binding(impl, etcd, fleet) -> None:
    server = fleet(tags={"zone": "a"})
    with KitexOutputBinding(implementation=impl.name) as binding:
        for _ in range(3):
            response = binding.invoke(InvokeRequest("get", echo_request("hi"), meta(etcd)))
            assert read_echo_reply(response.data).startswith("hi,hi Kitex@")
            assert served_by(response.data) == server.address
            assert response.metadata["endpoint"] == server.address
        (client,) = binding._clients.values()
        (instance,) = client.instances
        assert instance.tags == {"zone": "a"} and instance.weight == 10  # tags kept


def test_registry_as_a_component_default_and_prefix(impl, etcd, fleet) -> None:
    server = fleet(prefix="my/prefix")
    defaults = {"registry": etcd.url, "registryPrefix": "my/prefix"}
    with KitexOutputBinding(implementation=impl.name) as binding:
        binding.init(defaults)
        request = {"destService": "echo", "methodName": "echo", "version": "v1"}
        assert served_by(binding.invoke(InvokeRequest("get", echo_request("x"), request)).data) == server.address
        # a request's hostPorts overrides the component's registry
        direct = dict(request, hostPorts=server.address)
        assert served_by(binding.invoke(InvokeRequest("get", echo_request("x"), direct)).data) == server.address
        with pytest.raises(MetadataError, match="exactly one"):
            binding.invoke(InvokeRequest("get", echo_request("x"), dict(direct, registry=etcd.url)))
        with pytest.raises(MetadataError, match="not an etcd:// URL"):
            binding.invoke(InvokeRequest("get", echo_request("x"), dict(request, registry="consul://x:1")))


def test_no_live_instance_is_typed_and_names_service_and_prefix(impl, etcd) -> None:
    with KitexOutputBinding(implementation=impl.name) as binding:
        with pytest.raises(NoInstanceError, match=r"'nobody'.*kitex/registry-etcd/nobody/"):
            binding.invoke(InvokeRequest("get", echo_request("x"), meta(etcd, destService="nobody")))


def test_etcd_unreachable_at_first_use_is_typed_within_the_deadline(impl) -> None:
    port = peers.free_port()  # nothing listens here
    with KitexOutputBinding(implementation=impl.name) as binding:
        request = {"registry": "etcd://127.0.0.1:%d" % port, "destService": "echo",
                   "methodName": "echo", "version": "v1", "rpcTimeout": "300ms"}
        with pytest.raises(ResolveError, match="cannot resolve") as info:
            binding.invoke(InvokeRequest("get", echo_request("x"), request))
        assert isinstance(info.value, ConnectError) and not info.value.sent


def test_malformed_value_is_skipped_with_a_warning(impl, etcd, fleet, caplog) -> None:
    etcd.put(PREFIX + "garbage", b"{not json")
    etcd.put(PREFIX + "10.0.0.1:1", b'{"network":"tcp","address":"no-port","weight":10}')
    server = fleet()
    caplog.set_level(logging.WARNING, logger="kitex_fast.resolver")
    with KitexOutputBinding(implementation=impl.name) as binding:
        for _ in range(4):
            data = binding.invoke(InvokeRequest("get", echo_request("x"), meta(etcd))).data
            assert served_by(data) == server.address
    text = caplog.text
    assert "skipping malformed registry value" in text and PREFIX + "garbage" in text
    assert PREFIX + "10.0.0.1:1" in text


def test_hostile_values_in_a_real_etcd_skip_only_themselves(impl, etcd, fleet, caplog) -> None:
    # issue 24 items 9, 11: a weight beyond int64 (was an untyped OverflowError in the schedule),
    # a NUL in an address (was connected to 127.0.0.1), and a host with a newline
    etcd.put(PREFIX + "10.0.0.2:1", b'{"network":"tcp","address":"10.0.0.2:1","weight":1%s}' % (b"0" * 400))
    etcd.put(PREFIX + "nul", b'{"network":"tcp","address":"127.0.0.1\\u0000.example.com:1","weight":10}')
    etcd.put(PREFIX + "newline", b'{"network":"tcp","address":"a\\nb:1","weight":10}')
    server = fleet(weight=20)
    caplog.set_level(logging.WARNING, logger="kitex_fast.resolver")
    with KitexOutputBinding(implementation=impl.name) as binding:
        for _ in range(4):
            data = binding.invoke(InvokeRequest("get", echo_request("x"), meta(etcd))).data
            assert served_by(data) == server.address
    text = caplog.text
    assert "does not fit Go's int64" in text and "is not a host name or address" in text
    assert all("\n" not in r.getMessage() for r in caplog.records)


def _counts(binding: KitexOutputBinding, metadata: dict, n: int) -> Counter[str]:
    counts: Counter[str] = collections.Counter()
    for _ in range(n):
        counts[served_by(binding.invoke(InvokeRequest("get", echo_request("x"), metadata)).data)] += 1
    return counts


def test_weights_10_30_split_1_to_3(impl, etcd, fleet) -> None:
    light, heavy = fleet(weight=10), fleet(weight=30)
    with KitexOutputBinding(implementation=impl.name) as binding:
        counts = _counts(binding, meta(etcd), 8000)
    assert sum(counts.values()) == 8000
    share = counts[heavy.address] / 8000
    assert abs(share - 0.75) <= 0.05, counts
    assert counts[light.address] + counts[heavy.address] == 8000


class _Load:
    """16 threads calling through one binding until stopped; counts per instance, and every error."""

    def __init__(self, binding: KitexOutputBinding, metadata: dict, threads: int = 16) -> None:
        self.counts: Counter[str] = collections.Counter()
        self.errors: List[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._binding, self._metadata = binding, metadata
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._binding.invoke(InvokeRequest("get", echo_request("x"), self._metadata)).data
            except BaseException as exc:  # noqa: BLE001 (recorded, asserted by the test)
                with self._lock:
                    self.errors.append(exc)
                time.sleep(0.005)
                continue
            with self._lock:
                self.counts[served_by(data)] += 1

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def wait_calls(self, n: int, timeout: float = 60.0) -> None:
        goal = self.total() + n
        deadline = time.monotonic() + timeout
        while self.total() < goal:
            assert time.monotonic() < deadline, "load stalled at %d calls" % self.total()
            time.sleep(0.01)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return collections.Counter(self.counts)

    def client_sees(self, n: int, timeout: float = 60.0) -> None:
        """Wait until the binding's client balances over ``n`` instances (the watch is
        asynchronous: a registration reaches the client some milliseconds after etcd has it)."""
        deadline = time.monotonic() + timeout
        while True:
            clients = list(self._binding._clients.values())
            if clients and len(clients[0].endpoints) == n:
                return
            assert time.monotonic() < deadline, "the client never saw %d instances: %r" % (
                n, [c.endpoints for c in clients])
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)
            assert not t.is_alive(), "a caller hung"


@pytest.mark.slow
def test_scale_1_3_1_under_16_callers_loses_no_call(impl, etcd, fleet) -> None:
    first = fleet()
    with KitexOutputBinding(implementation=impl.name) as binding:
        load = _Load(binding, meta(etcd))
        try:
            load.wait_calls(300)
            more = [fleet(), fleet()]
            load.client_sees(3)
            before = load.snapshot()
            load.wait_calls(1500)
            grown = load.snapshot() - before
            for server in more:
                assert grown[server.address] > 100, grown  # the new instances get calls
            for server in more:
                server.stop()  # graceful: deregister, then finish what is in flight
            etcd.wait_keys(PREFIX, 1)
            load.client_sees(1)
            load.wait_calls(300)  # (calls that had picked a departed instance finish there)
            after = load.snapshot()
            load.wait_calls(300)
            tail = load.snapshot() - after
            assert set(tail) == {first.address}, tail
        finally:
            load.stop()
    assert load.errors == [], load.errors[:3]


@pytest.mark.slow
def test_kill_9_fails_over_or_fails_typed_until_the_lease_expires(impl, etcd, fleet) -> None:
    survivor, victim = fleet(lease_ttl=2), fleet(lease_ttl=2)
    with KitexOutputBinding(implementation=impl.name) as binding:
        load = _Load(binding, meta(etcd, rpcTimeout="2s"))
        try:
            load.wait_calls(300)
            victim.kill()
            etcd.wait_keys(PREFIX, 1, timeout=30)  # the lease ran out
            load.client_sees(1)
            load.wait_calls(100)
            after = load.snapshot()
            load.wait_calls(500)
            assert set(load.snapshot() - after) == {survivor.address}
        finally:
            load.stop()  # (asserts that no caller hung)
    # connect failures fail over to the survivor; a call already on the killed connection
    # fails typed (ConnectionClosedError), never anything else
    from kitex_fast import TransportError
    assert all(isinstance(e, TransportError) for e in load.errors), load.errors[:3]


@pytest.mark.slow
def test_etcd_stopped_and_restarted_under_load(impl, etcd, fleet, caplog) -> None:
    first = fleet(lease_ttl=60)
    caplog.set_level(logging.WARNING, logger="kitex_fast.resolver")
    with KitexOutputBinding(implementation=impl.name) as binding:
        load = _Load(binding, meta(etcd))
        try:
            load.wait_calls(200)
            etcd.stop()
            load.wait_calls(500)  # from the cached set
            etcd.start()
            second = fleet(lease_ttl=60)  # registered after the restart: the watch resumed
            deadline = time.monotonic() + 60
            while load.snapshot()[second.address] < 50:
                assert time.monotonic() < deadline, load.snapshot()
                time.sleep(0.02)
        finally:
            load.stop()
    assert load.errors == [], load.errors[:3]
    assert load.snapshot()[first.address] > 0
    # warned once per outage, not once per retry (a restarting etcd may refuse a first watch
    # after it answered a range, which counts as a second, short outage)
    assert 1 <= caplog.text.count("lost etcd") <= 3, caplog.text


# -- the sync Client and the asyncio Client ------------------------------------------------------


def test_client_by_name_and_close(impl, etcd, fleet) -> None:
    from kitex_fast import Client

    light, heavy = fleet(weight=10), fleet(weight=30)
    with Client("echo", registry=etcd.url, implementation=impl.name) as client:
        counts = collections.Counter(served_by(client.call("echo", echo_request("x"))) for _ in range(400))
    assert counts == {light.address: 100, heavy.address: 300}
    with pytest.raises(MetadataError, match="exactly one"):
        Client("echo", light.address, registry=etcd.url)


def test_aio_client_by_name_and_scale(impl, etcd, fleet, aio_default) -> None:
    from kitex_fast.aio import Client as AsyncClient

    first = fleet()

    async def run() -> None:
        client = AsyncClient("echo", registry=etcd.url, implementation=impl.name)
        try:
            counts: Counter[str] = collections.Counter()

            async def caller(n: int) -> None:
                for _ in range(n):
                    counts[served_by(await client.call("echo", echo_request("x")))] += 1

            await asyncio.gather(*(caller(20) for _ in range(16)))
            assert counts == {first.address: 320}
            second = await asyncio.get_running_loop().run_in_executor(None, lambda: fleet())
            deadline = time.monotonic() + 30
            while second.address not in [str(e) for e in client.endpoints]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            counts.clear()
            await asyncio.gather(*(caller(40) for _ in range(16)))
            assert sum(counts.values()) == 640 and counts[second.address] > 0, counts
        finally:
            await client.close()

    aio_default(run)


def test_aio_binding_by_name(impl, etcd, fleet, aio_default) -> None:
    from kitex_fast.aio import KitexOutputBinding

    server = fleet()

    async def run() -> None:
        async with KitexOutputBinding(implementation=impl.name) as binding:
            for _ in range(3):
                response = await binding.invoke(InvokeRequest("get", echo_request("x"), meta(etcd)))
                assert served_by(response.data) == server.address
            with pytest.raises(NoInstanceError):
                await binding.invoke(InvokeRequest("get", echo_request("x"), meta(etcd, destService="none")))

    aio_default(run)


def test_cli_call_by_registry(impl, etcd, fleet, capsys) -> None:
    from kitex_fast import cli

    server = fleet()
    status = cli.main(["call", "--implementation", impl.name, "--registry", etcd.url, "-s", "echo",
                       "-m", "echo", "--data-hex", echo_request("cli").hex(), "-v"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert read_echo_reply(bytes.fromhex(out.strip())).startswith("cli,hi Kitex@" + server.address)
    status = cli.main(["call", "--registry", etcd.url, "-e", server.address, "-s", "echo", "-m", "echo",
                       "--data-hex", echo_request("x").hex()])
    assert status != 0 and "exactly one of --host-ports and --registry" in capsys.readouterr().err


def test_aio_weights_10_30_split_1_to_3(impl, etcd, fleet, aio_loop) -> None:
    from kitex_fast.aio import Client as AsyncClient

    light, heavy = fleet(weight=10), fleet(weight=30)

    async def run() -> Counter[str]:
        counts: Counter[str] = collections.Counter()
        async with AsyncClient("echo", registry=etcd.url, implementation=impl.name) as client:
            async def caller() -> None:
                for _ in range(500):
                    counts[served_by(await client.call("echo", echo_request("w")))] += 1

            await asyncio.gather(*(caller() for _ in range(16)))
        return counts

    counts = aio_loop(run)
    # As Kitex: the balancer picks the instance, then the pool a connection to it (16 callers).
    assert sum(counts.values()) == 8000
    assert abs(counts[heavy.address] / 8000 - 0.75) <= 0.05, counts
    assert counts[light.address] + counts[heavy.address] == 8000
