"""Service discovery: resolvers turn a service name into instances, and keep them current.

A resolver is anything with the three methods of :class:`Resolver` (a ``typing.Protocol``):
``resolve`` (the current instances; the first call for a service may wait, bounded), ``subscribe``
(a listener called with every new instance set) and ``close``. One ships here:
:class:`EtcdResolver` (the keys that Kitex servers write with ``kitex-contrib/registry-etcd``; the
facts it relies on, with their upstream files and versions, are in ``docs/registry.md``). A fixed
list needs no resolver: it is ``hostPorts``.

The etcd resolver speaks etcd's v3 JSON gateway (``/v3/kv/range``, ``/v3/watch``) over HTTP/1.1
with the standard library: one daemon thread per watched service reads the prefix once, then
follows a watch stream. A call never talks to etcd: it reads the instance set the thread last
published (see :meth:`kitex_fast.Client` with ``registry=``), so a call pays no registry round
trip and no extra syscall. The same thread serves the sync and the asyncio drivers.
"""

from __future__ import annotations

import binascii
import heapq
import logging
import math
import socket
import threading
import time
from functools import reduce
from typing import (
    TYPE_CHECKING, Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple, Union,
)

if TYPE_CHECKING:  # (imported where used: http.client and its email package cost ~2 MiB of RSS,
    import http.client  # which a process that never asks etcd should not pay; so are json, base64
    import random  # and random, ~0.3 MiB, which only a registry or a weighted instance set needs)

try:  # 3.8+: typing.Protocol
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore[assignment,misc]

from .errors import MetadataError, ResolveError, quoted
from .pool import Endpoint, _parse_entry, ascii_int, parse_host_ports

__all__ = [
    "Instance",
    "Resolver",
    "EtcdResolver",
    "RegistrySpec",
    "parse_registry",
    "open_resolver",
    "DEFAULT_WEIGHT",
    "DEFAULT_PREFIX",
    "wrr_schedule",
]

log = logging.getLogger(__name__)

# Kitex's discovery.DefaultWeight (kitex v0.16.3 pkg/discovery/discovery.go; docs/registry.md).
DEFAULT_WEIGHT = 10
# registry-etcd v0.2.6's default prefix; keys are "<prefix>/<service>/<host:port>" (common.go).
DEFAULT_PREFIX = "kitex/registry-etcd"
# The longest weighted round-robin schedule kept per client, for up to 1,024 instances; with more,
# 4 entries per instance (see wrr_schedule).
MAX_SCHEDULE = 4096
# Kitex's weight is a Go int (int64): registry-etcd's json.Unmarshal refuses a larger one.
MAX_WEIGHT = 2**63 - 1
# Waiting for the first answer of a registry when the call has no deadline: never a hang.
DEFAULT_RESOLVE_TIMEOUT = 10.0


class Instance(NamedTuple):
    """One live instance of a service: where, how heavy, and the registry's tags (kept for
    users' own filters; the balancer does not read them)."""

    endpoint: Endpoint
    weight: int = DEFAULT_WEIGHT
    tags: Mapping[str, str] = {}
    network: str = "tcp"


Listener = Callable[[Tuple[Instance, ...]], None]


class Resolver(Protocol):
    """What the client needs from a registry. Implementations must be thread-safe; listeners may
    be called from any thread (the client's update is thread-safe and loop-safe)."""

    #: a human-readable name for error texts, e.g. ``etcd://127.0.0.1:2379 prefix kitex/registry-etcd``
    description: str

    def resolve(self, service: str, timeout: Optional[float]) -> Tuple[Instance, ...]:
        """The current instances of ``service``. Returns the cached set at once when there is
        one; the first call may wait for the registry, at most ``timeout`` seconds (None: a
        bounded default), then raises :class:`ResolveError`. An empty tuple: no live instance."""
        ...

    def subscribe(self, service: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener(instances)`` with every new instance set of ``service`` from now on;
        returns the function that unsubscribes."""
        ...

    def close(self) -> None:
        """Stop following the registry; the last sets stay as they are."""
        ...


# -- weighted round robin ---------------------------------------------------------------------


def wrr_schedule(instances: Sequence[Instance], rng: Optional[random.Random] = None) -> List[int]:
    """Kitex's weighted round robin as a precomputed cycle of instance indexes.

    Kitex v0.16.3 ``loadbalance.NewWeightedBalancer`` is ``NewWeightedRoundRobinBalancer``
    (pkg/loadbalance/weighted_balancer.go): instances with weight <= 0 are skipped; equal weights
    are plain round robin; otherwise ``newWeightedRoundRobinPicker`` (weighted_round_robin.go)
    shuffles the start and cycles through ``sum(weights)/gcd`` virtual nodes, each instance
    ``weight/gcd`` times, spread by smooth weighted round robin (nginx's algorithm). We compute a
    cycle with the same proportions once per instance-set change, so a call's pick is an index
    into a list: O(1), no allocation.

    The cycle is built in O(length x log(instances)) work, never O(length x instances) as a
    literal smooth WRR loop would be (8,000 instances took seconds): each instance's k-th turn
    falls at (k + 1/2) / weight of the cycle (Webster's method), and a heap merges the turns in
    that order. The spread is as even as smooth WRR's (no instance waits more than about
    total/weight turns). Kitex builds its cycle lazily and without a bound; ours has at most
    ``max(MAX_SCHEDULE, 4 x live instances) + live instances`` entries: past that the weights are
    scaled down (each stays >= 1), which changes an instance's share by less than one part in
    ``4`` of its own weight. Weights above Go's int64 (only a user's own Resolver can give them)
    count as the largest int64.
    """
    live = [i for i, ins in enumerate(instances) if _is_weight(ins.weight) and ins.weight > 0]
    if not live:
        return []
    weights = [min(instances[i].weight, MAX_WEIGHT) for i in live]
    if len(set(weights)) == 1:  # balanced: round robin
        return live
    # Kitex shuffles by a random offset, so that many clients do not start on the same node.
    if rng is None:
        import random  # (here: see the imports at the top)

        offset = random.randrange(len(live))
    else:
        offset = rng.randrange(len(live))
    live = live[offset:] + live[:offset]
    weights = weights[offset:] + weights[:offset]
    gcd = reduce(math.gcd, weights)
    weights = [w // gcd for w in weights]
    total = sum(weights)
    limit = max(MAX_SCHEDULE, 4 * len(weights))
    if total > limit:  # integer arithmetic: exact for any int64 weight
        weights = [max(1, w * limit // total) for w in weights]
        gcd = reduce(math.gcd, weights)
        weights = [w // gcd for w in weights]
        total = sum(weights)
    # Turn k of instance j at (2k + 1) / (2 w_j): equal fractions give equal floats (division is
    # correctly rounded), so ties are exact and go to the earlier instance in the shuffled order.
    heap = [(1.0 / (2 * w), j, 0) for j, w in enumerate(weights)]
    heapq.heapify(heap)
    cycle = []
    for _ in range(total):
        _, j, k = heap[0]
        cycle.append(live[j])
        k += 1
        if k < weights[j]:
            heapq.heapreplace(heap, ((2 * k + 1) / (2 * weights[j]), j, k))
        else:
            heapq.heappop(heap)
    return cycle


def _is_weight(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- registry URLs ----------------------------------------------------------------------------


class RegistrySpec(NamedTuple):
    """A parsed ``registry`` value (hashable: part of a client's cache key)."""

    scheme: str
    endpoints: Tuple[Endpoint, ...]
    prefix: str

    def __str__(self) -> str:
        return "%s://%s" % (self.scheme, ",".join(str(e) for e in self.endpoints))


def parse_registry(url: object, prefix: Optional[object] = None, field: str = "registry") -> RegistrySpec:
    """``etcd://host:port[,host:port]`` (and an optional key prefix) -> :class:`RegistrySpec`;
    anything else is a :class:`MetadataError` naming ``field``. No I/O."""
    if not isinstance(url, str):
        raise MetadataError("metadata field %s: expected \"etcd://host:port[,host:port]\", not %s" % (field, quoted(url)))
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "etcd":
        raise MetadataError(
            "metadata field %s: %s is not an etcd:// URL (supported: etcd://host:port[,host:port]; "
            "other registries plug in through kitex_fast.resolver.Resolver)" % (field, quoted(url))
        )
    rest = rest.rstrip("/")
    if not rest or "/" in rest or "?" in rest or "@" in rest:
        raise MetadataError(
            "metadata field %s: %s: expected etcd://host:port[,host:port] (no path, query or user)"
            % (field, quoted(url))
        )
    endpoints = parse_host_ports(rest, field)
    return RegistrySpec("etcd", endpoints, _check_prefix(DEFAULT_PREFIX if prefix is None else prefix))


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not prefix.strip("/") or prefix != prefix.strip():
        raise MetadataError(
            "metadata field registryPrefix: %s is not a key prefix such as %r" % (quoted(prefix), DEFAULT_PREFIX)
        )
    return prefix.rstrip("/")


def open_resolver(spec: RegistrySpec) -> "EtcdResolver":
    """The resolver for a parsed ``registry`` value (no I/O until a service is resolved)."""
    return EtcdResolver(spec.endpoints, prefix=spec.prefix)


# -- etcd -------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def _prefix_end(key: bytes) -> bytes:
    """etcd's range_end for "every key starting with key" (clientv3.GetPrefixRangeEnd)."""
    for i in range(len(key) - 1, -1, -1):
        if key[i] < 0xFF:
            return key[:i] + bytes([key[i] + 1])
    return b"\x00"


class _Lost(Exception):
    """The etcd connection failed (a reason for the watch thread to reconnect)."""


def parse_instance(key: bytes, value: bytes, default_weight: int = DEFAULT_WEIGHT) -> Instance:
    """One registry-etcd value (``{"network","address","weight","tags"}``, registry-etcd v0.2.6
    common.go ``instanceInfo``) -> :class:`Instance`. ``ValueError`` says what is wrong.
    A weight <= 0 becomes ``default_weight``, as registry-etcd's resolver does (etcd_resolver.go);
    a weight beyond Go's int64 is an error there (json.Unmarshal into an int) and here."""
    import json

    try:
        info = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise ValueError("not JSON (%s): %s" % (str(exc)[:100], quoted(value))) from None
    if not isinstance(info, dict):
        raise ValueError("not a JSON object: %s" % quoted(value))
    address, network = info.get("address"), info.get("network", "tcp")
    weight, tags = info.get("weight", 0), info.get("tags")
    if not isinstance(address, str):
        raise ValueError("no \"address\" string: %s" % quoted(value))
    if network not in ("tcp", "tcp4", "tcp6", "", None):
        raise ValueError("network %s is not tcp" % quoted(network))
    if weight is None:
        weight = 0
    if type(weight) is not int:
        raise ValueError("weight %s is not an integer" % quoted(weight))
    if not -MAX_WEIGHT - 1 <= weight <= MAX_WEIGHT:
        raise ValueError("weight %s does not fit Go's int64" % quoted(weight))
    if tags is None:
        tags = {}
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise ValueError("tags %s are not a string map" % quoted(tags))
    try:
        endpoint = _parse_entry(address.strip(), "address")
    except MetadataError as exc:
        raise ValueError(str(exc)) from None
    return Instance(endpoint, weight if weight > 0 else default_weight, tags, network or "tcp")


# Bounds on what etcd (or anything on its port) may make the watch thread read and hold.
MAX_RANGE_BYTES = 64 << 20  # a range answer (thousands of instances are a few MiB of JSON)
MAX_EVENT_BYTES = 4 << 20  # one watch line (an event batch); etcd's own request limit is 1.5 MiB
RANGE_TIMEOUT = 5.0  # the whole range answer, headers to last byte
WATCH_IDLE = 30.0  # a watch silent this long is re-established (which also re-reads the prefix)
# A watch that stayed up this long (or delivered an event) was healthy: only then does the
# reconnect backoff start again from its shortest. A watch that etcd (or a proxy) drops right
# after each create keeps backing off, up to BACKOFF_MAX, although each range succeeds.
WATCH_STABLE = 10.0
BACKOFF_MIN, BACKOFF_MAX = 0.05, 2.0
# Warnings about malformed registry entries: once per key (up to 1,024 keys remembered), and at
# most WARN_BURST of them per WARN_WINDOW seconds per service; the rest are counted and summed up.
WARN_BURST, WARN_WINDOW = 10, 60.0


def _b64decode(value: object, what: str) -> bytes:
    """A base64 field of an etcd JSON answer; ValueError when it is not one."""
    if not isinstance(value, str):
        raise ValueError("%s %s is not a base64 string" % (what, quoted(value)))
    import base64

    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("%s %s is not base64" % (what, quoted(value))) from None


class _Watch:
    """One service under one etcd prefix: a daemon thread that ranges, then watches, and
    publishes every changed instance set to the listeners."""

    def __init__(self, resolver: "EtcdResolver", service: str) -> None:
        self.resolver = resolver
        self.service = service
        self.key = ("%s/%s/" % (resolver.prefix, service)).encode()
        self.where = "service %s under etcd prefix %s at %s" % (
            quoted(service), quoted(self.key.decode()), resolver.url)
        self.instances: Optional[Tuple[Instance, ...]] = None
        self.listeners: List[Listener] = []
        self.cond = threading.Condition()
        self.attempts = 0  # finished first-resolution attempts (success or not)
        self.error: Optional[str] = None
        self.closed = False
        self._conn: Optional[http.client.HTTPConnection] = None
        self._kvs: Dict[bytes, Instance] = {}
        self._warned: Set[object] = set()
        self._warn_window = 0.0
        self._warn_count = 0
        self._warn_suppressed = 0
        self._lost_warned = False
        self._healthy = False  # the current watch delivered an event or stayed up WATCH_STABLE
        self.watches = 0  # watch streams created (for tests and debugging)
        self._thread = threading.Thread(
            target=self._run, name="kitex_fast etcd watch %s" % quoted(service), daemon=True)
        self._thread.start()

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = BACKOFF_MIN
        endpoints = self.resolver.endpoints
        turn = 0
        while not self.closed:
            endpoint = endpoints[turn % len(endpoints)]
            turn += 1
            self._healthy = False
            try:
                revision = self._range(endpoint)
                if self._lost_warned:
                    log.warning("kitex_fast: etcd at %s is back; following %s again", endpoint, self.where)
                    self._lost_warned = False
                self._watch(endpoint, revision)  # returns when the stream ends
            except Exception as exc:  # _Lost, or an answer we did not expect: reconnect
                if not isinstance(exc, _Lost):
                    exc = _Lost("etcd at %s: %s: %s" % (endpoint, type(exc).__name__, quoted(str(exc), 200)))
                if self.closed:
                    return
                if self._healthy:  # it worked for a while: this is a new outage
                    backoff = BACKOFF_MIN
                with self.cond:
                    if self.instances is None:
                        self.error = str(exc)
                        self.attempts += 1
                        self.cond.notify_all()
                    elif not self._lost_warned:
                        # etcd lost later: keep serving the last known set, warn once per outage.
                        self._lost_warned = True
                        log.warning(
                            "kitex_fast: lost etcd (%s); keeping the last %d instance(s) of %s and "
                            "watching again with backoff", exc, len(self.instances), self.where)
                import random

                time.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, BACKOFF_MAX)
            else:
                backoff = BACKOFF_MIN  # (an idle watch re-established: it was up WATCH_IDLE)

    def _request(self, endpoint: Endpoint, path: str, body: Dict[str, Any], timeout: float) -> http.client.HTTPResponse:
        import http.client
        import json

        conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout)
        self._conn = conn
        if self.closed:
            raise _Lost("closed")
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _Lost("etcd at %s: %s: %s" % (endpoint, type(exc).__name__, quoted(str(exc), 200))) from None
        if resp.status != 200:
            try:
                text = resp.read1(200)
            except (OSError, http.client.HTTPException):
                text = b""
            conn.close()
            raise _Lost("etcd at %s answered %s %s to %s: %s"
                        % (endpoint, resp.status, quoted(resp.reason), path, quoted(text)))
        return resp

    def _read_range(self, endpoint: Endpoint, resp: http.client.HTTPResponse, deadline: float) -> bytes:
        """The whole range answer, at most MAX_RANGE_BYTES, by ``deadline``: a hostile
        Content-Length or a trickling peer ends the attempt instead of holding the thread."""
        if resp.length is not None and resp.length > MAX_RANGE_BYTES:
            raise _Lost("etcd at %s: range answer of %d bytes is over the %d-byte limit"
                        % (endpoint, resp.length, MAX_RANGE_BYTES))
        chunks: List[bytes] = []
        size = 0
        conn = self._conn
        while True:
            if self.closed:
                raise _Lost("closed")
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Lost("etcd at %s: range answer not complete within %.0f s" % (endpoint, RANGE_TIMEOUT))
            if conn is not None and conn.sock is not None:
                conn.sock.settimeout(left)
            data = resp.read1(65536)
            if not data:
                if resp.length:  # (http.client counts down what Content-Length promised)
                    raise _Lost("etcd at %s: range answer cut short" % (endpoint,))
                return b"".join(chunks)
            size += len(data)
            if size > MAX_RANGE_BYTES:
                raise _Lost("etcd at %s: range answer over the %d-byte limit" % (endpoint, MAX_RANGE_BYTES))
            chunks.append(data)

    def _range(self, endpoint: Endpoint) -> int:
        import http.client
        import json

        deadline = time.monotonic() + RANGE_TIMEOUT
        resp = self._request(endpoint, "/v3/kv/range", {
            "key": _b64(self.key), "range_end": _b64(_prefix_end(self.key))}, RANGE_TIMEOUT)
        try:
            answer = json.loads(self._read_range(endpoint, resp, deadline))
        except (OSError, ValueError, RecursionError, http.client.HTTPException) as exc:
            raise _Lost("etcd at %s: bad range answer: %s: %s"
                        % (endpoint, type(exc).__name__, quoted(str(exc), 200))) from None
        finally:
            if self._conn is not None:
                self._conn.close()
        # A malformed answer as a whole (no header.revision, which every etcd v3 range answer
        # carries: etcdserverpb.RangeResponse) fails the attempt: publishing its instances would
        # give NoInstanceError, and a watch needs the revision to resume from.
        header = answer.get("header") if isinstance(answer, dict) else None
        revision = ascii_int(header.get("revision")) if isinstance(header, dict) else None
        if revision is None:
            raise _Lost("etcd at %s: malformed range answer: no header.revision (not an etcd v3 "
                        "JSON gateway?): %s" % (endpoint, quoted(answer)))
        kvs: Dict[bytes, Instance] = {}
        listed = answer.get("kvs") or []
        if not isinstance(listed, list):
            raise _Lost("etcd at %s: malformed range answer: kvs is %s" % (endpoint, quoted(listed)))
        for kv in listed:
            self._apply(kvs, kv)
        self._kvs = kvs
        self._publish()
        return revision

    def _watch(self, endpoint: Endpoint, revision: int) -> None:
        import http.client
        import json

        # (a read timeout: a silent stream is re-established, which also re-reads the prefix)
        resp = self._request(endpoint, "/v3/watch", {"create_request": {
            "key": _b64(self.key), "range_end": _b64(_prefix_end(self.key)),
            "start_revision": str(revision + 1)}}, WATCH_IDLE)
        self.watches += 1
        started = time.monotonic()
        try:
            while not self.closed:
                try:
                    line = resp.readline(MAX_EVENT_BYTES + 1)
                except socket.timeout:
                    return  # idle: ranged again by the caller, quietly
                except (OSError, ValueError, http.client.HTTPException) as exc:
                    raise _Lost("etcd at %s: watch stream: %s: %s"
                                % (endpoint, type(exc).__name__, quoted(str(exc), 200))) from None
                if not self._healthy and time.monotonic() - started >= WATCH_STABLE:
                    self._healthy = True
                if not line:
                    raise _Lost("etcd at %s closed the watch stream" % (endpoint,))
                if len(line) > MAX_EVENT_BYTES:
                    raise _Lost("etcd at %s: watch event over the %d-byte limit per line"
                                % (endpoint, MAX_EVENT_BYTES))
                try:
                    message = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if not isinstance(message, dict):
                    continue
                result = message.get("result") or {}
                if not isinstance(result, dict):
                    continue
                if message.get("error") or result.get("canceled"):
                    # compacted past our revision, or another refusal: range again
                    raise _Lost("etcd at %s ended the watch: %s"
                                % (endpoint, quoted(message.get("error") or result.get("cancel_reason"))))
                events = result.get("events")
                if not events or not isinstance(events, list):
                    continue
                kvs = dict(self._kvs)
                for event in events:
                    kv = event.get("kv") if isinstance(event, dict) else None
                    if not isinstance(kv, dict):
                        self._warn(None, "skipping a malformed watch event from etcd at %s for %s: %s"
                                   % (endpoint, self.where, quoted(event)))
                        continue
                    if event.get("type") == "DELETE":
                        key = self._key(kv)
                        if key is not None:
                            kvs.pop(key, None)
                    else:
                        self._apply(kvs, kv)
                self._kvs = kvs
                self._healthy = True
                self._publish()
        finally:
            if self._conn is not None:
                self._conn.close()

    def _warn(self, key: object, text: str) -> None:
        """A warning about one malformed entry: once per key, at most WARN_BURST per window."""
        if key is not None:
            if key in self._warned:  # a watch may see it again and again
                return
            if len(self._warned) < 1024:
                self._warned.add(key)
        now = time.monotonic()
        if now - self._warn_window >= WARN_WINDOW:
            if self._warn_suppressed:
                log.warning("kitex_fast: %d more malformed registry entries for %s were skipped "
                            "without a warning", self._warn_suppressed, self.where)
            self._warn_window, self._warn_count, self._warn_suppressed = now, 0, 0
        if self._warn_count >= WARN_BURST:
            self._warn_suppressed += 1
            return
        self._warn_count += 1
        log.warning("kitex_fast: %s", text)

    def _key(self, kv: Mapping[str, Any]) -> Optional[bytes]:
        """The key of one etcd kv, when it is base64 and under this service's prefix."""
        try:
            key = _b64decode(kv.get("key", ""), "key")
        except ValueError as exc:
            self._warn(quoted(kv.get("key")), "skipping a registry entry of %s: %s" % (self.where, exc))
            return None
        if not key.startswith(self.key):  # another service's key (etcd sent what we did not ask)
            self._warn(key, "ignoring key %s outside %s" % (quoted(key), self.where))
            return None
        return key

    def _apply(self, kvs: Dict[bytes, Instance], kv: object) -> None:
        if not isinstance(kv, dict):
            self._warn(None, "skipping a malformed registry entry of %s: %s" % (self.where, quoted(kv)))
            return
        key = self._key(kv)
        if key is None:
            return
        try:
            kvs[key] = parse_instance(key, _b64decode(kv.get("value", ""), "value"))
        except ValueError as exc:
            kvs.pop(key, None)
            self._warn(key, "skipping malformed registry value at %s (%s): %s"
                       % (quoted(key.decode(errors="replace")), self.where, exc))

    def _publish(self) -> None:
        # One tuple in key order: a stable order gives a stable schedule for the same set.
        instances = tuple(self._kvs[k] for k in sorted(self._kvs))
        with self.cond:
            changed = instances != self.instances
            first = self.instances is None
            self.instances = instances
            self.error = None
            if first:
                self.attempts += 1
            self.cond.notify_all()
            listeners = list(self.listeners)
        if changed and not first:
            for listener in listeners:
                try:
                    listener(instances)
                except Exception:  # a listener's bug must not stop the watch
                    log.exception("kitex_fast: resolver listener failed")

    # -- callers ------------------------------------------------------------------------------

    def wait(self, timeout: Optional[float]) -> Tuple[Instance, ...]:
        instances = self.instances
        if instances is not None:
            return instances
        if timeout is None:
            timeout = DEFAULT_RESOLVE_TIMEOUT
        deadline = time.monotonic() + timeout
        with self.cond:
            seen = self.attempts
            while self.instances is None:
                left = deadline - time.monotonic()
                if self.attempts > seen and self.error is not None:
                    raise ResolveError("cannot resolve %s: %s" % (self.where, self.error))
                if left <= 0:
                    raise ResolveError(
                        "cannot resolve %s: no answer from etcd within %.0f ms%s"
                        % (self.where, timeout * 1000, "" if self.error is None else " (%s)" % self.error))
                self.cond.wait(left)
            return self.instances

    def close(self) -> None:
        self.closed = True
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:  # unblocks the thread's read
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class EtcdResolver:
    """Kitex services registered in etcd by ``kitex-contrib/registry-etcd`` (docs/registry.md).

    ``EtcdResolver(["127.0.0.1:2379"], prefix="kitex/registry-etcd")``; ``endpoints`` are etcd's
    client URLs' host:port (HTTP, the v3 JSON gateway that etcd serves on its client port). One
    watch thread per service, started by the first :meth:`resolve` or :meth:`subscribe`.
    """

    def __init__(self, endpoints: Union[str, Sequence[str], Sequence[Endpoint]], *, prefix: str = DEFAULT_PREFIX) -> None:
        if isinstance(endpoints, (list, tuple)) and endpoints and all(isinstance(e, Endpoint) for e in endpoints):
            self.endpoints: Tuple[Endpoint, ...] = tuple(endpoints)  # type: ignore[arg-type]
        else:
            self.endpoints = parse_host_ports(endpoints, "registry")  # type: ignore[arg-type]
        self.prefix = _check_prefix(prefix)
        self.url = "etcd://" + ",".join(str(e) for e in self.endpoints)
        self.description = "%s prefix %s" % (self.url, self.prefix)
        self._watches: Dict[str, _Watch] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _watch(self, service: str) -> _Watch:
        watch = self._watches.get(service)
        if watch is None:
            with self._lock:
                if self._closed:
                    raise ResolveError("the resolver for %s is closed" % self.description)
                watch = self._watches.get(service)
                if watch is None:
                    if "/" in service:
                        raise MetadataError(
                            "service name %s has a '/', which registry-etcd refuses to register" % quoted(service))
                    watch = self._watches[service] = _Watch(self, service)
        return watch

    def resolve(self, service: str, timeout: Optional[float]) -> Tuple[Instance, ...]:
        return self._watch(service).wait(timeout)

    def where(self, service: str) -> str:
        """The text that names ``service`` in this registry, for error messages."""
        return "service %s under etcd prefix %s at %s" % (
            quoted(service), quoted("%s/%s/" % (self.prefix, service)), self.url)

    def subscribe(self, service: str, listener: Listener) -> Callable[[], None]:
        watch = self._watch(service)
        with watch.cond:
            watch.listeners.append(listener)

        def unsubscribe() -> None:
            with watch.cond:
                if listener in watch.listeners:
                    watch.listeners.remove(listener)
                idle = not watch.listeners
            if idle:
                with self._lock:
                    if self._watches.get(service) is watch and not watch.listeners:
                        del self._watches[service]
                        watch.close()
        return unsubscribe

    def close(self) -> None:
        with self._lock:
            self._closed = True
            watches = list(self._watches.values())
            self._watches.clear()
        for watch in watches:
            watch.close()

    def __repr__(self) -> str:
        return "<EtcdResolver %s>" % self.description


def describe(resolver: Any, service: str) -> str:
    """How error texts name ``service`` in ``resolver``."""
    where = getattr(resolver, "where", None)
    if where is not None:
        return str(where(service))
    return "service %s in %s" % (quoted(service), getattr(resolver, "description", resolver))

