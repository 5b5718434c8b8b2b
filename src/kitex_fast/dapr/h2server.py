"""The compiled component server: libnghttp2 + Cython on an asyncio event loop, driving the same
component rules as the grpcio server (:mod:`.core`).

The compiled rooms: ``_h2server`` (the HTTP/2 connection, gRPC over it), ``_invoke`` (the compiled
Invoke path) and ``_protobuf`` (the OutputBinding messages), built together only where libnghttp2's
headers were found (setup.py); :func:`unavailable` says why they are not here otherwise, and the CLI
falls back to grpcio. This module imports neither grpc nor protobuf.

Per call, the byte layer (HTTP/2 frames, gRPC framing, the protobuf messages) runs in C. The common
Invoke runs in C too (``_invoke.InvokePath``, which the connection hands the decoded Invoke): on a
route this module has vetted once with the component's rules (:meth:`App.fast_route`), it takes an
idle connection of the route's client, sends, and answers from the reply future's callback, with no
coroutine or task (daprd's deadline, when it is the shorter, is the call's timeout, as on the general
path: ``binding.deadline_timeout``). Everything else (Init, a new route, no idle connection, base64
data, a failure, a reply whose status needs checking) runs here, one coroutine per call where it
awaits, with the component rules (:mod:`.core`). :class:`App` is what the C modules call: the
Protocols of :mod:`._server_api`. Reflection v1alpha (what daprd asks at discovery) is answered from
replies built once at start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from types import ModuleType
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Set, Tuple, Type

from .. import _dispatch
from ..binding import CONTENT_TYPE, deadline_timeout, response_metadata
from ..errors import KitexError, TransportError, quoted
from ..pool import ascii_int
from . import core
from .core import loggable
from .status import status_of
from .core import REFLECTION_SERVICE_NAME, SERVICE_NAME, Component
from .proto.descriptor import SERIALIZED as OUTPUT_BINDING_FILE

__all__ = ["unavailable", "serve", "App", "reflection_reply"]

log = logging.getLogger(__name__.rpartition(".")[0])  # the subpackage, wherever it is vendored

if TYPE_CHECKING:
    from ._h2server import Connection
    from ._invoke import FastRoute, InstanceRoutes, InvokePath


class _Compiled:
    """The compiled server's three modules, and the classes this module builds from them, typed
    by their stubs (so the type checker holds :class:`App` to the Protocols the stubs name)."""

    def __init__(self, server: ModuleType, invoke: ModuleType, protobuf: ModuleType) -> None:
        self.server = server  # _h2server: the HTTP/2 connection
        self.invoke = invoke  # _invoke: the compiled Invoke path
        self.protobuf = protobuf  # _protobuf: the OutputBinding messages
        self.Connection: Type[Connection] = server.Connection
        self.InvokePath: Type[InvokePath] = invoke.InvokePath
        self.FastRoute: Type[FastRoute] = invoke.FastRoute
        self.InstanceRoutes: Type[InstanceRoutes] = invoke.InstanceRoutes


_ext: Optional[_Compiled] = None
_why_not = ""


def _load() -> Optional[_Compiled]:
    global _ext, _why_not
    if _ext is None and not _why_not:
        if _dispatch.NO_EXTENSIONS:
            _why_not = "KITEX_FAST_NO_EXTENSIONS is set"
        else:
            # (all three or none: setup.py builds them together, and _h2server imports the others)
            server = _dispatch.load_compiled("dapr._h2server")
            if server is None:
                _why_not = ("its extension (dapr/_h2server) is not in this copy of kitex_fast: it is "
                            "built only where libnghttp2's headers are found (apt-get install "
                            "libnghttp2-dev, then reinstall), and a --pure vendored copy leaves it "
                            "out")
            else:
                invoke = _dispatch.load_compiled("dapr._invoke")
                protobuf = _dispatch.load_compiled("dapr._protobuf")
                assert invoke is not None and protobuf is not None  # (_h2server imported them)
                _ext = _Compiled(server, invoke, protobuf)
    return _ext


def unavailable() -> Optional[str]:
    """None when the compiled server can run here, else the reason it cannot."""
    return None if _load() is not None else _why_not


# -- reflection v1alpha (grpc/grpc src/proto/grpc/reflection/v1alpha/reflection.proto) -----------
# ServerReflectionRequest: host 1, file_by_filename 3, file_containing_symbol 4,
#   file_containing_extension 5, all_extension_numbers_of_type 6, list_services 7.
# ServerReflectionResponse: valid_host 1, original_request 2, file_descriptor_response 4
#   (FileDescriptorResponse: repeated bytes file_descriptor_proto 1), list_services_response 6
#   (ListServiceResponse: repeated ServiceResponse service 1; ServiceResponse: name 1),
#   error_response 7 (ErrorResponse: error_code 1, error_message 2).
_FILE_NAME = b"kitex_fast/dapr/proto/output_binding.proto"
_NOT_FOUND = 5


def _symbols() -> Set[bytes]:
    names = {SERVICE_NAME.encode()}
    package = SERVICE_NAME.rpartition(".")[0]
    for method in ("Init", "Invoke", "ListOperations", "Ping"):
        names.add(("%s.%s" % (SERVICE_NAME, method)).encode())
    for message in ("MetadataRequest", "OutputBindingInitRequest", "OutputBindingInitResponse",
                    "ListOperationsRequest", "ListOperationsResponse", "InvokeRequest",
                    "InvokeResponse", "PingRequest", "PingResponse"):
        names.add(("%s.%s" % (package, message)).encode())
    return names


class _Reflection:
    def __init__(self, ext: ModuleType) -> None:  # (the _protobuf module)
        self.ext = ext
        services = [ext.encode_fields([(1, name.encode())]) for name in (SERVICE_NAME, REFLECTION_SERVICE_NAME)]
        self.list_services = ext.encode_fields([(1, s) for s in services])
        self.file = ext.encode_fields([(1, OUTPUT_BINDING_FILE)])
        self.symbols = _symbols()

    def reply(self, request: bytes) -> bytes:
        """The framed ServerReflectionResponse to one request."""
        try:
            fields = self.ext.scan_fields(request)
        except ValueError as exc:
            return self._error(request, 3, "cannot parse ServerReflectionRequest: %s" % exc)
        kind: Dict[int, Any] = {f: v for f, v in fields if f >= 3}
        if 7 in kind:
            answer = [(6, self.list_services)]
        elif kind.get(4) in self.symbols or kind.get(3) == _FILE_NAME:
            answer = [(4, self.file)]
        else:
            what = next(iter(kind.items()), (0, b""))
            text = "%s not found" % (bytes(what[1]).decode("utf-8", "replace") if isinstance(what[1], bytes) else what[1])
            return self._error(request, _NOT_FOUND, text)
        return self.ext.encode_fields([(2, request)] + answer, True)  # type: ignore[no-any-return]

    def _error(self, request: bytes, code: int, text: str) -> bytes:
        err = self.ext.encode_fields([(1, code), (2, text.encode())])
        return self.ext.encode_fields([(2, request), (7, err)], True)  # type: ignore[no-any-return]


def reflection_reply(request: bytes) -> bytes:
    """The framed reflection reply the compiled server gives ``request`` (for tests)."""
    ext = _load()
    assert ext is not None, unavailable()
    return _Reflection(ext.protobuf).reply(request)


def _put_bounded(cache: Dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """A cache whose keys come from callers: emptied when full (what was hot is learned again)."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value


def _shared_route(table: InstanceRoutes, route: FastRoute) -> FastRoute:
    """``route``, or the FastRoute of ``table`` whose calls go out as its would: the one of the
    same options but ``version``. The binding requires and checks ``version`` (as Dapr's Go
    binding does) but sends it nowhere, neither in the message nor in a header, so routes that
    differ only in it need one FastRoute, not one each (a FastRoute with its options, LRU touches
    and operations is about 1.2 KiB: a caller cycling 1,000 versions kept 1,000). The shared
    route's ``options.version`` is the first one's; nothing after validation reads it."""
    alike = (route.forwards_trace, route.options._replace(version=""))
    shared = table.shared.get(alike)
    if shared is not None and not shared.client.retired:
        return shared
    _put_bounded(table.shared, alike, route, table.limit)
    return route


class _Refused(asyncio.Protocol):
    """A connection past the bound: closed as soon as it is made."""

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        transport.abort()


class App:
    """The Python side of the compiled server's connections: the calls, on the component. It is
    what the connections call (``_server_api.ServerApp``) and the rules the compiled Invoke path
    asks (``_server_api.InvokeRules``)."""

    def __init__(self, component: Component, ext: _Compiled,
                 max_connections: int = core.DEFAULT_MAX_SOCKET_CONNECTIONS,
                 limits: Optional[Dict[str, Any]] = None) -> None:
        self.component = component
        self.ext = ext
        self.max_connections = max_connections
        # Connection(...) keyword arguments: max_buffer (process-wide request bytes), max_queued,
        # handshake_timeout, idle_timeout (the CLI's --max-request-buffer, --handshake-timeout,
        # --idle-timeout; _h2server's DEFAULT_* when absent).
        self.limits: Dict[str, Any] = dict(limits or {})
        self.refused = 0
        self.expired = 0  # connections closed without a handshake
        self.crashed = 0  # calls ended by an exception in per-call code
        self.codes: Dict[str, int] = ext.server.GRPC_STATUS_BY_NAME
        self.reflection = _Reflection(ext.protobuf)
        self.connections: Set[Any] = set()
        self.tasks: Set["asyncio.Task[None]"] = set()
        self.idle = asyncio.Event()
        self.idle.set()
        # The compiled Invoke path's routes: instance name -> InstanceRoutes (what each metadata
        # key means, and the routes by their (key, value) pairs).
        self.fast: Dict[str, InstanceRoutes] = {}
        # What the Invoke path needs of the package above it comes in here (it imports nothing
        # of the package but the protobuf codec): the key kinds, the response metadata of a reply
        # with TTHeader headers, and the error of a connection that died before taking a byte.
        self.invoke_path = ext.InvokePath(
            self, self.fast, Component.KEY_ROUTE, Component.KEY_GENERAL, Component.KEY_TRACE,
            response_metadata, TransportError,
        )
        component.watch_instances(self._forget)
        self._content_type = CONTENT_TYPE.encode()
        self.general_calls = 0  # Invokes that ran as a coroutine (the compiled path's count is per connection)
        self._closed_compiled = 0
        self._cached_chars = 0  # what self.fast holds, counted as it is added (see MAX_CACHE_CHARS)

    # Bounds of the route cache, per instance: key names (they come from callers) and routes.
    MAX_KEYS = 1024
    MAX_ROUTES = 1024
    # ... and in characters, for every instance together (instance names, key names, route keys):
    # past the budget every table starts anew. A key name or route larger than its share is not
    # kept at all (a 1.5 MB metadata map does not repeat; its calls take the general path's
    # rules each time instead of being remembered).
    MAX_CACHE_CHARS = 8 * 1024 * 1024
    MAX_KEY_CHARS = 256
    MAX_ROUTE_CHARS = 16 * 1024

    def protocol(self) -> Any:  # an asyncio protocol factory
        if len(self.connections) >= self.max_connections:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("%d connections are open on the socket already (--max-connections): "
                            "closing a new one (%d so far)", len(self.connections), self.refused)
            return _Refused()
        conn = self.ext.Connection(self, invoke_path=self.invoke_path, **self.limits)
        self.connections.add(conn)
        return conn

    def call_crashed(self, conn: Any, name: str, exc: BaseException) -> Tuple[int, str]:
        """Per-call code raised on a connection: the status that call ends with, and one log line
        (the traceback at debug level). The connection and its other calls go on."""
        self.crashed += 1
        code, text = status_of(exc)
        if code not in self.codes:
            code = "INTERNAL"
        log.error("instance %s: a call ended with %s after an internal error (%s: %s); the "
                  "connection and its other calls go on", quoted(name), code, type(exc).__name__,
                  quoted(str(exc)))
        log.debug("the internal error", exc_info=exc)
        return self.codes[code], text

    def handshake_expired(self, conn: Any, seconds: float) -> None:
        self.expired += 1
        if self.expired == 1 or self.expired % 1000 == 0:
            log.warning("a connection sent no HTTP/2 preface and SETTINGS within %g s "
                        "(--handshake-timeout): closed (%d so far)", seconds, self.expired)

    def idle_closed(self, conn: Any, seconds: float) -> None:
        log.info("a connection had no stream for %g s (--idle-timeout): GOAWAY, then closed; "
                 "its client reconnects on its next call", seconds)

    # -- called by the connections -----------------------------------------------------------

    def _start(self, coro: Any) -> "asyncio.Task[None]":
        task: "asyncio.Task[None]" = asyncio.ensure_future(coro)
        self.tasks.add(task)
        self.idle.clear()
        task.add_done_callback(self._done)
        return task

    def _done(self, task: "asyncio.Task[None]") -> None:
        self.tasks.discard(task)
        if not self.tasks:
            self.idle.set()

    def invoke(self, conn: Any, stream_id: int, name: str, operation: str, data: bytes,
               metadata: Dict[str, str], timeout: Optional[float]) -> "asyncio.Task[None]":
        self.general_calls += 1
        return self._start(self._invoke(conn, stream_id, name, operation, data, metadata, timeout))

    async def _invoke(self, conn: Any, stream_id: int, name: str, operation: str, data: bytes,
                      metadata: Dict[str, str], timeout: Optional[float]) -> None:
        try:
            response = await self.component.invoke(name, operation, data, metadata, timeout)
        except asyncio.CancelledError:
            self.component.abandoned(name, metadata)
            conn.call_cancelled()
            return
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status, never a hang
            code, text = self.component.failed(name, metadata, exc)
            conn.call_failed(stream_id, self.codes[code], text)
            return
        conn.reply_invoke(stream_id, response.data, response.metadata, response.content_type)

    # -- the compiled Invoke path's questions (once per instance, key order or route) -----------

    def _forget(self, name: str) -> None:
        self.fast.pop(name, None)  # replaced or dropped: its routes hold its old binding

    def _spend(self, chars: int) -> None:
        """Count ``chars`` more cached characters; past the budget, every table starts anew."""
        self._cached_chars += chars
        if self._cached_chars > self.MAX_CACHE_CHARS:
            self.fast.clear()  # (the connections hold this dict: cleared, not replaced)
            self._cached_chars = chars

    def fast_instance(self, name: str) -> InstanceRoutes:
        if len(self.fast) >= self.component.max_instances:
            self.fast.clear()
        table = self.ext.InstanceRoutes(core.UNTRACED, self.MAX_ROUTES)
        if len(name) <= self.MAX_KEY_CHARS:
            self._spend(len(name) + 64)
            self.fast[name] = table
        return table

    def fast_key(self, name: str, key: str) -> int:
        kind = self.component.key_kind(name, key)
        table = self.fast.get(name)
        if table is not None and len(key) <= self.MAX_KEY_CHARS:
            self._spend(len(key) + 64)
            _put_bounded(table.kinds, key, kind, self.MAX_KEYS)
        return kind

    def fast_deadline(self, route: FastRoute, seconds: float) -> Tuple[float, Optional[Dict[int, str]]]:
        """``(timeout, int headers)`` of a compiled-path call whose daprd deadline, ``seconds``, is
        shorter than its route's timeout: the general path's rule (``binding.deadline_timeout``),
        so both send the Kitex server the same RPCTimeout. The RPCTimeout goes out as the call's
        own header after the route encoder's (RequestEncoder.encode), so no encoder is made per
        call, and no Headers either."""
        return deadline_timeout(route.options, seconds)

    def fast_route(self, name: str, metadata: Dict[str, str], key: Any) -> Optional[FastRoute]:
        size = sum(len(k) + len(v) for k, v in key)
        try:
            route = self._fast_route(name, metadata, size <= self.MAX_ROUTE_CHARS)
        except Exception:  # noqa: BLE001 - the general path gives the call its status and log line
            route = None
        table = self.fast.get(name)
        if table is not None and size <= self.MAX_ROUTE_CHARS:
            self._spend(size + 256)
            if route is not None:
                route = _shared_route(table, route)
            _put_bounded(table.routes, key, route, table.limit)
        return route

    def _fast_route(self, name: str, metadata: Dict[str, str], keep: bool) -> Optional[FastRoute]:
        """The FastRoute of this metadata's route, or None (``keep``: its encoder may be cached
        in the client; not for a route too large to repeat)."""
        found = self.component.route_call(name, metadata)
        route = None
        if found is not None:
            inst, options, client, forwards_trace = found
            if client._pool.loop is None:
                client._bind()  # what the client's first call does
            method, headers = options.method_name, options.headers
            encoder_key = method if headers is None else (method, headers)
            route = self.ext.FastRoute()
            route.client = client
            route.pool = client._pool
            route.encoder = client._encoders.get(encoder_key) or client._encoder(encoder_key, method, headers, keep)
            route.loop = client._pool.loop
            route.timeout = options.rpc_timeout or 0.0
            route.operations = tuple(inst.binding.operations())
            route.instance = inst
            route.touch = (
                (self.component._instances.move_to_end, name),
                (inst.binding._clients.move_to_end, options.client_key),
            )
            map_entry = self.ext.protobuf.map_entry
            route.entries = (map_entry("messageType", "reply") + map_entry("methodName", method)
                             if options.response_metadata else None)
            route.content_type = self._content_type
            route.options = options
            route.forwards_trace = forwards_trace
            route.trace = core.trace_headers
        return route

    def fast_failed(self, name: str, metadata: Dict[str, str], exc: BaseException) -> Tuple[int, str]:
        """A call on the compiled path failed: the status to answer with (logged as invoke's)."""
        code, text = self.component.failed(name, metadata, exc)
        return self.codes[code], text

    def fast_settle(self, name: str, metadata: Dict[str, str], route: FastRoute, proto: Any, frame: Any,
                    seq_id: int) -> Optional[Tuple[int, str]]:
        """A reply the compiled path's quick check did not pass: the client's full check (an
        exception, a business status, a connection reset...), as its exchange() does; None when
        the reply stands, else the status to answer with."""
        try:
            error, keep = route.client._check(proto, frame, route.options.method_name, seq_id)
        except BaseException as exc:  # noqa: BLE001 - a reply that does not answer: the stream is suspect
            proto.close(exc if isinstance(exc, KitexError) else None)
            return self.fast_failed(name, metadata, exc)
        if keep:
            route.pool.release(proto)
        else:
            proto.retire()  # the server closes this connection: start nothing new on it
        if error is not None:
            return self.fast_failed(name, metadata, error)
        return None

    def fast_abandoned(self, name: str, metadata: Mapping[str, str]) -> None:
        self.component.abandoned(name, metadata)

    def instance_idle(self, inst: Any) -> None:
        self.component.instance_idle(inst)

    def init(self, conn: Any, stream_id: int, name: str, properties: Dict[str, str]) -> "asyncio.Task[None]":
        return self._start(self._init(conn, stream_id, name, properties))

    async def _init(self, conn: Any, stream_id: int, name: str, properties: Dict[str, str]) -> None:
        try:
            refused = await self.component.init_status(name, properties)
        except asyncio.CancelledError:
            conn.call_cancelled()
            return
        except Exception as exc:  # noqa: BLE001
            log.error("instance %s: Init crashed: %s", quoted(name), loggable("%s: %s" % (type(exc).__name__, exc), 1024))
            log.debug("the crash above", exc_info=exc)
            conn.call_failed(stream_id, self.codes["INTERNAL"], "%s: %s" % (type(exc).__name__, exc))
            return
        if refused is None:
            conn.reply_empty(stream_id)
        else:
            conn.call_failed(stream_id, self.codes[refused[0]], refused[1])

    def operations(self, name: str) -> List[str]:
        return self.component.operations(name)

    def reflect(self, request: bytes) -> bytes:
        return self.reflection.reply(request)

    def connection_done(self, conn: Any) -> None:
        self.connections.discard(conn)
        self._closed_compiled += conn.compiled_calls

    @property
    def compiled_calls(self) -> int:
        """Invokes served on the compiled path so far."""
        return self._closed_compiled + sum(int(conn.compiled_calls) for conn in self.connections)

    def connection_error(self, conn: Any, exc: BaseException) -> None:
        log.error("connection dropped after an internal error", exc_info=exc)

    def protocol_error(self, conn: Any, text: str, first: bytes) -> None:
        log.warning("a client sent bytes that are not HTTP/2 gRPC (%s; first bytes %s): connection closed",
                    text, first.hex(" "))

    # -- stopping ---------------------------------------------------------------------------

    def _running(self) -> int:
        return sum(conn.calls for conn in self.connections)

    async def drain(self, seconds: float) -> None:
        """GOAWAY to every connection, wait (bounded) for the calls in flight, then close."""
        for conn in list(self.connections):
            conn.shutdown_notice()
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        try:
            await asyncio.wait_for(self.idle.wait(), seconds)
            while self._running() and loop.time() < until:  # calls on the compiled path
                await asyncio.sleep(0.01)
        except asyncio.TimeoutError:
            pass
        running = self._running()
        if running:
            log.warning("%d calls still running after %.0f s: cancelled", running, seconds)
        for conn in list(self.connections):
            conn.goaway()
            conn.cancel_calls()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let the last replies and GOAWAYs reach the transports
        for conn in list(self.connections):
            conn.close()


def _tcp(text: str) -> "tuple[str, int]":
    host, _, port_text = text.rpartition(":")
    port = ascii_int(port_text)  # (the package's one number check: ASCII digits only)
    if port is None or not 0 <= port <= 65535:
        raise ValueError("--listen-tcp %s: the port %s is not a whole number in 0-65535"
                         % (quoted(text), quoted(port_text)))
    return host or "127.0.0.1", port


async def serve(args: argparse.Namespace, component: Component, implementation_name: str) -> int:
    """Serve the socket with the compiled server until SIGTERM/SIGINT (:func:`core.run`)."""
    ext = _load()
    if ext is None:
        raise RuntimeError(unavailable())
    loop = asyncio.get_running_loop()
    limits = {key: getattr(args, name) for key, name in (
        ("max_buffer", "max_request_buffer"), ("handshake_timeout", "handshake_timeout"),
        ("idle_timeout", "idle_timeout")) if getattr(args, name, None) is not None}
    app = App(component, ext, getattr(args, "max_connections", core.DEFAULT_MAX_SOCKET_CONNECTIONS), limits)
    servers: List[Any] = []

    async def start(path: str) -> None:
        listen_tcp = getattr(args, "listen_tcp", None)
        if listen_tcp:  # tests only (h2spec): plaintext HTTP/2 on a loopback port; first, so
            # that it is logged before the socket daprd (and the tests) wait for accepts
            server = await loop.create_server(app.protocol, *_tcp(listen_tcp))
            servers.append(server)
            host, port = server.sockets[0].getsockname()[:2]
            log.info("also listening on tcp %s:%d (tests only)", host, port)
        servers.append(await loop.create_unix_server(app.protocol, path))

    async def stop(drain: float) -> None:
        for server in servers:
            server.close()
        await app.drain(drain)
        log.info("served %d Invoke calls on the compiled path and %d on the general path",
                 app.compiled_calls, app.general_calls)

    name = "compiled (libnghttp2, %s loop)" % getattr(args, "loop", "asyncio")
    return await core.run(args, component, start, stop, name, implementation_name)
