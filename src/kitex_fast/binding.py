"""The Dapr Kitex output binding: operation ``get``, strict metadata, a bounded client cache.

It mirrors Dapr's Go binding (dapr/components-contrib ``bindings/kitex``): the request ``data`` is a
complete strict-binary Thrift CALL message, the response ``data`` the complete REPLY message. It
differs where the Go binding has gaps (see the README): component metadata gives defaults, the
``methodName`` metadata is authoritative (the method name inside ``data`` is rewritten to it), the
client cache is bounded and ``close()`` closes every connection, replies carry metadata.
"""

from __future__ import annotations

import logging
import operator
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from .client import Client, ClientCore
from .errors import KitexError, MetadataError, UnsupportedOperationError
from .metadata import (
    INT_HEADER_PREFIX,
    KNOWN_KEYS,
    STR_HEADER_PREFIX,
    CallOptions,
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
_KNOWN_SET = frozenset(KNOWN_KEYS)
_KNOWN_LOWER = frozenset(k.lower() for k in KNOWN_KEYS)


@dataclass
class InvokeRequest:
    """What daprd hands an output binding (dapr.proto.components.v1.InvokeRequest)."""

    operation: str
    data: Union[bytes, bytearray, memoryview] = b""
    metadata: Dict[str, str] = field(default_factory=dict)


@dataclass
class InvokeResponse:
    """What the binding returns (dapr.proto.components.v1.InvokeResponse)."""

    data: bytes
    metadata: Dict[str, str] = field(default_factory=dict)
    content_type: str = CONTENT_TYPE


class BindingCore:
    """What every driver's binding shares: component defaults, metadata validation, the route
    cache and the bounded client cache. A driver subclasses it, makes its clients in
    :meth:`_new_client` and does the call (the sync :class:`KitexOutputBinding` here,
    :mod:`kitex_fast.aio`).

    :param max_clients: how many distinct destinations (metadata combinations) keep a client and
        its connections; the least recently used is closed beyond that.
    :param implementation: ``"c"``, ``"py"`` or None (compiled when installed).
    """

    def __init__(self, *, max_clients: int = 64, implementation: Optional[str] = None) -> None:
        # Checked here, not at the first invoke: a MetadataError (a ValueError) naming the argument.
        if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
            raise MetadataError("max_clients must be an int of at least 1, not %r" % (max_clients,))
        if implementation not in (None, "c", "py"):
            raise MetadataError(
                "implementation must be 'c', 'py' or None, not %r" % (implementation,)
            )
        self.max_clients = max_clients
        self.implementation = implementation
        self._defaults: Dict[str, str] = {}
        # The key names of a request's metadata, in order ("shape") -> (shape id, a getter of the
        # values that matter). daprd and SDKs build metadata the same way every call, so the
        # shape is stable even when ignored values (traceparent, ...) change per request.
        self._shapes: Dict[Tuple[str, ...], Tuple[int, Callable[[Mapping[str, str]], Tuple[object, ...]]]] = {}
        # (shape id, relevant values) -> (validated options, their client, the client's key):
        # validation and client lookup run once per distinct metadata.
        self._routes: "OrderedDict[Tuple[object, ...], Tuple[CallOptions, ClientCore, Tuple[object, ...]]]" = OrderedDict()
        # options.client_key -> client, least recently used first
        self._clients: "OrderedDict[Tuple[object, ...], ClientCore]" = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    # -- Dapr OutputBinding API ---------------------------------------------------------------

    def operations(self) -> List[str]:
        """The Dapr operations this binding serves: ``["get"]``."""
        return list(OPERATIONS)

    def _set_defaults(self, metadata: Optional[Mapping[str, str]]) -> List[Any]:
        """Validate and install component defaults; the clients to close (made under the old ones)."""
        defaults = validate_defaults(metadata or {})
        with self._lock:
            self._defaults = defaults
            self._routes.clear()
            old = list(self._clients.values())
            self._clients.clear()
        return old

    def _shut(self) -> List[Any]:
        """Refuse new calls; the clients to close."""
        with self._lock:
            self._closed = True
            clients = list(self._clients.values())
            self._clients.clear()
            self._routes.clear()
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
        return self.client_class(
            options.dest_service,
            options.endpoints,
            transport=options.transport,
            connect_timeout=options.connect_timeout,
            max_frame_size=options.max_frame_size,
            pool_size=options.pool_size,
            max_idle_time=options.max_idle_time,
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
            key = (known[0], known[1](metadata))
            route = self._routes.get(key)
        except (TypeError, AttributeError):  # unhashable values, non-str keys: validation names them
            options = parse_options(metadata, self._defaults)
            return options, self._client(options)
        if route is not None and not route[1].retired:
            try:
                self._clients.move_to_end(route[2])  # LRU touch; one C call, atomic under the GIL
            except KeyError:
                pass  # evicted meanwhile: retired, handled on the next call
            return route[0], route[1]
        options = parse_options(metadata, self._defaults)
        client = self._client(options)
        with self._lock:
            self._routes[key] = (options, client, options.client_key)
            if len(self._routes) > 4 * self.max_clients:
                self._routes.popitem(last=False)
        return options, client

    def _learn_shape(
        self, shape: Tuple[str, ...]
    ) -> Tuple[int, Callable[[Mapping[str, str]], Tuple[object, ...]]]:
        # Values that matter: known keys, header keys, and mis-cased known keys (parse_options
        # rejects those). Everything else (traceparent, baggage, ...) is ignored by the binding.
        relevant = tuple(
            k
            for k in shape
            if k in _KNOWN_SET or k.startswith(_HEADER_PREFIXES) or k.lower() in _KNOWN_LOWER
        )
        if len(relevant) == 1:
            only = relevant[0]
            getter: Callable[[Mapping[str, str]], Tuple[object, ...]] = lambda m: (m[only],)
        elif relevant:
            getter = operator.itemgetter(*relevant)  # type: ignore[assignment]
        else:
            getter = lambda m: ()  # noqa: E731
        with self._lock:
            if len(self._shapes) >= 1024:  # bounded: key names come from callers
                self._shapes.clear()
            known = (len(self._shapes) + 1, getter)
            known = self._shapes.setdefault(shape, known)
        return known

    def _client(self, options: CallOptions) -> Any:
        key = options.client_key
        with self._lock:
            if self._closed:
                raise MetadataError("dapr binding kitex: the binding is closed")
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

    @property
    def client_count(self) -> int:
        """How many destinations hold a client (and its connections) right now."""
        return len(self._clients)


class KitexOutputBinding(BindingCore):
    """Dapr's ``bindings.kitex`` output binding on blocking calls. Thread-safe; use as a context
    manager. Options: :class:`BindingCore`."""

    client_class = Client

    def init(self, metadata: Optional[Mapping[str, str]] = None) -> None:
        """Component-level metadata: defaults for every request; all optional, all validated.
        Clients made under the previous defaults are closed."""
        for client in self._set_defaults(metadata):
            client.close()

    def invoke(self, request: InvokeRequest) -> InvokeResponse:
        """Call the Kitex service that ``request.metadata`` names with ``request.data`` (a complete
        strict-binary Thrift CALL message); the response's data is the REPLY message."""
        options, client = self._prepare(request)
        try:
            frame, seq_id, endpoint = client.exchange(
                options.method_name,
                request.data,
                rpc_timeout=options.rpc_timeout,
                headers=options.headers,
            )
        except KitexError as exc:
            log.debug("kitex call %s.%s failed: %s", options.dest_service, options.method_name, exc)
            raise
        return InvokeResponse(frame.payload, response_metadata(frame, seq_id, endpoint, options))

    def close(self) -> None:
        """Refuse new calls and close every client's connections (calls under way finish)."""
        for client in self._shut():
            client.close()

    def __enter__(self) -> "KitexOutputBinding":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()



def response_metadata(frame: Any, seq_id: int, endpoint: str, options: CallOptions) -> Dict[str, str]:
    """The metadata of a successful reply, as every driver's binding returns it."""
    metadata = {
        "seqId": str(seq_id),
        "messageType": "reply",
        "methodName": options.method_name,
        "transport": frame.transport,
        "endpoint": endpoint,
    }
    if frame.str_headers:
        for name, value in frame.str_headers.items():
            metadata[STR_HEADER_PREFIX + name] = value
    if frame.int_headers:
        for key, value in frame.int_headers.items():
            metadata["%s%d" % (INT_HEADER_PREFIX, key)] = value
    return metadata
