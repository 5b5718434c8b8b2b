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
from typing import Any, Awaitable, Optional, Tuple, Union

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
        pool: Union[PingPongPool, SharedPool]
        if self.mux_connection or self.pipelining:
            pool = SharedPool(
                endpoints,
                protocol=protocol,
                make_decoder=make_decoder,
                connect_timeout=connect_timeout,
                max_idle_time=max_idle_time,
                max_connections=self.max_connections,
                max_in_flight=self.max_in_flight,
                mux=self.mux_connection,
            )
        else:
            pool = PingPongPool(
                endpoints,
                protocol=protocol,
                make_decoder=make_decoder,
                connect_timeout=connect_timeout,
                max_idle=pool_size,
                max_idle_time=max_idle_time,
                max_connections=self.max_connections,
            )
        self._path = protocol.CallPath(pool, self._encoders, self.rpc_timeout, _UNSET, Headers, self._settle_reply)
        return pool

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
        # (_begin, inlined: this is every call's frame)
        started = self._path.start(method, message, rpc_timeout, headers)
        if not started:
            started = self._exchange(method, message, rpc_timeout, headers, True, started is False)
        payload: bytes = (await started)[0].payload
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
        return Reply._of(await self._begin(method, message, rpc_timeout, headers), method)

    def _begin(
        self,
        method: str,
        message: BytesLike,
        rpc_timeout: Union[float, None, _Unset] = _UNSET,
        headers: Optional[Headers] = None,
        keep_encoder: bool = True,
    ) -> Awaitable[Tuple[Any, int, str]]:
        """The round trip to await: the protocol's ``CallPath`` carries out the common case (a
        method already seen, an idle connection; compiled, or its twin) with no coroutine of
        ours; anything else is :meth:`_exchange`, the full rules."""
        started = self._path.start(method, message, rpc_timeout, headers)
        if started:
            return started  # type: ignore[no-any-return]
        return self._exchange(method, message, rpc_timeout, headers, keep_encoder, started is False)

    async def _exchange(
        self,
        method: str,
        message: BytesLike,
        rpc_timeout: Union[float, None, _Unset] = _UNSET,
        headers: Optional[Headers] = None,
        keep_encoder: bool = True,
        picked: bool = False,
    ) -> Tuple[Any, int, str]:
        """One checked round trip: ``(reply frame, seq id, endpoint text)``, the frame a REPLY to
        this request (seq id and method name checked), as the sync client's: the same rules
        (:meth:`ClientCore.prepare`, :meth:`ClientCore.settle`), on asyncio I/O.
        ``keep_encoder=False``: ``headers`` do not repeat (ClientCore._encoder). ``picked``: the
        common path found the pool's pick idle-less (``pool.take()`` ran): acquire there."""
        encoder, timeout = self.prepare(method, message, rpc_timeout, headers, keep_encoder)
        pool = self._pool
        loop = pool.loop
        if loop is None or not loop.is_running():
            # (asyncio.get_running_loop() would cost a getpid() syscall per call on Linux)
            loop = self._bind()
        deadline = loop.time() + timeout if timeout else None
        proto = None if picked else pool.take()
        if proto is None:
            if not pool.endpoints:  # a registry: the first call waits for it, or none is live
                await self._aresolve(loop, timeout)
            proto = await pool.acquire(deadline)
        try:
            exchange = self._path.begin(proto, encoder, message, method, deadline, timeout)
        except TransportError as exc:
            if exc.sent:
                raise
            # The connection died before it took a byte of the request (the sync driver's rule):
            # nothing reached the server, so one more connection is safe.
            proto = pool.take() or await pool.acquire(deadline)
            exchange = self._path.begin(proto, encoder, message, method, deadline, timeout)
        return await exchange  # type: ignore[no-any-return]

    def _settle_reply(self, proto: Any, frame: Any, method: str, seq_id: int) -> Tuple[Any, int, str]:
        """The end of a call whose reply is not a plain REPLY (``CallPath``'s ``settle``): a
        connection the server closes starts nothing new (retire); a reply that does not answer
        the request makes the stream suspect: the other calls on the connection fail with the
        same error."""
        return self.settle(proto, frame, method, seq_id, self._pool.release, proto.retire,
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
        self._path.closed = self._path.retired = True
        self._close_resolver()
        await self._pool.close()

    def retire(self) -> None:
        """Close every connection once its calls are done, but let calls still start and finish:
        for an owner (the binding's LRU cache) that drops this client while tasks may hold it."""
        self.retired = True
        self._path.retired = True
        self._close_resolver()
        self._pool.retire()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
