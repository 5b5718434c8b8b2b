"""Misbehaving peers for client tests: a loopback server whose per-connection behaviour is a
function, plus helpers. Every wait is bounded so that no test can hang."""

from __future__ import annotations

import socket
import threading
from typing import Callable, List, Optional

from kitex_fast import codec


class ScriptedServer:
    """Runs ``script(sock)`` in a thread for each accepted connection."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.script = script
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.accepted = 0
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._socks: List[socket.socket] = []

    def __enter__(self) -> "ScriptedServer":
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for sock in self._socks:
            try:
                sock.close()
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=5)
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(5)
            self.accepted += 1
            self._socks.append(sock)
            thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self, sock: socket.socket) -> None:
        try:
            self.script(sock)
        except OSError:
            pass
        finally:
            sock.close()


def read_request(sock: socket.socket, transport: str = "framed", decoder: Optional[object] = None):
    """The next request frame from ``sock`` (None when the client closed)."""
    decoder = decoder or codec.FrameDecoder(transport)
    while True:
        data = sock.recv(65536)
        if not data:
            return None
        frames = decoder.feed(data)  # type: ignore[attr-defined]
        if frames:
            return frames[0]


def reply_bytes(request_frame, body: bytes = b"\x00", *, seq_delta: int = 0, name: Optional[str] = None,
                message_type: int = codec.REPLY, transport: str = "framed", str_headers=None) -> bytes:
    header = codec.parse_message(request_frame.payload)
    seq = header.seq_id + seq_delta
    message = codec.build_message(message_type, name or header.name, seq, body)
    return b"".join(bytes(b) for b in codec.encode_frame(transport, message, seq_id=seq, str_headers=str_headers))


def free_port() -> int:
    """A port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
