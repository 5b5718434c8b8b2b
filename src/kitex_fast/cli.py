"""The command line: ``kitex-fast demo`` and ``kitex-fast call``.

``demo`` starts the embedded Kitex-compatible echo server and makes a real call through the Dapr
binding, printing what went out and what came back. ``call`` sends a Thrift message (hex) to any
Kitex server and prints the reply.
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional

from . import codec, transport
from .binding import InvokeRequest, KitexOutputBinding
from .errors import KitexError


def _hex(data: bytes) -> str:
    return bytes(data).hex(" ")


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
        print("kitex_fast demo: embedded Kitex-compatible echo server at %s" % server.address)
        print("implementation : %s" % (impl or ("c (compiled)" if codec.USING_EXTENSION and transport.USING_EXTENSION else "py (pure Python)")))
        print("metadata       : %s" % metadata)
        print("request  (%3d B): %s" % (len(request), _hex(request)))
        with KitexOutputBinding(implementation=impl) as binding:
            response = binding.invoke(InvokeRequest("get", request, metadata))
        print("response (%3d B): %s" % (len(response.data), _hex(response.data)))
        print("response meta  : %s" % response.metadata)
        print("echo(%r) -> %r" % (args.message, read_echo_reply(response.data, implementation=impl)))
    return 0


def _call(args: argparse.Namespace) -> int:
    try:
        data = bytes.fromhex(args.data_hex)
    except ValueError as exc:
        print("error: --data-hex is not hex: %s" % exc, file=sys.stderr)
        return 2
    metadata: Dict[str, str] = {
        "hostPorts": args.host_ports,
        "destService": args.dest_service,
        "methodName": args.method,
        "version": args.version,
        "transport": args.transport,
    }
    for item in args.meta or []:
        key, sep, value = item.partition("=")
        if not sep:
            print("error: --meta takes key=value, got %r" % item, file=sys.stderr)
            return 2
        metadata[key] = value
    with KitexOutputBinding(implementation=args.implementation) as binding:
        try:
            response = binding.invoke(InvokeRequest("get", data, metadata))
        except KitexError as exc:
            print("error: %s: %s" % (type(exc).__name__, exc), file=sys.stderr)
            return 1
    print(response.data.hex())
    for key, value in sorted(response.metadata.items()):
        print("# %s = %s" % (key, value), file=sys.stderr)
    return 0


def _usage_error(message: str) -> int:
    print("error: %s" % message, file=sys.stderr)
    return 2


def _component(args: argparse.Namespace) -> int:
    # The Dapr pluggable component has its own options (kitex_fast/dapr/component.py).
    from .dapr import main as component_main

    argv = list(args.component_args)
    if args.implementation and "--implementation" not in argv:
        argv += ["--implementation", args.implementation]
    return component_main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kitex-fast", description=__doc__.split("\n\n")[0])
    parser.add_argument("--implementation", choices=["c", "py"], default=None, help="force the compiled core or the pure-Python twin")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="call the embedded echo server through the Dapr binding")
    demo.add_argument("--message", default="hello dapr")
    demo.add_argument("--transport", default="framed", choices=list(codec.TRANSPORTS))
    demo.set_defaults(run=_demo)
    call = sub.add_parser("call", help="send a Thrift CALL message (hex) to a Kitex server")
    call.add_argument("--host-ports", required=True)
    call.add_argument("--dest-service", required=True)
    call.add_argument("--method", required=True)
    call.add_argument("--version", default="v1")
    call.add_argument("--transport", default="framed", choices=list(codec.TRANSPORTS))
    call.add_argument("--data-hex", required=True, help="the complete CALL message, hex")
    call.add_argument("--meta", action="append", help="extra binding metadata key=value (repeatable)")
    call.set_defaults(run=_call)
    # Listed for --help only: main() hands `vendor ...` to vendoring.main before this parser runs.
    vendor = sub.add_parser("vendor", help="copy kitex_fast into another package's tree (kitex-fast vendor --help)")
    vendor.set_defaults(run=lambda _args: _usage_error("`vendor` takes no global options: kitex-fast vendor DEST [--pure] [--force]"))
    component = sub.add_parser(
        "component", add_help=False, help="serve Dapr's bindings.kitex as a pluggable component (--help for options)"
    )
    component.set_defaults(run=_component)  # its options are parsed by kitex_fast.dapr (main below)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["vendor"]:  # `kitex-fast vendor DEST`: its own parser, in vendoring.py
        from .vendoring import main as vendor_main

        return vendor_main(argv[1:])
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "component":
        args.component_args = rest
    elif rest:
        parser.error("unrecognized arguments: %s" % " ".join(rest))
    return int(args.run(args))
