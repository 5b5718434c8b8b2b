#!/usr/bin/env python3
"""kitex_fast.aio under concurrency, side by side in one run (issue 9).

    python bench/aio.py [--quick] [--out bench/results]

At 1, 16, 64 and 256 calls in flight against one real Kitex echo server (default mode, Framed,
1 KiB requests), pinned to its own CPU (bench/run.py pin_cpus): calls/s, p50/p99 latency and client
CPU per call for

- kitex_fast.aio Client, compiled and pure twin, on asyncio's default loop, and compiled on uvloop
  (N coroutines, each making its calls one after another on one shared client), on the default
  connection model (one call per connection at a time, as Kitex's client); and compiled with the
  opt-in ``pipelining`` (many calls per connection) as a row of its own;
- the sync KitexOutputBinding shared by N threads (bench/run.py threaded_run);
- the Go reference client, ``refclient load -c N`` (Kitex's binary generic client, as Dapr's);
- thriftpy2's asyncio client on Framed (one client and connection per coroutine: a TAsyncClient
  carries one call at a time);
- the loop's floor, on asyncio's loop and on uvloop: a raw BufferedProtocol per coroutine that
  writes a pre-framed request through the loop's transport and wakes when the whole reply is
  back (no codec, seq id, pool or timeout): what a client that keeps to the loop's transports
  pays at least. (On asyncio's loop the compiled driver sends on the socket itself while the
  transport holds nothing, so it can go below this row.)

Rows take turns within each round so machine drift hits all of them alike. Client CPU is the
process's user+system time over the measured calls (for Go: the refclient process, minus a
calibrated start-up run).

Then the slow-method table (issue 17): 64 callers of a Kitex method that takes 50 ms (rich.thrift
``sleep(50)`` on a default, non-mux server) through the aio binding (64 tasks), the same with
``pipelining``, and the sync binding on 64 threads: calls/s, p50, p99 and p50 / 50 ms. An instant
echo hides queueing; a method that takes time shows it.

Writes OUT/aio.md. No timing is ever asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import run  # noqa: E402  (bench/run.py: sys.path, peers, pinning, statistics, machine info)
import _clients  # noqa: E402

import peers  # noqa: E402
from peers import sleep_call  # noqa: E402
from kitex_fast import Client as SyncClient  # noqa: E402
from kitex_fast import InvokeRequest, KitexOutputBinding  # noqa: E402
from kitex_fast.aio import Client  # noqa: E402
from kitex_fast.aio import KitexOutputBinding as AioBinding  # noqa: E402
from kitex_fast.testing import echo_request, read_echo_reply  # noqa: E402

AIO_C = "kitex_fast.aio (c)"
AIO_PY = "kitex_fast.aio (py)"
AIO_UV = "kitex_fast.aio (c, uvloop)"
AIO_PIPE = "kitex_fast.aio (c), pipelining"
SYNC = "sync binding (c), N threads"
SYNC_CLIENT = "sync Client (c), 1 thread"
GO = "Go Kitex refclient"
TP2 = "thriftpy2 aio (framed)"
FLOOR = "floor: raw protocol, asyncio"
FLOOR_UV = "floor: raw protocol, uvloop"
ROWS = (AIO_C, AIO_PY, AIO_UV, AIO_PIPE, SYNC, GO, TP2, FLOOR, FLOOR_UV)
SIZE = 1024

Result = Tuple[float, List[int], int]  # seconds, latencies (ns), client CPU (ns)


def _cpu_ns() -> int:
    return time.process_time_ns()


async def _workers(call: Callable[[], Any], n: int, calls: int) -> Tuple[float, List[int]]:
    """``calls`` calls over ``n`` coroutines, each making its share one after another."""
    per = calls // n
    clock = time.perf_counter_ns
    lat: List[int] = []

    async def worker() -> None:
        out = [0] * per
        for i in range(per):
            t0 = clock()
            await call()
            out[i] = clock() - t0
        lat.extend(out)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(n)))
    return time.perf_counter() - t0, lat


class AioRunner:
    """One kitex_fast.aio client on its own event loop, kept across rounds."""

    def __init__(self, address: str, impl: str, loop_kind: str, data: bytes, **options: Any) -> None:
        if loop_kind == "uvloop":
            import uvloop

            self.loop = uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        # The Client's defaults (no pool_size, Kitex's 50 ms connect timeout), as a user gets them.
        self.client = Client("echo", address, implementation=impl, **options)
        self.data = data
        reply = self.loop.run_until_complete(self.client.call("echo", data))
        assert read_echo_reply(reply).endswith(",hi Kitex")

    def __call__(self, n: int, calls: int) -> Result:
        call = self.client.call
        data = self.data

        def one() -> Any:
            return call("echo", data)

        self.loop.run_until_complete(_workers(one, n, max(n * 20, calls // 10)))  # warm-up
        cpu = _cpu_ns()
        seconds, lat = self.loop.run_until_complete(_workers(one, n, calls))
        return seconds, lat, _cpu_ns() - cpu

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


class _RawEcho(asyncio.BufferedProtocol):
    """The event loop's floor for a call: one connection that writes a pre-framed request and
    wakes its caller when a whole reply frame is back. No codec, no seq id, no pool, no timeout:
    what a client that writes through this loop's transport pays at least."""

    def __init__(self) -> None:
        self.buf = bytearray(1 << 16)
        self.view = memoryview(self.buf)
        self.n = 0
        self.fut: Any = None
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> Any:
        return self.view[self.n:]

    def buffer_updated(self, nbytes: int) -> None:
        self.n += nbytes
        if self.n >= 4 and self.n >= 4 + int.from_bytes(self.buf[:4], "big"):
            self.n = 0
            fut, self.fut = self.fut, None
            fut.set_result(None)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError("the server closed the connection"))


class LoopFloorRunner:
    """N coroutines, each on its own :class:`_RawEcho` connection: the loop's floor."""

    def __init__(self, address: str, loop_kind: str, data: bytes) -> None:
        if loop_kind == "uvloop":
            import uvloop

            self.loop = uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self.host, _, port = address.rpartition(":")
        self.port = int(port)
        self.framed = len(data).to_bytes(4, "big") + data
        self.conns: List[_RawEcho] = []

    def __call__(self, n: int, calls: int) -> Result:
        loop = self.loop
        while len(self.conns) < n:
            _, proto = loop.run_until_complete(loop.create_connection(_RawEcho, self.host, self.port))
            self.conns.append(proto)
        framed = self.framed

        async def workers(k: int) -> Tuple[float, List[int]]:
            clock = time.perf_counter_ns
            lat: List[int] = []

            async def worker(proto: _RawEcho) -> None:
                out = [0] * k
                for i in range(k):
                    t0 = clock()
                    proto.fut = fut = loop.create_future()
                    proto.transport.write(framed)
                    await fut
                    out[i] = clock() - t0
                lat.extend(out)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(p) for p in self.conns[:n]))
            return time.perf_counter() - t0, lat

        loop.run_until_complete(workers(max(20, calls // n // 10)))  # warm-up
        cpu = _cpu_ns()
        seconds, lat = loop.run_until_complete(workers(calls // n))
        return seconds, lat, _cpu_ns() - cpu

    def close(self) -> None:
        for proto in self.conns:
            proto.transport.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


class Thriftpy2AioRunner:
    """thriftpy2's TAsyncClient over TAsyncFramedTransport: one client per coroutine."""

    def __init__(self, address: str) -> None:
        from thriftpy2.contrib.aio.transport.framed import TAsyncFramedTransportFactory

        self.host, _, port = address.rpartition(":")
        self.port = int(port)
        self.mod = _clients.echo_thrift()
        self.trans = TAsyncFramedTransportFactory()
        self.loop = asyncio.new_event_loop()
        self.clients: List[Any] = []

    def _ensure(self, n: int) -> None:
        from thriftpy2.rpc import make_aio_client

        while len(self.clients) < n:
            self.clients.append(self.loop.run_until_complete(
                make_aio_client(self.mod.Echo, self.host, self.port, trans_factory=self.trans,
                                timeout=30000)))

    def __call__(self, n: int, calls: int) -> Result:
        self._ensure(n)
        req = self.mod.Request(message="x" * SIZE)
        per = calls // n
        clock = time.perf_counter_ns

        async def go(k: int) -> Tuple[float, List[int]]:
            lat: List[int] = []

            async def worker(client: Any) -> None:
                out = [0] * k
                for i in range(k):
                    t0 = clock()
                    await client.echo(req)
                    out[i] = clock() - t0
                lat.extend(out)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(c) for c in self.clients[:n]))
            return time.perf_counter() - t0, lat

        self.loop.run_until_complete(go(max(20, per // 10)))
        cpu = _cpu_ns()
        seconds, lat = self.loop.run_until_complete(go(per))
        return seconds, lat, _cpu_ns() - cpu

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.loop.close()


def sync_threads(binding: KitexOutputBinding, request: InvokeRequest) -> Callable[[int, int], Result]:
    def runner(n: int, calls: int) -> Result:
        run.threaded_run(binding, request, n, max(n * 20, calls // 10))  # warm-up
        cpu = _cpu_ns()
        seconds, lat = run.threaded_run(binding, request, n, calls)
        return seconds, lat, _cpu_ns() - cpu

    return runner


def sync_client(address: str, data: bytes) -> Callable[[int, int], Result]:
    client = SyncClient("echo", address, implementation="c")

    def runner(n: int, calls: int) -> Result:
        assert n == 1
        call, clock = client.call, time.perf_counter_ns
        for _ in range(max(20, calls // 10)):
            call("echo", data)
        out = [0] * calls
        cpu = _cpu_ns()
        t0 = time.perf_counter()
        for i in range(calls):
            c0 = clock()
            call("echo", data)
            out[i] = clock() - c0
        return time.perf_counter() - t0, out, _cpu_ns() - cpu

    return runner


def go_runner(refclient: str, address: str, data: bytes, work: Path) -> Callable[[int, int], Result]:
    base: Dict[int, int] = {}

    def runner(n: int, calls: int) -> Result:
        if n not in base:  # start-up and warm-up CPU of a run that makes almost no calls
            costs = sorted(_clients.go_load(refclient, address, "framed", data, n, n, work)[2]
                           for _ in range(3))
            base[n] = costs[1]
        summary, lat, cpu = _clients.go_load(refclient, address, "framed", data, calls, n, work)
        return float(summary["seconds"]), lat, max(cpu - base[n], 0)

    return runner


def measure(cfg: argparse.Namespace, address: str, work: Path) -> Dict[Tuple[int, str], Dict[str, float]]:
    data = echo_request("x" * SIZE)
    # (connectTimeout 2s: 256 threads opening their connections at once on a loaded 2-CPU machine
    # may not all be scheduled within Kitex's 50 ms; the aio rows run on the defaults)
    request = InvokeRequest("get", data, _clients.binding_metadata(address, "framed", connectTimeout="2s"))
    binding = KitexOutputBinding(implementation="c")
    refclient = str(peers.BIN_DIR / "refclient")
    runners: Dict[str, Callable[[int, int], Result]] = {
        AIO_C: AioRunner(address, "c", "asyncio", data),
        AIO_PY: AioRunner(address, "py", "asyncio", data),
        AIO_PIPE: AioRunner(address, "c", "asyncio", data, pipelining=True),
        SYNC: sync_threads(binding, request),
        GO: go_runner(refclient, address, data, work),
        TP2: Thriftpy2AioRunner(address),
        FLOOR: LoopFloorRunner(address, "asyncio", data),
    }
    try:
        import uvloop  # noqa: F401

        runners[AIO_UV] = AioRunner(address, "c", "uvloop", data)
        runners[FLOOR_UV] = LoopFloorRunner(address, "uvloop", data)
    except ImportError:
        print("  uvloop not installed: no uvloop row (pip install 'kitex_fast[uvloop]')")
    single = sync_client(address, data)
    out: Dict[Tuple[int, str], Dict[str, float]] = {}
    try:
        for n in cfg.levels:
            calls = cfg.calls_1 if n == 1 else cfg.calls
            calls -= calls % n
            acc: Dict[str, List[Result]] = {}
            order = list(runners.items()) + ([(SYNC_CLIENT, single)] if n == 1 else [])
            t0 = time.monotonic()
            for r in range(cfg.rounds):
                k = r % len(order)
                for label, runner in order[k:] + order[:k]:
                    acc.setdefault(label, []).append(runner(n, calls))
            for label, results in acc.items():
                seconds = sum(x[0] for x in results)
                lat = [v for x in results for v in x[1]]
                cpu = sum(x[2] for x in results)
                summary = run.summarize(lat)
                out[(n, label)] = {"calls_per_s": len(lat) / seconds, "p50": summary["p50"],
                                   "p99": summary["p99"], "cpu_ns": cpu / len(lat), "calls": len(lat)}
            print("  %3d in flight: %.1f s" % (n, time.monotonic() - t0), flush=True)
    finally:
        for runner in runners.values():
            close = getattr(runner, "close", None)
            if close is not None:
                close()
        binding.close()
    return out


SLOW_MS = 50
SLOW_CALLERS = 64
SLOW_AIO = "aio binding (c), 64 tasks"
SLOW_AIO_PY = "aio binding (py), 64 tasks"
SLOW_PIPE = "aio binding (c), 64 tasks, pipelining"
SLOW_SYNC = "sync binding (c), 64 threads"
SLOW_ROWS = (SLOW_AIO, SLOW_AIO_PY, SLOW_PIPE, SLOW_SYNC)



def measure_slow(cfg: argparse.Namespace, address: str) -> Dict[str, Dict[str, float]]:
    """64 callers of a 50 ms method through each binding, rows taking turns."""
    data = sleep_call(SLOW_MS)
    meta = {"hostPorts": address, "destService": "rich", "methodName": "sleep", "version": "v1",
            "connectTimeout": "2s", "rpcTimeout": "60s"}
    per = cfg.slow_calls // SLOW_CALLERS

    def aio_row(impl: str, **extra: str) -> Callable[[], Result]:
        loop = asyncio.new_event_loop()
        binding = AioBinding(implementation=impl)
        request = InvokeRequest("get", data, dict(meta, **extra))

        def one() -> Any:
            return binding.invoke(request)

        def runner() -> Result:
            loop.run_until_complete(_workers(one, SLOW_CALLERS, SLOW_CALLERS))  # warm-up: connections
            cpu = _cpu_ns()
            seconds, lat = loop.run_until_complete(_workers(one, SLOW_CALLERS, per * SLOW_CALLERS))
            return seconds, lat, _cpu_ns() - cpu

        runner.close = lambda: (loop.run_until_complete(binding.close()), loop.close())  # type: ignore[attr-defined]
        return runner

    sync_binding = KitexOutputBinding(implementation="c")
    sync_request = InvokeRequest("get", data, meta)

    def sync_row() -> Result:
        run.threaded_run(sync_binding, sync_request, SLOW_CALLERS, SLOW_CALLERS)  # warm-up
        cpu = _cpu_ns()
        seconds, lat = run.threaded_run(sync_binding, sync_request, SLOW_CALLERS, per * SLOW_CALLERS)
        return seconds, lat, _cpu_ns() - cpu

    runners: Dict[str, Callable[[], Result]] = {
        SLOW_AIO: aio_row("c"),
        SLOW_AIO_PY: aio_row("py"),
        SLOW_PIPE: aio_row("c", pipelining="true"),
        SLOW_SYNC: sync_row,
    }
    acc: Dict[str, List[Result]] = {}
    try:
        order = list(runners.items())
        for r in range(cfg.rounds):
            k = r % len(order)
            for label, runner in order[k:] + order[:k]:
                acc.setdefault(label, []).append(runner())
    finally:
        for runner in runners.values():
            close = getattr(runner, "close", None)
            if close is not None:
                close()
        sync_binding.close()
    out: Dict[str, Dict[str, float]] = {}
    for label, results in acc.items():
        seconds = sum(x[0] for x in results)
        lat = [v for x in results for v in x[1]]
        summary = run.summarize(lat)
        out[label] = {"calls_per_s": len(lat) / seconds, "p50": summary["p50"], "p99": summary["p99"],
                      "calls": len(lat)}
    return out


def report_slow(cfg: argparse.Namespace, data: Dict[str, Dict[str, float]]) -> List[str]:
    lines = [
        "## A method that takes %d ms, %d callers" % (SLOW_MS, SLOW_CALLERS),
        "",
        "rich.thrift `sleep(%d)` on a default (non-mux) Kitex server, Framed; %d rounds of %d calls "
        "per row. The ideal: p50 = %d ms and %d calls/s (%d callers / %d ms)."
        % (SLOW_MS, cfg.rounds, cfg.slow_calls - cfg.slow_calls % SLOW_CALLERS, SLOW_MS,
           SLOW_CALLERS * 1000 // SLOW_MS, SLOW_CALLERS, SLOW_MS),
        "",
    ]
    rows = []
    for label in SLOW_ROWS:
        d = data.get(label)
        if d is None:
            continue
        rows.append([label, "%.0f" % d["calls_per_s"], "%.1f" % (d["p50"] / 1e6), "%.1f" % (d["p99"] / 1e6),
                     "%.2fx" % (d["p50"] / 1e6 / SLOW_MS)])
    lines += run.table(["path", "calls/s", "p50 ms", "p99 ms", "p50 / %d ms" % SLOW_MS], rows)
    lines.append("")
    return lines


def report(cfg: argparse.Namespace, info: Dict[str, str], pinned: str,
           data: Dict[Tuple[int, str], Dict[str, float]]) -> str:
    lines = [
        "# kitex_fast.aio under concurrency%s" % (" (--quick)" if cfg.quick else ""),
        "",
        "Generated by `python bench/aio.py%s` on %s, %s CPUs (%s), %s; Go %s, Kitex %s, thriftpy2 %s. "
        "Commit %s, %s. Pinning: %s." % (" --quick" if cfg.quick else "", info["uname"], info["nproc"],
                                          info["cpu"], info["python"], info["go"], info["kitex"],
                                          info["thriftpy2"], info["commit"], info["date"], pinned),
        "",
        "One Kitex echo server (default mode) on its own CPU, Framed, 1 KiB requests; %d rounds, "
        "%d calls per row per round (%d at 1 in flight). CPU = client process user+system time per "
        "call. Ratios are against the Go client in the same table. The kitex_fast.aio rows run on the "
        "Client's defaults (one call per connection, idle connections kept as in use, 50 ms connect "
        "timeout), as does the Go client." % (cfg.rounds, cfg.calls, cfg.calls_1),
        "",
    ]
    for n in cfg.levels:
        go = data.get((n, GO))
        rows = []
        for label in ROWS + ((SYNC_CLIENT,) if n == 1 else ()):
            d = data.get((n, label))
            if d is None:
                continue
            rows.append([label, "%.0f" % d["calls_per_s"], run.us(d["p50"]), run.us(d["p99"]),
                         run.us(d["cpu_ns"]),
                         run.ratio(d["calls_per_s"], go["calls_per_s"]) if go else "n/a",
                         run.ratio(d["cpu_ns"], go["cpu_ns"]) if go and go["cpu_ns"] else "n/a"])
        lines.append("## %d in flight" % n)
        lines.append("")
        lines += run.table(["client", "calls/s", "p50 µs", "p99 µs", "CPU µs/call",
                            "calls/s vs Go", "CPU vs Go"], rows)
        lines.append("")
    lines += ["## Targets (issues 9 and 26: at defaults)", ""]
    targets = []
    d64, g64 = data.get((64, AIO_C)), data.get((64, GO))
    if d64 and g64:
        ok = d64["calls_per_s"] >= g64["calls_per_s"]
        targets.append(["64 in flight: aio (c) calls/s >= 1.0x Go",
                        run.ratio(d64["calls_per_s"], g64["calls_per_s"]), "met" if ok else "missed"])
        ok = d64["cpu_ns"] <= g64["cpu_ns"]
        targets.append(["64 in flight: aio (c) CPU/call <= Go",
                        run.ratio(d64["cpu_ns"], g64["cpu_ns"]), "met" if ok else "missed"])
    u64 = data.get((64, AIO_UV))
    if u64 and g64:
        targets.append(["64 in flight: aio (c, uvloop) calls/s vs Go (information)",
                        run.ratio(u64["calls_per_s"], g64["calls_per_s"]), ""])
    for label, floor in ((AIO_C, FLOOR), (AIO_UV, FLOOR_UV)):
        mine, raw = data.get((64, label)), data.get((64, floor))
        if mine and raw and g64:
            targets.append(["64 in flight: %s vs Go (information)" % floor,
                            run.ratio(raw["calls_per_s"], g64["calls_per_s"]), ""])
            targets.append(["64 in flight: %s calls/s vs its loop's floor (information)" % label,
                            run.ratio(mine["calls_per_s"], raw["calls_per_s"]), ""])
    d1, s1 = data.get((1, AIO_C)), data.get((1, SYNC_CLIENT))
    if d1 and s1:
        ok = d1["p50"] <= 1.10 * s1["p50"]
        targets.append(["1 in flight: aio (c) p50 <= 1.10x sync Client",
                        run.ratio(d1["p50"], s1["p50"]), "met" if ok else "missed"])
    u1 = data.get((1, AIO_UV))
    if u1 and s1:
        ok = u1["p50"] <= 1.10 * s1["p50"]
        targets.append(["1 in flight: aio (c, uvloop) p50 <= 1.10x sync Client",
                        run.ratio(u1["p50"], s1["p50"]), "met" if ok else "missed"])
    lines += run.table(["target", "measured", "result"], targets)
    lines.append("")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (about a minute)")
    parser.add_argument("--out", default=str(run.BENCH / "results"))
    parser.add_argument("--no-pin", action="store_true")
    cfg = parser.parse_args(argv)
    cfg.levels = (1, 16, 64, 256)
    cfg.rounds = 1 if cfg.quick else 3
    cfg.calls = 2000 if cfg.quick else 20000
    cfg.calls_1 = 500 if cfg.quick else 4000
    cfg.slow_calls = 640 if cfg.quick else 3200
    peers.build_peers()
    info = run.machine_info()  # before pinning, so nproc counts the machine's CPUs
    server_cpus, client_cpus = (None, None) if cfg.no_pin else run.pin_cpus()
    pinned = ("server on CPU %s, clients on CPU %s" % (run._cpus(server_cpus), run._cpus(client_cpus))
              if server_cpus else "none")
    print("pinning:", pinned, flush=True)
    server = peers.KitexServer("default", "echo", cpus=server_cpus).start()
    try:
        with tempfile.TemporaryDirectory(prefix="kitex-fast-aio-bench-") as work:
            data = measure(cfg, server.address, Path(work))
    finally:
        server.stop()
    slow_server = peers.KitexServer("default", "rich", cpus=server_cpus).start()
    try:
        print("  slow method: %d callers of a %d ms method" % (SLOW_CALLERS, SLOW_MS), flush=True)
        slow = measure_slow(cfg, slow_server.address)
    finally:
        slow_server.stop()
    text = report(cfg, info, pinned, data) + "\n" + "\n".join(report_slow(cfg, slow))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "aio.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
