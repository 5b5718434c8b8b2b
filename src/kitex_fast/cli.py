"""The command line: ``kitex-fast`` (or ``python -m kitex_fast``).

Commands: ``call`` (a Kitex call from JSON and an IDL, or raw bytes; metainfo; repeated and
concurrent calls with a latency summary), ``serve`` (the Kitex-compatible test server from the
shell), ``demo`` (one call through the Dapr binding against the embedded server). Exit status: 0
success, 1 the call failed, 2 usage (bad options or input).

Commands that live in their own module plug into :data:`PLUGINS`.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from . import __version__, codec, transport
from ._argparse import ArgumentParser, RawDescriptionHelpFormatter
from .binding import InvokeRequest, KitexOutputBinding
from .codec import PERSISTENT_PREFIX, TRANSIENT_PREFIX
from .errors import ApplicationError, BizStatusError, KitexError, MetadataError, quoted
from .metadata import INT_HEADER_PREFIX, STR_HEADER_PREFIX, parse_options
from .pool import ascii_int

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# (base64 and the test server's module are imported where used: ``kitex-fast component``, the
# container's entry point, runs this module's main and nothing else of it, and they are 0.3 MiB
# of that process's RSS.)

# Commands in their own module: name -> (module, one-line help). The module has
# ``main(argv: List[str]) -> int`` and parses its own options; argv is what follows the name.
PLUGINS: Dict[str, Tuple[str, str]] = {
    "component": (".dapr", "serve Dapr's bindings.kitex as a pluggable component (kitex-fast component --help)"),
    "vendor": (".vendoring", "copy kitex_fast into another package's tree (kitex-fast vendor --help)"),
}


_PLUGINS_WITH_IMPLEMENTATION = frozenset({"component"})


class UsageError(Exception):
    """Bad options or input: exit status 2."""


def _hex(data: bytes) -> str:
    return bytes(data).hex(" ")


def _count(text: str) -> int:
    """An argparse type: a count in ASCII digits (``int`` would also take ``+5``, `` 5``, ``٣``)."""
    number = ascii_int(text)
    if number is None:
        raise argparse.ArgumentTypeError("%s is not a whole number" % quoted(text))
    return number


def _pairs(items: Optional[Sequence[str]], flag: str) -> List[Tuple[str, str]]:
    pairs = []
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError("%s takes KEY=VALUE, got %s" % (flag, quoted(item)))
        pairs.append((key, value))
    return pairs


# -- demo -----------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from .testing import KitexTestServer, echo_handler, echo_request, read_echo_reply

    impl = args.implementation
    with KitexTestServer({"echo": echo_handler}, service="echo", implementation=impl) as server:
        request = echo_request(args.message, implementation=impl)
        metadata = {
            "hostPorts": server.address,
            "destService": "echo",
            "methodName": "echo",
            "version": "v1",
            "transport": args.transport,
        }
        live = "c (compiled)" if codec.USING_EXTENSION and transport.USING_EXTENSION else "py (pure Python)"
        print("kitex_fast demo: embedded Kitex-compatible echo server at %s" % server.address)
        print("implementation : %s" % (impl or live))
        print("metadata       : %s" % metadata)
        print("request  (%3d B): %s" % (len(request), _hex(request)))
        with KitexOutputBinding(implementation=impl) as binding:
            response = binding.invoke(InvokeRequest("get", request, metadata))
        print("response (%3d B): %s" % (len(response.data), _hex(response.data)))
        print("response meta  : %s" % response.metadata)
        print("echo(%r) -> %r" % (args.message, read_echo_reply(response.data, implementation=impl)))
    return EXIT_OK


# -- serve ----------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from .testing import ServeOptionError, serve

    try:
        return serve(args)
    except ServeOptionError as exc:
        raise UsageError(str(exc)) from None


# -- call -----------------------------------------------------------------------------------------

# Binding metadata keys that have their own flag (--rpc-timeout, ...): every one but the required
# keys (own flags) and version (no effect on the wire; --meta version=... sets it).
_METADATA_FLAGS = (
    ("connectTimeout", "connect timeout: Go duration (500ms, 2s) or milliseconds; 0 = none (default 1s here: a shell on a busy machine is not a hot path; the binding's default is Kitex's 50ms)"),
    ("rpcTimeout", "timeout of the whole call (default 30s; 0 = none); sent as TTHeader RPCTimeout"),
    ("maxFrameSize", "refuse replies larger than this (default 64MiB; 1KiB-2GiB)"),
    ("idlService", "TTHeader isn: the service on a multi-service server"),
    ("fromService", "TTHeader FromService (int key 3)"),
    ("logID", "TTHeader LogID (int key 2)"),
    ("poolSize", "idle connections kept per endpoint (default: as many as in use, up to maxConnections)"),
    ("maxIdleTime", "close idle connections older than this (default 60s)"),
)


def _flag_name(key: str) -> str:
    out = "".join("-" + c.lower() if c.isupper() else c for c in key)
    return "--" + out.replace("i-d", "id")


# Metainfo over TTHeader, as Kitex's metainfo handlers write it (kitex pkg/transmeta/metainfo.go
# with gopkg cloud/metainfo): a transient value K goes out as the string key RPC_TRANSIT_K, a
# persistent one as RPC_PERSIST_K; backward values come back under their plain names, and Kitex's
# client takes every string key of the reply as one. (The prefixes: kitex_fast.codec.)


def _call_metadata(args: argparse.Namespace, method_name: str, dest_service: str) -> Dict[str, str]:
    metainfo = _pairs(args.transient, "--transient") + _pairs(args.persistent, "--persistent")
    transport_name = args.transport
    if transport_name is None:
        # everything that travels in TTHeader headers picks TTHeader (Framed has no headers)
        header_flags = (args.header, args.int_header, args.idlService, args.fromService, args.logID)
        transport_name = "ttheader" if metainfo or any(header_flags) else "framed"
    if (args.host_ports is None) == (args.registry is None):
        raise UsageError("give exactly one of --host-ports and --registry")
    if args.registry_prefix is not None and args.registry is None:
        raise UsageError("--registry-prefix goes with --registry")
    where = {"hostPorts": args.host_ports} if args.registry is None else {"registry": args.registry}
    if args.registry_prefix is not None:
        where["registryPrefix"] = args.registry_prefix
    metadata: Dict[str, str] = {
        **where,
        "destService": dest_service,
        "methodName": method_name,
        "version": "v1",
        "transport": transport_name,
    }
    metadata["connectTimeout"] = "1s"
    for key, _ in _METADATA_FLAGS:
        value = getattr(args, key)
        if value is not None:
            metadata[key] = value
    for key, value in _pairs(args.transient, "--transient"):
        metadata[STR_HEADER_PREFIX + TRANSIENT_PREFIX + key] = value
    for key, value in _pairs(args.persistent, "--persistent"):
        metadata[STR_HEADER_PREFIX + PERSISTENT_PREFIX + key] = value
    for key, value in _pairs(args.header, "--header"):
        metadata[STR_HEADER_PREFIX + key] = value
    for key, value in _pairs(args.int_header, "--int-header"):
        metadata[INT_HEADER_PREFIX + key] = value
    for key, value in _pairs(args.meta, "--meta"):
        metadata[key] = value
    return metadata


def _read_input(args: argparse.Namespace, stdin: TextIO) -> Tuple[str, Any]:
    """``("json", text)`` or ``("raw", bytes)`` from --data / --data-hex / --data-base64 / --file / stdin."""
    given = [f for f in ("data", "data_hex", "data_base64", "file") if getattr(args, f) is not None]
    if len(given) > 1:
        raise UsageError("give one of --data, --data-hex, --data-base64, --file (got %s)" % ", ".join("--" + g.replace("_", "-") for g in given))
    if args.data_hex is not None:
        if args.idl:
            raise UsageError("--data-hex sends a raw message: drop --idl, or pass JSON with --data")
        try:
            return "raw", bytes.fromhex(args.data_hex)
        except ValueError as exc:
            raise UsageError("--data-hex is not hex: %s" % exc) from None
    if args.data_base64 is not None:
        if args.idl:
            raise UsageError("--data-base64 sends a raw message: drop --idl, or pass JSON with --data")
        import base64
        import binascii

        try:
            return "raw", base64.b64decode(args.data_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise UsageError("--data-base64 is not base64: %s" % exc) from None
    if args.data is not None:
        if not args.idl:
            raise UsageError("--data is JSON and needs --idl FILE; raw messages go in --data-hex, --data-base64 or --file")
        return "json", args.data
    if args.file is not None:
        try:
            with (sys.stdin.buffer if args.file == "-" else open(args.file, "rb")) as f:
                content = f.read()
        except OSError as exc:
            raise UsageError("--file %s: %s" % (args.file, exc.strerror or exc)) from None
        if args.idl:
            try:
                return "json", content.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UsageError("--file %s is not UTF-8 JSON: %s" % (args.file, exc)) from None
        return "raw", content
    if args.idl:
        if stdin.isatty():
            return "json", ""  # no arguments: an empty request (Kitex's defaults)
        return "json", stdin.read()
    raise UsageError("nothing to send: give --idl FILE with --data JSON (or JSON on stdin), or a raw CALL message with --data-hex, --data-base64 or --file")


class _Call:
    """What one invocation of ``call`` sends, and how it shows the outcome."""

    def __init__(self, args: argparse.Namespace, stdin: TextIO) -> None:
        self.args = args
        kind, payload = _read_input(args, stdin)
        self.method = None
        service_name, sep, method_name = args.method.rpartition("/")
        if kind == "json":
            from .idl import load_service, parse_json

            service, self.method = load_service(args.idl, args.method)
            if self.method.oneway:
                raise UsageError("%s/%s is oneway: a Kitex server sends no reply to wait for" % (service.name, self.method.name))
            value = parse_json(payload, "--data" if args.data is not None else ("--file " + args.file if args.file else "stdin")) if payload.strip() else None
            self.message = self.method.encode_call(value)
            dest = args.dest_service or service.name
            method_name = self.method.name
        else:
            self.message = payload
            dest = args.dest_service or (service_name if sep else "")
            if not dest:
                raise UsageError("raw calls need --dest-service (or --method Service/method)")
        if not method_name:
            raise UsageError("--method names no method: %s" % quoted(args.method))
        self.metadata = _call_metadata(args, method_name, dest)

    def show_reply(self, data: bytes, metadata: Dict[str, str], out: TextIO) -> None:
        if self.method is not None:
            from .idl import dumps

            outcome = self.method.decode_reply(data)
            out.write(dumps(outcome.as_json(), pretty=self.pretty(out)) + "\n")
            if outcome.exception is not None:
                raise _DeclaredException(outcome.exception)
        elif self.args.output == "raw":
            out.flush()
            binary_out: Any = getattr(out, "buffer", out)
            binary_out.write(data)
            binary_out.flush()
        elif self.args.output == "base64":
            import base64

            out.write(base64.b64encode(data).decode("ascii") + "\n")
        else:
            out.write(data.hex() + "\n")
        self.show_metadata(metadata)

    def pretty(self, out: TextIO) -> bool:
        if self.args.pretty is not None:
            return bool(self.args.pretty)
        return out.isatty()

    def show_metadata(self, metadata: Dict[str, str]) -> None:
        backward = {k[len(STR_HEADER_PREFIX):]: v for k, v in sorted(metadata.items()) if k.startswith(STR_HEADER_PREFIX)}
        if backward:
            from .idl import dumps

            print("metainfo backward: %s" % dumps(backward, pretty=False), file=sys.stderr)
        if self.args.verbose:
            for key, value in sorted(metadata.items()):
                print("# %s = %s" % (key, value), file=sys.stderr)

    def show_error(self, exc: KitexError, out: TextIO) -> None:
        """A failed call: JSON on stdout in IDL mode (the outcome a script reads), and one line on
        stderr always."""
        if self.method is not None:
            from .idl import dumps

            out.write(dumps(error_json(exc), pretty=self.pretty(out)) + "\n")
        print("error: %s: %s" % (type(exc).__name__, exc), file=sys.stderr)


class _DeclaredException(Exception):
    """The reply was one of the method's declared exceptions (already printed)."""


def error_json(exc: BaseException) -> Dict[str, Any]:
    """How ``call`` shows a failed call as JSON."""
    if isinstance(exc, ApplicationError):
        return {"error": "ApplicationError", "type_code": exc.type_code, "type_name": exc.type_name, "message": exc.message}
    if isinstance(exc, BizStatusError):
        return {"error": "BizStatusError", "status_code": exc.status_code, "message": exc.message, "extra": dict(exc.extra)}
    return {"error": type(exc).__name__, "message": str(exc)}


def _call(args: argparse.Namespace) -> int:
    if args.repeat < 1 or args.concurrency < 1:
        raise UsageError("--repeat and --concurrency must be at least 1")
    call = _Call(args, sys.stdin)
    # Bad metadata is found before any I/O, for one call or many: the options were wrong, not
    # the call (main prints it as one line and exits 2).
    parse_options(call.metadata, {})
    with KitexOutputBinding(implementation=args.implementation) as binding:
        request = InvokeRequest("get", call.message, call.metadata)
        if args.repeat == 1:
            try:
                response = binding.invoke(request)
            except MetadataError:
                raise  # (main: one line, exit 2)
            except KitexError as exc:
                call.show_error(exc, sys.stdout)
                return EXIT_FAILED
            try:
                call.show_reply(response.data, response.metadata, sys.stdout)
            except _DeclaredException as exc:
                print("error: declared exception %s" % exc, file=sys.stderr)
                return EXIT_FAILED
            return EXIT_OK
        return _load(binding, request, call, args)


def _percentile(ordered: List[float], fraction: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    index = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def _load(binding: KitexOutputBinding, request: InvokeRequest, call: _Call, args: argparse.Namespace) -> int:
    """``--repeat N --concurrency C``: N calls from C threads sharing the binding (and its pool)."""
    total, workers = args.repeat, min(args.concurrency, args.repeat)
    latencies: List[float] = []
    errors: Dict[str, int] = {}
    first: List[Any] = []
    lock = threading.Lock()
    issued = [0]
    done = [0]

    def worker() -> None:
        while True:
            with lock:
                if issued[0] >= total:
                    return
                issued[0] += 1
            start = time.perf_counter()
            try:
                response = binding.invoke(request)
                outcome: Any = response
            except KitexError as exc:
                outcome = exc
            elapsed = time.perf_counter() - start
            with lock:
                done[0] += 1
                if isinstance(outcome, KitexError):
                    key = "%s: %s" % (type(outcome).__name__, outcome)
                    errors[key] = errors.get(key, 0) + 1
                else:
                    latencies.append(elapsed)
                if not first:
                    first.append(outcome)

    progress = _Progress(total, sys.stderr, enabled=not args.no_progress)
    threads = [threading.Thread(target=worker, name="kitex-fast-call-%d" % i, daemon=True) for i in range(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        progress.show(done[0])
        time.sleep(0.1)
    wall = time.perf_counter() - started
    progress.show(done[0], final=True)

    status = EXIT_OK
    if first and not isinstance(first[0], KitexError):
        try:
            call.show_reply(first[0].data, first[0].metadata, sys.stdout)
        except _DeclaredException:
            status = EXIT_FAILED
    ok = len(latencies)
    summary = ["%d calls, %d ok, %d failed, concurrency %d, %.2f s, %.0f calls/s" % (total, ok, total - ok, workers, wall, total / wall if wall else 0.0)]
    if latencies:
        ordered = sorted(latencies)
        summary.append(
            "latency ms: min %.3f  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f"
            % tuple(v * 1000 for v in (ordered[0], _percentile(ordered, 0.5), _percentile(ordered, 0.9), _percentile(ordered, 0.99), ordered[-1]))
        )
    for text, count in sorted(errors.items(), key=lambda item: -item[1]):
        summary.append("%6d x error: %s" % (count, text))
    for line in summary:
        print(line, file=sys.stderr)
    return EXIT_FAILED if errors else status


class _Progress:
    """A one-line progress bar on a terminal (a line per 10% elsewhere, so logs stay short)."""

    def __init__(self, total: int, out: TextIO, enabled: bool = True) -> None:
        self.total, self.out, self.enabled = total, out, enabled
        self.tty = out.isatty()
        self.last_tenth = -1

    def show(self, done: int, final: bool = False) -> None:
        if not self.enabled:
            return
        if self.tty:
            width = 30
            filled = width * done // self.total
            self.out.write("\r[%s%s] %d/%d" % ("#" * filled, "." * (width - filled), done, self.total))
            if final:
                self.out.write("\n")
            self.out.flush()
            return
        tenth = 10 * done // self.total
        if tenth > self.last_tenth and (tenth > 0 or final):
            self.last_tenth = tenth
            self.out.write("progress: %d/%d\n" % (done, self.total))
            self.out.flush()


# -- the parser -----------------------------------------------------------------------------------


def _common_options(default: Any) -> ArgumentParser:
    """Options accepted before and after the command (``default``: SUPPRESS after it, so a
    value given before the command is not reset)."""
    common = ArgumentParser(add_help=False)
    common.add_argument(
        "--implementation", choices=["c", "py"], default=default,
        help="force the compiled core (c) or the pure-Python twin (py); default: compiled when installed",
    )
    common.add_argument("--version", action="version", version="kitex-fast %s (kitex_fast %s)" % (__version__, _live_implementation()))
    return common


def _live_implementation() -> str:
    return "compiled core" if codec.USING_EXTENSION and transport.USING_EXTENSION else "pure-Python twin"


CALL_EPILOG = """\
examples:
  kitex-fast call --host-ports 127.0.0.1:8888 --idl echo.thrift --method Echo/echo --data '{"message": "hi"}'
  kitex-fast call --host-ports 127.0.0.1:8888 --idl rich.thrift --method Rich/roundtrip --file value.json -t ttheader --transient tenant=a
  kitex-fast call --host-ports 127.0.0.1:8888 --dest-service echo --method echo --data-hex 80010001...
  kitex-fast call ... --repeat 10000 --concurrency 8

The JSON is the method's argument (as Kitex's JSON generic client takes it), or an object of the
arguments by name for a method with several. i64 as a number (or a string), binary as base64,
enums by name or number, map keys as strings. The reply is printed as JSON; a declared exception,
an application exception or a biz status is printed as JSON with exit status 1.
exit status: 0 ok, 1 the call failed, 2 usage.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``kitex-fast`` (without the plug-in commands' own options)."""
    parser = ArgumentParser(
        prog="kitex-fast",
        description="Call CloudWeGo Kitex Thrift services from the shell, or serve one for tests.",
        parents=[_common_options(None)],
        epilog="exit status: 0 ok, 1 the call failed, 2 usage. 'kitex-fast COMMAND --help' for a command's options.",
    )
    common = _common_options(argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    call = sub.add_parser(
        "call", parents=[common], help="call a Kitex service: JSON through an IDL, or a raw Thrift message",
        description="Call a Kitex service with JSON through its IDL (needs thriftpy2: pip install 'kitex_fast[idl]'), or send a raw Thrift CALL message.",
        epilog=CALL_EPILOG, formatter_class=RawDescriptionHelpFormatter,
    )
    where = call.add_argument_group("where")
    where.add_argument("--host-ports", "-e", metavar="HOST:PORT[,...]", help="the server(s): host:port, [ipv6]:port, comma-separated for round robin")
    where.add_argument("--registry", "-r", metavar="etcd://HOST:PORT[,...]", help="instead of --host-ports: find the instances of --dest-service (or SERVICE) in etcd, where Kitex servers register with kitex-contrib/registry-etcd; weighted round robin")
    where.add_argument("--registry-prefix", metavar="PREFIX", help="the etcd key prefix (default kitex/registry-etcd)")
    where.add_argument("--method", "-m", required=True, metavar="[SERVICE/]METHOD", help="the method; with --idl, Service/method picks the service in a file with several")
    where.add_argument("--dest-service", "-s", metavar="NAME", help="the Kitex service name sent as TTHeader ToService (default: the IDL service, or SERVICE of --method)")
    where.add_argument("--transport", "-t", choices=list(codec.TRANSPORTS), help="framing (default framed; ttheader when metainfo, headers, --idl-service, --from-service or --log-id are given)")
    what = call.add_argument_group("what to send")
    what.add_argument("--idl", metavar="FILE", help="the Thrift IDL: arguments and reply as JSON")
    what.add_argument("--data", "-d", metavar="JSON", help="the arguments as JSON (with --idl); default: stdin")
    what.add_argument("--file", "-f", metavar="FILE", help="read the JSON (with --idl) or the raw CALL message (without) from FILE; - is stdin")
    what.add_argument("--data-hex", metavar="HEX", help="a complete strict-binary Thrift CALL message, in hex")
    what.add_argument("--data-base64", metavar="B64", help="the same, in base64")
    meta = call.add_argument_group("metadata and metainfo (TTHeader)")
    meta.add_argument("--transient", "-T", action="append", metavar="KEY=VALUE", help="a Kitex metainfo transient value (one hop; repeatable)")
    meta.add_argument("--persistent", "-P", action="append", metavar="KEY=VALUE", help="a Kitex metainfo persistent value (the whole call chain; repeatable)")
    meta.add_argument("--header", action="append", metavar="NAME=VALUE", help="any TTHeader string header (repeatable)")
    meta.add_argument("--int-header", action="append", metavar="KEY=VALUE", help="any TTHeader integer-key header (repeatable)")
    for key, text in _METADATA_FLAGS:
        meta.add_argument(_flag_name(key), dest=key, metavar="VALUE", help="%s (metadata %s)" % (text, key))
    meta.add_argument("--meta", action="append", metavar="KEY=VALUE", help="any other binding metadata key (repeatable)")
    out = call.add_argument_group("output")
    out.add_argument("--compact", dest="pretty", action="store_false", default=None, help="one-line JSON (the default when stdout is not a terminal)")
    out.add_argument("--pretty", dest="pretty", action="store_true", help="indented JSON (the default on a terminal)")
    out.add_argument("--output", "-o", choices=["hex", "base64", "raw"], default="hex", help="raw mode: how to print the REPLY message (default hex)")
    out.add_argument("--verbose", "-v", action="store_true", help="print the response metadata on stderr")
    load = call.add_argument_group("load")
    load.add_argument("--repeat", "-n", type=_count, default=1, metavar="N", help="make N calls; prints the first reply and a latency summary (p50/p90/p99, calls/s)")
    load.add_argument("--concurrency", "-c", type=_count, default=1, metavar="C", help="from C threads sharing one connection pool")
    load.add_argument("--no-progress", action="store_true", help="no progress bar")
    call.set_defaults(run=_call)

    serve = sub.add_parser(
        "serve", parents=[common], help="run the Kitex-compatible test server (echo, or your IDL and handler)",
        description="Run the Kitex-compatible Python test server until Ctrl-C or SIGTERM. It answers Buffered, Framed and TTHeader in kind and prints its address once listening.",
    )
    from .testing import add_serve_arguments

    add_serve_arguments(serve)
    serve.set_defaults(run=_serve)

    demo = sub.add_parser("demo", parents=[common], help="one call through the Dapr binding against the embedded echo server")
    demo.add_argument("--message", default="hello dapr", help="the text to echo")
    demo.add_argument("--transport", "-t", default="framed", choices=list(codec.TRANSPORTS), help="framing (default framed, as Dapr's Go binding sends)")
    demo.set_defaults(run=_demo)

    for name, (module, text) in PLUGINS.items():
        plugin = sub.add_parser(name, help=text, add_help=False)
        plugin.add_argument("args", nargs=argparse.REMAINDER)
        plugin.set_defaults(run=None)
    return parser


def _plugin_command(argv: Sequence[str]) -> Optional[Tuple[str, List[str]]]:
    """``(name, its argv)`` when the command is a plug-in (it parses its own options). An
    ``--implementation`` given before the name is passed on to plug-ins that take it."""
    i = 0
    implementation: List[str] = []
    while i < len(argv):
        arg = argv[i]
        if arg == "--implementation":
            implementation = list(argv[i : i + 2])
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        if arg not in PLUGINS:
            return None
        rest = list(argv[i + 1 :])
        if arg in _PLUGINS_WITH_IMPLEMENTATION and "--implementation" not in rest:
            rest += implementation
        return arg, rest
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 the call failed, 2 usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    plugin = _plugin_command(argv)
    if plugin is not None:
        # relative to this package: a vendored copy runs its own plug-in, never an installed one
        module = importlib.import_module(PLUGINS[plugin[0]][0], __package__)
        run_plugin: Callable[[List[str]], int] = getattr(module, "main")
        return int(run_plugin(plugin[1]))
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on bad options
    try:
        if args.implementation is not None:
            codec.implementation(args.implementation)
            transport.implementation(args.implementation)
        return int(args.run(args))
    except ImportError as exc:
        if args.implementation is None:
            raise
        print("kitex-fast: error: --implementation %s: %s" % (args.implementation, exc), file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print("kitex-fast %s: error: %s" % (args.command, exc), file=sys.stderr)
        return EXIT_USAGE
    except KitexError as exc:
        # IDL problems (IdlError: bad file, method or JSON) and bad metadata are found before any
        # I/O: the input was wrong. Anything else failed on the way (a reply that cannot be read).
        usage = type(exc).__name__ == "IdlError" or isinstance(exc, MetadataError)
        print("kitex-fast %s: error: %s: %s" % (args.command, type(exc).__name__, exc), file=sys.stderr)
        return EXIT_USAGE if usage else EXIT_FAILED
    return EXIT_OK
