"""``kitex-fast component``: Dapr's ``bindings.kitex`` as a pluggable component.

daprd finds pluggable components by listing the Unix sockets in ``$DAPR_COMPONENTS_SOCKETS_FOLDER``
(default ``/tmp/dapr-components-sockets``) once at start, asking each for its services over gRPC
reflection v1alpha, and registering ``dapr.proto.components.v1.OutputBinding`` on ``NAME.sock`` as
``bindings.NAME`` (dapr pkg/components/pluggable/discovery.go; ../shared/spec/dapr.md §4, §5.4).
This module serves that service on ``NAME.sock`` with ``grpc.aio``:

- one binding per component instance (daprd's ``x-component-instance`` header = the YAML's
  ``metadata.name``): its ``Init`` metadata are that instance's validated defaults;
- ``Invoke`` runs on the asyncio driver (:class:`kitex_fast.aio.AsyncKitexOutputBinding`), many
  calls in flight per Kitex connection, so calls never wait for one another;
- failures become gRPC statuses (:mod:`.status`) and a warning naming the destination;
- socket hygiene: a stale socket file hangs daprd's discovery forever, so it is removed before
  binding and on every exit path; a live owner makes the start fail; mode 0660 by default;
- SIGTERM/SIGINT: remove the socket, stop accepting, drain calls in flight (bounded), close every
  Kitex connection, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import errno
import json
import logging
import os
import signal
import socket
import stat
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .. import codec, transport
from ..binding import InvokeRequest
from ..errors import KitexError, MetadataError
from ..metadata import DEFAULTS, parse_duration
from ..aio import AsyncKitexOutputBinding
from .status import status_of

__all__ = [
    "main",
    "build_parser",
    "serve",
    "Component",
    "socket_path",
    "claim_socket",
    "SocketInUseError",
    "INSTANCE_HEADER",
    "DATA_ENCODING_KEY",
    "SERVICE_NAME",
]

log = logging.getLogger(__name__.rpartition(".")[0])  # the subpackage, wherever it is vendored

SERVICE_NAME = "dapr.proto.components.v1.OutputBinding"
DEFAULT_SOCKET_FOLDER = "/tmp/dapr-components-sockets"
SOCKET_FOLDER_ENV = "DAPR_COMPONENTS_SOCKETS_FOLDER"  # what daprd reads (not the Go SDK's name)
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
TRANSIENT_PREFIX = "RPC_TRANSIT_"
_UNTRACED = "00-00000000000000000000000000000000-0000000000000000-00"


class SocketInUseError(RuntimeError):
    """Another live process serves the socket (or the path is not a socket we may replace)."""


def socket_path(folder: Optional[str], name: str) -> str:
    folder = folder or os.environ.get(SOCKET_FOLDER_ENV) or DEFAULT_SOCKET_FOLDER
    return os.path.join(folder, name + ".sock")


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


class _Instance:
    """One component instance (one YAML): its defaults and its own binding (clients, caches)."""

    __slots__ = ("name", "defaults", "binding", "initialised")

    def __init__(self, name: str, defaults: Dict[str, str], binding: Any, initialised: bool) -> None:
        self.name = name
        self.defaults = defaults
        self.binding = binding
        self.initialised = initialised


class Component:
    """The state behind the gRPC service: component instances and their bindings."""

    def __init__(
        self, *, implementation: Optional[str] = None, max_clients: int = 64
    ) -> None:
        self.implementation = implementation
        self.max_clients = max_clients
        self._instances: Dict[str, _Instance] = {}

    def _new_binding(self) -> AsyncKitexOutputBinding:
        return AsyncKitexOutputBinding(max_clients=self.max_clients, implementation=self.implementation)

    @property
    def instance_names(self) -> List[str]:
        return sorted(self._instances)

    async def init(self, name: str, properties: Mapping[str, str]) -> None:
        """daprd's Init for instance ``name``: validate and install its defaults (a re-Init, e.g.
        after a component hot reload, replaces the instance and closes the old one's clients)."""
        binding = self._new_binding()
        try:
            await binding.init(dict(properties))
        except BaseException:
            await binding.close()
            raise
        old = self._instances.get(name)
        self._instances[name] = _Instance(name, dict(properties), binding, True)
        log.info(
            "instance %r initialised (defaults: %s)", name,
            ", ".join(sorted(properties)) or "none",
        )
        if old is not None:
            await old.binding.close()

    def instance(self, name: str) -> _Instance:
        inst = self._instances.get(name)
        if inst is None:
            # daprd inits each instance once, when it starts; an unknown name means this component
            # restarted under a running daprd. Serve it (per-request metadata suffices, as with
            # the Go binding) but say that the YAML's defaults are gone until daprd restarts.
            inst = _Instance(name, {}, self._new_binding(), False)
            self._instances[name] = inst
            log.warning(
                "instance %r was never initialised by this process (component restarted while "
                "daprd kept running?): serving it without its YAML defaults; restart daprd to "
                "restore them", name,
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
        encoding = metadata.get(DATA_ENCODING_KEY)
        if encoding is not None:
            data = _decode_data(encoding, data)
        metadata = _with_trace_headers(metadata, inst.defaults)
        if deadline is not None:
            metadata = _within_deadline(metadata, inst.defaults, deadline)
        return await inst.binding.invoke(InvokeRequest(operation, data, metadata))

    def destination(self, name: str, metadata: Mapping[str, str]) -> str:
        """``destService.methodName@hostPorts`` of a request, for log lines."""
        inst = self._instances.get(name)
        defaults = inst.defaults if inst is not None else {}

        def get(key: str) -> str:
            return str(metadata.get(key) or defaults.get(key) or "?")

        return "%s.%s@%s" % (get("destService"), get("methodName"), get("hostPorts"))

    async def close(self) -> None:
        instances, self._instances = list(self._instances.values()), {}
        for inst in instances:
            try:
                await inst.binding.close()
            except Exception:  # noqa: BLE001 - close every other one anyway
                log.exception("closing instance %r", inst.name)


def _decode_data(encoding: str, data: bytes) -> bytes:
    if encoding != DATA_ENCODING_BASE64:
        raise MetadataError(
            "dapr binding kitex: metadata field %s: %r is not supported (use %r: data is a JSON "
            "string holding base64, as daprd's HTTP API delivers it)"
            % (DATA_ENCODING_KEY, encoding, DATA_ENCODING_BASE64)
        )
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


def _with_trace_headers(metadata: Dict[str, str], defaults: Mapping[str, str]) -> Dict[str, str]:
    """Forward daprd's trace context as TTHeader transient metainfo (see TRACE_KEYS)."""
    if "traceparent" not in metadata:
        return metadata
    transport_name = metadata.get("transport") or defaults.get("transport") or ""
    if not transport_name.strip().lower().startswith("ttheader"):
        return metadata  # Framed/Buffered carry no headers
    out = None
    for key in TRACE_KEYS:
        value = metadata.get(key)
        if not value or (key == "traceparent" and value == _UNTRACED):
            continue  # daprd sends an all-zero traceparent for untraced calls: not a context
        header = "header." + TRANSIENT_PREFIX + key
        if header in metadata:
            continue  # the caller set it explicitly
        if out is None:
            out = dict(metadata)
        out[header] = value
    return metadata if out is None else out


def _within_deadline(metadata: Dict[str, str], defaults: Mapping[str, str], seconds: float) -> Dict[str, str]:
    """Cap ``rpcTimeout`` at daprd's remaining deadline. Without it, a call daprd gave up on would
    keep running (and holding its connection) until the binding's own rpcTimeout."""
    configured = metadata.get("rpcTimeout") or defaults.get("rpcTimeout") or DEFAULTS["rpcTimeout"]
    try:
        current = parse_duration("rpcTimeout", configured)
    except MetadataError:
        return metadata  # let the binding report the bad value
    if current is not None and current <= seconds:
        return metadata
    out = dict(metadata)
    out["rpcTimeout"] = "%dms" % max(1, int(seconds * 1000))
    return out


def _instance_name(context: Any) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == INSTANCE_HEADER:
            return str(value)
    return ""


def _make_servicer(component: Component) -> Any:
    import grpc

    from .proto import contract as pb

    class OutputBindingServicer:
        async def Init(self, request: Any, context: Any) -> Any:
            name = _instance_name(context)
            try:
                await component.init(name, dict(request.metadata.properties))
            except KitexError as exc:
                code, text = status_of(exc)
                log.warning("instance %r: Init refused: %s", name, text)
                await context.abort(grpc.StatusCode[code], text)
            return pb.OutputBindingInitResponse()

        async def ListOperations(self, request: Any, context: Any) -> Any:
            return pb.ListOperationsResponse(operations=component.operations(_instance_name(context)))

        async def Invoke(self, request: Any, context: Any) -> Any:
            name = _instance_name(context)
            metadata = dict(request.metadata)
            try:
                response = await component.invoke(
                    name, request.operation, request.data, metadata, context.time_remaining()
                )
            except asyncio.CancelledError:
                # daprd's deadline passed or it went away; the Kitex call ends by its (capped) timeout
                log.warning("instance %r: call to %s abandoned by daprd (deadline or cancel)",
                            name, component.destination(name, metadata))
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes a status, never a hang
                code, text = status_of(exc)
                if isinstance(exc, KitexError):
                    log.warning("instance %r: call to %s failed: %s", name, component.destination(name, metadata), text)
                else:
                    log.exception("instance %r: call to %s crashed", name, component.destination(name, metadata))
                await context.abort(grpc.StatusCode[code], text)
            return pb.InvokeResponse(
                data=response.data, metadata=response.metadata, content_type=response.content_type
            )

        async def Ping(self, request: Any, context: Any) -> Any:
            return pb.PingResponse()

    return OutputBindingServicer()


async def serve(args: argparse.Namespace) -> int:
    """Run the component until SIGTERM/SIGINT; 0 after a clean stop."""
    import grpc
    from grpc_reflection.v1alpha import reflection

    from .proto.contract import add_output_binding_to_server

    path = socket_path(args.socket_folder, args.name)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    claim_socket(path)

    component = Component(implementation=args.implementation, max_clients=args.max_clients)
    server = grpc.aio.server()
    add_output_binding_to_server(_make_servicer(component), server)
    # daprd discovers the service through reflection v1alpha, the version grpcio-reflection serves.
    reflection.enable_server_reflection((SERVICE_NAME, reflection.SERVICE_NAME), server)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound_inode: Optional[int] = None
    try:
        server.add_insecure_port("unix:" + path)
        await server.start()
        os.chmod(path, args.socket_mode)
        bound_inode = os.lstat(path).st_ino
        impl = args.implementation or ("c" if codec.USING_EXTENSION and transport.USING_EXTENSION else "py")
        log.info(
            "kitex_fast component: serving bindings.%s on %s (pid %d, implementation %s)",
            args.name, path, os.getpid(), impl,
        )
        await stop.wait()
        log.info("stopping: draining calls in flight (up to %.0f s)", args.drain_timeout)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        _remove_socket(path, bound_inode)  # first: nobody new should find a dying component
        await server.stop(args.drain_timeout)
        await component.close()
        _remove_socket(path, bound_inode)  # grpc may have re-created nothing; be sure
    log.info("stopped")
    return 0


def _remove_socket(path: str, inode: Optional[int]) -> None:
    try:
        if inode is not None and os.lstat(path).st_ino != inode:
            return  # someone else's socket now
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove socket %s: %s", path, exc)


def _mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an octal file mode (e.g. 0660)" % text) from None
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError("%r is not a file mode" % text)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kitex-fast component",
        description="Serve Dapr's bindings.<name> (Kitex output binding) as a pluggable component "
        "on $%s/<name>.sock (default folder %s). Start it before daprd."
        % (SOCKET_FOLDER_ENV, DEFAULT_SOCKET_FOLDER),
    )
    parser.add_argument("--name", default="kitex",
                        help="socket file name without .sock; daprd registers it as bindings.NAME (default kitex)")
    parser.add_argument("--socket-folder", default=None,
                        help="folder of the socket (default $%s or %s)" % (SOCKET_FOLDER_ENV, DEFAULT_SOCKET_FOLDER))
    parser.add_argument("--socket-mode", type=_mode, default=0o660, help="socket file mode, octal (default 0660)")
    parser.add_argument("--implementation", choices=["c", "py"], default=None,
                        help="compiled core or pure-Python twin (default: compiled when installed)")
    parser.add_argument("--max-clients", type=int, default=64,
                        help="distinct destinations per instance that keep a client (LRU beyond)")
    parser.add_argument("--drain-timeout", type=float, default=10.0,
                        help="seconds to let calls in flight finish on SIGTERM/SIGINT (default 10)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"], help="default info")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_clients < 1:
        print("kitex-fast component: --max-clients must be at least 1", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import grpc  # noqa: F401
        import grpc_reflection  # noqa: F401
        import google.protobuf  # noqa: F401
    except ImportError as exc:
        print(
            "kitex-fast component needs grpcio, grpcio-reflection and protobuf (%s): "
            'pip install "kitex_fast[dapr]"' % exc,
            file=sys.stderr,
        )
        return 2
    if args.implementation is not None:
        # Fail now, not at the first call, when the compiled core was asked for but is missing.
        try:
            codec.implementation(args.implementation)
            transport.implementation(args.implementation)
        except ImportError as exc:
            print("kitex-fast component: %s" % exc, file=sys.stderr)
            return 2
    try:
        return asyncio.run(serve(args))
    except SocketInUseError as exc:
        log.error("%s", exc)
        return 1
