#!/usr/bin/env python3
"""Soak: a million calls through one KitexOutputBinding against a real Kitex echo server, with
RSS and open fds sampled as it goes. A bench, not a test: it asserts nothing, it reports growth.

    python bench/soak.py [--calls 1000000] [--threads 4] [--impl c|py] [--transport framed]
                         [--samples 20] [--out bench/results/soak.md]

Every call is checked (its own reply, else counted as a failure). RSS is read after a
``gc.collect()`` at each sample, so garbage is not counted as growth. Growth is reported two ways:
end minus the first sample after warm-up, and the least-squares slope over the second half of the
run (KiB per 100k calls), which is what a leak looks like once caches are warm.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import List, Tuple

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests" / "interop"))  # peers.py: runs the Go Kitex server

import peers  # noqa: E402

from kitex_fast import InvokeRequest, KitexOutputBinding  # noqa: E402
from kitex_fast.testing import echo_request, read_echo_reply  # noqa: E402


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def slope(points: List[Tuple[int, int]]) -> float:
    """Least-squares slope of (calls, KiB), in KiB per 100k calls."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    if var == 0:
        return 0.0
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var * 100_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--impl", choices=("c", "py"), default="c")
    parser.add_argument("--transport", default="framed")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    peers.build_peers()
    server = peers.KitexServer("default", "echo").start()
    samples: List[Tuple[int, float, int, int]] = []  # (calls done, seconds, RSS KiB, fds)
    done = [0]
    failures = [0]
    lock = threading.Lock()
    per_thread = args.calls // args.threads
    step = max(args.calls // args.samples, 1)
    try:
        with KitexOutputBinding(implementation=args.impl) as binding:
            meta = {"hostPorts": server.address, "destService": "echo", "methodName": "echo",
                    "version": "v1", "transport": args.transport, "rpcTimeout": "5s"}
            # Warm-up: pools, caches and the allocator settle before the first sample.
            for i in range(2000):
                binding.invoke(InvokeRequest("get", echo_request("warm"), meta))
            gc.collect()
            start = time.monotonic()
            samples.append((0, 0.0, rss_kib(), open_fds()))
            next_sample = [step]

            def worker(n: int) -> None:
                text = "soak-%d" % n
                request = InvokeRequest("get", echo_request(text), meta)
                want = text + ",hi Kitex"
                for _ in range(per_thread):
                    try:
                        ok = read_echo_reply(binding.invoke(request).data) == want
                    except Exception:  # noqa: BLE001 - counted, reported
                        ok = False
                    with lock:
                        done[0] += 1
                        if not ok:
                            failures[0] += 1
                        if done[0] >= next_sample[0]:
                            next_sample[0] += step
                            samples.append((done[0], time.monotonic() - start, rss_kib(), open_fds()))

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            gc.collect()
            samples.append((done[0], time.monotonic() - start, rss_kib(), open_fds()))
    finally:
        server.stop()

    first, last = samples[0], samples[-1]
    half = [(c, r) for c, _, r, _ in samples if c >= last[0] // 2]
    lines = [
        "# Soak: %d calls, %d threads, %s, implementation %s" % (done[0], args.threads, args.transport, args.impl),
        "",
        "Machine: %s, %d CPUs (shared), Python %s. Real Kitex echo server (Go), one binding."
        % (platform.platform(), os.cpu_count() or 0, platform.python_version()),
        "",
        "| calls | seconds | RSS KiB | fds |",
        "| ---: | ---: | ---: | ---: |",
    ]
    lines += ["| %d | %.1f | %d | %d |" % s for s in samples]
    lines += [
        "",
        "- failed calls: %d" % failures[0],
        "- throughput: %.0f calls/s" % (last[0] / last[1] if last[1] else 0.0),
        "- RSS growth, end - start (after warm-up): %+d KiB" % (last[2] - first[2]),
        "- RSS slope over the second half: %+.1f KiB per 100k calls" % slope(half),
        "- fds: %d at start, %d at end (max %d)" % (first[3], last[3], max(s[3] for s in samples)),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    return 1 if failures[0] else 0


if __name__ == "__main__":
    sys.exit(main())
