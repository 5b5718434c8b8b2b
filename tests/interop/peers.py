"""Real Kitex (Go) peers for the interop tests and benchmarks.

The Go module in ``tests/interop/go`` builds three programs into ``tests/interop/bin``:
``kitexserver`` (one Kitex server variant per process), ``refclient`` (the Go reference client,
a V1 binary-generic Kitex client like Dapr's Go binding) and ``golden`` (writes
``tests/golden/frames.json``). This module builds them and drives them as subprocesses.
Importable from tests (``tests/interop`` on ``sys.path``) and from ``bench/``.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from kitex_fast import codec

HERE = Path(__file__).resolve().parent
GO_DIR = HERE / "go"
BIN_DIR = HERE / "bin"
BINARIES = ("kitexserver", "refclient", "golden", "etcdserver")
MIN_GO = "1.24.1"  # Go 1.24.0 cannot link sonic (golang/go#71672)
START_TIMEOUT = 60.0


class PeersUnavailable(RuntimeError):
    """The Go toolchain is missing, so the Kitex peers cannot be built."""


_build_lock = threading.Lock()
_built = False


def _go() -> str:
    go = os.environ.get("GO") or shutil.which("go")
    if not go:
        raise PeersUnavailable(
            "the Kitex interop peers need the Go toolchain (go >= %s, https://go.dev/dl/) on PATH "
            "(or GO=/path/to/go); it downloads Kitex from the Go module proxy on first build"
            % MIN_GO
        )
    return go


def build_peers() -> Path:
    """``go build`` every peer into :data:`BIN_DIR` (once per process; Go's cache makes reruns fast).

    Raises :class:`PeersUnavailable` when ``go`` is missing, ``RuntimeError`` with Go's output
    when the build fails. Returns :data:`BIN_DIR`.
    """
    global _built
    with _build_lock:
        if _built:
            return BIN_DIR
        go = _go()
        BIN_DIR.mkdir(parents=True, exist_ok=True)
        cmd = [go, "build", "-o", str(BIN_DIR) + os.sep, "./cmd/..."]
        try:
            proc = subprocess.run(
                cmd, cwd=GO_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError("go build of the Kitex peers timed out after 900 s") from exc
        if proc.returncode != 0:
            raise RuntimeError(
                "building the Kitex peers failed (%s in %s, exit %d):\n%s"
                % (" ".join(cmd), GO_DIR, proc.returncode, proc.stdout.decode(errors="replace"))
            )
        missing = [b for b in BINARIES if not (BIN_DIR / b).exists()]
        if missing:
            raise RuntimeError("go build did not produce %s in %s" % (", ".join(missing), BIN_DIR))
        _built = True
        return BIN_DIR


def _binary(name: str) -> str:
    path = BIN_DIR / name
    if not path.exists():
        build_peers()
    return str(path)


_live: "set[KitexServer]" = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        server.stop()


class KitexServer:
    """One ``kitexserver`` process: ``with KitexServer("meta", "rich") as s: ... s.address``."""

    def __init__(self, mode: str = "default", service: str = "echo", *extra_args: str,
                 cpus: Optional[Set[int]] = None) -> None:
        self.mode = mode
        self.cpus = cpus  # pin the server (every thread it will start) to these CPUs
        self.service = service
        self.extra_args = tuple(str(a) for a in extra_args)
        self.host = "127.0.0.1"
        self.port = 0
        self._proc: Optional[subprocess.Popen] = None
        self._log: Optional[tempfile._TemporaryFileWrapper] = None
        self.stats_address = ""  # with "-stats 127.0.0.1:0" among the extra arguments

    def stats(self, *, reset: bool = False) -> Dict[str, int]:
        """The server's request statistics (needs ``-stats``): ``in_flight``, ``max_in_flight``
        (the most requests in its handlers at once), ``handled``, ``peers`` (distinct client
        addresses, i.e. connections used). ``reset=True`` zeroes them after reading."""
        assert self.stats_address, "start the server with extra arguments -stats 127.0.0.1:0"
        request = urllib.request.Request(
            "http://%s/%s" % (self.stats_address, "reset" if reset else "stats"),
            method="POST" if reset else "GET",
        )
        # (no proxy: the address is on loopback)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as reply:
            return json.loads(reply.read())

    @property
    def address(self) -> str:
        return "%s:%d" % (self.host, self.port)

    def __repr__(self) -> str:
        return "KitexServer(mode=%r, service=%r, extra=%r, address=%r)" % (
            self.mode, self.service, self.extra_args, self.address)

    def log(self) -> str:
        """What the server wrote to stderr so far (Kitex logs each connection error there)."""
        if self._log is None:
            return ""
        self._log.flush()
        with open(self._log.name, "rb") as f:
            return f.read().decode(errors="replace")

    def _command(self) -> List[str]:
        return [_binary("kitexserver"), "-mode", self.mode, "-service", self.service,
                "-listen", "127.0.0.1:0", *self.extra_args]

    def start(self) -> "KitexServer":
        if self._proc is not None:
            return self
        cmd = self._command()
        self._log = tempfile.NamedTemporaryFile(prefix="kitexserver-", suffix=".log", delete=False)
        cpus = self.cpus
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, preexec_fn=pin)
        _live.add(self)
        try:
            self._wait_listening(START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, timeout: float) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self._proc.stdout, selectors.EVENT_READ)
        buffered = b""
        try:
            while True:
                while b"\n" not in buffered:
                    left = deadline - time.monotonic()
                    if left <= 0 or not sel.select(left):
                        raise RuntimeError("%r printed no LISTENING line within %.0f s; log:\n%s"
                                           % (self, timeout, self.log()))
                    chunk = os.read(self._proc.stdout.fileno(), 256)
                    if not chunk:
                        raise RuntimeError("%r exited (status %s) before listening; log:\n%s"
                                           % (self, self._proc.wait(), self.log()))
                    buffered += chunk
                line, _, buffered = buffered.partition(b"\n")
                word, _, addr = line.decode().strip().partition(" ")
                if word == "STATS":  # -stats: the statistics endpoint comes first
                    self.stats_address = addr
                    continue
                break
        finally:
            sel.close()
        if word != "LISTENING":
            raise RuntimeError("%r: unexpected line %r" % (self, line))
        host, _, port = addr.rpartition(":")
        self.host, self.port = host, int(port)
        while True:  # the listener is bound before the line; a connect proves it accepts
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("%r: cannot connect; log:\n%s" % (self, self.log()))
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no graceful stop (a registered server leaves its key until the lease ends)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self.stop()

    def stop(self) -> None:
        """SIGTERM (Kitex stops gracefully), then SIGKILL if it takes longer than 10 s."""
        proc, self._proc = self._proc, None
        _live.discard(self)
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
            if self._log is not None:
                self._log.close()
                try:
                    os.unlink(self._log.name)
                except OSError:
                    pass
                self._log = None

    @property
    def returncode(self) -> Optional[int]:
        """The exit status once the process ended (None while running or before start)."""
        return None if self._proc is None else self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "KitexServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ref_args(address: str, service: str, method: str, request: bytes, transport: str) -> List[str]:
    return ["-hostports", address, "-service", service, "-method", method,
            "-transport", transport, "-request-hex", bytes(request).hex()]


def ref_call(address: str, *, service: str, method: str, request: bytes,
             transport: str = "framed", rpc_timeout: Optional[float] = None
             ) -> Tuple[Optional[bytes], Optional[str]]:
    """One call through the Go reference client: ``(reply message bytes, None)`` or ``(None, error)``.

    ``request`` is a complete strict-binary CALL message (its seq id is overwritten by Kitex).
    """
    cmd = [_binary("refclient"), "call", *_ref_args(address, service, method, request, transport)]
    if rpc_timeout is not None:
        cmd += ["-rpc-timeout", "%dms" % max(1, int(rpc_timeout * 1000))]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0 or not out:
        raise RuntimeError("refclient failed (exit %d): %s %s"
                           % (proc.returncode, out, proc.stderr.decode(errors="replace")))
    word, _, rest = out.partition(" ")
    if word == "REPLY":
        return bytes.fromhex(rest), None
    if word == "ERROR":
        return None, rest
    raise RuntimeError("refclient printed %r" % out)


def ref_load(address: str, *, service: str, method: str, request: bytes,
             transport: str = "framed", calls: int = 1000, concurrency: int = 1) -> Dict[str, float]:
    """Closed-loop load from the Go reference client; returns its JSON summary."""
    cmd = [_binary("refclient"), "load", *_ref_args(address, service, method, request, transport),
           "-n", str(calls), "-c", str(concurrency)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError("refclient load failed (exit %d): %s"
                           % (proc.returncode, proc.stderr.decode(errors="replace")))
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def run_golden(out_dir: Path) -> Path:
    """Run the golden generator into ``out_dir``; returns the path of the frames.json it wrote."""
    out_dir = Path(out_dir)
    proc = subprocess.run([_binary("golden"), "-out", str(out_dir)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError("golden failed: %s" % proc.stdout.decode(errors="replace"))
    return out_dir / "frames.json"


# -- service discovery: etcd and Kitex servers that register in it (docs/registry.md) ----------

ETCD_MIN = "3.4"


class EtcdUnavailable(RuntimeError):
    """No etcd binary: the registry tests cannot run."""


def etcd_binary() -> str:
    """The ``etcd`` server binary: ``$ETCD``, or ``etcd`` on PATH (Debian's etcd-server package,
    which tests/run.sh installs in CI)."""
    etcd = os.environ.get("ETCD") or shutil.which("etcd")
    if not etcd:
        raise EtcdUnavailable(
            "the registry tests need an etcd server >= %s: `apt-get install etcd-server` (Debian/"
            "Ubuntu; tests/run.sh does it in CI) or ETCD=/path/to/etcd" % ETCD_MIN)
    return etcd


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released): the one helper of the test trees."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdServer:
    """One etcd member on 127.0.0.1 random ports with a temporary data dir. ``stop()`` then
    ``start()`` restarts it on the same ports and data (the keys and revisions survive)."""

    def __init__(self) -> None:
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = tempfile.mkdtemp(prefix="kitex-fast-etcd-")
        self._proc: Optional[subprocess.Popen] = None
        self._log = os.path.join(self.data_dir, "etcd.log")

    @property
    def address(self) -> str:
        return "127.0.0.1:%d" % self.client_port

    @property
    def url(self) -> str:
        return "etcd://" + self.address

    def start(self) -> "EtcdServer":
        if self._proc is not None:
            return self
        peer = "http://127.0.0.1:%d" % self.peer_port
        client = "http://" + self.address
        cmd = [etcd_binary(), "--name", "default", "--data-dir", os.path.join(self.data_dir, "data"),
               "--listen-client-urls", client, "--advertise-client-urls", client,
               "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
               "--initial-cluster", "default=" + peer, "--log-outputs", "stderr"]
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        _live_etcd.add(self)
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # ready: the v3 gateway answers a range
            try:
                self.get_prefix("health-check/")
                return self
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("etcd did not start; log:\n%s" % self.log())
                time.sleep(0.05)

    def log(self) -> str:
        try:
            with open(self._log, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def _post(self, path: str, body: dict) -> dict:
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=5)
        try:
            conn.request("POST", path, json.dumps(body))
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise OSError("etcd %s: %s %r" % (path, resp.status, data[:200]))
            return json.loads(data)
        finally:
            conn.close()

    def put(self, key: str, value: bytes) -> None:
        import base64
        self._post("/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(),
                                  "value": base64.b64encode(value).decode()})

    def delete(self, key: str) -> None:
        import base64
        self._post("/v3/kv/deleterange", {"key": base64.b64encode(key.encode()).decode()})

    def get_prefix(self, prefix: str) -> Dict[str, bytes]:
        import base64
        key = prefix.encode()
        end = key[:-1] + bytes([key[-1] + 1])
        answer = self._post("/v3/kv/range", {"key": base64.b64encode(key).decode(),
                                             "range_end": base64.b64encode(end).decode()})
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
                for kv in answer.get("kvs") or ()}

    def wait_keys(self, prefix: str, count: int, timeout: float = 60.0) -> Dict[str, bytes]:
        """Wait until exactly ``count`` keys are under ``prefix`` (registrations, lease expiry)."""
        deadline = time.monotonic() + timeout
        while True:
            keys = self.get_prefix(prefix)
            if len(keys) == count:
                return keys
            if time.monotonic() > deadline:
                raise RuntimeError("%d keys under %r after %.0f s, expected %d: %r"
                                   % (len(keys), prefix, timeout, count, sorted(keys)))
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        self.stop()
        _live_etcd.discard(self)
        shutil.rmtree(self.data_dir, ignore_errors=True)


_live_etcd: "set[EtcdServer]" = set()


@atexit.register
def _stop_etcd() -> None:
    for server in list(_live_etcd):
        server.close()


class EtcdKitexServer(KitexServer):
    """``etcdserver``: a Kitex echo server that registers in etcd with kitex-contrib/registry-etcd.
    Its replies end with ``@<host:port>#<n>`` (see :func:`served_by`)."""

    def __init__(self, etcd: str, *, service: str = "echo", weight: int = 0, lease_ttl: int = 0,
                 prefix: str = "", tags: Optional[Dict[str, str]] = None, drain: str = "500ms") -> None:
        super().__init__("etcd", service)
        # drain: a graceful stop waits this long between deregistering and closing connections,
        # as a deployment's preStop delay does (etcdserver -drain; docs/registry.md)
        args = ["-etcd", etcd, "-service", service, "-weight", str(weight),
                "-lease-ttl", str(lease_ttl), "-drain", drain]
        if prefix:
            args += ["-prefix", prefix]
        for k, v in (tags or {}).items():
            args += ["-tag", "%s=%s" % (k, v)]
        self.extra_args = tuple(args)

    def _command(self) -> List[str]:
        return [_binary("etcdserver"), "-listen", "127.0.0.1:0", *self.extra_args]


def served_by(message: str) -> str:
    """The instance (host:port) that answered, from an etcdserver reply message."""
    return message.rpartition("@")[2].partition("#")[0]


# -- the rich service's sleep method (rich.thrift), what tests and benchmarks of slow calls use --

def sleep_call(millis: int) -> bytes:
    """rich.thrift ``sleep(1: i32 millis)`` as a CALL message."""
    return codec.build_message(codec.CALL, "sleep", 0, b"\x08\x00\x01" + struct.pack(">i", millis) + b"\x00")


def sleep_reply(message: bytes) -> str:
    """The string result of a ``sleep`` REPLY (field 0, type string)."""
    body = message[codec.parse_message(message).body_offset:]
    assert body[:3] == b"\x0b\x00\x00", body[:16].hex()
    (size,) = struct.unpack(">i", body[3:7])
    return body[7 : 7 + size].decode()
