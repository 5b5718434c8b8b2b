"""How the dispatchers (codec.py, transport.py) choose between a compiled module and its twin."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Optional

# KITEX_FAST_NO_EXTENSIONS=1, or an interpreter that cannot load CPython extensions, selects the
# pure-Python twins (setup.py skips the build under the same switch).
NO_EXTENSIONS = bool(os.environ.get("KITEX_FAST_NO_EXTENSIONS")) or (
    sys.implementation.name != "cpython"
)


def load_compiled(name: str) -> Optional[ModuleType]:
    """``kitex_fast.<name>`` if it is built and allowed, else None."""
    if NO_EXTENSIONS:
        return None
    try:
        return importlib.import_module("kitex_fast." + name)
    except ImportError:  # pragma: no cover - depends on the install
        return None


def choose(
    name: Optional[str], compiled: Optional[ModuleType], twin: ModuleType, what: str
) -> ModuleType:
    """The module for ``name``: ``"c"`` (compiled), ``"py"`` (twin) or None (the live one)."""
    if name is None:
        return compiled if compiled is not None else twin
    if name == "py":
        return twin
    if name == "c":
        if compiled is None:
            raise ImportError(
                "the compiled kitex_fast %s is not available%s; reinstall with a C compiler and "
                "Cython, or use implementation='py'"
                % (what, " (KITEX_FAST_NO_EXTENSIONS is set)" if NO_EXTENSIONS else "")
            )
        return compiled
    raise ValueError("implementation must be 'c', 'py' or None, not %r" % (name,))
