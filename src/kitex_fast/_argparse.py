"""The command lines' argparse parser, built without ``import shutil``.

argparse's HelpFormatter imports shutil for the terminal width whenever it is made without a
width, and ``ArgumentParser.add_argument`` makes one for every option (to check its metavar): so
merely building a parser loads shutil, and with it bz2, lzma, zlib and fnmatch, about 0.5 MiB of
RSS in a process that never prints its help (the Dapr component: docs/benchmarks.md, "Memory").
These classes find the width as ``shutil.get_terminal_size`` does, with ``os`` alone. Every parser
of the package is an :class:`ArgumentParser` (its subparsers are too: argparse makes them of the
parent's class).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional

__all__ = ["ArgumentParser", "HelpFormatter", "RawDescriptionHelpFormatter", "terminal_columns"]


def terminal_columns(fallback: int = 80) -> int:
    """``shutil.get_terminal_size((fallback, 24)).columns``: ``$COLUMNS`` when it is a positive
    number, else the width of the terminal on ``sys.__stdout__``, else ``fallback``."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        stdout = sys.__stdout__
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns if stdout is not None else 0
        except (AttributeError, ValueError, OSError):  # (a closed stdout, not a terminal)
            columns = 0
    return columns if columns > 0 else fallback


class HelpFormatter(argparse.HelpFormatter):
    """argparse's HelpFormatter, its default width found without shutil."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: Optional[int] = None, **kwargs: Any) -> None:
        if width is None:
            width = terminal_columns() - 2  # (argparse's own margin)
        super().__init__(prog, indent_increment, max_help_position, width, **kwargs)


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """argparse's RawDescriptionHelpFormatter (descriptions and epilogs as written), without shutil."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's ArgumentParser with :class:`HelpFormatter` as its default formatter class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
