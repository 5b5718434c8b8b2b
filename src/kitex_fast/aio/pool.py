"""The connections of one asyncio client: least-loaded pick, growth up to ``pool_size``, a bound
on calls in flight per connection, round robin over endpoints for new connections with failover
on connect errors (the sync driver's rules, :mod:`kitex_fast.pool`).

A call gets a connection from :meth:`AsyncPool.take` (no await: the common case) or, when every
connection is busy, :meth:`AsyncPool.acquire`, which opens one more or waits for room within the
call's deadline. A connection is only handed out while it takes new calls, so a request is never
written to a connection already known to be closing: that is the one case where a call moves on to
another connection, because no byte of it was sent.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import select
import socket
from collections import deque
from types import ModuleType
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from .. import _transport_errors as texts
from ..errors import ConnectError, ConnectTimeoutError, RPCTimeoutError, TransportError
from ..pool import Endpoint

__all__ = ["AsyncPool"]


class AsyncPool:
    """All connections of one client to its endpoints."""

    def __init__(
        self,
        endpoints: Tuple[Endpoint, ...],
        *,
        protocol: ModuleType,
        make_decoder: Callable[[], Any],
        connect_timeout: Optional[float],
        pool_size: int,
        max_in_flight: int,
    ) -> None:
        self.endpoints = endpoints
        self.pool_size = pool_size
        self.max_in_flight = max_in_flight
        # A connection takes new calls up to half its bound before another one is opened: calls
        # pipelined on few connections share syscalls (one write, one read for many; measured
        # in bench/aio.py: 1-2 connections carry 64 calls in flight with 30-40% less CPU per
        # call than 10), while a second connection keeps one slow call on an in-order server
        # from holding up everything else.
        self.grow_at = max(1, max_in_flight // 2)
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.conns: List[Any] = []  # connections that take new calls (each removes itself)
        self.waiters: Deque[Any] = deque()  # futures of calls waiting for room
        self._all: Set[Any] = set()  # every connection not yet lost, for close()
        self._protocol_cls = protocol.Protocol
        self._pick = protocol.pick
        self._make_decoder = make_decoder
        self._connect_timeout = connect_timeout
        self._connecting = 0  # connects in progress
        self._awaiting_connect = 0  # calls waiting for one of them
        self._next = itertools.count()
        self._endpoint_of: Dict[Any, Endpoint] = {}  # connection -> its endpoint (for update)
        self._closed = False

    def take(self) -> Any:
        """A connection for a new call without waiting, or None (then :meth:`acquire`): the least
        loaded, unless all are loaded past ``grow_at`` and another may be opened."""
        proto = self._pick(self.conns, self.max_in_flight)
        if proto is not None and (
            proto.load < self.grow_at or len(self.conns) + self._connecting >= self.pool_size
        ):
            return proto
        return None

    async def acquire(self, deadline: Optional[float]) -> Any:
        """A connection for a new call: the least loaded, a new one while there is room (every
        connection loaded past ``grow_at``), or the first to have room, within ``deadline``
        (loop time)."""
        loop = self.loop
        assert loop is not None
        while True:
            if self._closed:
                raise TransportError("the client is closed")
            proto = self._pick(self.conns, self.max_in_flight)
            if proto is not None and proto.load < self.grow_at:
                return proto
            if self._connecting * self.grow_at > self._awaiting_connect:
                # A connection on its way has room for this call: a burst of calls on a cold
                # client opens one connection per grow_at calls, not pool_size at once.
                self._awaiting_connect += 1
                try:
                    await self._wait_for_room(loop, deadline)
                finally:
                    self._awaiting_connect -= 1
                continue
            if len(self.conns) + self._connecting < self.pool_size:
                try:
                    return await self._open(deadline)
                except ConnectError:
                    if proto is not None and not proto.closed and proto.usable:
                        return proto  # no new connection, but this one has room
                    raise
            if proto is not None:
                return proto
            await self._wait_for_room(loop, deadline)

    async def _wait_for_room(self, loop: asyncio.AbstractEventLoop, deadline: Optional[float]) -> None:
        fut = loop.create_future()
        self.waiters.append(fut)
        handle = None
        if deadline is not None:
            handle = loop.call_at(deadline, self._no_room, fut, deadline - loop.time())
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.wake(1)  # we were woken but leave: pass the turn on
            raise
        finally:
            if handle is not None:
                handle.cancel()

    def _no_room(self, fut: Any, budget: float) -> None:
        if not fut.done():
            fut.set_exception(
                RPCTimeoutError(
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
            )

    def wake(self, n: int) -> None:
        waiters = self.waiters
        while n > 0 and waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1

    async def _open(self, deadline: Optional[float]) -> Any:
        """A new connection, trying the endpoints round robin from the next one (failover)."""
        self._connecting += 1
        try:
            endpoints = self.endpoints  # one read: a registry update may swap it meanwhile
            n = len(endpoints)
            start = next(self._next) % n
            errors: List[ConnectError] = []
            tried: Set[Endpoint] = set()
            for i in range(n):
                endpoint = endpoints[(start + i) % n]
                if endpoint in tried:  # a weighted cycle lists an endpoint many times
                    continue
                tried.add(endpoint)
                try:
                    proto = await self._connect(endpoint, deadline)
                except ConnectError as exc:
                    errors.append(exc)
                    continue
                if proto.closed:  # lost before we got to use it
                    errors.append(ConnectError("connection to %s closed right after connect" % proto.peer))
                    continue
                self._all.add(proto)
                self._endpoint_of[proto] = endpoints[(start + i) % n]
                proto.wait_closed().add_done_callback(lambda _f, p=proto: self._forget(p))
                if self._closed:
                    proto.close()
                    raise TransportError("the client is closed")
                self.conns.append(proto)
                self.wake(self.max_in_flight - 1)  # the caller takes one slot
                return proto
        finally:
            self._connecting -= 1
            self.wake(self.grow_at)  # the calls that waited for this connect try again
        if len(errors) == 1:
            raise errors[0]
        cls = ConnectTimeoutError if all(isinstance(e, ConnectTimeoutError) for e in errors) else ConnectError
        raise cls(
            "no endpoint accepted a connection (%d tried): %s"
            % (len(errors), "; ".join(str(e) for e in errors))
        ) from errors[-1]

    async def _connect(self, endpoint: Endpoint, deadline: Optional[float]) -> Any:
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
            proto = self._protocol_cls(loop, self._make_decoder(), peer, self.waiters, self.conns)
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

    def _forget(self, proto: Any) -> None:
        self._all.discard(proto)
        self._endpoint_of.pop(proto, None)

    def update(self, cycle: Tuple[Endpoint, ...]) -> None:
        """A registry's new instance set, as a weighted round-robin cycle of endpoints for new
        connections (on the loop's thread). Connections to instances that left drain: they take
        no new call and close after their calls. When instances joined, every connection drains
        the same way, so that the connections (and the calls they carry) spread over the new
        set as the cycle says instead of staying where they were."""
        old = set(self.endpoints)
        self.endpoints = cycle
        new = set(cycle)
        joined = bool(new - old)
        for proto in list(self._all):
            if joined or self._endpoint_of.get(proto) not in new:
                proto.retire()  # (it leaves self.conns itself)
        self.wake(len(self.waiters))

    def retire(self) -> None:
        """Every connection closes once its calls are done; new calls still get connections."""
        for proto in list(self._all):
            proto.retire()

    async def close(self) -> None:
        """Fail every call in flight, close every connection and wait until they are gone."""
        self._closed = True
        protos = list(self._all)
        for proto in protos:
            proto.close(
                TransportError("the client was closed while the call was in flight", sent=True)
            )
        self.wake(len(self.waiters))
        if protos:
            await asyncio.gather(*(p.wait_closed() for p in protos))


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
