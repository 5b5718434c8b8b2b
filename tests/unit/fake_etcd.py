"""A fake etcd for the resolver's hostile cases: the v3 JSON gateway as kitex_fast's resolver
speaks it (``POST /v3/kv/range``, ``POST /v3/watch`` streamed with chunked encoding, keys and
values base64), on 127.0.0.1, in threads, with modes that misbehave on purpose.

Real etcd (``tests/interop/test_registry.py``) shows that the resolver works; this one shows what
it does when etcd, or whatever answers on its port, does not. Every loop here is bounded (bytes,
counts, timeouts), so a test that fails cannot hang or fill the machine.

The message shapes follow etcd's gateway (etcdserverpb RangeResponse/WatchResponse as JSON:
int64 fields as strings, ``header.revision``, ``kvs``, ``result.events``, ``result.created``).
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def kv(key: bytes, value: bytes) -> Dict[str, str]:
    return {"key": b64(key), "value": b64(value), "mod_revision": "1"}


def instance(address: str, weight: int = 10) -> bytes:
    return json.dumps({"network": "tcp", "address": address, "weight": weight, "tags": None}).encode()


class FakeEtcd:
    """``with FakeEtcd() as etcd:`` then ``etcd.address``; ``etcd.put(key, value)`` /
    ``etcd.delete(key)`` change the store and reach every open watch.

    Modes (attributes, changeable at any time):

    - ``range_mode``: ``"ok"``; ``"huge_length"`` (Content-Length: 8000000000, then one byte
      every 20 ms); ``"trickle"`` (chunked, one byte every 20 ms, never ending); ``"raw"``
      (``range_body`` as the answer: any JSON-able value, or bytes).
    - ``watch_mode``: ``"ok"`` (created, then events); ``"drop"`` (created, then close);
      ``"endless_line"`` (created, then bytes without a newline until the client leaves or
      ``endless_cap`` bytes were sent); ``"lines"`` (created, then ``watch_lines``, raw, then
      events as usual).
    """

    def __init__(self) -> None:
        self.store: Dict[bytes, bytes] = {}
        self.revision = 1
        self.events: List[Dict[str, Any]] = []  # (revision order) every put and delete
        self.range_mode = "ok"
        self.range_body: Any = None
        self.watch_mode = "ok"
        self.watch_lines: List[bytes] = []
        self.endless_cap = 64 << 20
        self.ranges = 0
        self.watches = 0
        self.sent_per_watch: List[int] = []  # bytes each watch stream sent after its created line
        self.range_sent: List[int] = []  # bytes of each hostile range body sent before the client left
        self.cond = threading.Condition()
        self._stopping = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(min(length, 1 << 20)) or b"{}")
                if self.path == "/v3/kv/range":
                    fake._range(self, body)
                elif self.path == "/v3/watch":
                    fake._watch(self, body)
                else:
                    self.send_error(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.address = "127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FakeEtcd":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        with self.cond:
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    # -- the store --------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes) -> None:
        with self.cond:
            self.revision += 1
            self.store[key] = value
            self.events.append({"revision": self.revision, "event": {"kv": kv(key, value)}})
            self.cond.notify_all()

    def delete(self, key: bytes) -> None:
        with self.cond:
            self.revision += 1
            self.store.pop(key, None)
            self.events.append({"revision": self.revision, "event": {"type": "DELETE", "kv": {"key": b64(key)}}})
            self.cond.notify_all()

    def push_event(self, event: Dict[str, Any]) -> None:
        """Any event object, as etcd would never send it (e.g. a key outside the watched range)."""
        with self.cond:
            self.revision += 1
            self.events.append({"revision": self.revision, "event": event})
            self.cond.notify_all()

    # -- the handlers -------------------------------------------------------------------------

    def _range(self, h: BaseHTTPRequestHandler, body: Dict[str, Any]) -> None:
        with self.cond:
            self.ranges += 1
            key = base64.b64decode(body.get("key", ""))
            end = base64.b64decode(body.get("range_end", ""))
            kvs = [kv(k, v) for k, v in sorted(self.store.items()) if key <= k < end]
            answer: Any = {"header": {"cluster_id": "1", "member_id": "1", "revision": str(self.revision),
                                      "raft_term": "2"}, "kvs": kvs, "count": str(len(kvs))}
        mode = self.range_mode
        if mode == "raw":
            raw = self.range_body if isinstance(self.range_body, bytes) else json.dumps(self.range_body).encode()
            self._send(h, raw)
        elif mode == "huge_length":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", "8000000000")
            h.end_headers()
            self.range_sent.append(self._trickle(h, chunked=False))
        elif mode == "trickle":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            self.range_sent.append(self._trickle(h, chunked=True))
        else:
            self._send(h, json.dumps(answer).encode())

    def _trickle(self, h: BaseHTTPRequestHandler, chunked: bool) -> int:
        """One byte every 20 ms until the client leaves (at most 60 s): the bytes sent."""
        sent = 0
        h.wfile.write(b"1\r\n{\r\n" if chunked else b"{")
        for _ in range(3000):
            if self._stopping.is_set():
                break
            time.sleep(0.02)
            try:
                h.wfile.write(b"1\r\n \r\n" if chunked else b" ")
                h.wfile.flush()
            except OSError:
                break
            sent += 1
        h.close_connection = True
        return sent

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, raw: bytes) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)

    def _watch(self, h: BaseHTTPRequestHandler, body: Dict[str, Any]) -> None:
        create = body.get("create_request") or {}
        start = int(create.get("start_revision") or 0)
        with self.cond:
            self.watches += 1
            revision = self.revision
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.close_connection = True

        def chunk(data: bytes) -> None:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            h.wfile.flush()

        sent = 0
        try:
            chunk(json.dumps({"result": {"header": {"revision": str(revision)}, "created": True}}).encode() + b"\n")
            mode = self.watch_mode
            if mode == "drop":
                h.wfile.write(b"0\r\n\r\n")
                return
            if mode == "endless_line":
                block = b"a" * 65536
                while sent < self.endless_cap and not self._stopping.is_set():
                    chunk(block)
                    sent += len(block)
                # (then hold the stream open, silent, as a stuck peer would)
                self._stopping.wait(30)
                return
            if mode == "lines":
                for line in self.watch_lines:
                    chunk(line)
                    sent += len(line)
            cursor = 0
            deadline = time.monotonic() + 60
            while not self._stopping.is_set() and time.monotonic() < deadline:
                with self.cond:
                    fresh = [e for e in self.events[cursor:] if e["revision"] >= start]
                    cursor = len(self.events)
                    if not fresh:
                        self.cond.wait(0.1)
                        continue
                for e in fresh:
                    line = json.dumps({"result": {"header": {"revision": str(e["revision"])},
                                                  "events": [e["event"]]}}).encode() + b"\n"
                    chunk(line)
                    sent += len(line)
        except (OSError, socket.timeout):
            pass  # the client left
        finally:
            self.sent_per_watch.append(sent)


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` every 10 ms, at most ``timeout`` seconds (then fail naming ``what``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        time.sleep(0.01)


def first(items: Optional[List[Any]]) -> Any:
    return items[0] if items else None
