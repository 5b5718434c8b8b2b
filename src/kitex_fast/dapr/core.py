"""The component's rules, once, for every server that drives them (no grpc, no protobuf here).

``kitex-fast component`` has two servers for the same socket: the grpcio one (:mod:`.component`)
and the compiled HTTP/2 one (:mod:`.h2server`, on libnghttp2 where it was built). Both are thin
drivers of this module, which holds everything that is Dapr's or ours rather than gRPC's:

- component instances, keyed by daprd's ``x-component-instance`` header (the YAML's
  ``metadata.name``), each with its ``Init`` defaults and its own binding; bounded (LRU, a warning
  on every eviction) so that a flood of distinct names cannot grow the process without limit;
- the request rules: the HTTP base64 opt-in for ``data``, W3C trace context forwarded as TTHeader
  transient metainfo, daprd's remaining deadline handed to the call as its per-call timeout (a
  number, never rewritten into the metadata);
- failures as (gRPC status code name, text) pairs with their log lines (:mod:`.status`);
- socket hygiene: a stale socket file hangs daprd's discovery forever, so it is removed before
  binding and on every exit path; a live owner makes the start fail;
- the process life: SIGTERM/SIGINT remove the socket, stop accepting, drain calls in flight
  (bounded), close every Kitex connection, exit 0.

The wire facts these rules rest on are in ``docs/dapr.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import stat
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Set, Tuple

from ..binding import InvokeRequest, deadline_timeout, utf8_text
from ..errors import KitexError, MetadataError, quoted
from ..aio import KitexOutputBinding
from ..codec import TRANSIENT_PREFIX
from .proto import SERVICE_NAME
from .status import status_of

__all__ = [
    "Component",
    "SocketInUseError",
    "socket_path",
    "claim_socket",
    "remove_socket",
    "run",
    "SERVICE_NAME",
    "REFLECTION_SERVICE_NAME",
    "INSTANCE_HEADER",
    "DATA_ENCODING_KEY",
    "TRACE_KEYS",
    "TRANSIENT_PREFIX",
    "DEFAULT_MAX_INSTANCES",
    "DEFAULT_MAX_SOCKET_CONNECTIONS",
    "COMPONENT_DEFAULTS",
]

log = logging.getLogger(__name__.rpartition(".")[0])  # the subpackage, wherever it is vendored

# The component's metadata defaults, below each YAML's and each request's. responseMetadata: daprd
# sets every entry of a binding's response metadata as a gRPC response header of InvokeBinding
# ("metadata.<key>", pkg/api/grpc/grpc.go at v1.18.0) besides the response's map: per call that
# cost daprd more than the whole component's added CPU (docs/benchmarks.md), and Dapr's Go binding
# returns none (components-contrib bindings/kitex/kitex_output.go). A YAML or a request opts in.
COMPONENT_DEFAULTS = {"responseMetadata": "false"}

# daprd discovers components through reflection v1alpha (docs/dapr.md "Discovery").
REFLECTION_SERVICE_NAME = "grpc.reflection.v1alpha.ServerReflection"
DEFAULT_SOCKET_FOLDER = "/tmp/dapr-components-sockets"
# The socket folder has two spellings in dapr's own source (the same at v1.16.0 and v1.18.0):
# - SOCKET_FOLDER_ENV is what daprd reads to find components (pkg/components/pluggable/discovery.go,
#   SocketFolderEnvVar; the default is /tmp/dapr-components-sockets);
# - SOCKET_FOLDER_ENV_INJECTOR is what the Kubernetes sidecar injector sets on pluggable-component
#   containers and on daprd (pkg/injector/consts/consts.go, ComponentsUDSMountPathEnvVar, used by
#   pkg/injector/patcher/sidecar_components.go and sidecar_container.go); daprd never reads it.
# daprd's spelling wins when both are set.
SOCKET_FOLDER_ENV = "DAPR_COMPONENTS_SOCKETS_FOLDER"
SOCKET_FOLDER_ENV_INJECTOR = "DAPR_COMPONENT_SOCKETS_FOLDER"
# daprd names the component instance (the YAML's metadata.name) on every call with this header.
INSTANCE_HEADER = "x-component-instance"
# Opt-in for HTTP callers: daprd JSON-encodes `data` before it reaches us (dapr pkg/api/http/http.go
# onOutputBindingMessage), so raw Thrift cannot travel over HTTP; a JSON string holding base64 can.
DATA_ENCODING_KEY = "dataEncoding"
DATA_ENCODING_BASE64 = "base64"
# W3C trace context keys daprd adds. On TTHeader they are forwarded the way Kitex's OpenTelemetry
# suite reads them: kitex-contrib/obs-opentelemetry's ClientMiddleware puts the propagator's keys
# into metainfo transient values (metainfo.WithValue); Kitex's MetainfoClientHandler sends those as
# TTHeader string headers prefixed RPC_TRANSIT_ (bytedance/gopkg cloud/metainfo PrefixTransient),
# and the server's ServerMiddleware extracts them again with metainfo.GetAllValues.
TRACE_KEYS = ("traceparent", "tracestate", "baggage")
UNTRACED = "00-00000000000000000000000000000000-0000000000000000-00"
# daprd inits each YAML once; more names than this come from a misbehaving caller (every unknown
# x-component-instance would otherwise keep a binding and its connections for good).
DEFAULT_MAX_INSTANCES = 1024
# Connections on the socket at once (compiled server): daprd keeps one; a local client that opens
# many more would otherwise cost a session (and its buffers) each, without bound.
DEFAULT_MAX_SOCKET_CONNECTIONS = 256


# Error texts in log lines: whole, up to this many characters (a MetadataError may quote a value).
_TEXT_LIMIT = 1024
# ... and in a call's status (grpc-message): cut beyond this, far below the 64 KiB of headers
# that HTTP/2 peers accept (nghttp2's and grpc-go's default header list limits).
_STATUS_LIMIT = 4096


def loggable(value: str, limit: int = 64) -> str:
    """``value`` for a log line: as it is when short and printable, else ``errors.quoted`` (escaped,
    so no caller value forges a line; cut, so none writes megabytes)."""
    if len(value) <= limit and value.isprintable():
        return value
    return quoted(value, limit)


def _now_and_then(count: int) -> bool:
    """Whether the ``count``-th occurrence of a repeating warning is logged: the first ten, then
    one in a thousand (a flood of distinct instance names writes a few lines, not megabytes)."""
    return count <= 10 or count % 1000 == 0


class SocketInUseError(RuntimeError):
    """Another live process serves the socket (or the path is not a socket we may replace)."""


class SocketAccessError(SocketInUseError):
    """The socket was bound but cannot be given the group asked for (``--socket-group``); a
    SocketInUseError so that the command line reports it the same way (exit status 1)."""


def socket_path(folder: Optional[str], name: str) -> str:
    """``folder/name.sock``; without a folder, daprd's variable, then the injector's, then the
    default (the folder daprd itself falls back to)."""
    if not folder:
        daprd_folder = os.environ.get(SOCKET_FOLDER_ENV)
        injector_folder = os.environ.get(SOCKET_FOLDER_ENV_INJECTOR)
        if daprd_folder and injector_folder and os.path.normpath(daprd_folder) != os.path.normpath(injector_folder):
            log.warning("$%s (%s) and $%s (%s) differ: using the first, the one daprd reads",
                        SOCKET_FOLDER_ENV, daprd_folder, SOCKET_FOLDER_ENV_INJECTOR, injector_folder)
        folder = daprd_folder or injector_folder or DEFAULT_SOCKET_FOLDER
    return os.path.join(folder, name + ".sock")


def set_socket_access(path: str, mode: int, group: Optional[int]) -> None:
    """Give the bound socket its group and mode, so that daprd (another UID) may connect.

    daprd needs write permission on the socket file. With ``group`` None the socket takes its
    folder's group, as a set-group-ID folder would give it: sharing the folder's group with daprd
    (Kubernetes ``fsGroup``, or ``chgrp`` on a host folder) is then all it takes, whatever UIDs the
    two run as. That is done only where we may (root, or a member of that group); an explicit
    ``group`` that cannot be set is an error (SocketAccessError).
    """
    st = os.lstat(path)
    gid = group if group is not None else os.stat(os.path.dirname(path) or ".").st_gid
    if st.st_gid != gid:
        may = os.geteuid() == 0 or gid == os.getegid() or gid in os.getgroups()
        if may or group is not None:
            try:
                os.chown(path, -1, gid)
            except OSError as exc:
                if group is not None:
                    raise SocketAccessError("cannot give %s to group %d (--socket-group): %s"
                                            % (path, gid, exc)) from None
                log.warning("could not give %s its folder's group %d: %s", path, gid, exc)
    os.chmod(path, mode)


def claim_socket(path: str) -> None:
    """Make ``path`` free to bind: remove a stale socket, refuse a live one or a non-socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUseError("%s exists and is not a socket; remove it or choose another --name" % path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise SocketInUseError("cannot tell whether %s is in use: %s" % (path, exc)) from None
    else:
        raise SocketInUseError(
            "%s is served by a live process; stop it first or choose another --name" % path
        )
    finally:
        probe.close()
    # Nothing listens: a leftover of a killed component. daprd would hang on it forever.
    try:
        os.unlink(path)
        log.info("removed stale socket %s", path)
    except FileNotFoundError:
        pass


def remove_socket(path: str, inode: Optional[int]) -> None:
    """Unlink ``path`` unless it is now another process's socket (another inode)."""
    try:
        if inode is not None and os.lstat(path).st_ino != inode:
            return  # someone else's socket now
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove socket %s: %s", path, exc)


class _Instance:
    """One component instance (one YAML): its defaults and its own binding (clients, caches)."""

    __slots__ = ("name", "defaults", "binding", "initialised", "in_flight", "evicted")

    def __init__(self, name: str, defaults: Dict[str, str], binding: Any, initialised: bool) -> None:
        self.name = name
        self.defaults = defaults
        self.binding = binding
        self.initialised = initialised
        self.in_flight = 0  # calls running on the binding: an evicted instance closes after them
        self.evicted = False


class Component:
    """The state behind either server: component instances and their bindings, and the request
    rules. Runs on one asyncio event loop (the server's)."""

    def __init__(
        self, *, implementation: Optional[str] = None, max_clients: int = 64,
        max_instances: int = DEFAULT_MAX_INSTANCES,
    ) -> None:
        if max_instances < 1:
            raise ValueError("max_instances must be at least 1, not %r" % (max_instances,))
        self.implementation = implementation
        self.max_clients = max_clients
        self.max_instances = max_instances
        self._instances: "OrderedDict[str, _Instance]" = OrderedDict()  # least recently used first
        self._closing: Set["asyncio.Future[None]"] = set()
        # Told the name of an instance that was replaced (re-Init) or dropped: a server that
        # caches routes per instance (the compiled one) forgets them.
        self._watchers: List[Callable[[str], None]] = []
        self._evicted = 0  # instances dropped beyond max_instances, and ...
        self._unknown = 0  # ... served without an Init: for the rate of their log lines

    def watch_instances(self, callback: Callable[[str], None]) -> None:
        self._watchers.append(callback)

    def _new_binding(self) -> KitexOutputBinding:
        return KitexOutputBinding(max_clients=self.max_clients, implementation=self.implementation,
                                  defaults=COMPONENT_DEFAULTS)

    @property
    def instance_names(self) -> List[str]:
        return sorted(self._instances)

    def _install(self, inst: _Instance) -> None:
        old = self._instances.pop(inst.name, None)
        self._instances[inst.name] = inst
        if old is not None:
            self._retire(old)
        while len(self._instances) > self.max_instances:
            _, victim = self._instances.popitem(last=False)
            self._evicted += 1
            if victim.initialised or _now_and_then(self._evicted):  # (a YAML's defaults: always)
                log.warning(
                    "more than %d component instances (x-component-instance names): dropping the "
                    "least recently used, %s%s (%d dropped so far); raise --max-instances if daprd "
                    "really has this many YAMLs", self.max_instances, quoted(victim.name),
                    " and its YAML defaults" if victim.initialised else "", self._evicted,
                )
            self._retire(victim)

    def _retire(self, inst: _Instance) -> None:
        # Calls still running on it finish first (the last one closes it, see invoke()).
        inst.evicted = True
        for watcher in self._watchers:
            watcher(inst.name)
        if inst.in_flight == 0:
            self._close_later(inst)

    def instance_idle(self, inst: _Instance) -> None:
        """The last call on a dropped instance ended (a server that counts ``in_flight`` itself)."""
        self._close_later(inst)

    def _close_later(self, inst: _Instance) -> None:
        task = asyncio.ensure_future(self._close_instance(inst))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_instance(inst: _Instance) -> None:
        try:
            await inst.binding.close()
        except Exception:  # noqa: BLE001 - a close failure is only worth a log line
            log.exception("closing instance %s", quoted(inst.name))

    async def init(self, name: str, properties: Mapping[str, str]) -> None:
        """daprd's Init for instance ``name``: validate and install its defaults (a re-Init, e.g.
        after a component hot reload, replaces the instance and closes the old one's clients)."""
        binding = self._new_binding()
        try:
            await binding.init(dict(properties))
        except BaseException:
            await binding.close()
            raise
        self._install(_Instance(name, dict(properties), binding, True))
        log.info(
            "instance %s initialised (defaults: %s)", quoted(name),
            loggable(", ".join(sorted(properties)) or "none", _TEXT_LIMIT),
        )

    async def init_status(self, name: str, properties: Mapping[str, str]) -> Optional[Tuple[str, str]]:
        """:meth:`init` for a server: None, or the (code, text) status to answer with."""
        try:
            await self.init(name, properties)
        except KitexError as exc:
            code, text = status_of(exc)
            log.warning("instance %s: Init refused: %s", quoted(name), loggable(text, _TEXT_LIMIT))
            return code, text
        return None

    def instance(self, name: str) -> _Instance:
        inst = self._instances.get(name)
        if inst is not None:
            self._instances.move_to_end(name)
            return inst
        # daprd inits each instance once, when it starts; an unknown name means this component
        # restarted under a running daprd. Serve it (per-request metadata suffices, as with
        # the Go binding) but say that the YAML's defaults are gone until daprd restarts.
        inst = _Instance(name, {}, self._new_binding(), False)
        self._install(inst)
        self._unknown += 1
        if _now_and_then(self._unknown):  # (distinct names from a flood: not a line each)
            log.warning(
                "instance %s was never initialised by this process (component restarted while "
                "daprd kept running?): serving it without its YAML defaults; restart daprd to "
                "restore them (%d such instances so far)", quoted(name), self._unknown,
            )
        return inst

    def operations(self, name: str) -> List[str]:
        return list(self.instance(name).binding.operations())

    async def invoke(
        self, name: str, operation: str, data: bytes, metadata: Dict[str, str],
        deadline: Optional[float] = None,
    ) -> Any:
        """One call for instance ``name``; ``deadline``: seconds daprd still waits (its gRPC deadline,
        set by a Dapr resiliency timeout), which then also bounds the Kitex call."""
        inst = self.instance(name)
        # daprd sends a map's keys in any order (Go randomises map iteration, and protobuf-go
        # writes maps in that order); in one order, the binding's route cache finds its routes
        # (it is keyed by the order of the keys) instead of validating the metadata anew.
        metadata = dict(sorted(metadata.items()))
        encoding = metadata.get(DATA_ENCODING_KEY)
        if encoding is not None:
            data = _decode_data(encoding, data)
        metadata = _with_trace_headers(metadata, inst.defaults)
        inst.in_flight += 1
        try:
            # daprd's deadline goes down as a number: the binding makes it the call's timeout
            # when it is the shorter (and sends it as TTHeader RPCTimeout, BindingCore.deadline_call).
            return await inst.binding.invoke(InvokeRequest(operation, data, metadata), deadline)
        finally:
            inst.in_flight -= 1
            if inst.evicted and inst.in_flight == 0:
                self._close_later(inst)

    # -- the rules a server's compiled Invoke path asks once per key name or route ----------------
    # A route is an instance and the (key, value) pairs of the metadata keys its binding reads.
    # A call on a route that these rules vet does what invoke() would do with nothing added per
    # call but daprd's deadline and trace context (no base64 data to decode: the server checks
    # that per call; the deadline bounds the call through the binding's deadline_call, and the
    # trace context goes out as the call's own TTHeader headers, trace_headers, as invoke() sends
    # them), so the server may send it straight on the route's client.

    KEY_IGNORED, KEY_ROUTE, KEY_GENERAL, KEY_TRACE = range(4)

    def key_kind(self, name: str, key: str) -> int:
        """What metadata key ``key`` means to calls of instance ``name`` (KEY_*)."""
        if key == DATA_ENCODING_KEY:
            return self.KEY_GENERAL
        if key in TRACE_KEYS:
            return self.KEY_TRACE
        if self.instance(name).binding.reads_key(key):
            return self.KEY_ROUTE
        return self.KEY_IGNORED

    def route_call(self, name: str, metadata: Dict[str, str]) -> Optional[Tuple[_Instance, Any, Any, bool]]:
        """``(instance, call options, client, forwards trace context)`` for calls with this
        metadata's route keys, or None when they need invoke() (bad metadata: it reports it, as
        that call's status; so does any other failure here, which never reaches the connection)."""
        inst = self.instance(name)
        operations = inst.binding.operations()
        try:
            options, client = inst.binding._prepare(InvokeRequest(operations[0], b"", metadata))
        except Exception:  # noqa: BLE001 - invoke() gives the call its status and log line
            return None
        transport_name = metadata.get("transport") or inst.defaults.get("transport") or ""
        return inst, options, client, transport_name.strip().lower().startswith("ttheader")

    def failed(self, name: str, metadata: Mapping[str, str], exc: BaseException) -> Tuple[str, str]:
        """A failed Invoke: log it, and the (code, text) status to answer with."""
        code, text = status_of(exc)
        text = utf8_text(text)  # (a peer's bytes that are not UTF-8 could not go out as grpc-message)
        if len(text) > _STATUS_LIMIT:  # (an error quoting a whole 1 MB value would not fit a header)
            text = "%s... (%d characters)" % (text[:_STATUS_LIMIT], len(text))
        # One line per failure, every caller value in it quoted (no forged lines, bounded size).
        if isinstance(exc, KitexError):
            log.warning("instance %s: call to %s failed: %s", quoted(name), self.destination(name, metadata),
                        loggable(text, _TEXT_LIMIT))
        else:  # a bug, not a bad request: the call gets INTERNAL, the connection and others go on
            log.error("instance %s: call to %s crashed: %s", quoted(name), self.destination(name, metadata),
                      loggable(text, _TEXT_LIMIT))
            log.debug("the crash above", exc_info=exc)
        return code, text

    def abandoned(self, name: str, metadata: Mapping[str, str]) -> None:
        """daprd's deadline passed or it went away; the Kitex call ends by its timeout (which the
        deadline bounded)."""
        log.warning("instance %s: call to %s abandoned by daprd (deadline or cancel)",
                    quoted(name), self.destination(name, metadata))

    def destination(self, name: str, metadata: Mapping[str, str]) -> str:
        """``destService.methodName@hostPorts`` of a request, for log lines (each part loggable())."""
        inst = self._instances.get(name)
        defaults = inst.defaults if inst is not None else {}

        def get(key: str) -> str:
            value = metadata.get(key) or defaults.get(key)
            return "?" if not value else loggable(value)

        return "%s.%s@%s" % (get("destService"), get("methodName"), get("hostPorts"))

    async def close(self) -> None:
        if self._evicted > 10:  # (most were not logged one by one)
            log.info("%d component instances were dropped (--max-instances %d)", self._evicted,
                     self.max_instances)
        instances = list(self._instances.values())
        self._instances = OrderedDict()
        for inst in instances:
            await self._close_instance(inst)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _decode_data(encoding: str, data: bytes) -> bytes:
    if encoding != DATA_ENCODING_BASE64:
        raise MetadataError(
            "dapr binding kitex: metadata field %s: %s is not supported (use %r: data is a JSON "
            "string holding base64, as daprd's HTTP API delivers it)"
            % (DATA_ENCODING_KEY, quoted(encoding), DATA_ENCODING_BASE64)
        )
    # (imported here: only calls that opt in decode base64, and json with base64 are ~0.2 MiB of
    # the component's RSS)
    import base64
    import binascii
    import json

    try:
        text = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        text = None
    if not isinstance(text, str):
        raise MetadataError(
            "dapr binding kitex: %s=%s needs data to be a JSON string; got %r"
            % (DATA_ENCODING_KEY, DATA_ENCODING_BASE64, bytes(data[:32]))
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MetadataError(
            "dapr binding kitex: %s=%s: data is not valid base64 (%r)"
            % (DATA_ENCODING_KEY, DATA_ENCODING_BASE64, text[:32])
        ) from None


def trace_headers(metadata: Mapping[str, str]) -> Optional[Dict[str, str]]:
    """The TTHeader string headers that forward daprd's trace context (TRACE_KEYS, as transient
    metainfo ``RPC_TRANSIT_<key>``), or None: the one rule for both servers' paths. A key the
    caller set explicitly as ``header.RPC_TRANSIT_<key>`` is the caller's, and is not forwarded."""
    if "traceparent" not in metadata:
        return None
    out = None
    for key in TRACE_KEYS:
        value = metadata.get(key)
        if not value or (key == "traceparent" and value == UNTRACED):
            continue  # daprd sends an all-zero traceparent for untraced calls: not a context
        name = TRANSIENT_PREFIX + key
        if "header." + name in metadata:
            continue  # the caller set it explicitly
        if out is None:
            out = {}
        out[name] = value
    return out


def _with_trace_headers(metadata: Dict[str, str], defaults: Mapping[str, str]) -> Dict[str, str]:
    """The general path's metadata with daprd's trace context as ``header.*`` keys (trace_headers)."""
    if "traceparent" not in metadata:
        return metadata
    transport_name = metadata.get("transport") or defaults.get("transport") or ""
    if not transport_name.strip().lower().startswith("ttheader"):
        return metadata  # Framed/Buffered carry no headers
    headers = trace_headers(metadata)
    if not headers:
        return metadata
    out = dict(metadata)
    for name, value in headers.items():
        out["header." + name] = value
    return out


# A server, as run() drives it: start(path) listens on the socket (the file exists when it
# returns), stop(drain_seconds) refuses new calls and waits (bounded) for those in flight.
StartFn = Callable[[str], Awaitable[None]]
StopFn = Callable[[float], Awaitable[None]]


async def run(
    args: argparse.Namespace, component: Component, start: StartFn, stop: StopFn, server_name: str,
    implementation_name: str,
) -> int:
    """The process life of either server: claim the socket, serve until SIGTERM/SIGINT, then
    remove the socket, drain, close every Kitex connection; 0 after a clean stop."""
    path = socket_path(args.socket_folder, args.name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    claim_socket(path)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    bound_inode: Optional[int] = None
    try:
        # The socket is born with its mode (the umask), not chmod-ed after: a daprd or a test that
        # connects the moment it appears must not find it with the process's default mode.
        umask = os.umask(0o777 & ~args.socket_mode)
        try:
            await start(path)
        finally:
            os.umask(umask)
        set_socket_access(path, args.socket_mode, getattr(args, "socket_group", None))
        bound_inode = os.lstat(path).st_ino
        log.info(
            "kitex_fast component: serving bindings.%s on %s (pid %d, implementation %s, server %s)",
            args.name, path, os.getpid(), implementation_name, server_name,
        )
        await stopping.wait()
        log.info("stopping: draining calls in flight (up to %.0f s)", args.drain_timeout)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        remove_socket(path, bound_inode)  # first: nobody new should find a dying component
        await stop(args.drain_timeout)
        await component.close()
        remove_socket(path, bound_inode)  # the server may have re-created nothing; be sure
    log.info("stopped")
    return 0
