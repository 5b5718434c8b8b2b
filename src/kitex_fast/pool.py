"""Endpoints and connections: ``hostPorts`` parsing, a bounded idle pool per endpoint,
round-robin over endpoints with failover on connect errors.

A pooled connection carries one call at a time (Kitex's long-connection pool works the same way:
``pkg/remote/remotecli/conn_wrapper.go``). A connection is either idle in the pool, in the hands of
exactly one caller, or closed: never anything in between. The idle connections of one endpoint
live in the transport's ``IdlePool`` (compiled, or its twin), which the client's call path takes
from and gives back to without running Python code.
"""

from __future__ import annotations

import itertools
import socket
import time
from types import ModuleType
from typing import Any, Callable, Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Set, Tuple, Union

from ._transport_errors import format_ms
from .errors import ConnectError, ConnectTimeoutError, MetadataError, quoted

__all__ = ["Endpoint", "parse_host_ports", "EndpointPool"]


class Endpoint(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        return "[%s]:%d" % (self.host, self.port) if ":" in self.host else "%s:%d" % self

    def resolve(self) -> List[Tuple[int, Any]]:
        """``(family, sockaddr)`` pairs for this endpoint, in the resolver's order."""
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConnectError("cannot resolve %s: %s" % (self, exc)) from None
        return [(family, sockaddr) for family, _, _, _, sockaddr in infos]


# -- caller text: numbers and host:port entries -------------------------------------------------

# The most digits a number in caller text may have (without leading zeros): 19 holds every int64,
# so nothing valid is refused, and a 5,000-digit value is refused before int() ever sees it
# (int() would spend time on it, or raise ValueError past sys.int_info.str_digits_check_threshold).
MAX_DIGITS = 19
# The longest number text at all (leading zeros included): a bound on the work per value.
_MAX_NUMBER_TEXT = 64


def ascii_int(text: object, negative: bool = False) -> Optional[int]:
    """The value of ``text`` when it is a whole number written in ASCII digits (with one leading
    ``-`` if ``negative``), at most :data:`MAX_DIGITS` significant digits; otherwise None.

    The one check for numbers in caller text. ``str.isdigit()`` alone accepts ``²`` (which
    ``int()`` then refuses) and fullwidth or Arabic-Indic digits (which ``int()`` reads:
    ``"４０８３１"`` would be port 40831); ``int()`` alone also accepts ``+5``, `` 5`` and ``5_0``.
    Go's strconv.Atoi, which Kitex and Dapr parse these values with, accepts none of them."""
    if not isinstance(text, str) or not 0 < len(text) <= _MAX_NUMBER_TEXT or not text.isascii():
        return None
    digits = text[1:] if negative and text.startswith("-") else text
    if not digits.isdigit() or len(digits.lstrip("0")) > MAX_DIGITS:
        return None  # (isdigit() on an ASCII str: 0-9 only)
    return int(text)


def parse_int(field: str, text: object, low: int, high: int) -> int:
    """``text`` as a whole number in ``low``-``high`` (see :func:`ascii_int`), or a MetadataError
    that names ``field`` and quotes the value."""
    number = ascii_int(text, negative=low < 0)
    if number is None or not low <= number <= high:
        raise MetadataError(
            "metadata field %s: %s is not a whole number in %d-%d" % (field, quoted(text), low, high)
        )
    return number


def _parse_port(text: str, entry: str, field: str) -> int:
    port = ascii_int(text)
    if port is None:
        raise MetadataError(
            "metadata field %s: entry %s has a port %s that is not a number"
            % (field, quoted(entry), quoted(text))
        )
    if not 1 <= port <= 65535:
        raise MetadataError(
            "metadata field %s: entry %s has port %d outside 1-65535" % (field, quoted(entry), port)
        )
    return port


# What a host name may hold besides letters and digits (RFC 952/1123 use '-' and '.'; '_' appears
# in container and SRV names, and getaddrinfo resolves it). Anything else (NUL, which the C
# resolver reads as the end of the name, control characters, white space, '/', '@', ...) can
# never name a host: refused here rather than truncated or misread at connect time.
_HOST_PUNCTUATION = frozenset("-._")
# An IPv6 zone (scope) id is an interface name or number: fe80::1%eth0.
_ZONE_PUNCTUATION = frozenset("-._")
_MAX_HOST = 253  # DNS: the longest name in text form (RFC 1035 section 2.3.4, without the final dot)


def _name_ok(name: str, punctuation: FrozenSet[str]) -> bool:
    for ch in name:
        if ch.isascii():
            if not (ch.isalnum() or ch in punctuation):
                return False
        elif not ch.isalnum():  # an internationalised name: letters and digits only
            return False
    return True


def _check_host(host: str, entry: str, field: str) -> None:
    bad = len(host) > _MAX_HOST + 1 or not _name_ok(host, _HOST_PUNCTUATION)
    if not bad:
        try:  # what getaddrinfo does with a str host: label lengths, empty labels ("a..b")
            host.encode("idna")
        except UnicodeError:
            bad = True
    if bad:
        raise MetadataError(
            "metadata field %s: entry %s: %s is not a host name or address"
            % (field, quoted(entry), quoted(host))
        )


def _parse_entry(entry: str, field: str) -> Endpoint:
    if entry.startswith("["):
        close = entry.find("]")
        if close < 0 or entry[close + 1 : close + 2] != ":":
            raise MetadataError(
                "metadata field %s: entry %s is not [ipv6]:port" % (field, quoted(entry))
            )
        host, port_text = entry[1:close], entry[close + 2 :]
        address, has_zone, zone = host.partition("%")
        import ipaddress  # (here, not at the top: only an [ipv6] entry needs it, ~0.2 MiB of RSS)

        try:
            if has_zone and not (zone and zone.isascii() and _name_ok(zone, _ZONE_PUNCTUATION)):
                raise ValueError("bad zone")
            ipaddress.IPv6Address(address)
        except ValueError:
            raise MetadataError(
                "metadata field %s: entry %s: %s is not an IPv6 address"
                % (field, quoted(entry), quoted(host))
            ) from None
        return Endpoint(host, _parse_port(port_text, entry, field))
    if entry.count(":") != 1:
        hint = " (put IPv6 addresses in brackets: [::1]:8888)" if entry.count(":") > 1 else ""
        raise MetadataError(
            "metadata field %s: entry %s is not host:port%s" % (field, quoted(entry), hint)
        )
    host, port_text = entry.split(":")
    if not host:
        raise MetadataError("metadata field %s: entry %s has no host" % (field, quoted(entry)))
    _check_host(host, entry, field)
    return Endpoint(host, _parse_port(port_text, entry, field))


def parse_host_ports(value: Union[str, Sequence[str]], field: str = "hostPorts") -> Tuple[Endpoint, ...]:
    """Parse ``"a:1,b:2"``, ``"[::1]:8888"`` or a list of such entries into endpoints.

    Every entry is validated; duplicates are kept (they weight the round robin, as a user who lists
    a host twice would expect). White space around an entry is ignored; inside a host or a port
    it is an error.
    """
    if isinstance(value, str):
        entries = value.split(",")
    elif isinstance(value, (list, tuple)):
        entries = list(value)
    else:
        raise MetadataError(
            "metadata field %s: expected \"host:port[,host:port...]\" or a list of such strings, "
            "not %s" % (field, type(value).__name__)
        )
    endpoints = []
    for raw in entries:
        if not isinstance(raw, str):
            raise MetadataError("metadata field %s: entry %s is not a string" % (field, quoted(raw)))
        entry = raw.strip()
        if not entry:
            raise MetadataError(
                "metadata field %s: empty entry in %s" % (field, quoted(value))
            )
        endpoints.append(_parse_entry(entry, field))
    if not endpoints:
        raise MetadataError("metadata field %s: no endpoints in %s" % (field, quoted(value)))
    return tuple(endpoints)


def _rpc_ran_out(
    exc: ConnectTimeoutError, endpoint: Endpoint, left: Optional[float], rpc_timeout: Optional[float]
) -> ConnectTimeoutError:
    budget = "the rpc timeout" if rpc_timeout is None else "the rpc timeout of %s ms" % format_ms(rpc_timeout)
    return ConnectTimeoutError(
        "connect to %s did not finish within %s (%s ms of it were left for the connect)"
        % (endpoint, budget, format_ms(left or 0.0))
    )


class EndpointPool:
    """All endpoints of one destination: round robin, failover on connect errors, pooling."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        transport: ModuleType,
        make_decoder: Callable[[], Any],
        connect_timeout: Optional[float],
        max_idle: int,
        max_idle_time: float,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self._pools = [transport.IdlePool(ep, max_idle, max_idle_time) for ep in self.endpoints]
        self._transport = transport
        self._make_decoder = make_decoder
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._max_idle_time = max_idle_time
        self._next = itertools.count()
        self._closed = False

    def update(self, schedule: Sequence[Endpoint]) -> List[Any]:
        """Install a new round-robin cycle (a registry's instance set, weighted: an endpoint may
        appear many times) and return its pools, one per entry, for the call path to swap in.

        An endpoint that stays keeps its pool and idle connections; one that left is drained:
        its idle connections close now, those in use close when their call ends (IdlePool.close).
        Called from the resolver's thread; the swap is one attribute store, so a concurrent
        acquire sees the old cycle or the new one, never a mix."""
        known = {pool.endpoint: pool for pool in self._pools}
        pools = []
        fresh: Dict[Endpoint, Any] = {}
        for ep in schedule:
            pool = fresh.get(ep)
            if pool is None:
                pool = known.get(ep)
                if pool is None or self._closed:
                    pool = self._transport.IdlePool(ep, self._max_idle, self._max_idle_time)
                fresh[ep] = pool
            pools.append(pool)
        self._pools = pools
        self.endpoints = tuple(fresh)
        for ep, pool in known.items():
            if ep not in fresh:
                pool.close()
        if self._closed:  # closed meanwhile: nothing new may stay open
            for pool in fresh.values():
                pool.close()
        return pools

    def acquire(
        self, deadline: Optional[float], rpc_timeout: Optional[float] = None, start: Optional[int] = None
    ) -> Tuple[Any, Any, bool]:
        """``(connection, its IdlePool, reused)``. Tries endpoints round robin starting at the next
        one (or at index ``start``, which the call path already chose); an endpoint that refuses or
        times out is skipped for this call (failover). ``rpc_timeout`` (the budget ``deadline``
        came from) only names it in error texts."""
        pools = self._pools  # one read: a registry update may swap the list meanwhile
        n = len(pools)
        if n == 1:
            pool = pools[0]
            conn = pool.take_idle()
            if conn is not None:
                return conn, pool, True
            return self._connect(pool.endpoint, deadline, rpc_timeout), pool, False
        if start is None:
            start = next(self._next) % n
        errors: List[ConnectError] = []
        tried: Set[int] = set()
        for i in range(n):
            pool = pools[(start + i) % n]
            if id(pool) in tried:  # a weighted cycle lists an endpoint many times: try it once
                continue
            tried.add(id(pool))
            conn = pool.take_idle()
            if conn is not None:
                return conn, pool, True
            try:
                return self._connect(pool.endpoint, deadline, rpc_timeout), pool, False
            except ConnectError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        last = errors[-1]
        cls = ConnectTimeoutError if all(isinstance(e, ConnectTimeoutError) for e in errors) else ConnectError
        raise cls(
            "no endpoint accepted a connection (%d tried): %s"
            % (len(errors), "; ".join(str(e) for e in errors))
        ) from last

    def connect_fresh(self, pool: Any, deadline: Optional[float]) -> Any:
        """A new connection to ``pool``'s endpoint, bypassing the idle ones (for a retry that must not reuse)."""
        return self._connect(pool.endpoint, deadline)

    def _connect(
        self, endpoint: Endpoint, deadline: Optional[float], rpc_timeout: Optional[float] = None
    ) -> Any:
        timeout = self._connect_timeout
        bounded_by_rpc = False  # the call's deadline, not connect_timeout, limits this connect
        if deadline is not None:
            left = max(deadline - time.monotonic(), 0.0)
            if timeout is None or left < timeout:
                timeout = left
                bounded_by_rpc = True
        last: Optional[ConnectError] = None
        for family, sockaddr in endpoint.resolve():
            try:
                return self._transport.open_connection(
                    family, sockaddr, timeout=timeout, decoder=self._make_decoder()
                )
            except ConnectTimeoutError as exc:
                # "timed out after 0 ms" would blame connect_timeout for the rpc timeout's work.
                last = _rpc_ran_out(exc, endpoint, timeout, rpc_timeout) if bounded_by_rpc else exc
            except ConnectError as exc:
                last = exc
        assert last is not None  # getaddrinfo never returns an empty list without raising
        raise last

    def close(self) -> None:
        """Close idle connections now and every other one when its call ends. Calls already
        under way (or starting on a retired client) still complete on fresh connections."""
        self._closed = True
        for pool in {id(p): p for p in self._pools}.values():
            pool.close()
