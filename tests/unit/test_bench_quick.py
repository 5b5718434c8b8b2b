"""The benchmark suite still runs: ``bench/run.py --quick`` end to end against a real Kitex server.

Only that it finishes and reports every row is checked; timings are never asserted (they belong
to the machine, not the code).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[2]
INTEROP = ROOT / "tests" / "interop"

SEQ_ROWS = ["floor (C raw socket)", "kitex_fast Client (c)", "kitex_fast binding (c)",
            "kitex_fast Client (py)", "kitex_fast binding (py)", "thriftpy2 (cybin, cyframed)",
            "Go Kitex refclient"]
SEQ_SECTIONS = ["%s, %s" % (t, s) for t in ("framed", "ttheader") for s in ("64 B", "1 KiB", "64 KiB")]
THREAD_ROWS = ["kitex_fast binding (c)", "kitex_fast binding (py)", "kitex_fast Client (c)",
               "Go Kitex refclient"]
ISSUE11_TARGETS = ["binding (c) median", "Client (c) median", "binding (c) client CPU",
                   "binding: twin ÷ compiled", "Client: twin ÷ compiled",
                   "binding (c): TTHeader", "Client (c): TTHeader"]
CODEC_OPS = ["parse_message", "rewrite_message", "RequestEncoder.encode framed",
             "RequestEncoder.encode ttheader", "FrameDecoder.feed framed", "FrameDecoder.feed buffered",
             "FrameDecoder.feed ttheader ", "FrameDecoder.feed ttheader-framed", "find_struct_end"]


def _need(what: str, ok: bool) -> None:
    """Skip locally without the tool; under CI=true a missing tool is a failure (as interop)."""
    if ok:
        return
    message = "bench --quick needs %s" % what
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _sections(md: str) -> Dict[str, List[str]]:
    """Markdown heading -> the table rows under it (first cell of each)."""
    out: Dict[str, List[str]] = {}
    current = ""
    for line in md.splitlines():
        if line.startswith("#"):
            current = line.lstrip("#").strip()
            out[current] = []
        elif line.startswith("| ") and not line.startswith("|---"):
            out.setdefault(current, []).append(line)
    return out


def check_report(md: str) -> None:
    """Every section, row and column the report promises is there (values are never judged)."""
    sections = _sections(md)

    for name in SEQ_SECTIONS:
        rows = sections.get(name)
        assert rows is not None, "no section %r in latest.md" % name
        for label in SEQ_ROWS:
            assert any(r.startswith("| %s |" % label) for r in rows), "%s: no row %r" % (name, label)

    threads = next(v for k, v in sections.items() if k.startswith("2. Threads"))
    assert "client CPU µs/call" in threads[0], threads[0]
    for n in (1, 4, 16):
        for label in THREAD_ROWS:
            # every row has its CPU figures (a number, not n/a)
            assert any(re.match(r"\| %d \| %s \|.* \| [0-9.]+ \| [0-9.]+ \|$" % (n, re.escape(label)), r)
                       for r in threads), (n, label)

    issue11 = next(v for k, v in sections.items() if k.startswith("Issue 11 targets"))
    for target in ISSUE11_TARGETS:
        assert any(r.startswith("| " + target) and r.endswith(("| met |", "| missed |"))
                   for r in issue11), "issue 11 targets: no row %r" % target

    micro = next(v for k, v in sections.items() if k.startswith("3. Codec"))
    for op in CODEC_OPS:
        assert any(r.startswith("| " + op) for r in micro), "codec table: no row %r" % op

    mem = next(v for k, v in sections.items() if k.startswith("4. Memory"))
    assert any(r.startswith("| 1 distinct key |") for r in mem)
    assert any(r.startswith("| 100 distinct keys |") for r in mem)

    # The machine line: kernel, CPU count, versions.
    assert re.search(r"Machine: `[^`]+`, \d+ CPUs", md), md[:400]
    assert "Kitex v" in md and "Go go" in md


@pytest.mark.slow
@pytest.mark.interop
def test_bench_quick(tmp_path: Path) -> None:
    sys.path.insert(0, str(INTEROP))
    try:
        import peers
    finally:
        sys.path.remove(str(INTEROP))
    try:
        peers.build_peers()
    except peers.PeersUnavailable as exc:
        _need("Go (%s)" % exc, False)
    _need("a C compiler (cc) for bench/floor.c", bool(os.environ.get("CC") or shutil.which("cc")))

    env = dict(os.environ)
    # The same kitex_fast this test process imported (installed, or the in-place build).
    import kitex_fast

    pkg_parent = str(Path(kitex_fast.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(tmp_path)],
        cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]

    md_path, png_path = tmp_path / "latest.md", tmp_path / "latency.png"
    assert md_path.is_file() and png_path.is_file(), proc.stdout[-2000:]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_report(md_path.read_text())
