"""The etcd resolver against a hostile or broken etcd (issue 24, items 10 and 11), played by
``fake_etcd.FakeEtcd``. Each test failed before its fix. Bounds are counts and bytes; waits are
bounded polls, never timing assertions."""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterator, List, Tuple

import pytest

from kitex_fast.errors import ResolveError
from kitex_fast import resolver as resolver_mod
from kitex_fast.resolver import MAX_EVENT_BYTES, EtcdResolver, Instance

from .fake_etcd import FakeEtcd, b64, instance, kv, wait_for

PREFIX = b"kitex/registry-etcd/echo/"


@pytest.fixture
def etcd() -> Iterator[FakeEtcd]:
    with FakeEtcd() as fake:
        yield fake


@pytest.fixture
def resolver(etcd: FakeEtcd) -> Iterator[EtcdResolver]:
    r = EtcdResolver([etcd.address])
    try:
        yield r
    finally:
        r.close()


def ports(instances: Tuple[Instance, ...]) -> List[int]:
    return [i.endpoint.port for i in instances]


def listen(r: EtcdResolver) -> List[Tuple[Instance, ...]]:
    seen: List[Tuple[Instance, ...]] = []
    r.subscribe("echo", seen.append)
    return seen


# -- item 10: bound every read, honour the backoff, ignore keys outside the prefix ---------------


def test_a_watch_line_without_a_newline_is_cut_at_the_limit(etcd: FakeEtcd, resolver: EtcdResolver) -> None:
    etcd.put(PREFIX + b"127.0.0.1:1", instance("127.0.0.1:1"))
    etcd.watch_mode = "endless_line"
    assert ports(resolver.resolve("echo", 5.0)) == [1]
    # the first watch fails past MAX_EVENT_BYTES and a second one is made (old code: read on, 3 GiB)
    wait_for(lambda: etcd.watches >= 2 and etcd.sent_per_watch, 20, "the watch to be given up")
    sent = etcd.sent_per_watch[0]
    assert MAX_EVENT_BYTES <= sent < MAX_EVENT_BYTES + (16 << 20), sent  # (+ socket buffers)
    assert ports(resolver.resolve("echo", 5.0)) == [1]  # the last set keeps serving


def test_a_range_announcing_8_gb_fails_at_once_and_is_not_read(etcd: FakeEtcd, resolver: EtcdResolver) -> None:
    etcd.range_mode = "huge_length"
    with pytest.raises(ResolveError, match="over the .*-byte limit"):
        resolver.resolve("echo", 10.0)
    # the thread hung up: the fake's trickle ended on a closed socket, long before its 60 s
    wait_for(lambda: etcd.range_sent, 10, "the range connection to be closed")
    assert etcd.range_sent[0] < 500


def test_a_trickling_range_answer_ends_at_the_range_timeout(
    etcd: FakeEtcd, resolver: EtcdResolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resolver_mod, "RANGE_TIMEOUT", 0.5)
    etcd.range_mode = "trickle"
    with pytest.raises(ResolveError, match="not complete within|timed out"):
        resolver.resolve("echo", 10.0)
    wait_for(lambda: etcd.range_sent, 10, "the range connection to be closed")
    assert etcd.range_sent[0] < 200  # (old code: read until the fake gave up, 3,000 bytes)


def test_a_watch_dropped_after_each_create_backs_off(etcd: FakeEtcd, resolver: EtcdResolver) -> None:
    etcd.put(PREFIX + b"127.0.0.1:1", instance("127.0.0.1:1"))
    etcd.watch_mode = "drop"
    resolver.resolve("echo", 5.0)
    done = threading.Event()
    done.wait(3.0)  # a window for counting, not a timing assertion
    # backoff 50 ms doubling to 2 s: about 7 watches in 3 s (old code: ~100, every range reset it)
    assert etcd.watches <= 12, etcd.watches
    assert etcd.ranges == etcd.watches or etcd.ranges == etcd.watches + 1


def test_a_watch_event_for_another_services_key_is_ignored(
    etcd: FakeEtcd, resolver: EtcdResolver, caplog: pytest.LogCaptureFixture
) -> None:
    etcd.put(PREFIX + b"127.0.0.1:1", instance("127.0.0.1:1"))
    assert ports(resolver.resolve("echo", 5.0)) == [1]
    seen = listen(resolver)
    with caplog.at_level(logging.WARNING, logger="kitex_fast.resolver"):
        wait_for(lambda: etcd.watches >= 1, 5, "the watch")
        etcd.push_event({"kv": kv(b"kitex/registry-etcd/other/127.0.0.1:2", instance("127.0.0.1:2"))})
        etcd.push_event({"kv": kv(b"kitex/registry-etcd/echo", instance("127.0.0.1:3"))})  # the prefix without '/'
        etcd.put(PREFIX + b"127.0.0.1:4", instance("127.0.0.1:4"))
        wait_for(lambda: seen, 5, "the good event")
    assert ports(seen[-1]) == [1, 4]
    assert sum("outside" in r.getMessage() for r in caplog.records) == 2


# -- item 11: one bad entry is skipped, never the whole answer -----------------------------------


def test_one_undecodable_key_or_value_skips_only_that_entry(
    etcd: FakeEtcd, resolver: EtcdResolver, caplog: pytest.LogCaptureFixture
) -> None:
    good = kv(PREFIX + b"127.0.0.1:1", instance("127.0.0.1:1"))
    etcd.range_mode = "raw"
    etcd.range_body = {"header": {"revision": "7"}, "kvs": [
        {"key": "!!not base64!!", "value": b64(instance("127.0.0.1:2"))},
        {"key": 5, "value": b64(instance("127.0.0.1:3"))},
        {"key": None, "value": b64(instance("127.0.0.1:4"))},
        {"key": b64(PREFIX + b"127.0.0.1:5"), "value": "%%%"},
        {"key": b64(PREFIX + b"127.0.0.1:6"), "value": 6},
        {"key": b64(PREFIX + b"127.0.0.1:7"), "value": b64(b'{"address":"127.0.0.1:7","weight":1%s}' % (b"0" * 400))},
        "not an object",
        good,
    ]}
    with caplog.at_level(logging.WARNING, logger="kitex_fast.resolver"):
        assert ports(resolver.resolve("echo", 5.0)) == [1]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 7, warnings
    assert any("does not fit Go's int64" in w for w in warnings), warnings
    assert all("\n" not in w and len(w) < 1000 for w in warnings)


def test_warnings_about_bad_entries_are_rate_limited(
    etcd: FakeEtcd, resolver: EtcdResolver, caplog: pytest.LogCaptureFixture
) -> None:
    etcd.range_mode = "raw"
    etcd.range_body = {"header": {"revision": "7"}, "kvs": [
        {"key": b64(PREFIX + b"h%d:1" % i), "value": b64(b"not json")} for i in range(500)
    ] + [kv(PREFIX + b"127.0.0.1:1", instance("127.0.0.1:1"))]}
    with caplog.at_level(logging.WARNING, logger="kitex_fast.resolver"):
        assert ports(resolver.resolve("echo", 5.0)) == [1]
    assert len(caplog.records) == resolver_mod.WARN_BURST


@pytest.mark.parametrize("body", [
    {"kvs": []},
    {"header": {}, "kvs": [{"key": b64(PREFIX + b"127.0.0.1:1"), "value": b64(instance("127.0.0.1:1"))}]},
    {"header": {"revision": "٣"}},
    [1, 2],
    b"<html>proxy error</html>",
], ids=["no header", "no revision", "bad revision", "not an object", "not json"])
def test_a_range_answer_without_a_revision_is_a_resolve_error(
    etcd: FakeEtcd, resolver: EtcdResolver, body: Any
) -> None:
    etcd.range_mode = "raw"
    etcd.range_body = body
    with pytest.raises(ResolveError) as info:
        resolver.resolve("echo", 5.0)
    assert type(info.value) is ResolveError  # not NoInstanceError: etcd's answer was malformed
    assert "header.revision" in str(info.value) or "bad range answer" in str(info.value)


def test_an_empty_prefix_is_no_instance_not_a_malformed_answer(etcd: FakeEtcd, resolver: EtcdResolver) -> None:
    # etcd's gateway leaves "kvs" out of an empty answer (proto3 JSON omits empty fields)
    etcd.range_mode = "raw"
    etcd.range_body = {"header": {"revision": "3"}}
    assert resolver.resolve("echo", 5.0) == ()
