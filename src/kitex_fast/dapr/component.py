"""``kitex-fast component``: Dapr's ``bindings.kitex`` as a pluggable component.

daprd finds pluggable components by listing the Unix sockets in ``$DAPR_COMPONENTS_SOCKETS_FOLDER``
(default ``/tmp/dapr-components-sockets``) once at start, asking each for its services over gRPC
reflection v1alpha, and registering ``dapr.proto.components.v1.OutputBinding`` on ``NAME.sock`` as
``bindings.NAME`` (dapr pkg/components/pluggable/discovery.go; docs/dapr.md).

Two servers can serve that socket, both thin drivers of the same rules (:mod:`.core`: instances,
defaults, data decoding, trace keys, the deadline as a timeout, statuses, socket hygiene, signals):

- ``--server compiled``: libnghttp2 + a Cython gRPC layer (:mod:`._h2server`), when it was built;
- ``--server grpcio``: ``grpc.aio`` (this module), the fallback everywhere else.

The CLI (:func:`main`) picks one (compiled when present) and says which at start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any, Optional, Sequence

from .. import codec, transport
from .._argparse import ArgumentParser
from ..pool import ascii_int
from . import core, eventloop
from .proto import SERVICE_NAME
from .core import (
    DATA_ENCODING_KEY,
    DEFAULT_SOCKET_FOLDER,
    INSTANCE_HEADER,
    SOCKET_FOLDER_ENV,
    Component,
    SocketInUseError,
    claim_socket,
    socket_path,
)

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


def _instance_name(context: Any) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == INSTANCE_HEADER:
            return str(value)
    return ""


# The grpc-message bound of both servers (_h2server.MAX_STATUS_TEXT, status_text): at most this
# many bytes of UTF-8 of a status text, then how long it was. gRPC over HTTP/2 suggests clients
# limit trailers to 8 KiB (grpc/grpc doc/PROTOCOL-HTTP2.md), and percent-encoding may triple a text.
MAX_STATUS_TEXT = 1024


def _status_text(text: str) -> str:
    raw = text.encode("utf-8", "backslashreplace")  # (a lone surrogate would fail grpcio's encoding)
    if len(raw) <= MAX_STATUS_TEXT:
        return raw.decode("utf-8")
    return "%s... (cut: %d bytes)" % (raw[:MAX_STATUS_TEXT].decode("utf-8", "ignore"), len(raw))


def _make_servicer(component: Component) -> Any:
    import grpc

    from .proto import contract as pb

    class OutputBindingServicer:
        async def Init(self, request: Any, context: Any) -> Any:
            refused = await component.init_status(_instance_name(context), request.metadata.properties)
            if refused is not None:
                await context.abort(grpc.StatusCode[refused[0]], _status_text(refused[1]))
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
                component.abandoned(name, metadata)
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes a status, never a hang
                code, text = component.failed(name, metadata, exc)
                await context.abort(grpc.StatusCode[code], _status_text(text))
            return pb.InvokeResponse(
                data=response.data, metadata=response.metadata, content_type=response.content_type
            )

        async def Ping(self, request: Any, context: Any) -> Any:
            return pb.PingResponse()

    return OutputBindingServicer()


async def serve_grpcio(args: argparse.Namespace, component: Component) -> int:
    """Serve the socket with ``grpc.aio`` until SIGTERM/SIGINT (:func:`core.run`)."""
    import grpc
    from grpc_reflection.v1alpha import reflection

    from .proto.contract import add_output_binding_to_server

    # The compiled server's connection time bounds, in grpcio's channel arguments (grpc/grpc
    # include/grpc/impl/channel_arg_names.h: GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
    # GRPC_ARG_MAX_CONNECTION_IDLE_MS; the idle one also ends with GOAWAY).
    options = [("grpc.server_handshake_timeout_ms", int(_seconds(args, "handshake_timeout", 10.0) * 1000))]
    idle = _seconds(args, "idle_timeout", 300.0)
    if idle > 0:
        options.append(("grpc.max_connection_idle_ms", int(idle * 1000)))
    server = grpc.aio.server(options=options)
    add_output_binding_to_server(_make_servicer(component), server)
    # daprd discovers the service through reflection v1alpha, the version grpcio-reflection serves.
    reflection.enable_server_reflection((SERVICE_NAME, reflection.SERVICE_NAME), server)

    async def start(path: str) -> None:
        server.add_insecure_port("unix:" + path)
        await server.start()

    async def stop(drain: float) -> None:
        await server.stop(drain)

    return await core.run(args, component, start, stop, "grpcio", _implementation_name(args))


def _seconds(args: argparse.Namespace, name: str, default: float) -> float:
    value = getattr(args, name, None)
    return default if value is None else float(value)


async def serve(args: argparse.Namespace) -> int:
    """Run the component on the server ``args.server`` names until SIGTERM/SIGINT; 0 after a
    clean stop."""
    component = Component(implementation=args.implementation, max_clients=args.max_clients,
                          max_instances=args.max_instances)
    if getattr(args, "server", "grpcio") == "compiled":
        from . import h2server

        return await h2server.serve(args, component, _implementation_name(args))
    return await serve_grpcio(args, component)


def _loop_factory(args: argparse.Namespace) -> Any:
    """uvloop for the compiled server when it is installed (``kitex_fast[uvloop]``): its transports
    cost less per read and write than asyncio's. grpc.aio keeps asyncio's own loop, the one grpcio
    supports."""
    wanted, args.loop = args.loop, "asyncio"
    if args.server != "compiled" or sys.version_info < (3, 11) or wanted == "asyncio":
        return None
    try:
        factory = eventloop.import_uvloop()
    except ImportError as exc:
        if wanted == "uvloop":
            raise SystemExit("kitex-fast component: --loop uvloop: %s" % exc) from None
        if exc.name != "uvloop":  # installed, but not loadable here: say why the loop is asyncio's
            log.warning("running on asyncio's loop: %s", exc)
        return None
    args.loop = "uvloop"
    return factory


def _run(main: Any, loop_factory: Any) -> int:
    if loop_factory is None:
        return int(asyncio.run(main))
    with asyncio.Runner(loop_factory=loop_factory) as runner:  # type: ignore[attr-defined]
        return int(runner.run(main))


def _implementation_name(args: argparse.Namespace) -> str:
    return str(args.implementation or ("c" if codec.USING_EXTENSION and transport.USING_EXTENSION else "py"))


def _mode(text: str) -> int:
    # ASCII octal digits only, as chmod(1) takes them: int(text, 8) alone also reads "٦٦٠" or
    # "６６０" (other scripts' digits), "+660", " 660", "6_60" and "0o660".
    if not text or not set(text) <= set("01234567"):
        raise argparse.ArgumentTypeError("%r is not an octal file mode (e.g. 0660)" % text)
    value = int(text, 8)
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError("%r is not a file mode" % text)
    return value


def _group(text: str) -> int:
    """A group name or a numeric GID (``--socket-group``)."""
    from ..errors import quoted  # (here: the option's own code stays in one place)

    if text.isascii() and text.isdigit():
        gid = ascii_int(text)  # (None past 19 digits, where int() would raise past 4,300)
        if gid is None or gid >= 0xFFFFFFFF:  # (gid_t is 32 bits, and (gid_t)-1 means "no change")
            raise argparse.ArgumentTypeError("%s is not a GID" % quoted(text))
        return gid
    try:
        import grp

        return int(grp.getgrnam(text).gr_gid)
    except (ImportError, KeyError):
        raise argparse.ArgumentTypeError("%s is not a known group name; give a numeric GID" % quoted(text)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="kitex-fast component",
        description="Serve Dapr's bindings.<name> (Kitex output binding) as a pluggable component "
        "on $%s/<name>.sock (or $%s, as the Kubernetes sidecar injector sets it; default folder "
        "%s). Start it before daprd." % (SOCKET_FOLDER_ENV, core.SOCKET_FOLDER_ENV_INJECTOR, DEFAULT_SOCKET_FOLDER),
    )
    parser.add_argument("--name", default="kitex",
                        help="socket file name without .sock; daprd registers it as bindings.NAME (default kitex)")
    parser.add_argument("--socket-folder", default=None,
                        help="folder of the socket (default $%s, else $%s, else %s)"
                        % (SOCKET_FOLDER_ENV, core.SOCKET_FOLDER_ENV_INJECTOR, DEFAULT_SOCKET_FOLDER))
    parser.add_argument("--socket-mode", type=_mode, default=0o660,
                        help="socket file mode, octal (default 0660: daprd connects as the owner or "
                        "through the socket's group)")
    parser.add_argument("--socket-group", type=_group, default=None,
                        help="group (name or GID) of the socket file, for a daprd that runs as another "
                        "UID in that group (default: the socket folder's group, where this process may "
                        "set it; Kubernetes: the pod's fsGroup)")
    parser.add_argument("--implementation", choices=["c", "py"], default=None,
                        help="compiled core or pure-Python twin (default: compiled when installed)")
    parser.add_argument("--max-clients", type=int, default=64,
                        help="distinct destinations per instance that keep a client (LRU beyond)")
    parser.add_argument("--max-instances", type=int, default=core.DEFAULT_MAX_INSTANCES,
                        help="component instances (x-component-instance names) kept at once; the "
                        "least recently used is dropped with a warning beyond (default %d)"
                        % core.DEFAULT_MAX_INSTANCES)
    parser.add_argument("--server", choices=["compiled", "grpcio"], default=None,
                        help="the gRPC server: compiled (libnghttp2, when it was built) or grpcio "
                        "(default: compiled when present, else grpcio)")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                        help="the compiled server's event loop (default auto: uvloop when installed; "
                        "the grpcio server always runs on asyncio's)")
    parser.add_argument("--max-connections", type=int, default=core.DEFAULT_MAX_SOCKET_CONNECTIONS,
                        help="connections the compiled server keeps open on its socket at once; more "
                        "are closed at once with a warning (default %d; daprd opens one)"
                        % core.DEFAULT_MAX_SOCKET_CONNECTIONS)
    parser.add_argument("--handshake-timeout", type=float, default=10.0,
                        help="seconds a new connection has to send the HTTP/2 preface and SETTINGS "
                        "before it is closed (default 10; grpc-go allows 120)")
    parser.add_argument("--idle-timeout", type=float, default=300.0,
                        help="seconds a connection may stay without a call before it gets GOAWAY and "
                        "is closed; its client reconnects on its next call (default 300; 0: never)")
    parser.add_argument("--max-request-buffer", type=int, default=64 * 1024 * 1024,
                        help="request bytes the compiled server buffers at once across all its "
                        "connections; a call past it gets RESOURCE_EXHAUSTED (default 64 MiB)")
    # tests only: also serve plaintext HTTP/2 on a TCP address (h2spec), compiled server only
    parser.add_argument("--listen-tcp", default=None, help=argparse.SUPPRESS)
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
    if args.max_instances < 1:
        print("kitex-fast component: --max-instances must be at least 1", file=sys.stderr)
        return 2
    if args.max_connections < 1:
        print("kitex-fast component: --max-connections must be at least 1", file=sys.stderr)
        return 2
    if not (0 < args.handshake_timeout < 1e6 and 0 <= args.idle_timeout < 1e6) or args.max_request_buffer < 1:
        print("kitex-fast component: --handshake-timeout must be above 0, --idle-timeout at least 0 "
              "(both under 10^6 s) and --max-request-buffer at least 1", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from . import h2server

    why_not = h2server.unavailable()
    if args.server == "compiled" and why_not:
        print("kitex-fast component: --server compiled: %s" % why_not, file=sys.stderr)
        return 2
    if args.server is None:
        args.server = "grpcio" if why_not else "compiled"
        if why_not:
            log.info("the compiled server is not available (%s): serving with grpcio", why_not)
    if args.listen_tcp and args.server != "compiled":
        print("kitex-fast component: --listen-tcp needs the compiled server", file=sys.stderr)
        return 2
    if args.server == "grpcio":
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
        return _run(serve(args), _loop_factory(args))
    except SocketInUseError as exc:
        log.error("%s", exc)
        return 1
