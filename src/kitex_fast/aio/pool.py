"""The connections of one asyncio client, on Kitex's connection model.

- :class:`PingPongPool` (the default): a connection carries one call at a time, as with Kitex's own
  long-connection pool (kitex ``pkg/connpool/long_pool.go``). A default Kitex server reads a
  connection's next request only after it has answered the previous one, so a second call written
  on a busy connection would wait for the first (head-of-line blocking). A call takes an idle
  connection (most recently used first, endpoints round robin), or opens one while its endpoint
  has fewer than ``max_connections``, or waits for one to be released within its own deadline.
  Released connections are kept idle, at most ``max_idle`` per endpoint (by default
  ``max_connections``: as many as the calls in flight used), each for ``max_idle_time``, so that
  steady concurrency finds a connection idle instead of connecting and closing per call.
- :class:`SharedPool`: many calls per connection, matched by seq id. For a Kitex mux server
  (``mux=True``: replies in any order; a call that gives up does not hold the connection), or as
  the explicit opt-in ``pipelining`` for servers known to answer in order and quickly.

Both try endpoints round robin for new connections with failover on connect errors (the sync
driver's rules, :mod:`kitex_fast.pool`). A request is never written to a connection known to be
closing: that is the one case where a call moves on to another connection, because no byte of it
was sent.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import select
import socket
from collections import deque
from types import ModuleType
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

from .. import _transport_errors as texts
from ..errors import (
    ConnectError,
    ConnectionLimitError,
    ConnectTimeoutError,
    RPCTimeoutError,
    TransportError,
)
from ..pool import Endpoint

__all__ = ["PingPongPool", "SharedPool"]


class _Connector:
    """What both pools share: endpoints, connecting (round robin, failover), close."""

    def __init__(
        self,
        endpoints: Tuple[Endpoint, ...],
        *,
        protocol: ModuleType,
        make_decoder: Callable[[], Any],
        connect_timeout: Optional[float],
        max_idle_time: float,
        max_connections: int,
    ) -> None:
        self.endpoints = endpoints
        self.max_idle_time = max_idle_time
        self.max_connections = max_connections  # per endpoint
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.deadlines: Any = None  # the rpc timeouts of this pool's calls (protocol.Deadlines), from bind()
        self._all: Set[Any] = set()  # every connection not yet lost, for close()
        self._protocol_cls = protocol.Protocol
        self._deadlines_cls = protocol.Deadlines
        self._make_decoder = make_decoder
        self._connect_timeout = connect_timeout
        self._closed = False
        self._sweep_handle: Any = None
        self.waiters: Deque[Any] = deque()  # futures of calls waiting for a connection, oldest first
        # Registry updates renumber the endpoint slots: epoch -> how that epoch's slot indexes
        # map to the next epoch's (the last one is the "gone" slot), for connects that were on
        # their way across an update.
        self._epoch = 0
        self._remaps: Dict[int, List[int]] = {}

    async def _open(
        self, order: Sequence[int], deadline: Optional[float], waiters: Deque[Any], conns: Callable[[int], List[Any]]
    ) -> Any:
        """A new connection to the first endpoint in ``order`` (indexes) that accepts one
        (failover). ``waiters``/``conns(i)`` are handed to the protocol (see its docs)."""
        errors: List[ConnectError] = []
        epoch = self._epoch
        for index in order:
            index = self._current(index, epoch)
            epoch = self._epoch
            if index >= len(self.endpoints):  # its instance left the registry meanwhile
                continue
            self._opening(index, 1)
            try:
                proto = await self._connect(self.endpoints[index], deadline, waiters, conns(index))
            except ConnectError as exc:
                self._opening(self._current(index, epoch), -1)
                errors.append(exc)
                continue
            except BaseException:
                self._opening(self._current(index, epoch), -1)
                raise
            index = self._current(index, epoch)
            epoch = self._epoch
            if proto.closed:  # lost before we got to use it
                self._opening(index, -1)
                errors.append(ConnectError("connection to %s closed right after connect" % proto.peer))
                continue
            proto.endpoint_index = index
            self._all.add(proto)
            proto.wait_closed().add_done_callback(lambda _f, p=proto: self._lost(p))
            if self._closed:
                proto.close()
                raise TransportError("the client is closed")
            if index >= len(self.endpoints):
                # Its instance left the registry while we connected: it takes no call (a request
                # is never written to a closing connection; the caller moves on).
                proto.retire()
            return proto
        if not errors:
            raise ConnectError("no endpoint to connect to: the registry removed them meanwhile")
        if len(errors) == 1:
            raise errors[0]
        cls = ConnectTimeoutError if all(isinstance(e, ConnectTimeoutError) for e in errors) else ConnectError
        raise cls(
            "no endpoint accepted a connection (%d tried): %s"
            % (len(errors), "; ".join(str(e) for e in errors))
        ) from errors[-1]

    def _opening(self, index: int, delta: int) -> None:
        """A connect to endpoint ``index`` starts (+1) or failed (-1)."""

    def _current(self, index: int, epoch: int) -> int:
        """Slot ``index`` of ``epoch`` in today's numbering (``len(self.endpoints)``: gone)."""
        while epoch < self._epoch:
            remap = self._remaps.get(epoch)
            if remap is None:  # (only the last few epochs are kept)
                return len(self.endpoints)
            index = remap[min(index, len(remap) - 1)]
            epoch += 1
        return index

    def update(self, cycle: Tuple[Endpoint, ...]) -> None:
        """A registry's new instance set (on the loop's thread), as a weighted round-robin cycle:
        each entry is one endpoint slot, so an instance of weight 3 (reduced) has three slots and
        three times the connections and idle picks of one of weight 1. Slots are matched by
        (endpoint, occurrence): a slot that stays keeps its connections; connections of a slot
        that left retire (take no new call, close after the one they carry). When a slot joined,
        every connection retires the same way, so that the connections (and the calls they
        carry) spread over the new set instead of staying where they were."""
        if len(cycle) > 64:  # (slots are scanned per call: keep the scan short)
            cycle = tuple(dict.fromkeys(cycle))
        old_keys = _slot_keys(self.endpoints)
        new_keys = _slot_keys(cycle)
        where = {key: j for j, key in enumerate(new_keys)}
        gone = len(cycle)
        remap = [where.get(key, gone) for key in old_keys] + [gone]  # (+ the old "gone" slot)
        joined = bool(set(new_keys) - set(old_keys))
        self._remaps[self._epoch] = remap
        self._remaps.pop(self._epoch - 16, None)
        self._epoch += 1
        self._renumber(remap, cycle)
        self.endpoints = tuple(cycle)
        for proto in list(self._all):
            index = remap[min(getattr(proto, "endpoint_index", gone), len(remap) - 1)]
            proto.endpoint_index = index
            if joined or index == gone:
                proto.retire()
        self._wake_all()  # calls waiting for a connection look again

    def _renumber(self, remap: List[int], cycle: Tuple[Endpoint, ...]) -> None:
        """The pool's per-slot state follows ``remap`` (old slot -> new slot, ``len(cycle)``: gone)."""

    def _lost(self, proto: Any) -> None:
        self._all.discard(proto)

    async def _connect(
        self, endpoint: Endpoint, deadline: Optional[float], waiters: Deque[Any], conns: List[Any]
    ) -> Any:
        """A connected protocol for ``endpoint``: each resolved address in turn, as the sync
        driver does."""
        loop = self.loop
        assert loop is not None
        timeout = self._connect_timeout
        if deadline is not None:
            left = max(deadline - loop.time(), 0.0)
            timeout = left if timeout is None else min(timeout, left)
        try:
            # Numeric hosts resolve here without a thread; names go through the loop's resolver.
            infos = socket.getaddrinfo(
                endpoint.host, endpoint.port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            try:
                infos = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise ConnectError("cannot resolve %s: %s" % (endpoint, exc)) from None
        last: Optional[ConnectError] = None
        for family, _, _, _, sockaddr in infos:
            try:
                sock = await self._connect_socket(family, sockaddr, timeout)
            except ConnectError as exc:
                last = exc
                continue
            peer = texts.format_address(family, sockaddr)
            proto = self._protocol_cls(loop, self._make_decoder(), peer, waiters, conns)
            try:
                await loop.create_connection(lambda: proto, sock=sock)
            except OSError as exc:
                sock.close()
                last = ConnectError("connect to %s failed: %s" % (peer, texts.errno_text(exc.errno or 0)))
                continue
            return proto
        assert last is not None  # getaddrinfo never returns an empty list without raising
        raise last

    async def _connect_socket(self, family: int, sockaddr: Any, timeout: Optional[float]) -> socket.socket:
        """A nonblocking TCP socket connected to ``sockaddr``. The timeout counts the kernel's
        connect, not the event loop's delays: a connect that completed while the loop was busy
        elsewhere is not reported as timed out (a busy loop would otherwise turn Kitex's 50 ms
        default into spurious ConnectTimeoutErrors)."""
        loop = self.loop
        assert loop is not None
        address = texts.format_address(family, sockaddr)
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            raise ConnectError("connect to %s failed: %s" % (address, texts.errno_text(exc.errno or 0))) from None
        try:
            sock.setblocking(False)
            if family in (socket.AF_INET, getattr(socket, "AF_INET6", -1)):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex(sockaddr)
            if err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR):
                fd = sock.fileno()
                done = loop.create_future()
                loop.add_writer(fd, _resolve, done, True)
                timer = loop.call_later(timeout, _resolve, done, False) if timeout is not None else None
                try:
                    writable = await done
                finally:
                    loop.remove_writer(fd)
                    if timer is not None:
                        timer.cancel()
                if not writable and not _writable_now(fd):
                    raise ConnectTimeoutError(
                        "connect to %s timed out after %s ms" % (address, texts.format_ms(timeout or 0.0))
                    )
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise ConnectError("connect to %s failed: %s" % (address, texts.errno_text(err)))
            return sock
        except BaseException:
            sock.close()
            raise

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop this pool's connections and timers belong to (the first call's)."""
        if self.loop is not loop or self.deadlines is None:
            if self.deadlines is not None:
                self.deadlines.close()
            self.loop = loop
            self.deadlines = self._deadlines_cls(loop)

    def _arm_sweep(self, due: float) -> None:
        """Run :meth:`_sweep` at loop time ``due`` unless a sweep is already armed."""
        if self._sweep_handle is None and self.loop is not None and not self._closed:
            self._sweep_handle = self.loop.call_at(due, self._sweep)

    def _sweep(self) -> None:
        raise NotImplementedError

    def retire(self) -> None:
        """Every connection closes once its calls are done; new calls still get connections."""
        for proto in list(self._all):
            proto.retire()

    async def _wait(self, deadline: Optional[float]) -> Any:
        """Wait in :attr:`waiters` until woken (with what :meth:`wake` hands over) or until
        ``deadline`` (loop time), then :meth:`_wait_error`."""
        loop = self.loop
        assert loop is not None
        fut = loop.create_future()
        self.waiters.append(fut)
        handle = None
        budget = 0.0
        if deadline is not None:
            budget = deadline - loop.time()
            handle = loop.call_at(deadline, self._give_up, fut, budget)
        try:
            handed = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._pass_on(fut.result())  # woken as we left: the turn goes to the next one
            raise
        finally:
            if handle is not None:
                handle.cancel()
        if deadline is not None and loop.time() >= deadline:
            # Woken in time, but this task ran only after its deadline (a busy loop runs the
            # wakeup late, or the release and the timer fell due in the same loop iteration).
            # Sending now could only end in RPCTimeoutError(sent=True) with the request on the
            # wire: give up unsent instead, and the turn goes to the next waiter.
            self._pass_on(handed)
            raise self._wait_error(budget)
        return handed

    def _give_up(self, fut: Any, budget: float) -> None:
        if not fut.done():
            fut.set_exception(self._wait_error(budget))

    def _wait_error(self, budget: float) -> Exception:
        raise NotImplementedError

    def _pass_on(self, handed: Any) -> None:
        """What a cancelled waiter was handed as it left goes to the next waiter."""
        self.wake(1, handed)

    def wake(self, n: int, handed: Any = None) -> int:
        """Wake up to ``n`` waiting calls, oldest first, each with ``handed``; how many woke."""
        waiters = self.waiters
        woken = 0
        while woken < n and waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(handed)
                woken += 1
        return woken

    def _wake_all(self) -> None:
        self.wake(len(self.waiters))

    async def close(self) -> None:
        """Fail every call in flight, close every connection and wait until they are gone."""
        self._closed = True
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        if self.deadlines is not None:
            self.deadlines.close()
        protos = list(self._all)
        for proto in protos:
            proto.close(
                TransportError("the client was closed while the call was in flight", sent=True)
            )
        self._wake_all()
        if protos:
            await asyncio.gather(*(p.wait_closed() for p in protos))

    def _refuse_closed(self) -> None:
        if self._closed:
            raise TransportError("the client is closed")
        if not self.endpoints:  # a registry's set emptied while the call waited
            raise ConnectError("no live instance left to connect to", sent=False)


class PingPongPool(_Connector):
    """One call per connection at a time: Kitex's long-connection pool.

    Its per-call rules, ``take`` and ``release``, and the state they read are the protocol
    module's ``PingPongCore`` (compiled, or the twin's): ``PingPongPool(..., protocol=m)`` is an
    instance of a subclass joining this class and ``m.PingPongCore``, made once per module."""

    _with_core: Dict[ModuleType, type] = {}
    take: Callable[[], Any]  # (PingPongCore's: declared for type checkers only)
    release: Callable[[Any], None]

    def __new__(cls, *args: Any, protocol: ModuleType, **kwargs: Any) -> "PingPongPool":
        if cls is PingPongPool:
            joined = PingPongPool._with_core.get(protocol)
            if joined is None:
                joined = PingPongPool._with_core[protocol] = type(
                    "PingPongPool", (PingPongPool, protocol.PingPongCore),
                    {"__module__": __name__, "__doc__": PingPongPool.__doc__},
                )
            cls = joined
        pool: PingPongPool = super().__new__(cls)
        return pool

    def __init__(
        self,
        endpoints: Tuple[Endpoint, ...],
        *,
        protocol: ModuleType,
        make_decoder: Callable[[], Any],
        connect_timeout: Optional[float],
        max_idle: int,
        max_idle_time: float,
        max_connections: int,
    ) -> None:
        super().__init__(
            endpoints,
            protocol=protocol,
            make_decoder=make_decoder,
            connect_timeout=connect_timeout,
            max_idle_time=max_idle_time,
            max_connections=max_connections,
        )
        n = len(endpoints)
        self.max_idle = max_idle
        # Idle connections per endpoint, the most recently released last. Each protocol holds
        # its endpoint's list and leaves it when it closes, so a connection the server closed
        # while idle is never handed out.
        self.idle: List[List[Any]] = [[] for _ in range(n)]
        self.open_count = [0] * (n + 1)  # per endpoint (+ departed ones): connected or connecting, until lost
        self._no_waiters: Deque[Any] = deque()  # the protocols' queue: unused here
        self._next = 0  # round robin over the endpoints (their slots)
        self._picked = 0  # the slot take() picked for the call that now acquires

    async def acquire(self, deadline: Optional[float]) -> Any:
        """A connection for the call :meth:`take` found no idle connection for: to the endpoint
        it picked (idle now, or new while below ``max_connections``), failing over to the others
        on connect errors; when that endpoint is at the cap, an idle or new connection to another
        one; else the first connection released, within ``deadline`` (loop time)."""
        slot = self._picked  # (take() ran just before, in the same step of this task)
        while True:
            self._refuse_closed()
            n = len(self.endpoints)
            if slot >= n:  # the registry renumbered the slots meanwhile
                slot = 0
            idle = self.idle
            if idle[slot]:
                return idle[slot].pop()
            cap = self.max_connections
            others = [(slot + i) % n for i in range(1, n)]
            if self.open_count[slot] < cap:
                order = [slot] + [i for i in others if self.open_count[i] < cap]
                return await self._open(order, deadline, self._no_waiters, idle.__getitem__)
            for i in others:  # this call's endpoint is at the cap: room elsewhere?
                if idle[i]:
                    return idle[i].pop()
            order = [i for i in others if self.open_count[i] < cap]
            if order:
                return await self._open(order, deadline, self._no_waiters, idle.__getitem__)
            proto = await self._wait(deadline)  # a released connection, or None: a slot freed
            if proto is not None:
                return proto

    def _wait_error(self, budget: float) -> Exception:
        return ConnectionLimitError(
            "no connection to %s became free within %s ms: all %d connections allowed "
            "per endpoint (max_connections, metadata maxConnections) carry a call; "
            "nothing was sent"
            % (",".join(str(e) for e in self.endpoints), texts.format_ms(budget), self.max_connections),
            sent=False,
        )

    def _pass_on(self, handed: Any) -> None:
        if handed is not None:
            self.release(handed)
        else:
            self.wake(1)

    def _opening(self, index: int, delta: int) -> None:
        self.open_count[index] += delta
        if delta < 0:
            self.wake(1)

    def _lost(self, proto: Any) -> None:
        super()._lost(proto)
        index = getattr(proto, "endpoint_index", None)
        if index is not None and index < len(self.open_count):
            self.open_count[index] -= 1
        self.wake(1)  # room for a new connection

    def _renumber(self, remap: List[int], cycle: Tuple[Endpoint, ...]) -> None:
        n = len(cycle)
        idle: List[List[Any]] = [[] for _ in range(n)]
        open_count = [0] * (n + 1)  # (+1: connections of departed slots, until they close)
        for old, new in enumerate(remap[: len(self.idle)]):
            if new < n:
                idle[new] = self.idle[old]  # the same list: its protocols hold it
            open_count[new] += self.open_count[old]
        if len(self.open_count) > len(self.idle):
            open_count[n] += self.open_count[len(self.idle)]
        self.idle = idle
        self.open_count = open_count
        self._next = 0

    def _sweep(self) -> None:
        """Close connections idle for ``max_idle_time``; run again when the next one is due."""
        self._sweep_handle = None
        loop = self.loop
        if loop is None or self._closed:
            return
        now = loop.time()
        limit = self.max_idle_time
        due: Optional[float] = None
        for idle in self.idle:
            while idle and now - idle[0].idle_since >= limit:
                idle.pop(0).retire()
            if idle:
                first = idle[0].idle_since + limit
                due = first if due is None else min(due, first)
        if due is not None:
            self._arm_sweep(due)

    @property
    def idle_count(self) -> int:
        return sum(len(idle) for idle in self.idle)


class SharedPool(_Connector):
    """Many calls per connection: least-loaded pick, growth up to ``max_connections`` per
    endpoint, at most ``max_in_flight`` calls in flight on each."""

    def __init__(
        self,
        endpoints: Tuple[Endpoint, ...],
        *,
        protocol: ModuleType,
        make_decoder: Callable[[], Any],
        connect_timeout: Optional[float],
        max_idle_time: float,
        max_connections: int,
        max_in_flight: int,
        mux: bool,
    ) -> None:
        super().__init__(
            endpoints,
            protocol=protocol,
            make_decoder=make_decoder,
            connect_timeout=connect_timeout,
            max_idle_time=max_idle_time,
            max_connections=max_connections,
        )
        self.max_in_flight = max_in_flight
        self.mux = mux
        # Connections this pool opens at most, over all endpoints (not pool_size, which is the
        # idle connections kept per endpoint in PingPongPool).
        self.connection_cap = max_connections * len(endpoints)
        # A connection takes new calls up to half its bound before another one is opened: calls
        # sharing few connections share syscalls (one write, one read for many; measured in
        # bench/aio.py), while a second connection keeps one slow call on an in-order server
        # from holding up everything else.
        self.grow_at = max(1, max_in_flight // 2)
        self.conns: List[Any] = []  # connections that take new calls (each removes itself)
        self._pick = protocol.pick
        self._connecting = 0  # connects in progress
        self._awaiting_connect = 0  # calls waiting for one of them
        self._rotation = itertools.count()

    def take(self) -> Any:
        """A connection for a new call without waiting, or None (then :meth:`acquire`): the least
        loaded, unless all are loaded past ``grow_at`` and another may be opened."""
        proto = self._pick(self.conns, self.max_in_flight)
        if proto is not None and (
            proto.load < self.grow_at or len(self.conns) + self._connecting >= self.connection_cap
        ):
            return proto
        return None

    async def acquire(self, deadline: Optional[float]) -> Any:
        """A connection for a new call: the least loaded, a new one while there is room (every
        connection loaded past ``grow_at``), or the first to have room, within ``deadline``
        (loop time)."""
        while True:
            self._refuse_closed()
            proto = self._pick(self.conns, self.max_in_flight)
            if proto is not None and proto.load < self.grow_at:
                return proto
            if self._connecting * self.grow_at > self._awaiting_connect:
                # A connection on its way has room for this call: a burst of calls on a cold
                # client opens one connection per grow_at calls, not connection_cap at once.
                self._awaiting_connect += 1
                try:
                    await self._wait(deadline)
                finally:
                    self._awaiting_connect -= 1
                continue
            if len(self.conns) + self._connecting < self.connection_cap:
                n = len(self.endpoints)
                start = next(self._rotation) % n  # (connection_cap is 0 when n is)
                self._connecting += 1
                try:
                    proto = await self._open(
                        [(start + i) % n for i in range(n)], deadline, self.waiters, self._conns_of
                    )
                except ConnectError:
                    if proto is not None and not proto.closed and proto.usable:
                        return proto  # no new connection, but this one has room
                    raise
                finally:
                    self._connecting -= 1
                    self.wake(self.grow_at)  # the calls that waited for this connect try again
                proto.mux = self.mux
                self.conns.append(proto)
                self.wake(self.max_in_flight - 1)  # the caller takes one slot
                return proto
            if proto is not None:
                return proto
            await self._wait(deadline)

    def _conns_of(self, index: int) -> List[Any]:
        return self.conns

    def _renumber(self, remap: List[int], cycle: Tuple[Endpoint, ...]) -> None:
        self.connection_cap = self.max_connections * len(cycle)

    def _wait_error(self, budget: float) -> Exception:
        return RPCTimeoutError(
            "no connection to %s had room for the request within %s ms (%d connections, "
            "at most %d calls in flight on each); nothing was sent"
            % (
                ",".join(str(e) for e in self.endpoints),
                texts.format_ms(budget),
                len(self.conns),
                self.max_in_flight,
            ),
            sent=False,
        )

    def release(self, proto: Any) -> None:
        """A call on ``proto`` is done: once it carries none, its idle time starts."""
        if proto.load == 0 and self.max_idle_time > 0.0:
            loop = self.loop
            assert loop is not None
            now = loop.time()
            proto.idle_since = now
            self._arm_sweep(now + self.max_idle_time)

    def _sweep(self) -> None:
        """Close connections that carried no call for ``max_idle_time``."""
        self._sweep_handle = None
        loop = self.loop
        if loop is None or self._closed:
            return
        now = loop.time()
        limit = self.max_idle_time
        due: Optional[float] = None
        for proto in list(self.conns):
            if proto.load == 0:
                if now - proto.idle_since >= limit:
                    proto.retire()
                else:
                    first = proto.idle_since + limit
                    due = first if due is None else min(due, first)
        if due is not None:
            self._arm_sweep(due)


def _resolve(fut: Any, value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


def _writable_now(fd: int) -> bool:
    """Whether ``fd`` is writable (connected, or failed) right now, without waiting."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return bool(poller.poll(0))
    return bool(select.select([], [fd], [], 0)[1])  # pragma: no cover - Windows


def _slot_keys(endpoints: Sequence[Endpoint]) -> List[Tuple[Endpoint, int]]:
    """(endpoint, its occurrence number) per slot: how :meth:`_Connector.update` matches slots."""
    seen: Dict[Endpoint, int] = {}
    keys = []
    for ep in endpoints:
        k = seen.get(ep, 0)
        seen[ep] = k + 1
        keys.append((ep, k))
    return keys
