"""The clients the latency benchmark compares, behind one shape: ``batch(k) -> [ns, ...]``.

Every client keeps its connection between batches (Python clients in this process, the C floor as
a long-lived subprocess fed over stdin), except the Go reference client, which is one process per
batch: ``refclient load`` is what it offers, so each batch starts with ``GO_WARMUP`` discarded
calls (connect, first-call allocations) and only the calls after them are kept.
"""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from kitex_fast import Client, InvokeRequest, KitexOutputBinding

ROOT = Path(__file__).resolve().parent.parent
GO_DIR = ROOT / "tests" / "interop" / "go"
ECHO_IDL = GO_DIR / "idl" / "echo.thrift"

GO_WARMUP = 100  # calls each refclient process makes before its samples count

_RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", None)  # Linux only


def thread_user_ns() -> Optional[int]:
    """This thread's user-space CPU time in ns (None where the OS has no per-thread rusage).
    The kernel accounts user vs system time by sampling at the tick and scales the exact total
    by that split, so it is approximate over few calls; over a batch of hundreds it is fair."""
    if _RUSAGE_THREAD is None:
        return None
    return int(resource.getrusage(_RUSAGE_THREAD).ru_utime * 1e9)


class BenchClient:
    label = "?"
    # CPU time (user + system) this client spent in measured batches: the client's own cost per
    # call, which wall-clock latency hides behind the server and the scheduler on a busy machine.
    cpu_ns = 0
    # Its user-space share (None: not measurable here): what the client's own code costs, apart
    # from the kernel's work in the syscalls, which no client can avoid.
    user_ns: Optional[int] = 0

    def batch(self, k: int) -> List[int]:
        raise NotImplementedError

    def reset_cpu(self) -> None:
        self.cpu_ns = 0
        self.user_ns = 0

    def _cpu_start(self) -> Tuple[int, Optional[int]]:
        return time.thread_time_ns(), thread_user_ns()

    def _cpu_stop(self, start: Tuple[int, Optional[int]]) -> None:
        """Adds this thread's CPU since ``start`` (read after the timed loop, never inside it)."""
        user1 = thread_user_ns()
        self.cpu_ns += time.thread_time_ns() - start[0]
        if user1 is None or start[1] is None or self.user_ns is None:
            self.user_ns = None
        else:
            self.user_ns += user1 - start[1]

    def close(self) -> None:
        pass


class KitexClient(BenchClient):
    """``Client.call`` on one destination: the library without the Dapr binding layer."""

    def __init__(self, address: str, transport: str, request: bytes, impl: str) -> None:
        self.label = "kitex_fast Client (%s)" % impl
        self._client = Client("echo", address, transport=transport, implementation=impl)
        self._request = request

    def batch(self, k: int) -> List[int]:
        call, req, clock = self._client.call, self._request, time.perf_counter_ns
        out = [0] * k
        cpu0 = self._cpu_start()
        for i in range(k):
            t0 = clock()
            call("echo", req)
            out[i] = clock() - t0
        self._cpu_stop(cpu0)
        return out

    def close(self) -> None:
        self._client.close()


def binding_metadata(address: str, transport: str, **extra: str) -> Dict[str, str]:
    """Dapr's request metadata for the echo service (no rpcTimeout: with TTHeader an explicit one
    would add int key 12 to the header and the frame would differ from the Client rows)."""
    md = {"hostPorts": address, "destService": "echo", "methodName": "echo", "version": "v1",
          "transport": transport}
    md.update(extra)
    return md


class KitexBinding(BenchClient):
    """``KitexOutputBinding.invoke``: what daprd would call, metadata resolution included."""

    def __init__(self, address: str, transport: str, request: bytes, impl: str) -> None:
        self.label = "kitex_fast binding (%s)" % impl
        self._binding = KitexOutputBinding(implementation=impl)
        self._request = InvokeRequest("get", request, binding_metadata(address, transport))

    def batch(self, k: int) -> List[int]:
        invoke, req, clock = self._binding.invoke, self._request, time.perf_counter_ns
        out = [0] * k
        cpu0 = self._cpu_start()
        for i in range(k):
            t0 = clock()
            invoke(req)
            out[i] = clock() - t0
        self._cpu_stop(cpu0)
        return out

    def close(self) -> None:
        self._binding.close()


_echo_thrift = None


def echo_thrift():  # type: ignore[no-untyped-def]
    global _echo_thrift
    if _echo_thrift is None:
        import thriftpy2

        _echo_thrift = thriftpy2.load(str(ECHO_IDL), module_name="echo_thrift")
    return _echo_thrift


class Thriftpy2Client(BenchClient):
    """thriftpy2 at its fastest: Cython binary protocol over the Cython framed transport. It also
    builds the request struct and decodes the reply, which the byte-in/byte-out clients skip."""

    label = "thriftpy2 (cybin, cyframed)"

    def __init__(self, address: str, size: int) -> None:
        from thriftpy2.protocol import TCyBinaryProtocolFactory
        from thriftpy2.rpc import make_client
        from thriftpy2.transport import TCyFramedTransportFactory

        mod = echo_thrift()
        host, _, port = address.rpartition(":")
        self._client = make_client(
            mod.Echo, host, int(port),
            trans_factory=TCyFramedTransportFactory(), proto_factory=TCyBinaryProtocolFactory())
        self._req = mod.Request(message="x" * size)

    def batch(self, k: int) -> List[int]:
        echo, req, clock = self._client.echo, self._req, time.perf_counter_ns
        out = [0] * k
        cpu0 = self._cpu_start()
        for i in range(k):
            t0 = clock()
            echo(req)
            out[i] = clock() - t0
        self._cpu_stop(cpu0)
        return out

    def close(self) -> None:
        self._client.close()


class FloorClient(BenchClient):
    """bench/floor.c as a long-lived child: writes ``k``, reads ``k`` latencies and ``END``."""

    label = "floor (C raw socket)"

    def __init__(self, binary: Path, address: str, frame: bytes, workdir: Path) -> None:
        host, _, port = address.rpartition(":")
        fd, name = tempfile.mkstemp(prefix="floor-frame-", suffix=".bin", dir=str(workdir))
        with os.fdopen(fd, "wb") as f:
            f.write(frame)
        self._frame_path = name
        self._proc = subprocess.Popen(
            [str(binary), host, port, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, bufsize=1)

    def batch(self, k: int) -> List[int]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write("%d\n" % k)
        self._proc.stdin.flush()
        out: List[int] = []
        for line in self._proc.stdout:
            if line.startswith("END"):
                fields = line.split()  # END cpu_ns user_ns
                self.cpu_ns += int(fields[1])
                if self.user_ns is not None:
                    self.user_ns += int(fields[2])
                return out
            out.append(int(line))
        raise RuntimeError("floor exited (status %s) mid-batch" % self._proc.wait())

    def close(self) -> None:
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        finally:
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            os.unlink(self._frame_path)


def go_load(refclient: str, address: str, transport: str, request: bytes, calls: int,
            concurrency: int, workdir: Path) -> "tuple[Dict[str, float], List[int], int]":
    """One ``refclient load`` process: its JSON summary, every call's latency (ns) in order, and
    the CPU time (ns, user + system) the whole process used, start-up included."""
    summary, lat, cpu_ns, _ = go_load_usage(refclient, address, transport, request, calls,
                                            concurrency, workdir)
    return summary, lat, cpu_ns


def go_load_usage(refclient: str, address: str, transport: str, request: bytes, calls: int,
                  concurrency: int, workdir: Path) -> "tuple[Dict[str, float], List[int], int, int]":
    """:func:`go_load` plus the process's user-space CPU time (ns), start-up included."""
    fd, samples = tempfile.mkstemp(prefix="refclient-", suffix=".txt", dir=str(workdir))
    os.close(fd)
    try:
        cmd = [refclient, "load", "-hostports", address, "-service", "echo", "-method", "echo",
               "-transport", transport, "-request-hex", request.hex(), "-n", str(calls),
               "-c", str(concurrency), "-samples", samples]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        user_ns = int((after.ru_utime - before.ru_utime) * 1e9)
        cpu_ns = user_ns + int((after.ru_stime - before.ru_stime) * 1e9)
        if proc.returncode != 0:
            raise RuntimeError("refclient load failed (exit %d): %s"
                               % (proc.returncode, proc.stderr.decode(errors="replace")))
        import json

        summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        if summary.get("errors"):
            raise RuntimeError("refclient load: %s calls failed" % summary["errors"])
        with open(samples) as f:
            lat = [int(line) for line in f if line.strip()]
    finally:
        os.unlink(samples)
    return summary, lat, cpu_ns, user_ns


class GoClient(BenchClient):
    label = "Go Kitex refclient"

    def __init__(self, refclient: str, address: str, transport: str, request: bytes,
                 workdir: Path) -> None:
        self._args = (refclient, address, transport, request)
        self._workdir = workdir

        self._base_cpu_ns = 0
        self._base_user_ns = 0

    def calibrate(self, runs: int = 3) -> None:
        """CPU of a process that only starts and makes the warm-up calls (median of ``runs``):
        subtracted from every batch so ``cpu_ns`` counts the measured calls alone (approximate:
        Go's runtime start-up cost varies run to run)."""
        refclient, address, transport, request = self._args
        costs = sorted(go_load_usage(refclient, address, transport, request, GO_WARMUP, 1,
                                     self._workdir)[2:] for _ in range(runs))
        self._base_cpu_ns, self._base_user_ns = costs[len(costs) // 2]

    def batch(self, k: int) -> List[int]:
        refclient, address, transport, request = self._args
        _, lat, cpu, user = go_load_usage(refclient, address, transport, request, GO_WARMUP + k, 1,
                                          self._workdir)
        self.cpu_ns += max(cpu - self._base_cpu_ns, 0)
        if self.user_ns is not None:
            self.user_ns += max(user - self._base_user_ns, 0)
        return lat[GO_WARMUP:]

