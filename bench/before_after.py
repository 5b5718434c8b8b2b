#!/usr/bin/env python3
"""This tree against an earlier commit, side by side in one process and one run.

    PYTHONPATH=src python bench/before_after.py --rev d13184e [--rounds 20] [--calls 400]

On a shared VM the latency of a loopback round trip moves by 2-3x within the hour, so figures
from two runs (or from bench/results/latest.md of another day) do not compare. Here the earlier
commit's package is built from ``git archive`` and imported beside this one under another name
(every import inside kitex_fast is relative, so a copy is its own package, as when vendored),
and the C floor, the old and the new clients take turns in the same rounds, pinned as in run.py.
Writes OUT/before_after.md. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests" / "interop"))
try:
    import kitex_fast  # noqa: F401  (an installed package, or PYTHONPATH=src)
except ImportError:
    sys.path.insert(0, str(ROOT / "src"))
import kitex_fast  # noqa: E402

import peers  # noqa: E402
from kitex_fast.testing import echo_request  # noqa: E402

import _clients  # noqa: E402
import run as bench_run  # noqa: E402

BEFORE = "kitex_fast_before"


def build_before(rev: str, work: Path) -> Path:
    """The package at ``rev``, compiled in place, copied to WORK/kitex_fast_before."""
    tree = work / "tree"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             stdout=subprocess.PIPE).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree)  # our own repository's archive
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=str(tree),
                   check=True, stdout=subprocess.DEVNULL)
    dest = work / "pkgs" / BEFORE
    shutil.copytree(tree / "src" / "kitex_fast", dest)
    return dest.parent


class Runner:
    """A client under test: a zero-argument call, timed per call, CPU per batch."""

    def __init__(self, label: str, call: Callable[[], object]) -> None:
        self.label, self._call = label, call
        self.cpu_ns = 0
        self.user_s = 0.0

    def batch(self, k: int) -> List[int]:
        call, clock = self._call, time.perf_counter_ns
        out = [0] * k
        cpu0 = time.thread_time_ns()
        user0 = resource.getrusage(resource.RUSAGE_THREAD).ru_utime
        for i in range(k):
            t0 = clock()
            call()
            out[i] = clock() - t0
        self.cpu_ns += time.thread_time_ns() - cpu0
        self.user_s += resource.getrusage(resource.RUSAGE_THREAD).ru_utime - user0
        return out


def runners(mod, tag: str, address: str, transport: str, request: bytes) -> List[Runner]:
    out = []
    for impl in ("c", "py"):
        client = mod.Client("echo", address, transport=transport, implementation=impl,
                            connect_timeout=5)
        out.append(Runner("Client (%s) %s" % (impl, tag),
                          lambda c=client: c.call("echo", request)))
        binding = mod.KitexOutputBinding(implementation=impl)
        invoke = mod.InvokeRequest("get", request, _clients.binding_metadata(address, transport))
        out.append(Runner("binding (%s) %s" % (impl, tag),
                          lambda b=binding, r=invoke: b.invoke(r)))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", required=True, help="the earlier commit (anything git archive takes)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--calls", type=int, default=400, help="calls per client per round")
    ap.add_argument("--transport", default="framed")
    ap.add_argument("--size", type=int, default=1024, help="request string length")
    ap.add_argument("--out", default=str(BENCH / "results"))
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="kitex-before-"))
    server = None
    try:
        print("building %s ..." % args.rev, flush=True)
        sys.path.insert(0, str(build_before(args.rev, work)))
        before = importlib.import_module(BEFORE)
        if not (before.codec.USING_EXTENSION and kitex_fast.codec.USING_EXTENSION):
            raise SystemExit("both packages need their compiled core")
        info = bench_run.machine_info()  # (before pinning: nproc counts the CPUs we may use)
        server_cpus, _ = bench_run.pin_cpus()
        server = peers.KitexServer("default", "echo", cpus=server_cpus).start()
        request = echo_request("x" * args.size)
        frame = bench_run.request_frame(server.address, args.transport, request)
        floor = _clients.FloorClient(bench_run.build_floor(), server.address, frame, work)
        clients = [floor] + runners(before, "before", server.address, args.transport, request) \
            + runners(kitex_fast, "after", server.address, args.transport, request)
        for c in clients:
            c.batch(300)
            c.cpu_ns = 0
            if isinstance(c, Runner):
                c.user_s = 0.0
        samples: Dict[str, List[int]] = {c.label: [] for c in clients}
        t0 = time.monotonic()
        for r in range(args.rounds):
            k = r % len(clients)  # rotate: no client always follows the same one
            for c in clients[k:] + clients[:k]:
                samples[c.label].extend(c.batch(args.calls))
        seconds = time.monotonic() - t0
        med = {label: statistics.median(v) for label, v in samples.items()}
        cpu = {c.label: c.cpu_ns / len(samples[c.label]) for c in clients}
        f, fc = med[floor.label], cpu[floor.label]
        md = [
            "# Before and after, side by side",
            "",
            "`python bench/before_after.py --rev %s`: commit %s (before) against this tree (%s), "
            "imported side by side in one process. Machine: `%s`, %s CPUs, %s. Kitex echo server, "
            "%s, a %d-character request, %d rounds × %d calls per client, interleaved; server "
            "and clients pinned apart as in run.py; %.0f s. Medians; CPU is the calling thread's "
            "user + system time per call, user CPU its user time alone (tick-sampled, approximate). "
            "%s UTC."
            % (args.rev, args.rev, info["commit"], info["uname"], info["nproc"], info["cpu"],
               args.transport, args.size, args.rounds, args.calls, seconds,
               datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M")),
            "",
            "| client | median µs | × floor | client CPU µs/call | × floor's CPU | user CPU µs/call |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for c in clients:
            n = len(samples[c.label])
            user = "%.1f" % (c.user_s / n * 1e6) if isinstance(c, Runner) else "n/a"
            md.append("| %s | %.1f | %.2f× | %.1f | %.2f× | %s |" % (
                c.label, med[c.label] / 1e3, med[c.label] / f, cpu[c.label] / 1e3,
                cpu[c.label] / fc, user))
        text = "\n".join(md) + "\n"
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "before_after.md").write_text(text)
        print(text)
        return 0
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
