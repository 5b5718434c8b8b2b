"""One destination: pick a connection, stamp a seq id, call, classify the reply.

``Client.call(method, message)`` sends a complete strict-binary Thrift CALL message (as built by any
Thrift library) and returns the complete REPLY message, exactly like Kitex's binary generic call
(``genericclient`` + ``generic.BinaryThriftGeneric()``) that Dapr's Go binding makes; unlike it, the
method name inside the message is rewritten to ``method``, so the two can never disagree.
"""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Any, Callable, Dict, Hashable, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from . import codec as _codec_dispatch
from . import transport as _transport_dispatch
from .errors import (
    ApplicationError,
    BizStatusError,
    MetadataError,
    NoInstanceError,
    ProtocolError,
    ResponseMismatchError,
    TransportError,
    quoted,
)
from .codec import (
    INT_KEY_MSG_TYPE,
    INT_KEY_TO_METHOD,
    INT_KEY_TO_SERVICE,
    INT_KEY_TRANSPORT_TYPE,
    STR_KEY_BIZ_EXTRA,
    STR_KEY_BIZ_MESSAGE,
    STR_KEY_BIZ_STATUS,
    STR_KEY_CONN_RESET,
)
from .limits import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_IDLE_TIME,
    DEFAULT_RPC_TIMEOUT,
    DEFAULT_TRANSPORT,
    MAX_CACHED_ENCODER_CHARS,
    MAX_CONNECTIONS_LIMIT,
    MAX_DURATION,
    MAX_ENCODER_CACHE_CHARS,
    MAX_ENCODER_CACHE_ENTRIES,
    MAX_FRAME_FIELD,
    MAX_POOL_SIZE,
    mux_rule,
)
from .metadata import Headers, check_seconds, check_text, header_chars
from .pool import Endpoint, EndpointPool, parse_host_ports
from .resolver import Instance, Resolver, describe, open_resolver, parse_registry, wrr_schedule

__all__ = ["Client", "ClientCore", "Reply", "Headers"]

BytesLike = Union[bytes, bytearray, memoryview]

_MESSAGE_TYPE_NAMES = {1: "call", 2: "reply", 3: "exception", 4: "oneway"}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Unset:
    """The type of the "not given" marker (None is a meaningful rpc_timeout: no limit)."""


_UNSET = _Unset()

# EXCEPTION replies after which a Kitex server keeps the connection open: handler errors
# (INTERNAL_ERROR, kitex pkg/remote/trans/default_server_handler.go). Errors found while decoding a
# request are answered and followed by a close, so the connection is dropped for every other type
# rather than risk sending the next request into a closing socket.
_KEEP_AFTER_EXCEPTION = frozenset({6})


class Reply(NamedTuple):
    """A successful call (:meth:`Client.invoke`): the complete REPLY message and what came with
    it: the seq id, the method, the reply's framing, the endpoint that answered and the reply's
    TTHeader headers (empty mappings for framed/buffered)."""

    data: bytes
    seq_id: int
    method: str
    transport: str
    endpoint: str
    str_headers: Mapping[str, str]
    int_headers: Mapping[int, str]

    @classmethod
    def _of(cls, result: Tuple[Any, int, str], method: str) -> "Reply":
        """The Reply of a call's ``(reply frame, seq id, endpoint text)``."""
        frame, seq_id, endpoint = result
        return cls(frame.payload, seq_id, method, frame.transport, endpoint, frame.str_headers,
                   frame.int_headers)


class ClientCore:
    """What every driver's client shares: validated settings, request encoders and the reply
    check. A driver (the sync :class:`Client` here, :mod:`kitex_fast.aio`) subclasses it, builds
    its pool in :meth:`_make_pool` and does the I/O; the rules stay in one place.

    :param dest_service: the Kitex service name (sent as TTHeader ToService, and the name a
        registry resolves).
    :param host_ports: ``"host:port"``, ``"[::1]:8888"``, a comma-separated list, or a list.
    :param registry: instead of ``host_ports``: ``"etcd://host:port[,host:port]"`` (Kitex servers
        registered by kitex-contrib/registry-etcd; the client owns that resolver and closes it),
        or any :class:`kitex_fast.resolver.Resolver` object (shared; its owner closes it). Calls
        are balanced by Kitex's weighted round robin over the live instances.
    :param registry_prefix: the etcd key prefix (default ``kitex/registry-etcd``).
    :param transport: ``framed`` (default, as the Go binding sends), ``buffered``, ``ttheader``
        or ``ttheader-framed``.
    :param connect_timeout: seconds (None or 0: no limit). Kitex's default is 50 ms. The rpc
        timeout bounds the connect too.
    :param max_frame_size: the largest frame sent or accepted, in bytes (None: 64 MiB); a larger
        request is refused before any byte is sent, a larger reply ends the call.
    :param rpc_timeout: seconds for the whole call, connect included (None or 0: no limit; at
        most about 292 years, Go's longest Duration).
    :param str_headers / int_headers: extra TTHeader headers sent with every call.
    :param pool_size: idle connections kept per endpoint (None: as many as the calls in flight
        need, up to ``max_connections``; see docs/binding.md for why not Kitex's 10).
    :param max_idle_time: seconds an idle connection is kept before it is closed.
    :param max_connections: open connections per endpoint at most (asyncio driver; default 512).
        The sync driver holds one connection per calling thread, so its threads are its cap.
    :param mux_connection: the server is a Kitex mux server (``WithMuxTransport``): the asyncio
        driver carries many calls on each connection, matched by seq id. Needs a TTHeader
        transport. Without it a connection carries one call at a time, as Kitex's own client does.
    :param pipelining: the asyncio driver writes further calls on a connection before the
        earlier ones are answered. Only for servers known to answer in order and quickly: a
        default (non-mux) Kitex server answers a connection's requests one after the other, so
        every pipelined call also waits for all the calls ahead of it (head-of-line blocking).
    :param implementation: ``"c"``, ``"py"`` or None (the compiled core when installed).

    Every argument is validated here, before any I/O: a bad one raises :class:`MetadataError`
    naming it (``ImportError`` only when ``implementation="c"`` is not installed).
    """

    def __init__(
        self,
        dest_service: str,
        host_ports: Union[str, Sequence[str], Sequence[Endpoint], None] = None,
        *,
        registry: Union[str, Resolver, None] = None,
        registry_prefix: Optional[str] = None,
        transport: str = DEFAULT_TRANSPORT,
        connect_timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT,
        rpc_timeout: Optional[float] = DEFAULT_RPC_TIMEOUT,
        max_frame_size: Optional[int] = None,
        str_headers: Optional[Mapping[str, str]] = None,
        int_headers: Optional[Mapping[int, str]] = None,
        pool_size: Optional[int] = None,
        max_idle_time: float = DEFAULT_MAX_IDLE_TIME,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        mux_connection: bool = False,
        pipelining: bool = False,
        implementation: Optional[str] = None,
    ) -> None:
        # Every argument is checked here, before any I/O, and a bad one is a MetadataError that
        # names it: a driver that subclasses ClientCore gets the same checks.
        if not isinstance(dest_service, str) or not dest_service:
            raise MetadataError("destService must be a non-empty string, not %s" % quoted(dest_service))
        check_text("destService", dest_service)
        try:
            self._codec: ModuleType = _codec_dispatch.implementation(implementation)
            self._transport_mod: ModuleType = _transport_dispatch.implementation(implementation)
        except ValueError as exc:
            raise MetadataError(str(exc)) from None
        if not isinstance(transport, str) or transport not in self._codec.TRANSPORTS:
            raise MetadataError(
                "transport %s is not one of %s" % (quoted(transport), ", ".join(self._codec.TRANSPORTS))
            )
        ttheader = transport.startswith("ttheader")
        for name, headers in (("str_headers", str_headers), ("int_headers", int_headers)):
            if headers is not None and not isinstance(headers, Mapping):
                raise MetadataError("%s must be a mapping, not %s" % (name, type(headers).__name__))
        if (str_headers or int_headers) and not ttheader:
            raise MetadataError("headers need transport ttheader or ttheader-framed, not %s" % transport)
        endpoints: Tuple[Endpoint, ...]
        self._resolver: Optional[Resolver] = None
        self._owns_resolver = False
        self.instances: Tuple[Instance, ...] = ()
        self._cycle: Tuple[Endpoint, ...] = ()
        if (host_ports is None) == (registry is None):
            raise MetadataError(
                "give exactly one of hostPorts (host_ports=) and registry (etcd://host:port or a "
                "Resolver), not %s" % ("both" if registry is not None else "neither")
            )
        if registry is not None:
            if isinstance(registry, str):
                spec = parse_registry(registry, registry_prefix)
            elif registry_prefix is not None:
                raise MetadataError("registry_prefix goes with an etcd:// registry URL, not a Resolver object")
            elif not all(callable(getattr(registry, m, None)) for m in ("resolve", "subscribe", "close")):
                raise MetadataError(
                    "registry must be an etcd:// URL or a Resolver (resolve, subscribe, close), not %s"
                    % quoted(registry)
                )
            endpoints = ()
        elif isinstance(host_ports, (list, tuple)) and host_ports and all(
            isinstance(e, Endpoint) for e in host_ports
        ):
            # already validated (by the binding's metadata parser)
            endpoints = tuple(e for e in host_ports if isinstance(e, Endpoint))
        else:
            endpoints = parse_host_ports(host_ports)  # type: ignore[arg-type]
        self.dest_service = dest_service
        self.transport = transport
        self.endpoints = endpoints
        self.rpc_timeout = check_seconds("rpc_timeout", rpc_timeout)
        # NaN would slip through min() in the pool and disable the connect bound altogether.
        connect_timeout = check_seconds("connect_timeout", connect_timeout)
        if max_frame_size is None:
            max_frame_size = DEFAULT_MAX_FRAME_SIZE
        elif not _is_int(max_frame_size) or not 1 <= max_frame_size <= MAX_FRAME_FIELD:
            raise MetadataError(
                "max_frame_size must be an int in 1-%d (bytes; None: the default %d), not %s"
                % (MAX_FRAME_FIELD, DEFAULT_MAX_FRAME_SIZE, quoted(max_frame_size))
            )
        self.max_frame_size = max_frame_size
        if isinstance(registry, str):
            self._resolver, self._owns_resolver = open_resolver(spec), True
        elif registry is not None:
            self._resolver = registry
        if pool_size is not None and (not _is_int(pool_size) or not 0 <= pool_size <= MAX_POOL_SIZE):
            raise MetadataError(
                "pool_size must be an int in 0-%d (idle connections kept per endpoint), not %s"
                % (MAX_POOL_SIZE, quoted(pool_size))
            )
        max_idle_time = check_seconds("max_idle_time", max_idle_time) or 0.0
        if not _is_int(max_connections) or not 1 <= max_connections <= MAX_CONNECTIONS_LIMIT:
            raise MetadataError(
                "max_connections must be an int in 1-%d (open connections per endpoint), not %s"
                % (MAX_CONNECTIONS_LIMIT, quoted(max_connections))
            )
        for name, flag in (("mux_connection", mux_connection), ("pipelining", pipelining)):
            if type(flag) is not bool:
                raise MetadataError("%s must be True or False, not %s" % (name, quoted(flag)))
        broken = mux_rule(transport, mux_connection, pipelining, "mux_connection", "mux_connection and pipelining")
        if broken is not None:
            raise MetadataError(broken)
        self.max_connections = max_connections
        self.mux_connection = mux_connection
        self.pipelining = pipelining
        self.implementation = "py" if self._codec.__name__.endswith("_py") else "c"
        self._str_headers = dict(str_headers or {})
        self._int_headers = dict(int_headers or {})
        if ttheader and (self._str_headers or self._int_headers):
            try:  # the codec's own checks (types, key range, sizes), once, with the names it gives
                self._codec.RequestEncoder(
                    transport, str_headers=self._str_headers, int_headers=self._int_headers
                )
            except (TypeError, ValueError) as exc:
                raise MetadataError("bad TTHeader headers: %s" % exc) from None
        self._encoders: Dict[Hashable, Any] = {}
        self._encoder_chars = 0  # header text the cached encoders hold (bounded)
        self._parse_message = self._codec.parse_message
        decoder_cls = self._codec.FrameDecoder
        max_frame = self.max_frame_size
        self._pool = self._make_pool(
            endpoints,
            lambda: decoder_cls(transport, max_frame_size=max_frame),
            connect_timeout,
            # No pool_size: keep as many idle connections as the calls in flight used, up to
            # max_connections, each until max_idle_time. Kitex keeps 10 (MaxIdlePerAddress), but
            # with more concurrent callers than that every call above the tenth would connect and
            # close again: cheap in Go, far dearer than a pooled call here (docs/binding.md).
            max_connections if pool_size is None else pool_size,
            max_idle_time,
        )
        self._closed = False
        self.retired = False
        self._resolve_lock = threading.Lock()
        self._resolved = False  # the first instance set is installed
        self._unsubscribe: Any = None
        if self._resolver is not None:
            # From now on every change of the set is pushed here by the resolver's thread; the
            # first set is waited for by the first call (bounded by its deadline).
            self._unsubscribe = self._resolver.subscribe(dest_service, self._on_instances)

    # -- service discovery --------------------------------------------------------------------

    def _on_instances(self, instances: Tuple[Instance, ...]) -> None:
        """A new instance set from the resolver (any thread): balance over it from now on."""
        with self._resolve_lock:
            if self._closed:
                return
            self._resolved = True
            self._install(instances)

    def _install(self, instances: Tuple[Instance, ...]) -> None:
        """Swap in the weighted round-robin cycle of ``instances`` (under ``_resolve_lock``)."""
        cycle = tuple(instances[i].endpoint for i in wrr_schedule(instances))
        self.instances = tuple(instances)
        self._cycle = cycle
        self._set_cycle(cycle)

    def _set_cycle(self, cycle: Tuple[Endpoint, ...]) -> None:
        """The driver swaps its endpoints for ``cycle`` (an endpoint may repeat: its weight)."""
        raise NotImplementedError

    def _first_resolution(self, timeout: Optional[float]) -> None:
        """Wait for the registry's first answer, at most ``timeout`` seconds (the call's budget),
        and install it; ResolveError if it does not come. Then NoInstanceError if the service
        has no live instance."""
        resolver = self._resolver
        if resolver is None:
            raise TransportError("the client has no endpoint")  # not reached: host_ports is never empty
        if not self._resolved:
            instances = resolver.resolve(self.dest_service, timeout)
            with self._resolve_lock:
                if not self._resolved:  # (a pushed update may have come first: it is newer)
                    self._resolved = True
                    self._install(instances)
        if not self.endpoints:
            raise NoInstanceError("no live instance of %s" % describe(resolver, self.dest_service))

    def _close_resolver(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        if self._owns_resolver and self._resolver is not None:
            self._resolver.close()

    @staticmethod
    def _check_message(message: object) -> None:
        """The request rule of both clients: bytes-like, and contiguous (sent without a copy)."""
        if not isinstance(message, (bytes, bytearray, memoryview)):
            raise ProtocolError(
                "the request must be a complete Thrift binary CALL message as bytes, not %s"
                % type(message).__name__
            )
        if type(message) is memoryview and not message.c_contiguous:
            raise ProtocolError(
                "the request is a non-contiguous memoryview: it cannot be sent without a copy; "
                "pass bytes(view) or a contiguous view"
            )

    def _call_timeout(self, rpc_timeout: Union[float, None, _Unset]) -> Optional[float]:
        """The rpc timeout of one call in seconds (None: no limit): the client's, or a per-call
        override validated like the constructor's, before any I/O."""
        if isinstance(rpc_timeout, _Unset):
            return self.rpc_timeout
        if rpc_timeout is None or (type(rpc_timeout) is float and 0.0 < rpc_timeout <= MAX_DURATION):
            return rpc_timeout  # the binding's already-validated value: no call on the hot path
        return check_seconds("rpc_timeout", rpc_timeout)

    # -- the rules of a call, for every driver ------------------------------------------------

    def prepare(
        self,
        method: str,
        message: BytesLike,
        rpc_timeout: Union[float, None, _Unset],
        headers: Optional[Headers],
        keep_encoder: bool = True,
    ) -> Tuple[Any, Optional[float]]:
        """Everything a call checks before any I/O, in every driver: ``(request encoder, rpc
        timeout in seconds or None)``. Refuses a closed client, a request that is not a
        contiguous bytes-like, a bad timeout or headers, a bad method name (MetadataError,
        ProtocolError, TransportError). ``keep_encoder=False``: ``headers`` do not repeat (a
        deadline's RPCTimeout), so their encoder is not cached (:meth:`_encoder`)."""
        if self._closed:
            raise TransportError("the client is closed")
        self._check_message(message)
        timeout = self._call_timeout(rpc_timeout)
        _check_headers(headers)
        key: Hashable = method if headers is None else (method, headers)
        encoder = self._encoders.get(key) or self._encoder(key, method, headers, keep_encoder)
        return encoder, timeout

    def settle(
        self,
        conn: Any,
        frame: Any,
        method: str,
        seq_id: int,
        keep: Callable[[Any], None],
        drop: Callable[[], None],
        fail: Callable[[BaseException], None],
    ) -> Tuple[Any, int, str]:
        """The end of every call whose reply is not a plain REPLY, in every driver: check the
        reply (:meth:`_check`), then ``keep(conn)`` (a clean connection) or ``drop()`` (the server
        closes it), and raise the answer's error; or, for a reply that leaves the connection in
        an unknown state, ``fail(exc)`` and raise. ``(frame, seq id, endpoint text)``."""
        try:
            error, clean = self._check(conn, frame, method, seq_id)
        except BaseException as exc:
            fail(exc)
            raise
        if clean:
            keep(conn)
        else:
            drop()
        if error is not None:
            raise error
        return frame, seq_id, conn.peer

    def _make_pool(
        self,
        endpoints: Tuple[Endpoint, ...],
        make_decoder: Any,
        connect_timeout: Optional[float],
        pool_size: int,
        max_idle_time: float,
    ) -> Any:
        """The driver's connection pool for ``endpoints`` (each connection gets ``make_decoder()``)."""
        raise NotImplementedError

    # -- encoding -----------------------------------------------------------------------------

    def _encoder(self, key: Hashable, method: str, headers: Optional[Headers], keep: bool = True) -> Any:
        """The request encoder for a method (and per-call headers): TTHeader blocks are encoded
        once, not per call (``keep=False``: for headers that do not repeat, e.g. a deadline's
        RPCTimeout, built for this call and not cached)."""
        if not isinstance(method, str) or not method:
            raise MetadataError("method name must be a non-empty string, not %r" % (method,))
        check_text("method name", method)
        str_headers = int_headers = None
        if self.transport.startswith("ttheader"):
            # What Kitex's ClientTTHeaderHandler sends (pkg/transmeta/ttheader.go), so mesh
            # proxies and server logs see the same metadata as from a Go client.
            int_headers = {
                INT_KEY_TRANSPORT_TYPE: "framed" if self.transport == "ttheader-framed" else "unframed",
                INT_KEY_TO_SERVICE: self.dest_service,
                INT_KEY_TO_METHOD: method,
                INT_KEY_MSG_TYPE: "1",
            }
            int_headers.update(self._int_headers)
            str_headers = dict(self._str_headers)
            if headers is not None:
                str_headers.update(headers.str_headers)
                int_headers.update(headers.int_headers)
            str_headers = str_headers or None
        elif headers is not None and (headers.str_headers or headers.int_headers):
            raise MetadataError("headers need transport ttheader or ttheader-framed, not %s" % self.transport)
        try:
            # max_frame_size: a request the server would refuse (or reset halfway through) is
            # refused by the encoder, before any byte is sent.
            encoder = self._codec.RequestEncoder(
                self.transport, name=method, str_headers=str_headers, int_headers=int_headers,
                max_frame_size=self.max_frame_size,
            )
        except (TypeError, ValueError) as exc:  # per-call headers the codec refuses
            raise MetadataError("bad TTHeader headers for %r: %s" % (method, exc)) from None
        size = len(method) + (0 if headers is None else header_chars(headers))
        if not keep or size > MAX_CACHED_ENCODER_CHARS:
            return encoder  # (headers this large do not repeat: no cache holds them)
        # Bounded in entries and in the header text held: method names and headers come from callers.
        if len(self._encoders) >= MAX_ENCODER_CACHE_ENTRIES or self._encoder_chars + size > MAX_ENCODER_CACHE_CHARS:
            self._encoders.clear()
            self._encoder_chars = 0
        self._encoders[key] = encoder
        self._encoder_chars += size
        return encoder

    def request_bytes(
        self, method: str, message: BytesLike, seq_id: int = 1, headers: Optional[Headers] = None
    ) -> bytes:
        """The exact frame this client would send for ``message`` as ``method`` with ``seq_id``
        (validated like a call, nothing sent): for debugging, captures and benchmarks."""
        _check_headers(headers)
        key: Hashable = method if headers is None else (method, headers)
        encoder = self._encoders.get(key) or self._encoder(key, method, headers)
        return b"".join(bytes(part) for part in encoder.encode(message, seq_id))

    def _check(self, conn: Any, frame: Any, method: str, seq_id: int) -> Tuple[Optional[Exception], bool]:
        """``(error to raise or None, keep the connection)``. Raises for replies that leave the
        connection in an unknown state (the caller closes it)."""
        payload = frame.payload
        header = self._parse_message(payload)
        mtype = header.type
        # An EXCEPTION may carry seq id 0: a Kitex V1 binary-generic server builds handler-error
        # replies without the request's seq id (seen against Kitex v0.16.3), and Kitex's own client
        # exempts exceptions from the check ("proxy may build Exception with seqID = 0",
        # kitex pkg/remote/codec/util.go SetOrCheckSeqID). Replies arrive in order on a
        # ping-pong connection, so this one still answers our request.
        if header.seq_id != seq_id and not (mtype == 3 and header.seq_id == 0):
            raise ResponseMismatchError(
                "reply to %r from %s has seq id %d, expected %d"
                % (method, conn.peer, header.seq_id, seq_id)
            )
        if header.name != method:
            raise ResponseMismatchError(
                "wrong method name in reply from %s: expected %r, got %r" % (conn.peer, method, header.name)
            )
        str_headers = frame.str_headers
        if mtype == 2 and not str_headers:
            return None, True  # the common case: a plain REPLY
        # crrst: the server will close this connection (kitex pkg/transmeta/ttheader.go).
        keep = not (str_headers and str_headers.get(STR_KEY_CONN_RESET) == "1")
        if mtype == 3:
            type_code, text = self._codec.decode_application_exception(payload)
            return ApplicationError(type_code, text, method=method), keep and type_code in _KEEP_AFTER_EXCEPTION
        if mtype != 2:
            raise ResponseMismatchError(
                "reply to %r from %s is a %s message, expected a reply"
                % (method, conn.peer, _MESSAGE_TYPE_NAMES.get(mtype, mtype))
            )
        status = str_headers.get(STR_KEY_BIZ_STATUS)
        if status is not None and status not in ("", "0"):
            return _biz_error(status, str_headers), keep
        return None, keep

    def retire(self) -> None:
        """Close every connection as soon as it is idle, but let calls still finish: for an owner
        (the binding's LRU cache) that drops this client while others may still hold it."""
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __repr__(self) -> str:
        return "<%s %s at %s via %s (%s)>" % (
            type(self).__name__,
            self.dest_service,
            ",".join(str(e) for e in self.endpoints) if self._resolver is None
            else getattr(self._resolver, "description", repr(self._resolver)),
            self.transport,
            self.implementation,
        )


class Client(ClientCore):
    """A Kitex client for one service at one or more ``host:port`` endpoints, on blocking calls
    (the GIL released while waiting). Thread-safe. Constructor options: :class:`ClientCore`.

    The common case of a call (a method already seen, an idle pooled connection, a plain REPLY)
    is one call into the transport's ``CallPath`` (compiled, or its twin); for everything else
    it answers "not handled" and :meth:`_complete` runs the rules (:meth:`ClientCore.prepare`,
    :meth:`ClientCore.settle`).
    """

    def _make_pool(
        self,
        endpoints: Tuple[Endpoint, ...],
        make_decoder: Any,
        connect_timeout: Optional[float],
        pool_size: int,
        max_idle_time: float,
    ) -> EndpointPool:
        pool = EndpointPool(
            endpoints,
            transport=self._transport_mod,
            make_decoder=make_decoder,
            connect_timeout=connect_timeout,
            max_idle=pool_size,
            max_idle_time=max_idle_time,
        )
        self._path = self._transport_mod.CallPath(
            pool._pools, self._encoders, self.rpc_timeout, _UNSET, Headers, pool.connect_fresh
        )
        return pool

    def _set_cycle(self, cycle: Tuple[Endpoint, ...]) -> None:
        pool: EndpointPool = self._pool
        pools = pool.update(cycle)
        self.endpoints = pool.endpoints
        self._path.set_pools(pools)  # atomic: calls pick from the old cycle or the new one

    # -- calling ------------------------------------------------------------------------------

    def call(
        self,
        method: str,
        message: BytesLike,
        *,
        rpc_timeout: Union[float, None, _Unset] = _UNSET,
        headers: Optional[Headers] = None,
    ) -> bytes:
        """Send ``message`` (a complete strict-binary CALL) as ``method``; return the REPLY message.

        ``rpc_timeout`` overrides the client's for this call (None: no limit); ``headers``
        (:class:`Headers`) are added to the client's TTHeader headers for this call. Neither needs
        another client or connection.

        Raises (all :class:`KitexError`): MetadataError for a bad method name, timeout or headers;
        ProtocolError for a request that is not a contiguous strict-binary CALL,
        FrameTooLargeError over max_frame_size (nothing sent); TransportError subclasses for the
        connection; ProtocolError subclasses for a malformed or mismatched reply;
        ApplicationError / BizStatusError for error answers."""
        payload = self._path.call(method, message, rpc_timeout, headers)
        if type(payload) is bytes:
            return payload
        data: bytes = self._complete(payload, method, message, rpc_timeout, headers)[0].payload
        return data

    def invoke(
        self,
        method: str,
        message: BytesLike,
        *,
        rpc_timeout: Union[float, None, _Unset] = _UNSET,
        headers: Optional[Headers] = None,
    ) -> Reply:
        """:meth:`call`, answered with the :class:`Reply`: the REPLY message with its seq id,
        transport, endpoint and TTHeader headers."""
        return Reply._of(self._call(method, message, rpc_timeout, headers), method)

    def _call(
        self,
        method: str,
        message: BytesLike,
        rpc_timeout: Union[float, None, _Unset],
        headers: Optional[Headers],
    ) -> Tuple[Any, int, str]:
        """One call: ``(reply frame, seq id, endpoint text)``, the frame a REPLY to this request
        (seq id and method name checked)."""
        answer = self._path.exchange(method, message, rpc_timeout, headers)
        if type(answer) is tuple:
            return answer  # type: ignore[return-value]
        return self._complete(answer, method, message, rpc_timeout, headers)

    def _complete(
        self,
        answer: Any,
        method: str,
        message: BytesLike,
        rpc_timeout: Union[float, None, _Unset],
        headers: Optional[Headers],
    ) -> Tuple[Any, int, str]:
        """The call path's "not handled" ``answer``, finished: an :class:`Unsettled` reply is
        settled; None or an endpoint index (where the call path's rotation stopped) runs the
        full call."""
        if answer is None or type(answer) is int:
            return self._exchange(method, message, rpc_timeout, headers, answer)
        return self._settle(answer, method)

    def _exchange(
        self,
        method: str,
        message: BytesLike,
        rpc_timeout: Union[float, None, _Unset],
        headers: Optional[Headers],
        start: Optional[int] = None,
    ) -> Tuple[Any, int, str]:
        """The full call, for every case the call path does not take (the first call of a
        method, a connect, anything unusual): ``start``, the endpoint the call path picked."""
        encoder, timeout = self.prepare(method, message, rpc_timeout, headers)
        deadline = time.monotonic() + timeout if timeout else None
        if not self.endpoints:  # a registry: the first call waits for it, or none is live
            self._first_resolution(timeout)
        if start is None and len(self.endpoints) > 1:
            start = self._path.next_endpoint()  # one rotation for both paths
        conn, pool, reused = self._pool.acquire(deadline, timeout, start)
        try:
            seq_id = conn.next_seq_id()
            # Validates the message (strict CALL, one complete struct) before any byte is written.
            buffers = encoder.encode(message, seq_id)
        except BaseException:
            pool.give_back(conn)
            raise
        # The round trip is the call path's (a dead pooled connection that took no byte is
        # retried on a fresh one there).
        answer = self._path.send(conn, pool, buffers, deadline, seq_id, encoder, reused)
        if type(answer) is tuple:
            return answer  # type: ignore[no-any-return]
        return self._settle(answer, method)

    def _settle(self, unsettled: Any, method: str) -> Tuple[Any, int, str]:
        conn = unsettled.conn
        return self.settle(
            conn, unsettled.frame, method, unsettled.seq_id, unsettled.pool.give_back, conn.close,
            lambda exc: conn.close(),
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close every idle connection and refuse new calls; connections in use are closed when
        their call ends."""
        with self._resolve_lock:
            self._closed = True
        self.retired = True
        self._path.closed = self._path.retired = True
        self._close_resolver()
        self._pool.close()

    def retire(self) -> None:
        """Close every connection as soon as it is idle, but let calls still finish: for an owner
        (the binding's LRU cache) that drops this client while other threads may hold it."""
        self.retired = True
        self._path.retired = True
        self._close_resolver()  # keeps the last instance set for the calls still under way
        self._pool.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_headers(headers: object) -> None:
    if headers is not None and type(headers) is not Headers:
        raise MetadataError(
            "headers must be a kitex_fast.Headers (or None), not %s" % type(headers).__name__
        )


def _biz_error(status: str, headers: Mapping[str, str]) -> BizStatusError:
    """A BizStatusError from Kitex's biz-* TTHeader keys (kitex pkg/transmeta/ttheader.go).

    Everything here comes from the peer, so nothing may escape as anything but a KitexError:
    ``biz-extra`` is Kitex's JSON ``map[string]string``; any other JSON (or JSON too deeply nested
    for the parser, which raises RecursionError) is kept verbatim under the key ``biz-extra``."""
    import json

    try:
        code = int(status)
    except ValueError:  # also a too-long digit string (int's max_str_digits)
        raise ProtocolError("biz-status header %r is not an integer" % status[:64]) from None
    extra: Dict[str, str] = {}
    raw_extra = headers.get(STR_KEY_BIZ_EXTRA)
    if raw_extra:
        try:
            parsed = json.loads(raw_extra)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict) and all(isinstance(v, str) for v in parsed.values()):
            extra = dict(parsed)
        else:
            extra = {STR_KEY_BIZ_EXTRA: raw_extra}
    return BizStatusError(code, headers.get(STR_KEY_BIZ_MESSAGE, ""), extra)
