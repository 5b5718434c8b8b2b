#!/usr/bin/env python3
"""What each import costs the component's memory: RSS of a fresh interpreter after each step.

    python bench/import_memory.py

The steps follow the order ``kitex-fast component`` loads them (kitex_fast.dapr.main): the
interpreter, the base package and the command line's module, asyncio and uvloop as
kitex_fast.dapr.eventloop loads them (no ``ssl``), the component's own modules, then its options
parsed. Each line is a new interpreter that runs the steps up
to it, so a step's cost is the difference from the line above (RSS moves in pages and in
pymalloc's arenas: differences under ~0.3 MiB are noise). The last lines load asyncio and uvloop
the ordinary way, for the cost of ``ssl`` they avoid. Prints a Markdown table; asserts nothing.
"""

from __future__ import annotations

import subprocess
import sys
from typing import List, Tuple

STEPS: List[Tuple[str, str]] = [
    ("the interpreter (`python -c pass`)", ""),
    ("`import kitex_fast` (the base package and the stdlib it needs)", "import kitex_fast"),
    ("`kitex_fast.cli`, which the entry point `kitex-fast component` runs first", "import kitex_fast.cli"),
    ("asyncio without ssl (`eventloop.import_asyncio`)",
     "from kitex_fast.dapr import eventloop; eventloop.import_asyncio()"),
    ("uvloop with the ssl stand-in (`eventloop.import_uvloop`)", "eventloop.import_uvloop()"),
    ("the component's modules (component, core, aio, h2server and the compiled server)",
     "import kitex_fast.dapr.component, kitex_fast.dapr.h2server; kitex_fast.dapr.h2server._load()"),
    ("its command line parsed (`component.build_parser().parse_args`)",
     "kitex_fast.dapr.component.build_parser().parse_args([])"),
]
WITH_SSL: List[Tuple[str, str]] = [
    ("the same, asyncio and uvloop loaded the ordinary way (with ssl)",
     "import kitex_fast, kitex_fast.cli, asyncio, uvloop, kitex_fast.dapr.component, kitex_fast.dapr.h2server; "
     "kitex_fast.dapr.h2server._load(); kitex_fast.dapr.component.build_parser().parse_args([])"),
]
PROBE = ("import sys\n%s\n"
         "rss = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:')][0]\n"
         "print(rss, len(sys.modules), 'ssl' in sys.modules)")


def measure(code: str) -> Tuple[int, int, bool]:
    out = subprocess.run([sys.executable, "-c", PROBE % code], stdout=subprocess.PIPE, check=True).stdout.split()
    return int(out[0]), int(out[1]), out[2] == b"True"


def main() -> None:
    rows = ["| step | RSS MiB | + MiB | modules | ssl loaded |", "|---|---:|---:|---:|---|"]
    code: List[str] = []
    previous = None
    for label, line in STEPS:
        code.append(line)
        kib, modules, ssl = measure("\n".join(code))
        rows.append("| %s | %.1f | %s | %d | %s |" % (
            label, kib / 1024, "" if previous is None else "%+.1f" % ((kib - previous) / 1024), modules,
            "yes" if ssl else "no"))
        previous = kib
    for label, line in WITH_SSL:
        kib, modules, ssl = measure(line)
        rows.append("| %s | %.1f | %+.1f | %d | %s |" % (
            label, kib / 1024, (kib - previous) / 1024, modules, "yes" if ssl else "no"))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
