#!/usr/bin/env python3
"""The Dapr component alone: its own cost per Invoke, without daprd in the loop, in one run.

    python bench/component_alone.py [--quick] [--rounds R] [--duration S] [--no-callgrind] [--out DIR]

bench/dapr_bench.py measures what a Dapr user gets (app -> daprd -> component -> Kitex); there
daprd spends about two thirds of each call's CPU, so the component's own share moves inside that
noise. Here bench/go's ``daprload -component`` calls each component's unix socket directly
(``dapr.proto.components.v1.OutputBinding/Invoke``, grpc-go, C workers on one connection, as daprd
holds one), with the Go binding's four metadata keys, 1 KiB Framed echo, one real Kitex server.

Rows, taking turns round after round:
- ``kitex-fast component`` on the compiled server, once per event loop it can run (uvloop when
  installed, asyncio): the loop is the one choice a user makes that changes the cost per call;
- the Go null component (bench/go/cmd/nullcomp: grpc-go, answers with the request): the floor;
- the Go peer (bench/go/cmd/kitexpeer: grpc-go + Kitex's binary generic client).

Per row and caller count (1, 16, 64): calls/s, p50, the component's CPU per call (utime+stime over
the measured calls). Then, for the Python rows, instructions per Invoke under callgrind
((Ir after N2 calls - Ir after N1 calls) / (N2 - N1), in one process each: not wall-clock, so the
same on a busy machine), and each component's RSS idle and after the runs.

Writes OUT/component.md and prints it. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests" / "dapr"))
sys.path.insert(0, str(BENCH.parent / "tests" / "interop"))

import run  # noqa: E402  (bench/run.py: machine info)
import peers  # noqa: E402
import stack  # noqa: E402
from dapr_bench import GoComponent, build_go, cpu_ticks, rss_kib  # noqa: E402
from kitex_fast.testing import echo_request  # noqa: E402

CALLERS = (1, 16, 64)
INSTANCE = "kitex"  # the x-component-instance daprd would send: the component's name


def loops() -> List[str]:
    """The event loops the compiled server can run here (uvloop only when installed)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return ["uvloop", "asyncio"]


def wait_for_socket(path: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the component on %s did not start" % path) from None
            time.sleep(0.1)
        finally:
            probe.close()


def load(loadgen: Path, sock: str, data_file: str, meta: Dict[str, str], callers: int, *,
         duration: float = 0.0, warmup: float = 0.0, calls: int = 0, pid: int = 0) -> dict:
    import json

    cmd = [str(loadgen), "-component", sock, "-binding", INSTANCE, "-data-file", data_file,
           "-c", str(callers), "-warmup", "%gs" % warmup, "-timeout", "300s"]
    cmd += ["-n", str(calls)] if calls else ["-duration", "%gs" % duration]
    for k, v in meta.items():
        cmd += ["-meta", "%s=%s" % (k, v)]
    if pid:
        cmd += ["-pid", "component=%d" % pid]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900, check=True).stdout
    result: dict = json.loads(out)
    if result["errors"] or result["bad_replies"]:
        raise RuntimeError("%s: %d errors, %d bad replies; first: %s"
                           % (sock, result["errors"], result["bad_replies"], result.get("first_error")))
    return result


def instructions_per_call(loadgen: Path, loop: str, work: str, data_file: str, meta: Dict[str, str],
                          n1: int, n2: int) -> float:
    """Instructions per Invoke of the compiled component on ``loop``, under callgrind."""
    totals = []
    for n in (n1, n2):
        folder = os.path.join(work, "cg-%s-%d" % (loop, n))
        os.makedirs(folder)
        out = os.path.join(work, "callgrind.%s.%d" % (loop, n))
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, sys.executable, "-m", "kitex_fast.dapr",
             "--name", INSTANCE, "--socket-folder", folder, "--server", "compiled", "--implementation", "c",
             "--loop", loop], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_socket(os.path.join(folder, INSTANCE + ".sock"), proc, timeout=300)
            load(loadgen, os.path.join(folder, INSTANCE + ".sock"), data_file, meta, 16, calls=n)
        finally:
            proc.terminate()
            proc.wait(timeout=300)
        with open(out) as f:
            m = re.search(r"^(?:summary|totals):\s+(\d+)", f.read(), re.M)
        if m is None:
            raise RuntimeError("no instruction total in %s" % out)
        totals.append(int(m.group(1)))
    return (totals[1] - totals[0]) / (n2 - n1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 round of 1 s, a short callgrind run")
    p.add_argument("--rounds", type=int, help="rounds per row and caller count (default 5; quick 1)")
    p.add_argument("--duration", type=float, help="measured seconds per sample (default 3; quick 1)")
    p.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    p.add_argument("--out", default=str(BENCH / "results"))
    a = p.parse_args(argv)
    rounds = a.rounds or (1 if a.quick else 5)
    duration = a.duration or (1.0 if a.quick else 3.0)
    go = build_go()
    server = peers.KitexServer("default").start()
    work = tempfile.mkdtemp(prefix="kf-alone-")
    data_file = os.path.join(work, "request")
    with open(data_file, "wb") as f:
        f.write(echo_request("x" * 1024))
    meta = {"hostPorts": server.address, "destService": "echo", "methodName": "echo", "version": "v1"}

    rows: List[Tuple[str, str, object]] = []  # (key, label, started component)
    try:
        for loop in loops():
            c = stack.Component(os.path.join(work, loop), name=INSTANCE, implementation="c", server="compiled",
                                extra=["--loop", loop]).start()
            rows.append((loop, "`kitex-fast component`, compiled server, %s loop" % loop, c))
        for key, label in (("nullcomp", "Go null component (grpc-go, replies with the request)"),
                           ("kitexpeer", "Go peer: grpc-go component + Kitex v0.16.3 binary generic client")):
            os.makedirs(os.path.join(work, key))
            rows.append((key, label, GoComponent(go[key], os.path.join(work, key), INSTANCE).start()))
        idle = {key: rss_kib(c.proc.pid) for key, _, c in rows}  # type: ignore[attr-defined]
        samples: Dict[Tuple[str, int], List[dict]] = {}
        for r in range(rounds):
            order = rows[r % len(rows):] + rows[:r % len(rows)]
            for callers in CALLERS:
                for key, _, c in order:
                    res = load(go["daprload"], c.socket, data_file, meta, callers, duration=duration,  # type: ignore[attr-defined]
                               warmup=0.3, pid=c.proc.pid)  # type: ignore[attr-defined]
                    samples.setdefault((key, callers), []).append(res)
            print("round %d/%d done" % (r + 1, rounds), flush=True)
        after = {key: rss_kib(c.proc.pid) for key, _, c in rows}  # type: ignore[attr-defined]
    finally:
        for _, _, c in rows:
            c.stop()  # type: ignore[attr-defined]
    instructions: Dict[str, float] = {}
    if not a.no_callgrind:
        n1, n2 = (100, 600) if a.quick else (500, 2500)
        for loop in loops():
            instructions[loop] = instructions_per_call(go["daprload"], loop, work, data_file, meta, n1, n2)
            print("callgrind %s: %.0f instructions per Invoke" % (loop, instructions[loop]), flush=True)
    server.stop()

    def med(key: str, callers: int, field: str) -> float:
        return statistics.median(s[field] for s in samples[(key, callers)])

    def cpu_us(key: str, callers: int) -> float:
        ss = samples[(key, callers)]
        ticks = sum(s["cpu_ticks"]["component"] for s in ss)
        return ticks * 1e6 / os.sysconf("SC_CLK_TCK") / max(sum(s["calls"] for s in ss), 1)

    info = run.machine_info()
    null = "nullcomp"
    md = ["# The Dapr component alone: its own cost per Invoke, without daprd", "",
          "Machine: %s, %s CPUs (%s), %s, %s; Kitex %s (server: Go, default mode); commit %s, %s. "
          "Load: bench/go `daprload -component` (grpc-go, C workers on one connection) straight to each "
          "component's socket; metadata: the Go binding's four keys; 1 KiB Framed echo. Medians over %d "
          "rounds of %g s per row and caller count; rows take turns. Ratios: against the Go null component "
          "in this run. Load average (1 min) at the end: %.2f." % (
              info["uname"], info["nproc"], info["cpu"], info["python"], info["go"], info["kitex"],
              info["commit"], info["date"], rounds, duration, os.getloadavg()[0]),
          "", "| component | calls/s @1 | @16 | @64 | p50 µs @1 | CPU µs/call @64 (× null) | RSS idle → after, MiB |",
          "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for key, label, _ in rows:
        cps = [med(key, n, "calls_per_s") for n in CALLERS]
        md.append("| %s | %s | %s | %s | %.0f | %.1f (%.2f×) | %.1f → %.1f |" % (
            label, *("{:,.0f}".format(x) for x in cps), med(key, 1, "p50_us"), cpu_us(key, 64),
            cpu_us(key, 64) / cpu_us(null, 64), idle[key] / 1024, after[key] / 1024))
    if instructions:
        md += ["", "Instructions per Invoke in the component process (callgrind, 16 callers; deterministic):", ""]
        md += ["- compiled server, %s loop: %s" % (loop, "{:,.0f}".format(n)) for loop, n in instructions.items()]
    md.append("")
    text = "\n".join(md)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ("component%s.md" % ("-quick" if a.quick else ""))).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
