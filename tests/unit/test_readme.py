"""Every code block of README.md and of each page under docs/ runs as written.

Each page's blocks run in page order in a scratch directory of its own (one test per page) whose
``tests`` links to this checkout's (so the pages' relative paths work), the way a reader pastes
them into a shell. A block lives in one place: README.md holds the short examples, docs/ the rest,
and every page runs on its own (a page that calls a server starts it in a block of its own).
The rules, for README.md and docs/ alike:

- ```` ```python ```` blocks run with this interpreter, ```` ```sh ```` / ```` ```bash ```` blocks
  with ``bash -e`` (this interpreter's directory first on PATH, so ``kitex-fast`` and ``python``
  are this install's); blocks in other languages (``text``, ``yaml``, ``json``, ...) are data and
  are not run.
- An HTML comment on the line before a block changes that:

  ``<!-- readme-test: skip (reason) -->``    not run; the reason is required (installs, the suite)
  ``<!-- readme-test: background -->``       a server: started, waited for until it prints
                                             "listening on" (``background TEXT``: until TEXT),
                                             stopped when the page is done
  ``<!-- readme-test: file NAME -->``        written to NAME instead of run
  ``<!-- readme-test: expect -->``           (a text block) its lines appear in the stdout of the
                                             block before it
  ``<!-- readme-test: needs MODULE -->``     run only where MODULE imports (an optional extra);
                                             ``needs cmd:NAME``: where the command NAME is on PATH

- Ports: the pages show fixed ports (8888, Kitex's default and ``kitex-fast serve``'s). Each port
  number written as ``127.0.0.1:N`` or ``--port N`` is mapped to a free port for the run (and a
  ``kitex-fast serve`` without ``--port`` gets the one 8888 maps to), so that the test never talks
  to, or collides with, a server that happens to run on the machine.
"""

from __future__ import annotations

import importlib.util
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

import pytest

from .servers import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# README.md first, then every page of the docs site, each run on its own
PAGES = [README] + sorted(DOCS.rglob("*.md"))
RUNNABLE = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "shell": "sh"}
SERVE_DEFAULT_PORT = 8888
_MARKER = re.compile(r"<!--\s*readme-test:\s*(\w+)\s*(.*?)\s*-->")
_FENCE = re.compile(r"^```(\S*)\s*$")
_PORT = re.compile(r"(?<=127\.0\.0\.1:)(\d{2,5})\b|(?<=--port )(\d{2,5})\b")


class Block(NamedTuple):
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    marker: str  # "" or skip|background|file|expect|needs
    argument: str


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def readme_blocks(text: str, name: str = "README.md") -> List[Block]:
    """The fenced code blocks of a Markdown text, with the marker comment right above each."""
    blocks: List[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start, language = i, fence.group(1).lower()
        i += 1
        body: List[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError("%s line %d: the code block is never closed" % (name, start + 1))
        above = lines[start - 1] if start > 0 else ""
        marker = _MARKER.search(above)
        blocks.append(Block(start + 1, language, "\n".join(body) + "\n",
                            marker.group(1) if marker else "", marker.group(2) if marker else ""))
        i += 1
    return blocks


def _map_ports(blocks: List[Block]) -> Dict[str, str]:
    ports = {str(SERVE_DEFAULT_PORT)}
    for block in blocks:
        for match in _PORT.finditer(block.code):
            ports.add(match.group(1) or match.group(2))
    return {port: str(free_port()) for port in sorted(ports)}


def _with_ports(block: Block, ports: Dict[str, str]) -> str:
    code = _PORT.sub(lambda m: ports[m.group(0)], block.code)
    if block.marker == "background" and "kitex-fast serve" in code and "--port" not in code:
        code = code.replace("kitex-fast serve", "kitex-fast serve --port %s" % ports[str(SERVE_DEFAULT_PORT)], 1)
    return code


class ReadmeRun:
    """Runs the blocks in one directory; remembers servers to stop and the last stdout."""

    def __init__(self, workdir: Path, name: str = "README.md") -> None:
        self.workdir = workdir
        self.name = name
        bindir = str(Path(sys.executable).parent)
        self.env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
                        PYTHONUNBUFFERED="1")
        self.servers: List[subprocess.Popen] = []
        self.last_stdout = ""

    def run(self, block: Block, code: str) -> None:
        where = "%s line %d (```%s)" % (self.name, block.line, block.language)
        if block.marker == "file":
            (self.workdir / block.argument).write_text(code)
            return
        if block.marker == "background":
            self.start(code, where, block.argument.strip("'\"") or "listening on")
            return
        kind = RUNNABLE[block.language]
        argv = [sys.executable, "-c", code] if kind == "python" else ["bash", "-e", "-o", "pipefail", "-c", code]
        proc = subprocess.run(argv, cwd=str(self.workdir), env=self.env, capture_output=True, text=True, timeout=180)
        if proc.returncode != 0:
            raise AssertionError("%s failed (exit %d):\n%s\n--- stdout\n%s--- stderr\n%s"
                                 % (where, proc.returncode, code, proc.stdout, proc.stderr))
        self.last_stdout = proc.stdout

    def start(self, code: str, where: str, ready: str) -> None:
        # its own session: stopped as a group, with everything it started
        proc = subprocess.Popen(["bash", "-c", code], cwd=str(self.workdir), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.servers.append(proc)
        assert proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + 60
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while ready.encode() not in seen:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise AssertionError("%s printed no %r line in 60 s:\n%s\n%s" % (where, ready, code, seen.decode()))
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    raise AssertionError("%s exited (%s) before listening:\n%s\n%s" % (where, proc.wait(), code, seen.decode()))
                seen += chunk

    def stop(self) -> None:
        for proc in self.servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def _missing(need: str) -> Optional[str]:
    if need.startswith("cmd:"):
        return None if shutil.which(need[4:]) else need
    return None if importlib.util.find_spec(need) is not None else need


def test_there_are_docs_pages_to_run() -> None:
    """Guards the runner itself: the pages are found and hold the examples moved out of README.md."""
    assert len(PAGES) > 5 and (DOCS / "index.md") in PAGES
    runnable = [b for page in PAGES for b in readme_blocks(page.read_text(encoding="utf-8"), _name(page))
                if b.language in RUNNABLE and b.marker != "skip"]
    assert len(runnable) >= 20


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_readme_blocks_are_marked_sensibly(page: Path) -> None:
    name = _name(page)
    blocks = readme_blocks(page.read_text(encoding="utf-8"), name)
    for block in blocks:
        where = "%s line %d" % (name, block.line)
        assert block.marker in ("", "skip", "background", "file", "expect", "needs"), where
        if block.marker == "skip":
            assert block.argument, "%s: a skipped block must say why" % where
        if block.marker == "expect":
            assert block.language == "text", "%s: expected output goes in a ```text block" % where
        if block.marker in ("background", "needs") or (not block.marker and block.language in RUNNABLE):
            assert block.language in RUNNABLE, "%s: cannot run a ```%s block" % (where, block.language)
        if block.marker == "expect":
            previous = [b for b in blocks if b.line < block.line and b.marker != "expect"]
            assert previous and previous[-1].language in RUNNABLE and previous[-1].marker in ("", "needs"), (
                "%s: an expect block follows a block that runs" % where)
    if page == README:  # the binding, the client, asyncio, the command line (a server and a call)
        assert sum(1 for b in blocks if b.language in RUNNABLE and b.marker != "skip") >= 5


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_readme_code_block_runs_as_written(page: Path, tmp_path) -> None:
    name = _name(page)
    blocks = readme_blocks(page.read_text(encoding="utf-8"), name)
    (tmp_path / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    ports = _map_ports(blocks)
    run = ReadmeRun(tmp_path, name)
    skipped: List[str] = []
    ran = 0
    previous_ran = False
    try:
        for block in blocks:
            if block.marker == "expect":
                if previous_ran:
                    for line in block.code.strip().splitlines():
                        assert line.strip() in run.last_stdout, (
                            "%s line %d: %r is not in the output of the block above:\n%s"
                            % (name, block.line, line, run.last_stdout))
                continue
            previous_ran = False
            if block.marker == "skip" or (block.language not in RUNNABLE and block.marker != "file"):
                continue
            if block.marker == "needs" and _missing(block.argument):
                skipped.append("line %d needs %s" % (block.line, block.argument))
                continue
            run.run(block, _with_ports(block, ports))
            previous_ran = block.marker not in ("file", "background")
            ran += 1
    finally:
        run.stop()
    if page == README:
        assert ran >= 5
    if skipped:
        pytest.skip("%s blocks not run here: %s" % (name, "; ".join(skipped)))


def test_the_runner_itself_fails_on_a_broken_block(tmp_path) -> None:
    sample = "\n".join([
        "<!-- readme-test: skip (why) -->", "```sh", "exit 1", "```",
        "```python", "raise SystemExit(3)", "```",
        "<!-- readme-test: needs cmd:no-such-command-here -->", "```sh", "no-such-command-here", "```",
    ])
    blocks = readme_blocks(sample)
    assert [(b.line, b.language, b.marker, b.argument) for b in blocks] == [
        (2, "sh", "skip", "(why)"), (5, "python", "", ""), (9, "sh", "needs", "cmd:no-such-command-here")]
    assert _missing(blocks[2].argument) == "cmd:no-such-command-here"
    with pytest.raises(AssertionError, match=r"README.md line 5 \(```python\) failed \(exit 3\)"):
        ReadmeRun(tmp_path).run(blocks[1], blocks[1].code)
