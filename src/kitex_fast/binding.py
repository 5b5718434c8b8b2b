"""The Dapr Kitex output binding: operation ``get``, strict metadata, a bounded client cache.

It mirrors Dapr's Go binding (dapr/components-contrib ``bindings/kitex``): the request ``data`` is a
complete strict-binary Thrift CALL message, the response ``data`` the complete REPLY message. It
differs where the Go binding has gaps (see docs/binding.md): component metadata gives defaults, the
``methodName`` metadata is authoritative (the method name inside ``data`` is rewritten to it), the
client cache is bounded and ``close()`` closes every connection, replies carry metadata.
"""

from __future__ import annotations

import itertools
import logging
import operator
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from . import transport as _transport_dispatch
from .client import Client, ClientCore
from .errors import KitexError, MetadataError, UnsupportedOperationError, quoted
from .resolver import RegistrySpec, open_resolver
from .codec import INT_KEY_RPC_TIMEOUT
from .metadata import (
    INT_HEADER_PREFIX,
    KNOWN_KEYS,
    MAX_DURATION,
    STR_HEADER_PREFIX,
    CallOptions,
    Headers,
    header_chars,
    parse_options,
    validate_defaults,
)

__all__ = [
    "InvokeRequest",
    "InvokeResponse",
    "BindingCore",
    "KitexOutputBinding",
    "OPERATIONS",
    "CONTENT_TYPE",
    "response_metadata",
]

OPERATIONS = ("get",)
# The media type registered for Thrift's binary protocol.
CONTENT_TYPE = "application/vnd.apache.thrift.binary"

log = logging.getLogger(__name__)  # follows the package wherever it is vendored

_HEADER_PREFIXES = (STR_HEADER_PREFIX, INT_HEADER_PREFIX)
# The caches' keys are built from callers' metadata: besides their entry counts, what they hold is
# bounded in characters (key names and values, summed). A request whose metadata is larger than
# one entry's share is validated anew each time instead of cached: such a map does not repeat.
MAX_CACHED_SHAPE_CHARS = 16 * 1024  # key names of one shape
MAX_CACHED_ROUTE_CHARS = 16 * 1024  # values of the keys that choose one route
MAX_SHAPE_CACHE_CHARS = 4 * 1024 * 1024  # all shapes of a binding; emptied beyond
MAX_ROUTE_CACHE_CHARS = 4 * 1024 * 1024  # all routes of a binding; the oldest go first
# A deadline of (nearly) nothing left still makes a call with a timeout, never one without.
_MIN_TIMEOUT = 1e-3
_KNOWN_SET = frozenset(KNOWN_KEYS)
_KNOWN_LOWER = frozenset(k.lower() for k in KNOWN_KEYS)


class InvokeRequest:
    """What daprd hands an output binding (dapr.proto.components.v1.InvokeRequest).

    ``InvokeRequest(operation, data=b"", metadata=None)`` (None: an empty dict of its own). A
    plain class with the dataclass's methods it replaces (init, repr, eq): ``dataclasses`` and
    what it imports are ~0.15 MiB of every process's RSS, the Dapr component's too."""

    __match_args__ = ("operation", "data", "metadata")

    def __init__(self, operation: str, data: Union[bytes, bytearray, memoryview] = b"",
                 metadata: Optional[Dict[str, str]] = None) -> None:
        self.operation = operation
        self.data = data
        self.metadata: Dict[str, str] = {} if metadata is None else metadata

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InvokeRequest) or other.__class__ is not self.__class__:
            return NotImplemented
        return (self.operation, self.data, self.metadata) == (other.operation, other.data, other.metadata)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        return "InvokeRequest(operation=%r, data=%r, metadata=%r)" % (self.operation, self.data, self.metadata)


_new_object = object.__new__


class _ReplyMetadata:
    """``InvokeResponse.metadata`` of a response from a call: a non-data descriptor whose first
    read builds the dict and stores it in the instance, where every later read (and any
    assignment) finds it as a plain attribute, as with the dataclass field it replaces."""

    def __get__(self, instance: Optional["InvokeResponse"], owner: type) -> Any:
        if instance is None:
            return self
        fields = instance.__dict__
        reply = fields.get("_reply")
        if reply is None:
            metadata: Dict[str, str] = {}
        else:
            frame, seq_id, endpoint = reply
            metadata = response_metadata(frame, seq_id, endpoint, fields["_options"])
        fields["metadata"] = metadata
        return metadata


class InvokeResponse:
    """What the binding returns (dapr.proto.components.v1.InvokeResponse).

    ``InvokeResponse(data, metadata=None, content_type=CONTENT_TYPE)``. A response from a call
    builds its ``metadata`` dict on first read: a caller that only wants ``data`` never pays for
    it, and one that reads it gets the same keys as always (``seqId``, ``messageType``,
    ``methodName``, ``transport``, ``endpoint``, and the reply's TTHeader headers).
    """

    # Class-level defaults: from_reply makes a response with only ``data``, ``_reply`` and
    # ``_options`` set.
    content_type: str = CONTENT_TYPE
    # ((reply frame, seq id, endpoint), CallOptions) until the metadata is first read
    _reply: Optional[Tuple[Any, int, str]] = None  # (reply frame, seq id, endpoint) ...
    _options: Optional[CallOptions] = None  # ... and the call's options, until metadata is read
    if TYPE_CHECKING:
        metadata: Dict[str, str]
    else:
        metadata = _ReplyMetadata()

    def __init__(
        self,
        data: bytes,
        metadata: Optional[Dict[str, str]] = None,
        content_type: str = CONTENT_TYPE,
    ) -> None:
        self.data = data
        self.metadata = {} if metadata is None else metadata
        self.content_type = content_type

    @classmethod
    def from_reply(cls, result: Tuple[Any, int, str], options: CallOptions) -> "InvokeResponse":
        """The response to a call: ``result`` is the call path's ``(reply frame, seq id,
        endpoint)``, ``options`` the call's; the metadata is built from them when first read."""
        response = _new_object(cls)  # (no __init__: nothing to default)
        response.data = result[0].payload
        response._reply = result
        response._options = options
        return response

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InvokeResponse):
            return NotImplemented
        return (self.data, self.metadata, self.content_type) == (
            other.data, other.metadata, other.content_type
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        return "InvokeResponse(data=%r, metadata=%r, content_type=%r)" % (
            self.data, self.metadata, self.content_type
        )


def deadline_timeout(options: CallOptions, deadline: float) -> Tuple[float, Optional[Dict[int, str]]]:
    """``(timeout, int headers)`` of a call on ``options`` whose caller's deadline, ``deadline``
    seconds, is the shorter bound (:meth:`BindingCore.deadline_call` decides that): the deadline,
    kept within the binding's bounds, is the call's timeout, and on TTHeader also the RPCTimeout
    (int key 12, in ms) the Kitex server gets, as this call's own header; None on Framed/Buffered.
    The one rule of both the general path and the component's compiled Invoke path, which sends
    these as per-call headers beside its cached encoder (so it builds no :class:`Headers`)."""
    seconds = float(deadline)
    seconds = min(seconds, MAX_DURATION) if seconds >= _MIN_TIMEOUT else _MIN_TIMEOUT  # (NaN too)
    if not options.transport.startswith("ttheader"):
        return seconds, None
    return seconds, {INT_KEY_RPC_TIMEOUT: str(max(1, int(seconds * 1000)))}


class BindingCore:
    """What every driver's binding shares: component defaults, metadata validation, the route
    cache and the bounded client cache. A driver subclasses it, makes its clients in
    :meth:`_new_client` and does the call (the sync :class:`KitexOutputBinding` here,
    :mod:`kitex_fast.aio`).

    :param max_clients: how many distinct destinations (metadata combinations) keep a client and
        its connections; the least recently used is closed beyond that.
    :param implementation: ``"c"``, ``"py"`` or None (compiled when installed).
    :param defaults: metadata defaults of the surface this binding serves, below the component
        metadata (:meth:`init`) and the request's: the Dapr component's ``responseMetadata``.
    """

    def __init__(self, *, max_clients: int = 64, implementation: Optional[str] = None,
                 defaults: Optional[Mapping[str, str]] = None) -> None:
        # Checked here, not at the first invoke: a MetadataError (a ValueError) naming the argument.
        if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
            raise MetadataError("max_clients must be an int of at least 1, not %r" % (max_clients,))
        if implementation not in (None, "c", "py"):
            raise MetadataError(
                "implementation must be 'c', 'py' or None, not %r" % (implementation,)
            )
        self.max_clients = max_clients
        self.implementation = implementation
        self._base_defaults = validate_defaults(defaults or {})
        self._defaults: Dict[str, str] = dict(self._base_defaults)
        # The records the routes are kept in: the transport's Shape and Route, typed fields the
        # sync driver's compiled BindingPath reads (the twin's classes for the other drivers).
        records = _transport_dispatch.implementation(self._records_implementation())
        self._shape_type: Any = records.Shape
        self._route_type: Any = records.Route
        # The key names of a request's metadata, in order ("shape") -> Shape(shape id, a getter
        # of the values that matter, their key names, their positions). daprd and SDKs build
        # metadata the same way every call, so the shape is stable even when ignored values
        # (traceparent, ...) change.
        self._shapes: Dict[Tuple[str, ...], Any] = {}
        # (shape id, relevant values) -> Route(validated options, their client, the client's key,
        # the client's call path or None, method name, rpc timeout, per-call headers).
        # Validation and client lookup run once per distinct metadata.
        self._routes: "OrderedDict[Tuple[object, ...], Any]" = OrderedDict()
        # The options of a route but its version -> that Route: routes that differ only in
        # version (required and checked, sent nowhere) share one (see _route). Bounded as
        # _routes, in entries and in the characters of the route keys that added them.
        self._alike: Dict[CallOptions, Any] = {}
        self._alike_chars = 0
        # options.client_key -> client, least recently used first
        self._clients: "OrderedDict[Tuple[object, ...], ClientCore]" = OrderedDict()
        # Shape ids are never reused: _shapes is cleared when it grows too big, while routes
        # keyed by an old id may still sit in _routes (a reused id could find another shape's).
        self._shape_ids = itertools.count(1)
        self._shape_chars = 0  # characters of the key names in _shapes
        self._route_chars = 0  # characters of the values in _routes' keys
        self._route_sizes: Dict[Tuple[object, ...], int] = {}  # a route key -> its characters
        # RegistrySpec -> its resolver (one watch thread per service it resolves), least recently
        # used first; bounded like the clients, and closed with the binding.
        self._resolvers: "OrderedDict[RegistrySpec, Any]" = OrderedDict()
        self.max_resolvers = 16
        self._lock = threading.Lock()
        self._closed = False

    def _records_implementation(self) -> Optional[str]:
        """Whose Shape and Route the caches hold: the twin's, unless a driver's fast path reads
        them (the sync binding: its transport's)."""
        return "py"

    # -- Dapr OutputBinding API ---------------------------------------------------------------

    def operations(self) -> List[str]:
        """The Dapr operations this binding serves: ``["get"]``."""
        return list(OPERATIONS)

    def _set_defaults(self, metadata: Optional[Mapping[str, str]]) -> List[Any]:
        """Validate and install component defaults; the clients to close (made under the old ones)."""
        defaults = dict(self._base_defaults, **validate_defaults(metadata or {}))
        with self._lock:
            self._defaults = defaults
            self._clear_routes()
            old = list(self._clients.values())
            self._clients.clear()
            resolvers = list(self._resolvers.values())
            self._resolvers.clear()
        for resolver in resolvers:  # (their clients keep their last instance set until closed)
            resolver.close()
        return old

    def _shut(self) -> List[Any]:
        """Refuse new calls; the clients to close."""
        with self._lock:
            self._closed = True
            clients = list(self._clients.values())
            self._clients.clear()
            self._clear_routes()
            resolvers = list(self._resolvers.values())
            self._resolvers.clear()
        for resolver in resolvers:  # (their clients keep their last instance set until closed)
            resolver.close()
        return clients

    def _prepare(self, request: InvokeRequest) -> Tuple[CallOptions, Any]:
        """The validated options of ``request`` and the client that serves them."""
        if request.operation not in OPERATIONS:
            raise UnsupportedOperationError(
                "dapr binding kitex: unsupported operation %r; supported operations: %s"
                % (request.operation, ", ".join(OPERATIONS))
            )
        return self._route(request.metadata if request.metadata is not None else {})

    # The driver's client class (a ClientCore subclass), set by each driver's binding.
    client_class: Any = None

    def _new_client(self, options: CallOptions) -> Any:
        """The driver's client for ``options`` (called under the cache lock; does no I/O)."""
        where: Dict[str, Any] = {"host_ports": options.endpoints}
        if options.registry is not None:
            where = {"registry": self._resolver(options.registry)}
        return self.client_class(
            options.dest_service,
            **where,
            transport=options.transport,
            connect_timeout=options.connect_timeout,
            max_frame_size=options.max_frame_size,
            pool_size=options.pool_size,
            max_idle_time=options.max_idle_time,
            max_connections=options.max_connections,
            mux_connection=options.mux_connection,
            pipelining=options.pipelining,
            implementation=self.implementation,
        )

    # -- internals ----------------------------------------------------------------------------

    def _route(self, metadata: Mapping[str, str]) -> Tuple[CallOptions, Any]:
        """Validated options and the client for this metadata; cached, so a repeated request
        costs one tuple and two dict lookups."""
        # (dict first: an ABC isinstance check costs more than the whole cached lookup)
        if type(metadata) is not dict and not isinstance(metadata, Mapping):
            raise MetadataError("dapr binding kitex: metadata must be a mapping of strings")
        try:
            shape = tuple(metadata)
            known = self._shapes.get(shape)
            if known is None:
                known = self._learn_shape(shape)
            key: Tuple[object, ...] = (known.id, known.getter(metadata))
            route = self._routes.get(key)
        except (TypeError, AttributeError):  # unhashable values, non-str keys: validation names them
            options = parse_options(metadata, self._defaults)
            return options, self._client(options)
        if route is not None and not route.client.retired:
            try:
                self._clients.move_to_end(route.client_key)  # LRU touch; one C call, atomic
            except KeyError:
                pass  # evicted meanwhile: retired, handled on the next call
            self._lru_changed()
            return route.options, route.client
        options = parse_options(metadata, self._defaults)
        client = self._client(options)
        size = _chars(key[1])
        if size > MAX_CACHED_ROUTE_CHARS or self._shapes.get(shape) is not known:
            return options, client  # (too large, or of a shape not kept: it does not repeat)
        # A caller cycling versions of one destination would keep a Route, its options and the
        # values parsed into them (about 1 KiB) per version; they make the same calls, so they
        # share the first one's Route (its options.version is that one's: nothing reads it).
        alike = options._replace(version="")
        with self._lock:
            route = self._alike.get(alike)
            if route is None or route.client is not client:
                route = self._route_type(
                    options, client, options.client_key, getattr(client, "_path", None),
                    options.method_name, options.rpc_timeout, options.headers,
                )
                if len(self._alike) >= 4 * self.max_clients or self._alike_chars + size > MAX_ROUTE_CACHE_CHARS:
                    self._alike.clear()
                    self._alike_chars = 0
                self._alike[alike] = route
                self._alike_chars += size
            if key not in self._routes:
                self._route_chars += size
                self._route_sizes[key] = size
            self._routes[key] = route
            while self._routes and (len(self._routes) > 4 * self.max_clients
                                    or self._route_chars > MAX_ROUTE_CACHE_CHARS):
                old_key, _ = self._routes.popitem(last=False)
                self._route_chars -= self._route_sizes.pop(old_key, 0)
        return options, client

    def _clear_routes(self) -> None:
        """Forget every route (under the lock)."""
        self._routes.clear()
        self._route_sizes.clear()
        self._route_chars = 0
        self._alike.clear()
        self._alike_chars = 0

    def deadline_call(
        self, options: CallOptions, deadline: Optional[float]
    ) -> Tuple[Optional[float], Optional[Headers], bool]:
        """``(timeout, headers, fresh)`` of a call on ``options`` whose caller waits at most
        ``deadline`` seconds (daprd's gRPC deadline; None: no deadline).

        The shorter of the two bounds the call, as a number: ``timeout`` is the per-call
        ``rpc_timeout`` the client takes. On TTHeader, the Kitex server learns it as RPCTimeout
        (int key 12, in ms), which Kitex's ClientTTHeaderHandler sends from the call's timeout
        (kitex pkg/transmeta/ttheader.go); a deadline that is not the shorter changes nothing.
        ``fresh``: an encoder made for ``headers`` is not worth caching: they carry this call's
        own RPCTimeout (deadlines do not repeat, and nothing is rounded to make them), or they
        are too large to repeat (MAX_CACHED_ROUTE_CHARS)."""
        rpc_timeout = options.rpc_timeout
        if deadline is None or (rpc_timeout is not None and rpc_timeout <= deadline):
            headers = options.headers
            return rpc_timeout, headers, headers is not None and header_chars(headers) > MAX_CACHED_ROUTE_CHARS
        seconds, rpc_timeout_header = deadline_timeout(options, deadline)
        if rpc_timeout_header is None:
            return seconds, options.headers, False
        str_pairs, int_pairs = options.headers if options.headers is not None else ((), ())
        ints = dict(int_pairs)
        ints.update(rpc_timeout_header)
        return seconds, Headers._of(str_pairs, tuple(sorted(ints.items()))), True

    @staticmethod
    def reads_key(key: str) -> bool:
        """Whether the value of metadata key ``key`` matters to a call (it chooses the route):
        known keys, header keys, and mis-cased known keys (parse_options rejects those).
        Everything else (traceparent, baggage, ...) is ignored by the binding."""
        return key in _KNOWN_SET or key.startswith(_HEADER_PREFIXES) or key.lower() in _KNOWN_LOWER

    def _learn_shape(self, shape: Tuple[str, ...]) -> Any:
        size = _chars(shape)
        relevant = tuple(k for k in shape if self.reads_key(k))
        if len(relevant) == 1:
            only = relevant[0]
            getter: Callable[[Mapping[str, str]], Tuple[object, ...]] = lambda m: (m[only],)
        elif relevant:
            getter = operator.itemgetter(*relevant)  # type: ignore[assignment]
        else:
            getter = lambda m: ()  # noqa: E731
        # (names and positions: the compiled BindingPath reads values by position)
        positions = tuple(i for i, k in enumerate(shape) if k in relevant)
        if size > MAX_CACHED_SHAPE_CHARS:  # (e.g. thousands of ignored keys: never kept)
            return self._shape_type(next(self._shape_ids), getter, relevant, positions)
        with self._lock:
            # bounded in entries and characters: key names come from callers
            if len(self._shapes) >= 1024 or self._shape_chars + size > MAX_SHAPE_CACHE_CHARS:
                self._shapes.clear()
                self._shape_chars = 0
            known = self._shapes.get(shape)
            if known is None:
                known = self._shapes[shape] = self._shape_type(
                    next(self._shape_ids), getter, relevant, positions
                )
                self._shape_chars += size
        return known

    def _client(self, options: CallOptions) -> Any:
        key = options.client_key
        with self._lock:
            if self._closed:
                raise MetadataError("dapr binding kitex: the binding is closed")
            self._lru_changed()
            client = self._clients.get(key)
            if client is not None:
                self._clients.move_to_end(key)
                return client
            client = self._new_client(options)
            self._clients[key] = client
            evicted = self._clients.popitem(last=False)[1] if len(self._clients) > self.max_clients else None
        if evicted is not None:
            # Other threads may still hold the evicted client: their calls complete, and every
            # connection is closed when its call ends instead of going back to a pool.
            evicted.retire()
        return client

    def _resolver(self, spec: RegistrySpec) -> Any:
        """The shared resolver of a registry (under the cache lock; no I/O: its watch thread
        starts when a client subscribes). Beyond ``max_resolvers`` the least recently used one
        is closed: its clients keep the instance set they have, without updates."""
        resolver = self._resolvers.get(spec)
        if resolver is not None:
            self._resolvers.move_to_end(spec)
            return resolver
        resolver = self._resolvers[spec] = open_resolver(spec)
        if len(self._resolvers) > self.max_resolvers:
            self._resolvers.popitem(last=False)[1].close()
        return resolver

    def _lru_changed(self) -> None:
        """The client cache's order changed here (a driver's fast path may track its tail)."""

    @property
    def client_count(self) -> int:
        """How many destinations hold a client (and its connections) right now."""
        return len(self._clients)


class KitexOutputBinding(BindingCore):
    """Dapr's ``bindings.kitex`` output binding on blocking calls. Thread-safe; use as a context
    manager. Options: :class:`BindingCore`.

    A request whose metadata was seen before, to a client with an idle connection, is one call
    into the transport's ``BindingPath`` (compiled, or its twin); for everything else it answers
    "not handled" and :meth:`_invoke` runs the rules.
    """

    client_class = Client

    def __init__(self, *, max_clients: int = 64, implementation: Optional[str] = None,
                 defaults: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(max_clients=max_clients, implementation=implementation, defaults=defaults)
        transport = _transport_dispatch.implementation(implementation)
        # The binding decides what the fast path may take: requests of these operations whose
        # metadata has a route, answered by this response factory.
        self._path = transport.BindingPath(
            InvokeRequest, OPERATIONS, InvokeResponse.from_reply, self._shapes,
            self._routes, self._clients,
        )

    def _records_implementation(self) -> Optional[str]:
        return self.implementation  # the BindingPath's own transport reads them

    def init(self, metadata: Optional[Mapping[str, str]] = None) -> None:
        """Component-level metadata: defaults for every request; all optional, all validated.
        Clients made under the previous defaults are closed."""
        for client in self._set_defaults(metadata):
            client.close()

    def invoke(self, request: InvokeRequest) -> InvokeResponse:
        """Call the Kitex service that ``request.metadata`` names with ``request.data`` (a complete
        strict-binary Thrift CALL message); the response's data is the REPLY message."""
        try:
            response = self._path.invoke(request)
        except KitexError as exc:  # a call the binding path made on a cached route
            if log.isEnabledFor(logging.DEBUG):
                self._failed_request(request, exc)
            raise
        if type(response) is InvokeResponse:
            return response
        return self._invoke(request, response)

    def _invoke(self, request: InvokeRequest, taken: Any = None) -> InvokeResponse:
        """The full rules of :meth:`invoke`, for every case the binding path does not finish:
        ``taken`` is its "not handled" answer, None or ``(route, the call path's answer)``."""
        if taken is None:
            options, client = self._prepare(request)
            method, timeout, headers = options.method_name, options.rpc_timeout, options.headers
        else:
            route, answer = taken
            options, client = route.options, route.client
            method, timeout, headers = route.method, route.rpc_timeout, route.headers
        try:
            if taken is None:
                result = client._call(method, request.data, timeout, headers)
            else:
                result = client._complete(answer, method, request.data, timeout, headers)
        except KitexError as exc:
            self._failed(options, exc)
            raise
        return InvokeResponse.from_reply(result, options)

    def _lru_changed(self) -> None:
        self._path.forget_tail()

    def _failed_request(self, request: InvokeRequest, exc: KitexError) -> None:
        """:meth:`_failed` for a call the binding path made: its route's options, validated again
        (only for the log line; metadata that no longer validates, after new defaults, logs none)."""
        try:
            options = parse_options(request.metadata, self._defaults)
        except KitexError:
            return
        self._failed(options, exc)

    def _failed(self, options: CallOptions, exc: KitexError) -> None:
        if log.isEnabledFor(logging.DEBUG):  # (caller values: escaped and bounded, errors.quoted)
            log.debug("kitex call %s.%s failed: %s", quoted(options.dest_service),
                      quoted(options.method_name), quoted(str(exc), 1024))

    def close(self) -> None:
        """Refuse new calls and close every client's connections (calls under way finish)."""
        for client in self._shut():
            client.close()

    def __enter__(self) -> "KitexOutputBinding":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()



def _chars(items: Any) -> int:
    """The characters of a cache key's strings (what keeping the key costs, roughly)."""
    return sum(len(item) if isinstance(item, str) else 8 for item in items)


def utf8_text(value: str) -> str:
    """A reply header name or value as UTF-8 text can carry it: the codec decodes header bytes
    with surrogateescape, so bytes that are not UTF-8 arrive as lone surrogates, which no UTF-8
    encoder (protobuf's string fields, daprd's) accepts. Those bytes become backslash escapes
    (``\\xff``); valid text is left as it is."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value


def response_metadata(frame: Any, seq_id: int, endpoint: str, options: CallOptions) -> Dict[str, str]:
    """The metadata of a successful reply, as every driver's binding returns it (reply headers
    that are not UTF-8 backslash-escaped, see :func:`utf8_text`); none with ``responseMetadata``
    false."""
    if not options.response_metadata:
        return {}
    metadata = {
        "seqId": str(seq_id),
        "messageType": "reply",
        "methodName": options.method_name,
        "transport": frame.transport,
        "endpoint": endpoint,
    }
    if frame.str_headers:
        for name, value in frame.str_headers.items():
            metadata[STR_HEADER_PREFIX + utf8_text(name)] = utf8_text(value)
    if frame.int_headers:
        for key, value in frame.int_headers.items():
            metadata["%s%d" % (INT_HEADER_PREFIX, key)] = utf8_text(value)
    return metadata
