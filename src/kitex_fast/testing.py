"""A Kitex-compatible Thrift server in Python, for your own tests and for the demo.

It speaks what a default Kitex server speaks (Buffered, Framed, TTHeader, TTHeader-Framed, detected
per message, answered in kind) and fails the way Kitex fails (kitex pkg/remote/trans/
default_server_handler.go and pkg/remote/codec/util.go): an unknown method gets an EXCEPTION of
type 20 and the connection is closed; a handler error gets type 6
(``biz error: ...``) and the connection stays open; a ``BizStatusError`` becomes an empty result with
``biz-status`` / ``biz-message`` / ``biz-extra`` TTHeader keys. It is a test helper: the proof of
wire compatibility is the interop suite against real Kitex servers.

    def echo(request):
        return kitex_fast.testing.echo_result(kitex_fast.testing.read_echo_args(request.body) + "!")

    with KitexTestServer({"echo": echo}) as server:
        client = Client("echo", server.address)

From the shell: ``kitex-fast serve`` or ``python -m kitex_fast.testing`` (echo on 127.0.0.1:8888, or
``--idl FILE --handler module:name`` for your own service).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import socket
import struct
import sys
import threading
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set

from . import codec as _codec_dispatch
from ._argparse import ArgumentParser
from .errors import ApplicationError, BizStatusError, KitexError, ProtocolError

__all__ = [
    "KitexTestServer",
    "ServerRequest",
    "Handler",
    "echo_request",
    "echo_handler",
    "echo_result",
    "read_echo_args",
    "read_echo_reply",
    "serve",
    "add_serve_arguments",
    "ServeOptionError",
]


class ServerRequest(NamedTuple):
    """One call as a handler sees it."""

    method: str
    seq_id: int
    body: bytes  # the args struct
    transport: str
    str_headers: Mapping[str, str]
    int_headers: Mapping[int, str]


# A handler returns the *result struct* bytes (field 0 = success, 1.. = declared exceptions).
Handler = Callable[[ServerRequest], bytes]


class KitexTestServer:
    """A threaded server on ``host:port`` (port 0 picks a free one); ``address`` is ``host:port``."""

    def __init__(
        self,
        handlers: Optional[Mapping[str, Handler]] = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        service: str = "",
        implementation: Optional[str] = None,
    ) -> None:
        self.handlers: Dict[str, Handler] = dict(handlers or {})
        self.service = service
        self._codec = _codec_dispatch.implementation(implementation)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        # A deep accept queue: a burst of clients (one connection per call in flight) must not
        # overflow it, or their SYNs wait for a retransmit (1 s, then 3 s) and connects time out.
        self._listener.listen(1024)
        self.host, self.port = self._listener.getsockname()[:2]
        self._threads: List[threading.Thread] = []
        self._conns: Set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self.calls = 0

    @property
    def address(self) -> str:
        """``host:port`` (``[host]:port`` for IPv6) to give a client."""
        return "[%s]:%d" % (self.host, self.port) if ":" in self.host else "%s:%d" % (self.host, self.port)

    def start(self) -> "KitexTestServer":
        """Start accepting connections (in a daemon thread); returns the server."""
        thread = threading.Thread(target=self._accept_loop, name="kitex-test-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection and wait for the server's threads."""
        self._stopping = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> "KitexTestServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- serving ------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.add(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), name="kitex-test-conn", daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _serve(self, conn: socket.socket) -> None:
        decoder = self._codec.FrameDecoder("auto")
        try:
            while not self._stopping:
                data = conn.recv(65536)
                if not data:
                    return
                for frame in decoder.feed(data):
                    if not self._answer(conn, frame):
                        return
        except (OSError, KitexError):
            return  # like Kitex: undecodable input closes the connection without a reply
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _answer(self, conn: socket.socket, frame: object) -> bool:
        """Reply to one request frame; False when the connection must be closed afterwards."""
        codec = self._codec
        payload: bytes = frame.payload  # type: ignore[attr-defined]
        header = codec.parse_message(payload)
        if header.type not in (codec.CALL, codec.ONEWAY):
            return False  # Kitex: "server side, invalid message type" -> close, no reply
        self.calls += 1
        transport: str = frame.transport  # type: ignore[attr-defined]
        handler = self.handlers.get(header.name)
        if handler is None:
            # kitex pkg/remote/codec/util.go SetOrCheckMethodName: type 20, then the connection closes.
            text = "unknown service %s, method %s" % (self.service, header.name)
            self._send(conn, transport, codec.EXCEPTION, header, codec.encode_application_exception(20, text))
            return False
        request = ServerRequest(
            header.name,
            header.seq_id,
            payload[header.body_offset:],
            transport,
            frame.str_headers,  # type: ignore[attr-defined]
            frame.int_headers,  # type: ignore[attr-defined]
        )
        str_headers: Optional[Dict[str, str]] = None
        try:
            result = handler(request)
            reply_type = codec.REPLY
        except ApplicationError as exc:
            reply_type, result = codec.EXCEPTION, codec.encode_application_exception(exc.type_code, exc.message)
        except BizStatusError as exc:
            # kitex: an empty result struct; the status travels in TTHeader string keys.
            reply_type, result = codec.REPLY, b"\x00"
            str_headers = {_codec_dispatch.STR_KEY_BIZ_STATUS: str(exc.status_code),
                           _codec_dispatch.STR_KEY_BIZ_MESSAGE: exc.message}
            if exc.extra:
                str_headers[_codec_dispatch.STR_KEY_BIZ_EXTRA] = json.dumps(exc.extra, separators=(",", ":"))
        except Exception as exc:  # noqa: BLE001 - a handler error is the caller's answer
            reply_type, result = codec.EXCEPTION, codec.encode_application_exception(6, "biz error: %s" % exc)
        if header.type == codec.ONEWAY:
            return True
        self._send(conn, transport, reply_type, header, result, str_headers)
        return True

    def _send(
        self,
        conn: socket.socket,
        transport: str,
        message_type: int,
        header: object,
        body: bytes,
        str_headers: Optional[Dict[str, str]] = None,
    ) -> None:
        codec = self._codec
        seq_id: int = header.seq_id  # type: ignore[attr-defined]
        message = codec.build_message(message_type, header.name, seq_id, body)  # type: ignore[attr-defined]
        if not transport.startswith("ttheader"):
            str_headers = None
        buffers = codec.encode_frame(transport, message, seq_id=seq_id, str_headers=str_headers)
        conn.sendall(b"".join(bytes(b) for b in buffers))


# -- the Dapr echo scenario: IDL `struct Request {1: string message}`, `struct Response
# {1: string message}`, `service Echo { Response echo(1: Request req) }` -----------------------

_T_STRUCT, _T_STRING = 12, 11


def _string_struct(field_id: int, text: str) -> bytes:
    """``{field_id: {1: text}}`` then STOP: the args and result shapes of the echo IDL."""
    raw = text.encode("utf-8")
    return (
        struct.pack(">bhbhi", _T_STRUCT, field_id, _T_STRING, 1, len(raw)) + raw + b"\x00\x00"
    )


def echo_request(message: str, *, seq_id: int = 0, method: str = "echo", implementation: Optional[str] = None) -> bytes:
    """A complete CALL message ``echo(Request{message})``, as Dapr's test builds it."""
    codec = _codec_dispatch.implementation(implementation)
    message_bytes: bytes = codec.build_message(codec.CALL, method, seq_id, _string_struct(1, message))
    return message_bytes


def echo_result(message: str) -> bytes:
    """The result struct of ``echo``: ``{0: Response{message}}``."""
    return _string_struct(0, message)


def _read_string_struct(body: bytes, field_id: int, what: str) -> str:
    head = struct.Struct(">bhbhi")
    if len(body) < head.size:
        raise ProtocolError("%s is truncated (%d bytes)" % (what, len(body)))
    outer_type, outer_id, inner_type, inner_id, size = head.unpack_from(body)
    if (outer_type, outer_id, inner_type, inner_id) != (_T_STRUCT, field_id, _T_STRING, 1):
        raise ProtocolError("%s does not start with {%d: {1: string}}: %s" % (what, field_id, body[:12].hex(" ")))
    end = head.size + size
    if size < 0 or end > len(body):
        raise ProtocolError("%s has a string length %d beyond its %d bytes" % (what, size, len(body)))
    return body[head.size:end].decode("utf-8")


def read_echo_args(body: bytes) -> str:
    """The message of an ``echo`` args struct."""
    return _read_string_struct(bytes(body), 1, "echo args")


def read_echo_reply(reply: bytes, implementation: Optional[str] = None) -> str:
    """The message inside a complete ``echo`` REPLY message."""
    codec = _codec_dispatch.implementation(implementation)
    header = codec.parse_message(reply)
    return _read_string_struct(bytes(reply[header.body_offset:]), 0, "echo result")


def echo_handler(request: ServerRequest) -> bytes:
    """Kitex's example echo service, as Dapr tests it: the reply appends ``",hi Kitex"``."""
    return echo_result(read_echo_args(request.body) + ",hi Kitex")


# -- from the shell: kitex-fast serve, python -m kitex_fast.testing --------------------------------


class ServeOptionError(ValueError):
    """A bad option of :func:`serve` (the command line reports it as a usage error)."""


def _port(text: str) -> int:
    """A --port value: ASCII digits in 0-65535 (``int`` alone takes ``+5`` and other scripts' digits)."""
    from .pool import ascii_int

    port = ascii_int(text)
    if port is None or port > 65535:
        raise argparse.ArgumentTypeError("%r is not a port number in 0-65535" % text)
    return port


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :func:`serve`, on ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", "-p", type=_port, default=8888, help="port (default 8888, Kitex's; 0 picks a free one)")
    parser.add_argument("--idl", metavar="FILE", help="serve this IDL's service (needs thriftpy2) with --handler")
    parser.add_argument("--handler", metavar="MODULE:NAME", help="the implementation: an object or class with a method per IDL method (thriftpy2's convention), or a function f(method, **arguments)")
    parser.add_argument("--service", metavar="NAME", help="the service, when the IDL declares several")


def _resolve(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ServeOptionError("--handler takes module:name, got %r" % spec)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the user's modules where they stand
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ServeOptionError("--handler %s: cannot import %s: %s" % (spec, module_name, exc)) from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ServeOptionError("--handler %s: %s has no attribute %r" % (spec, module_name, attr)) from None
    if isinstance(target, type):
        target = target()  # a handler class: one instance serves every call
    return target


def serve(args: argparse.Namespace) -> int:
    """Run the server ``args`` describe (:func:`add_serve_arguments`) until SIGINT or SIGTERM;
    ``kitex-fast serve`` and ``python -m kitex_fast.testing``. Bad options: ServeOptionError."""
    if args.idl:
        from .idl import IdlService

        service = IdlService(args.idl, args.service)
        if not args.handler:
            raise ServeOptionError("--idl needs --handler module:name (the object that implements %s)" % service.name)
        handlers = service.handlers(_resolve(args.handler))
        name, what = service.name, "%s from %s, handler %s" % (service.name, args.idl, args.handler)
    else:
        if args.handler:
            raise ServeOptionError("--handler needs --idl FILE (without them, serve answers echo)")
        handlers, name, what = {"echo": echo_handler}, args.service or "echo", "echo (Dapr's test scenario: the reply appends ',hi Kitex')"
    server = KitexTestServer(handlers, host=args.host, port=args.port, service=name, implementation=args.implementation)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    with server:
        # One line a script can wait for; the address is the last word.
        print("kitex-fast serve: %s, listening on %s" % (what, server.address), flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    print("kitex-fast serve: stopped after %d calls" % server.calls, file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m kitex_fast.testing [options]``: ``kitex-fast serve`` without the rest of the
    command line (this module does not import it: the command line imports this one)."""
    parser = ArgumentParser(
        prog="python -m kitex_fast.testing",
        description="Run the Kitex-compatible Python test server until Ctrl-C or SIGTERM (as kitex-fast serve).",
    )
    parser.add_argument(
        "--implementation", choices=["c", "py"], default=None,
        help="force the compiled core (c) or the pure-Python twin (py); default: compiled when installed",
    )
    add_serve_arguments(parser)
    args = parser.parse_args(argv)  # exits 2 on bad options
    try:
        return serve(args)
    except (ServeOptionError, KitexError, ImportError) as exc:
        parser.exit(2, "%s: error: %s\n" % (parser.prog, exc))
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
