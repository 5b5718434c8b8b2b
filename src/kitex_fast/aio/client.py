"""The asyncio Kitex client: the sync :class:`kitex_fast.Client`'s settings, encoders and reply
rules (:class:`kitex_fast.client.ClientCore`) on asyncio connections.

By default each connection carries one call at a time, as Kitex's own client does with a default
(non-mux) server, which answers a connection's requests one after the other
(:class:`~kitex_fast.aio.pool.PingPongPool`). With ``mux_connection`` (a Kitex mux server) or
``pipelining`` a connection carries many calls, each under its own seq id, and the protocol hands
each reply to the call whose seq id it carries (:class:`~kitex_fast.aio.pool.SharedPool`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional, Tuple, Union

from ..client import _UNSET, BytesLike, ClientCore, Headers, Reply, _Unset
from ..errors import KitexError, MetadataError, TransportError
from ..pool import Endpoint
from . import protocol as _protocol_dispatch
from .pool import PingPongPool, SharedPool

__all__ = ["Client"]


class Client(ClientCore):
    """A Kitex client for one service at one or more ``host:port`` endpoints, for asyncio (and
    uvloop). Safe to use from many tasks at once on one event loop (the first call binds it).

    Takes every option of the sync :class:`kitex_fast.Client` (:class:`ClientCore`): a call that
    finds no idle connection opens one, up to ``max_connections`` per endpoint, and past that waits
    for one within its deadline (then :class:`~kitex_fast.errors.ConnectionLimitError`).
    Released connections are kept idle for ``max_idle_time``: by default as many as the calls in
    flight used (up to ``max_connections``), or at most ``pool_size`` per endpoint. With
    ``mux_connection`` or ``pipelining``, ``max_in_flight`` (default 100) bounds the calls on one
    connection, and another connection opens when every open one carries half of it.
    """

    def __init__(
        self,
        dest_service: str,
        host_ports: Any = None,
        *,
        max_in_flight: int = 100,
        **options: Any,
    ) -> None:
        if type(max_in_flight) is not int or max_in_flight < 1:
            raise MetadataError("max_in_flight must be a positive integer, not %r" % (max_in_flight,))
        self.max_in_flight = max_in_flight
        super().__init__(dest_service, host_ports, **options)

    def _make_pool(
        self,
        endpoints: Tuple[Endpoint, ...],
        make_decoder: Any,
        connect_timeout: Optional[float],
        pool_size: int,
        max_idle_time: float,
    ) -> Union[PingPongPool, SharedPool]:
        protocol = _protocol_dispatch.implementation(self.implementation)
        if self.mux_connection or self.pipelining:
            return SharedPool(
                endpoints,
                protocol=protocol,
                make_decoder=make_decoder,
                connect_timeout=connect_timeout,
                max_idle_time=max_idle_time,
                max_connections=self.max_connections,
                max_in_flight=self.max_in_flight,
                mux=self.mux_connection,
            )
        return PingPongPool(
            endpoints,
            protocol=protocol,
            make_decoder=make_decoder,
            connect_timeout=connect_timeout,
            max_idle=pool_size,
            max_idle_time=max_idle_time,
            max_connections=self.max_connections,
        )

    # -- calling ------------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        message: BytesLike,
        *,
        rpc_timeout: Union[float, None, _Unset] = _UNSET,
        headers: Optional[Headers] = None,
    ) -> bytes:
        """Send ``message`` (a complete strict-binary CALL) as ``method``; return the REPLY
        message. ``rpc_timeout`` and ``headers`` as the sync :meth:`kitex_fast.Client.call`."""
        payload: bytes = (await self._exchange(method, message, rpc_timeout, headers))[0].payload
        return payload

    async def invoke(
        self,
        method: str,
        message: BytesLike,
        *,
        rpc_timeout: Union[float, None, _Unset] = _UNSET,
        headers: Optional[Headers] = None,
    ) -> Reply:
        """:meth:`call`, answered with the :class:`~kitex_fast.Reply`: the REPLY message with its
        seq id, transport, endpoint and TTHeader headers."""
        return Reply._of(await self._exchange(method, message, rpc_timeout, headers), method)

    async def _exchange(
        self,
        method: str,
        message: BytesLike,
        rpc_timeout: Union[float, None, _Unset] = _UNSET,
        headers: Optional[Headers] = None,
        keep_encoder: bool = True,
    ) -> Tuple[Any, int, str]:
        """One checked round trip: ``(reply frame, seq id, endpoint text)``, the frame a REPLY to
        this request (seq id and method name checked), as the sync client's: the same rules
        (:meth:`ClientCore.prepare`, :meth:`ClientCore.settle`), on asyncio I/O.
        ``keep_encoder=False``: ``headers`` do not repeat (ClientCore._encoder)."""
        encoder, timeout = self.prepare(method, message, rpc_timeout, headers, keep_encoder)
        pool = self._pool
        loop = pool.loop
        if loop is None or not loop.is_running():
            # (asyncio.get_running_loop() would cost a getpid() syscall per call on Linux)
            loop = self._bind()
        deadline = loop.time() + timeout if timeout else None
        proto = pool.take()
        if proto is None:
            if not pool.endpoints:  # a registry: the first call waits for it, or none is live
                await self._aresolve(loop, timeout)
            proto = await pool.acquire(deadline)
        try:
            seq_id = proto.next_seq_id()
            # Validates the message (strict CALL, one complete struct) before any byte is written.
            buffers = encoder.encode(message, seq_id)
        except BaseException:
            pool.release(proto)  # nothing was written: the connection is as clean as it was
            raise
        try:
            fut = proto.send(buffers, seq_id)
        except TransportError as exc:
            if exc.sent:
                raise
            # The connection died before it took a byte of the request (the sync driver's rule):
            # nothing reached the server, so one more connection is safe.
            proto = pool.take() or await pool.acquire(deadline)
            seq_id = proto.next_seq_id()
            buffers = encoder.encode(message, seq_id)  # validated above: cannot fail now
            fut = proto.send(buffers, seq_id)
        if self.retired:
            proto.retire()  # an evicted client: this connection closes after its calls
        handle = pool.deadlines.call_at(deadline, proto, fut, timeout) if deadline is not None else None
        try:
            frame = await fut
        except asyncio.CancelledError:
            # The entry stays in the table: the late reply is read and dropped.
            proto.abandoned()
            raise
        finally:
            if handle is not None:
                handle.cancel()
        if encoder.is_plain_reply(frame, seq_id):
            pool.release(proto)  # the common case: a C check, no header object
            return frame, seq_id, proto.peer
        # A connection the server closes starts nothing new (retire); a reply that does not
        # answer the request makes the stream suspect: the other calls on this connection fail
        # with the same error.
        return self.settle(proto, frame, method, seq_id, pool.release, proto.retire,
                           lambda exc: proto.close(exc if isinstance(exc, KitexError) else None))

    async def _aresolve(self, loop: asyncio.AbstractEventLoop, timeout: Optional[float]) -> None:
        """The first resolution, off the loop (it may wait for the registry, bounded by
        ``timeout``); later ones are pushed by the resolver's thread."""
        if not self._resolved:
            await loop.run_in_executor(None, self._first_resolution, timeout)
        else:
            self._first_resolution(timeout)  # raises NoInstanceError when none is live
        pool: Union[PingPongPool, SharedPool] = self._pool
        if not pool.endpoints:  # the resolver thread's update may still be queued on the loop
            pool.update(self._cycle)

    def _set_cycle(self, cycle: Tuple[Endpoint, ...]) -> None:
        pool: Union[PingPongPool, SharedPool] = self._pool
        distinct = tuple(dict.fromkeys(cycle))
        loop = pool.loop
        self.endpoints = distinct
        if loop is not None and loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:  # the resolver's thread: the pool belongs to the loop
                loop.call_soon_threadsafe(pool.update, cycle)
                return
        pool.update(cycle)

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool.loop is not None and pool.loop is not loop:
            if pool._all:
                raise TransportError(
                    "this client's connections belong to another event loop; make one client per loop"
                )
        pool.bind(loop)
        return loop

    # -- lifecycle ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Refuse new calls, fail every call in flight (TransportError) and close every
        connection; returns once they are closed."""
        with self._resolve_lock:
            self._closed = True
        self.retired = True
        self._close_resolver()
        await self._pool.close()

    def retire(self) -> None:
        """Close every connection once its calls are done, but let calls still start and finish:
        for an owner (the binding's LRU cache) that drops this client while tasks may hold it."""
        self.retired = True
        self._close_resolver()
        self._pool.retire()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
