#!/usr/bin/env python3
"""What is left above the floor: a deterministic per-call profile of kitex_fast's sync call paths.

    PYTHONPATH=src python bench/call_profile.py [--calls 500,2500] [--out bench/results] [--no-perf]

Against a real Kitex echo server (1 KiB request, framed), each path below runs in a child
interpreter under ``valgrind --tool=callgrind`` twice, with a short and a long loop of calls; the
difference of the two runs, divided by the difference of their call counts, is the user-space
instruction count (callgrind's ``Ir``) of one steady-state call: start-up, imports, connecting and
warm-up cancel out. Only the child is instrumented (the Go server is a separate process) and the
kernel is invisible to callgrind, so these are the instructions kitex_fast and CPython execute in
user space per call, split by the object file they run in. Unlike wall time, they do not depend
on the machine's load, so two builds compare exactly.

The paths, all on one pooled connection with one call in flight:

- raw ``Connection.call`` on a prebuilt frame (the floor inside Python: send, wait, read one
  frame; no encoding, no checks), compiled and twin transports;
- ``Client.call`` and ``KitexOutputBinding.invoke``, compiled core and pure-Python twin;
- the compiled binding again, with every key of the response metadata read (as daprd's gRPC
  answer does): the metadata may be lazy, so the plain binding row need not pay for it.

Also, without valgrind: how many Python-level functions and compiled/builtin functions the
interpreter enters per call (``sys.setprofile``), the measure of how much of a request still runs
as Python; and, if ``perf`` works here, a sampled split of the binding's CPU between the kernel
and user space (``perf record -e cpu-clock``, again the difference of a short and a long run).

Writes OUT/profile.md and prints it. Not part of the test suite; a few minutes on 2 CPUs.
(Named call_profile.py: bench/ is sys.path[0] for every bench script, and a bench/profile.py
would shadow the standard library's ``profile``, which ``cProfile`` imports.)
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
try:
    import kitex_fast  # noqa: F401  (an installed package, or PYTHONPATH=src)
except ImportError:
    sys.path.insert(0, str(ROOT / "src"))  # the in-place build
import kitex_fast  # noqa: E402

# The child must import the same kitex_fast as this process.
PKG_PARENT = str(Path(kitex_fast.__file__).resolve().parent.parent)

# name -> what the row shows
PATHS: Dict[str, str] = {
    "raw-c": "raw `Connection.call`, prebuilt frame (c)",
    "client-c": "`Client.call` (c)",
    "binding-c": "`KitexOutputBinding.invoke` (c)",
    "binding+metadata-c": "`KitexOutputBinding.invoke` (c), response metadata read",
    "raw-py": "raw `Connection.call`, prebuilt frame (py)",
    "client-py": "`Client.call` (py)",
    "binding-py": "`KitexOutputBinding.invoke` (py)",
}
WARMUP = 50          # calls before the measured loop, in every child (they cancel out)
PROFILE_CALLS = 2000  # calls counted by sys.setprofile
PERF_CALLS = (2000, 10000)
PERF_PERIOD_NS = 250000  # one cpu-clock sample per 250 µs of CPU: perf's own cost stays small
GROUPS = ("libpython", "_codec*.so", "_transport*.so", "libc", "other")


# -- the child: one path, N calls -------------------------------------------------------------

def make_step(path: str, address: str) -> Tuple[Callable[[], Any], Callable[[], None]]:
    """``(one call, close)`` for a path, connected and checked once."""
    from kitex_fast import Client, InvokeRequest, KitexOutputBinding, codec
    from kitex_fast.testing import echo_request

    import _clients  # bench/ is sys.path[0]: the bench's own binding metadata

    kind, impl = path.split("-")
    request = echo_request("x" * 1024)
    if kind.startswith("binding"):
        binding = KitexOutputBinding(implementation=impl)
        invoke = binding.invoke
        req = InvokeRequest("get", request, _clients.binding_metadata(address, "framed"))
        if kind == "binding+metadata":
            return (lambda: dict(invoke(req).metadata)), binding.close
        return (lambda: invoke(req)), binding.close
    # Generous connect timeout: under valgrind the interpreter runs ~50× slower.
    client = Client("echo", address, transport="framed", implementation=impl, connect_timeout=5.0)
    if kind == "client":
        call = client.call
        return (lambda: call("echo", request)), client.close
    frame = client.request_bytes("echo", request, seq_id=1)
    acquire = getattr(getattr(client, "_pool", None), "acquire", None)
    if acquire is None:
        raise SystemExit("profile: Client._pool.acquire is gone; the raw path needs a pooled "
                         "connection (update make_step in bench/call_profile.py)")
    conn = acquire(None)[0]
    parse = codec.implementation(impl).parse_message
    header = parse(conn.call(frame).payload)  # one checked round trip before the loop
    if header.type != 2 or header.seq_id != 1:
        raise SystemExit("profile: the raw path's reply is not a REPLY to seq id 1: %r" % (header,))
    conn_call = conn.call

    def close() -> None:
        conn.close()
        client.close()

    # The Kitex server answers with the request's seq id; the raw path never checks it.
    return (lambda: conn_call(frame)), close


def count_calls(step: Callable[[], Any], n: int) -> Tuple[float, float, Dict[str, int]]:
    """(Python functions, CPython builtins) the interpreter enters per call, and how often each
    Python function was entered over the ``n`` calls. CPython reports ``c_call`` only for exact
    builtin functions and method descriptors: Cython's functions are invisible here."""
    counts = {"call": 0, "c_call": 0}
    functions: Dict[str, int] = defaultdict(int)
    step_code = step.__code__

    def prof(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            if code is step_code:
                return  # the loop's own call of ``step``: not the library's
            counts["call"] += 1
            functions["%s (%s:%d)" % (getattr(code, "co_qualname", code.co_name),
                                      os.path.basename(code.co_filename), code.co_firstlineno)] += 1
        elif event == "c_call":
            counts["c_call"] += 1

    sys.setprofile(prof)
    for _ in itertools.repeat(None, n):
        step()
    sys.setprofile(None)
    counts["c_call"] -= 1  # sys.setprofile(None) itself
    return counts["call"] / n, counts["c_call"] / n, dict(functions)


def child(path: str, address: str, n: int, mode: str) -> int:
    step, close = make_step(path, address)
    try:
        # repeat(), not range(): no int object per iteration (ints above 256 are allocated).
        for _ in itertools.repeat(None, WARMUP):
            step()
        if mode == "count":
            py, c, functions = count_calls(step, n)
            print("COUNT %.3f %.3f" % (py, c), flush=True)
            for name, k in sorted(functions.items(), key=lambda kv: -kv[1]):
                print("FUNCTION %.3f %s" % (k / n, name), flush=True)
        else:
            for _ in itertools.repeat(None, n):
                step()
    finally:
        close()
    return 0


# -- callgrind -------------------------------------------------------------------------------

def parse_callgrind(path: Path) -> Tuple[Dict[str, int], Dict[Tuple[str, str], int], int]:
    """Self cost (Ir) per object file and per (object, function), and the file's total.

    The format (valgrind docs, "Callgrind Format Specification"): ``ob=``/``fn=`` set the current
    object and function; a cost line is position column(s) then event counts; the cost line after
    ``calls=`` is the callee's inclusive cost, not self cost, so it is skipped. Names may be
    compressed as ``(id) name`` on first use and ``(id)`` after, sharing one table per kind
    (``ob``/``cob``, ``fn``/``cfn``)."""
    names: Dict[str, Dict[str, str]] = {"ob": {}, "fn": {}}
    kind_of = {"ob": "ob", "cob": "ob", "fn": "fn", "cfn": "fn"}
    by_ob: Dict[str, int] = defaultdict(int)
    by_fn: Dict[Tuple[str, str], int] = defaultdict(int)
    npos, ir_index = 1, 0
    ob, fn = "???", "???"
    skip_next = False
    total = 0
    name_re = re.compile(r"^\((\d+)\)(?: (.*))?$")
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                fields = line.split()
                costs = fields[npos:]
                ir = int(costs[ir_index]) if len(costs) > ir_index else 0
                by_ob[ob] += ir
                by_fn[(ob, fn)] += ir
                continue
            key, sep, value = line.partition("=")
            if sep and key in kind_of:
                table = names[kind_of[key]]
                m = name_re.match(value)
                if m:
                    if m.group(2) is not None:
                        table[m.group(1)] = m.group(2)
                    value = table.get(m.group(1), value)
                if key == "ob":
                    ob = value
                elif key == "fn":
                    fn = re.sub(r"'\d+$", "", value)  # f'2: f at recursion depth 2, still f
                continue
            if sep and key == "calls":
                skip_next = True
                continue
            if line.startswith("positions:"):
                npos = len(line.split()[1:])
            elif line.startswith("events:"):
                ir_index = line.split()[1:].index("Ir")
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    return dict(by_ob), dict(by_fn), total


def group_of(ob: str) -> str:
    base = os.path.basename(ob)
    if base.startswith("libpython") or base.startswith("python"):
        return "libpython"  # the interpreter (shared libpython, or a static python executable)
    if base.startswith("_codec"):
        return "_codec*.so"
    if base.startswith("_transport"):
        return "_transport*.so"
    if base.startswith("libc.so") or base.startswith("libc-"):
        return "libc"
    return "other"


def child_env() -> Dict[str, str]:
    # A fixed hash seed: with randomized str hashes, dict probe lengths (and so the instruction
    # counts of start-up and shutdown, which the subtraction must cancel) differ run to run.
    return dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=os.pathsep.join(
        [PKG_PARENT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def child_cmd(path: str, address: str, n: int, mode: str) -> List[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", path, "--address", address,
            "--n", str(n), "--mode", mode]


def callgrind_run(valgrind: str, path: str, address: str, n: int, work: Path
                  ) -> Tuple[Dict[str, int], Dict[Tuple[str, str], int]]:
    out = work / ("callgrind.%s.%d.out" % (path, n))
    cmd = [valgrind, "--tool=callgrind", "--callgrind-out-file=%s" % out,
           "--dump-instr=no", "--compress-pos=no"] + child_cmd(path, address, n, "run")
    proc = subprocess.run(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError("callgrind run of %s (n=%d) failed:\n%s" % (path, n, proc.stderr[-3000:]))
    by_ob, by_fn, total = parse_callgrind(out)
    if total and sum(by_ob.values()) != total:  # the parser missed or double-counted something
        raise RuntimeError("%s: parsed %d Ir, callgrind's total is %d" % (out, sum(by_ob.values()), total))
    return by_ob, by_fn


def per_call(long: Dict[Any, int], short: Dict[Any, int], calls: int) -> Dict[Any, float]:
    return {k: (long.get(k, 0) - short.get(k, 0)) / calls for k in set(long) | set(short)}


# -- the C floor -------------------------------------------------------------------------------

# bench/floor.c's per-call work: the functions its timed loop calls. Built without inlining so
# callgrind can switch collection on inside exactly them (the batch's printing stays outside).
FLOOR_FUNCTIONS = ("write_all", "read_all", "now_ns")


def build_floor_for_profile(work: Path) -> Path:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise SystemExit("profile: no C compiler (cc) for bench/floor.c")
    binary = work / "floor-noinline"
    subprocess.check_call([cc, "-O2", "-fno-inline", "-o", str(binary), str(BENCH / "floor.c")])
    return binary


def floor_run(valgrind: str, binary: Path, address: str, frame_file: Path, n: int, work: Path
              ) -> Tuple[Dict[str, int], Dict[Tuple[str, str], int]]:
    """bench/floor.c making ``n`` calls under callgrind, collecting only inside its I/O and
    clock functions (and what they call: libc's write/read wrappers, the vDSO clock)."""
    out = work / ("callgrind.floor.%d.out" % n)
    host, _, port = address.rpartition(":")
    cmd = [valgrind, "--tool=callgrind", "--callgrind-out-file=%s" % out, "--dump-instr=no",
           "--compress-pos=no", "--collect-atstart=no"]
    cmd += ["--toggle-collect=%s" % f for f in FLOOR_FUNCTIONS]
    cmd += [str(binary), host, port, str(frame_file)]
    proc = subprocess.run(cmd, input="%d\n" % n, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=600)
    if proc.returncode != 0 or "END " not in proc.stdout:
        raise RuntimeError("callgrind run of the floor (n=%d) failed:\n%s" % (n, proc.stderr[-3000:]))
    by_ob, by_fn, total = parse_callgrind(out)
    if total and sum(by_ob.values()) != total:
        raise RuntimeError("%s: parsed %d Ir, callgrind's total is %d" % (out, sum(by_ob.values()), total))
    return by_ob, by_fn


# -- perf (optional) ---------------------------------------------------------------------------

def perf_samples(perf: str, path: str, address: str, n: int, work: Path) -> Optional[Dict[str, int]]:
    """cpu-clock samples per DSO of one child run (None if perf cannot record here)."""
    data = work / ("perf.%s.%d.data" % (path, n))
    rec = subprocess.run([perf, "record", "-q", "-e", "cpu-clock", "-c", str(PERF_PERIOD_NS), "-o", str(data),
                          "--"] + child_cmd(path, address, n, "run"),
                         env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=600)
    if rec.returncode != 0 or not data.exists():
        return None
    rep = subprocess.run([perf, "report", "-i", str(data), "--stdio", "-q", "-n", "--sort", "dso"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    if rep.returncode != 0:
        return None
    out: Dict[str, int] = {}
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(.+?)\s*$", line)
        if m:
            out[m.group(2)] = out.get(m.group(2), 0) + int(m.group(1))
    return out or None


# -- report ------------------------------------------------------------------------------------

def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", default="500,2500",
                    help="the short and long loop's call counts (default 500,2500)")
    ap.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of %s" % ", ".join(PATHS))
    ap.add_argument("--out", default=str(BENCH / "results"), help="directory for profile.md")
    ap.add_argument("--no-perf", action="store_true", help="skip the perf kernel/user split")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="run", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.address, args.n, args.mode)

    short, long = (int(x) for x in args.calls.split(","))
    if not 0 < short < long:
        raise SystemExit("--calls: two counts, the first smaller")
    paths = [p for p in args.paths.split(",") if p]
    for p in paths:
        if p not in PATHS:
            raise SystemExit("unknown path %r (one of %s)" % (p, ", ".join(PATHS)))
    from kitex_fast import codec

    if not codec.USING_EXTENSION:
        raise SystemExit("profile: the compiled kitex_fast core is not loaded (python setup.py "
                         "build_ext --inplace); the profile compares it with the twin")
    valgrind = shutil.which("valgrind")
    if not valgrind:
        raise SystemExit("profile: valgrind is not installed (apt-get install valgrind)")
    perf = None if args.no_perf else shutil.which("perf")
    sys.path.insert(0, str(ROOT / "tests" / "interop"))
    import peers  # builds and runs the Go peers

    peers.build_peers()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kitex-profile-"))
    started = time.monotonic()
    ir: Dict[str, Dict[str, float]] = {}
    fns: Dict[str, Dict[Tuple[str, str], float]] = {}
    counts: Dict[str, Tuple[float, float]] = {}
    pyfns: Dict[str, List[Tuple[float, str]]] = {}
    perf_split: Dict[str, Dict[str, float]] = {}
    server = peers.KitexServer("default", "echo")
    try:
        server.start()
        address = server.address
        print("Kitex echo server at %s" % address, flush=True)
        # The C floor, on the exact frame the compiled Client sends (seq id 1).
        from kitex_fast import Client
        from kitex_fast.testing import echo_request

        t0 = time.monotonic()
        with Client("echo", address, implementation="c") as client:
            frame_file = work / "frame.bin"
            frame_file.write_bytes(client.request_bytes("echo", echo_request("x" * 1024), seq_id=1))
        floor_bin = build_floor_for_profile(work)
        ob_s, _ = floor_run(valgrind, floor_bin, address, frame_file, short, work)
        ob_l, _ = floor_run(valgrind, floor_bin, address, frame_file, long, work)
        ir["floor"] = per_call(ob_l, ob_s, long - short)
        print("  %-18s %8.0f Ir/call  %.1f s" % ("floor (C)", sum(ir["floor"].values()),
                                                time.monotonic() - t0), flush=True)
        for p in paths:
            t0 = time.monotonic()
            ob_s, fn_s = callgrind_run(valgrind, p, address, short, work)
            ob_l, fn_l = callgrind_run(valgrind, p, address, long, work)
            ir[p] = per_call(ob_l, ob_s, long - short)
            fns[p] = per_call(fn_l, fn_s, long - short)
            proc = subprocess.run(child_cmd(p, address, PROFILE_CALLS, "count"), env=child_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  timeout=300)
            line = [x for x in proc.stdout.splitlines() if x.startswith("COUNT ")]
            if proc.returncode != 0 or not line:
                raise RuntimeError("call count of %s failed:\n%s" % (p, proc.stderr[-3000:]))
            counts[p] = (float(line[0].split()[1]), float(line[0].split()[2]))
            pyfns[p] = [(float(x.split(" ", 2)[1]), x.split(" ", 2)[2])
                        for x in proc.stdout.splitlines() if x.startswith("FUNCTION ")]
            print("  %-18s %8.0f Ir/call  %.1f s" % (p, sum(ir[p].values()), time.monotonic() - t0),
                  flush=True)
        if perf:
            for p in ("raw-c", "binding-c"):
                if p not in paths:
                    continue
                a = perf_samples(perf, p, address, PERF_CALLS[0], work)
                b = perf_samples(perf, p, address, PERF_CALLS[1], work)
                if a is None or b is None:
                    print("  perf: cannot record here; skipped", flush=True)
                    break
                perf_split[p] = per_call(b, a, PERF_CALLS[1] - PERF_CALLS[0])
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    md = report(paths, ir, fns, counts, pyfns, perf_split, short, long)
    (out_dir / "profile.md").write_text(md)
    print()
    print(md)
    print("wrote %s in %.0f s" % (out_dir / "profile.md", time.monotonic() - started))
    return 0


def report(paths: Sequence[str], ir: Dict[str, Dict[str, float]],
           fns: Dict[str, Dict[Tuple[str, str], float]], counts: Dict[str, Tuple[float, float]],
           pyfns: Dict[str, List[Tuple[float, str]]], perf_split: Dict[str, Dict[str, float]], short: int, long: int) -> str:
    import platform

    md = ["# What is left above the floor: instructions per call", ""]
    md.append("`python bench/call_profile.py`: CPython %s, valgrind %s, kitex_fast from `%s`, commit "
              "%s. Kitex echo server, "
              "1 KiB request, framed, one pooled connection. User-space instructions (callgrind "
              "`Ir`) per call = (run of %d calls − run of %d calls) / %d, so start-up, imports, "
              "connect and warm-up cancel; the kernel's work in the syscalls is not counted. "
              "Deterministic: the same code gives the same figures on a busy machine."
              % (platform.python_version(), _version(["valgrind", "--version"]), PKG_PARENT,
                 _version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
                 long, short, long - short))
    md.append("")
    grouped: Dict[str, Dict[str, float]] = {}
    for p in paths:
        g: Dict[str, float] = defaultdict(float)
        for ob, v in ir[p].items():
            g[group_of(ob)] += v
        grouped[p] = g
    floor = sum(ir["raw-c"].values()) if "raw-c" in ir else None
    rows = []
    if "floor" in ir:
        g = defaultdict(float)
        for ob, v in ir["floor"].items():
            g[group_of(ob)] += v
        total = sum(ir["floor"].values())
        rows.append(["floor (C, bench/floor.c): its write, read and clock calls",
                     "%.0f" % total, "%.2f×" % (total / floor) if floor else "n/a", "—"]
                    + ["%.0f" % g.get(k, 0.0) for k in GROUPS] + ["—", "—"])
    for p in paths:
        total = sum(ir[p].values())
        py, c = counts[p]
        rows.append([PATHS[p], "%.0f" % total, "%.2f×" % (total / floor) if floor else "n/a",
                     "%.0f" % (total - floor) if floor else "n/a"]
                    + ["%.0f" % grouped[p].get(g, 0.0) for g in GROUPS]
                    + ["%.1f" % py, "%.1f" % c])
    md += table(["path", "Ir/call", "× raw (c)", "above raw (c)"] + ["Ir in %s" % g for g in GROUPS]
                + ["Python functions entered/call", "CPython builtins called/call"], rows)
    md.append("")
    md.append("The floor row counts only inside bench/floor.c's `%s` (built with `-fno-inline`, "
              "callgrind `--toggle-collect`), i.e. the C client's whole per-call work but its loop "
              "counter. *raw (c)* is the least Python can do per call here (a prebuilt frame "
              "through the compiled `Connection.call`): the rest of a row above it is encoding, "
              "checks, the pool, the binding's routing and the interpreter between them. Every row includes "
              "the bench loop's own few hundred instructions (a `for` and a lambda call). "
              "*Functions entered / builtins called*: `sys.setprofile` `call` and `c_call` events "
              "per call over %d calls, without valgrind (the loop's own lambda excluded); CPython "
              "reports `c_call` for exact builtins and method descriptors only, so calls into "
              "Cython's functions are not counted there."
              % ("`, `".join(FLOOR_FUNCTIONS), PROFILE_CALLS))
    md.append("")
    totals = {p: sum(ir[p].values()) for p in paths}
    readings = []
    for what, twin, compiled in (("Client.call", "client-py", "client-c"),
                                 ("the binding", "binding-py", "binding-c"),
                                 ("raw Connection.call", "raw-py", "raw-c")):
        if twin in totals and compiled in totals:
            readings.append("%s: the twin executes %.1f× the compiled build's user-space "
                            "instructions" % (what, totals[twin] / totals[compiled]))
    if readings:
        md.append("Twin ÷ compiled, user space only: " + "; ".join(readings) + ".")
        md.append("")
    if "binding+metadata-c" in totals and "binding-c" in totals:
        md.append("Reading every key of the response metadata adds %.0f instructions per call to "
                  "the compiled binding (%.0f → %.0f)."
                  % (totals["binding+metadata-c"] - totals["binding-c"], totals["binding-c"],
                     totals["binding+metadata-c"]))
        md.append("")
    for p in ("binding-c", "client-c"):
        if not pyfns.get(p):
            continue
        md.append("## Python functions still entered per call: %s" % PATHS[p])
        md.append("")
        md += table(["function (file:line)", "entered per call"],
                    [[name, "%.2f" % k] for k, name in pyfns[p]])
        md.append("")
    for p in ("binding-c", "client-c"):
        if p not in fns:
            continue
        top = sorted(fns[p].items(), key=lambda kv: -kv[1])[:15]
        total = sum(ir[p].values())
        md.append("## Top functions by own instructions per call: %s" % PATHS[p])
        md.append("")
        md += table(["function", "object", "Ir/call", "share"],
                    [[fn.replace("|", "\\|"), os.path.basename(ob), "%.0f" % v, "%.1f%%" % (100 * v / total)]
                     for (ob, fn), v in top])
        md.append("")
    if "binding+metadata-c" in fns and "binding-c" in fns:
        with_md, without = fns["binding+metadata-c"], fns["binding-c"]
        diff = {k: with_md.get(k, 0.0) - without.get(k, 0.0) for k in set(with_md) | set(without)}
        top = [kv for kv in sorted(diff.items(), key=lambda kv: -kv[1])[:10] if kv[1] > 0]
        md.append("## What reading the response metadata costs: top functions (difference)")
        md.append("")
        md.append("Own instructions per call of %s minus those of %s. Python functions "
                  "entered for it: %s." % (
                      PATHS["binding+metadata-c"], PATHS["binding-c"],
                      ", ".join(name for _, name in pyfns.get("binding+metadata-c", [])
                                if name not in {n for _, n in pyfns.get("binding-c", [])})
                      or "none"))
        md.append("")
        md += table(["function", "object", "extra Ir/call"],
                    [[fn.replace("|", "\\|"), os.path.basename(ob), "%.0f" % v]
                     for (ob, fn), v in top])
        md.append("")
    if perf_split:
        md.append("## Kernel vs user space (perf, sampled)")
        md.append("")
        md.append("`perf record -e cpu-clock -c %d` (a sample per %d µs of CPU), samples per call "
                  "= (run of %d calls − run of %d) / %d; the child process only (the server is "
                  "another process); kernel = `[kernel.*]` samples, user = every other object "
                  "(the vDSO's clock reads included). Sampled, so approximate, and it depends on "
                  "the machine's load, unlike the instruction counts."
                  % (PERF_PERIOD_NS, PERF_PERIOD_NS // 1000, PERF_CALLS[1], PERF_CALLS[0],
                     PERF_CALLS[1] - PERF_CALLS[0]))
        md.append("")
        rows = []
        for p, dsos in perf_split.items():
            kernel = sum(v for k, v in dsos.items() if k.startswith("[kernel"))
            user = sum(v for k, v in dsos.items() if not k.startswith("[kernel"))
            total = kernel + user
            to_us = PERF_PERIOD_NS / 1e3
            rows.append([PATHS[p], "%.1f" % (total * to_us), "%.1f" % (kernel * to_us),
                         "%.1f" % (user * to_us),
                         "%.0f%%" % (100 * kernel / total) if total > 0 else "n/a"])
        md += table(["path", "CPU µs/call", "kernel µs/call", "user µs/call", "kernel share"], rows)
        md.append("")
    return "\n".join(md)


def _version(cmd: List[str]) -> str:
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              timeout=30).stdout.strip().replace("valgrind-", "")
    except (OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
