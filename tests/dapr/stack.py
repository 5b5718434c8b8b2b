"""A real Dapr stack for tests and benchmarks: the component process, a standalone daprd beside it,
and the Kitex servers they call.

Importable from tests (``tests/dapr`` on ``sys.path``) and from ``bench/``. ``daprd`` comes from
``build_daprd.sh`` (a pluggable-only daprd v1.18.0 built from the Go module proxy, cached).
Every process started here is stopped by :meth:`DaprStack.stop`, and at exit as a last resort.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from peers import free_port  # (tests/interop is on sys.path wherever stack is imported)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BUILD_SCRIPT = HERE / "build_daprd.sh"


class DaprdUnavailable(RuntimeError):
    """No Go toolchain: daprd cannot be built here."""


def build_daprd() -> str:
    """Path of the cached daprd, building it first if the recipe changed (minutes when cold)."""
    if not (os.environ.get("GO") or shutil.which("go")):
        raise DaprdUnavailable(
            "the Dapr end-to-end tests build daprd v1.18.0 from the Go module proxy and need the Go "
            "toolchain (go >= 1.26, https://go.dev/dl/) on PATH"
        )
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError("building daprd failed (exit %d):\n%s"
                           % (proc.returncode, proc.stderr.decode(errors="replace")[-4000:]))
    return proc.stdout.decode().strip().splitlines()[-1]


GO_DIR = HERE / "go"
BIN_DIR = HERE / "bin"


def build_tracepeer() -> str:
    """``go build`` tests/dapr/go's tracepeer (a Kitex echo server that replies with the metainfo it
    received); it shares the interop peers' modules, so this is quick once they are built."""
    import peers

    go = peers._go()
    BIN_DIR.mkdir(exist_ok=True)
    target = BIN_DIR / "tracepeer"
    proc = subprocess.run([go, "build", "-o", str(target), "./cmd/tracepeer"], cwd=GO_DIR,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError("building tracepeer failed:\n%s" % proc.stdout.decode(errors="replace"))
    return str(target)


def trace_peer():  # -> peers.KitexServer
    """A started tracepeer, driven like the interop peers (LISTENING line, SIGTERM stop)."""
    import peers

    binary = build_tracepeer()

    class TracePeer(peers.KitexServer):
        def start(self) -> "TracePeer":
            self._log = tempfile.NamedTemporaryFile(prefix="tracepeer-", suffix=".log", delete=False)
            self._proc = subprocess.Popen([binary, "-listen", "127.0.0.1:0"],
                                          stdout=subprocess.PIPE, stderr=self._log)
            peers._live.add(self)
            try:
                self._wait_listening(peers.START_TIMEOUT)
            except BaseException:
                self.stop()
                raise
            return self

    return TracePeer("tracepeer", "echo").start()


_live: "set[subprocess.Popen]" = set()

# The gRPC server new components run on ("compiled" / "grpcio"; None: the CLI's default). The
# tests/dapr conftest sets it per test, so every case runs on both servers.
SERVER: Optional[str] = None


@atexit.register
def _kill_all() -> None:
    for proc in list(_live):
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _spawn(cmd: List[str], env: Mapping[str, str], log_path: str) -> subprocess.Popen:
    """Start ``cmd`` with stdout and stderr appended to ``log_path``; killed at exit if still alive."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    _live.add(proc)
    return proc


def _stop(proc: Optional[subprocess.Popen], timeout: float = 15.0) -> Optional[int]:
    if proc is None:
        return None
    _live.discard(proc)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def read_log(path: str) -> str:
    """A process's log file so far ("" before it exists)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def component_yaml(name: str, metadata: Mapping[str, str], binding_type: str = "bindings.kitex") -> str:
    lines = ["apiVersion: dapr.io/v1alpha1", "kind: Component", "metadata:", "  name: %s" % name,
             "spec:", "  type: %s" % binding_type, "  version: v1"]
    if metadata:
        lines.append("  metadata:")
        for key, value in metadata.items():
            lines += ["  - name: %s" % key, "    value: %s" % json.dumps(value)]
    return "\n".join(lines) + "\n"


class Component:
    """``python -m kitex_fast.dapr`` as a subprocess on ``folder/name.sock``."""

    def __init__(self, folder: str, *, name: str = "kitex", implementation: Optional[str] = None,
                 extra: Optional[List[str]] = None, env: Optional[Dict[str, str]] = None,
                 server: Optional[str] = None) -> None:
        self.folder = folder
        self.server = server or SERVER
        self.name = name
        self.implementation = implementation
        self.extra = list(extra or [])
        self.env = env
        self.proc: Optional[subprocess.Popen] = None
        # beside the socket folder, not in it: daprd warns about every non-socket file there
        self.log_path = os.path.join(os.path.dirname(os.path.abspath(folder)), "component-%s.log" % name)

    @property
    def socket(self) -> str:
        return os.path.join(self.folder, self.name + ".sock")

    def start(self, timeout: float = 30.0) -> "Component":
        cmd = [sys.executable, "-m", "kitex_fast.dapr", "--name", self.name,
               "--socket-folder", self.folder, "--log-level", "info", *self.extra]
        if self.implementation:
            cmd += ["--implementation", self.implementation]
        if self.server:
            cmd += ["--server", self.server]
        env = dict(os.environ, **(self.env or {}))
        self.proc = _spawn(cmd, env, self.log_path)
        deadline = time.monotonic() + timeout
        while not self._accepting():
            if self.proc.poll() is not None:
                raise RuntimeError("component exited %s before serving:\n%s" % (self.proc.returncode, self.log()))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("component did not start within %.0f s:\n%s" % (timeout, self.log()))
            time.sleep(0.05)
        return self

    def _accepting(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def log(self) -> str:
        return read_log(self.log_path)

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        proc, self.proc = self.proc, None
        return _stop(proc, timeout)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all (leaves the socket file behind)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            _live.discard(proc)
            proc.kill()
            proc.wait()


class Daprd:
    """A standalone daprd (no placement, scheduler, app, mTLS) on its own ports."""

    def __init__(self, binary: str, resources: str, sockets: str, app_id: str = "kitexfast") -> None:
        self.binary = binary
        self.resources = resources
        self.sockets = sockets
        self.app_id = app_id
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = os.path.join(os.path.dirname(os.path.abspath(resources)), "daprd-%d.log" % self.grpc_port)

    def start(self, timeout: float = 60.0) -> "Daprd":
        cmd = [self.binary, "--app-id", self.app_id, "--resources-path", self.resources,
               "--dapr-http-port", str(self.http_port), "--dapr-grpc-port", str(self.grpc_port),
               "--dapr-listen-addresses", "127.0.0.1", "--enable-metrics=false",
               "--dapr-internal-grpc-listen-address", "127.0.0.1", "--log-level", "debug"]
        env = dict(os.environ, DAPR_COMPONENTS_SOCKETS_FOLDER=self.sockets)
        self.proc = _spawn(cmd, env, self.log_path)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("daprd exited %s:\n%s" % (self.proc.returncode, self.log()[-6000:]))
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/v1.0/healthz" % self.http_port, timeout=1) as r:
                    if r.status == 204:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("daprd not healthy within %.0f s:\n%s" % (timeout, self.log()[-6000:]))
            time.sleep(0.1)

    def log(self) -> str:
        return read_log(self.log_path)

    def stop(self) -> Optional[int]:
        proc, self.proc = self.proc, None
        return _stop(proc)

    def configure_sdk(self) -> None:
        """Point the Dapr Python SDK's settings at this daprd (its clients check HTTP health first)."""
        from dapr.conf import settings

        settings.DAPR_HTTP_PORT = self.http_port
        settings.DAPR_GRPC_PORT = self.grpc_port
        settings.DAPR_RUNTIME_HOST = "127.0.0.1"

    def client(self):  # -> dapr.clients.DaprClient
        """A Dapr Python SDK client for this daprd (gRPC)."""
        from dapr.clients import DaprClient

        self.configure_sdk()
        return DaprClient(address="127.0.0.1:%d" % self.grpc_port)

    def http_invoke(self, binding: str, body: dict, timeout: float = 30.0):
        """POST /v1.0/bindings/<binding>; (status, headers, body bytes)."""
        req = urllib.request.Request(
            "http://127.0.0.1:%d/v1.0/bindings/%s" % (self.http_port, binding),
            data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


class DaprStack:
    """Component (started first, as daprd discovers sockets only at its start) + daprd."""

    def __init__(self, daprd_binary: str, components: Mapping[str, Mapping[str, str]], *,
                 implementation: Optional[str] = None, name: str = "kitex",
                 component_args: Optional[List[str]] = None, server: Optional[str] = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="kitex-fast-dapr-")
        self.sockets = os.path.join(self.dir, "sockets")
        self.resources = os.path.join(self.dir, "resources")
        os.makedirs(self.sockets)
        os.makedirs(self.resources)
        for comp_name, metadata in components.items():
            with open(os.path.join(self.resources, comp_name + ".yaml"), "w") as f:
                f.write(component_yaml(comp_name, metadata, "bindings.%s" % name))
        self.component = Component(self.sockets, name=name, implementation=implementation,
                                   extra=component_args, server=server)
        self.daprd = Daprd(daprd_binary, self.resources, self.sockets)

    def start(self) -> "DaprStack":
        try:
            self.component.start()
            self.daprd.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            self.daprd.stop()
        finally:
            self.component.stop()
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "DaprStack":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
