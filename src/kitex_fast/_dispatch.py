"""How the dispatchers (codec.py, transport.py, aio/protocol.py) choose between a compiled module
and its twin: each is one call of :func:`dispatch`."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from types import ModuleType
from typing import Callable, Dict, List, Optional, Tuple

def env_flag(value: Optional[str]) -> bool:
    """An on/off environment switch: on only for 1, true or yes (any case); 0, false, no or
    empty leave it off, as a user who writes KITEX_FAST_NO_EXTENSIONS=0 means."""
    return value is not None and value.strip().lower() in ("1", "true", "yes")


# KITEX_FAST_NO_EXTENSIONS=1, or an interpreter that cannot load CPython extensions, selects the
# pure-Python twins (setup.py skips the build under the same switch, parsed the same way).
NO_EXTENSIONS = env_flag(os.environ.get("KITEX_FAST_NO_EXTENSIONS")) or (
    sys.implementation.name != "cpython"
)


# Written by setup.py when the compile failed and it installed the twins instead.
# (os.path, not pathlib: pathlib and what it imports are several hundred KiB of a sidecar's RSS)
BUILD_FAILED_NOTE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build_failed.txt")
_warned = False


def load_compiled(name: str, stacklevel: int = 3) -> Optional[ModuleType]:
    """The compiled ``<this package>.<name>`` if it is built and allowed, else None (with a
    warning, once, when the install meant to build it but could not: pip hides the build's own
    warning). Resolved relative to this package, never by the name ``kitex_fast``, so a vendored
    copy loads its own extension and never one of another installed kitex_fast."""
    global _warned
    if NO_EXTENSIONS:
        return None
    try:
        module = importlib.import_module("." + name, __package__)
    except ImportError as exc:
        if os.path.exists(BUILD_FAILED_NOTE) and not _warned:
            _warned = True
            with open(BUILD_FAILED_NOTE, encoding="utf-8", errors="replace") as f:
                reason = f.read().strip()
            warnings.warn(
                "kitex_fast: the compiled core failed to build when this package was installed "
                "(%s); the pure-Python twin is in use: the same results, at a higher latency and "
                "CPU cost per call (docs/benchmarks.md has the measured ratios). Reinstall with "
                "a C compiler, or set KITEX_FAST_NO_EXTENSIONS=1 to choose the twin knowingly."
                % reason,
                RuntimeWarning,
                stacklevel=stacklevel,
            )
        elif not os.path.exists(BUILD_FAILED_NOTE) and _extension_file_exists(name) and not _warned:
            _warned = True  # built but unloadable (wrong Python, missing symbol): say why
            warnings.warn(
                "kitex_fast: the compiled %s is installed but cannot be loaded (%s); using the "
                "pure-Python twin" % (name, exc),
                RuntimeWarning,
                stacklevel=stacklevel,
            )
        return None
    _drop_build_name_alias(name, module)
    return module


# The package name the extensions are built under (setup.py: Extension("kitex_fast._codec", ...)).
BUILD_PACKAGE = "kitex_fast"


def _drop_build_name_alias(name: str, module: ModuleType) -> None:
    """Cython's module init also stores the module in sys.modules under the name it was built as
    (``kitex_fast._codec``), whatever name it was imported by (Cython 3,
    ``ModuleNode.generate_module_import_setup``). In a vendored copy that alias would hand this
    copy's core, raising this copy's error classes, to another kitex_fast imported later in the
    process: remove it, so each copy only ever sees its own modules."""
    alias = BUILD_PACKAGE + "." + name
    if __package__ != BUILD_PACKAGE and sys.modules.get(alias) is module:
        del sys.modules[alias]


def _extension_file_exists(name: str) -> bool:
    *subpackage, module = name.split(".")  # "aio._protocol" lives in aio/
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), *subpackage)
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return any(n.startswith(module + ".") and n.endswith((".so", ".pyd")) for n in names)


def choose(
    name: Optional[str], compiled: Optional[ModuleType], twin: Callable[[], ModuleType], what: str
) -> ModuleType:
    """The module for ``name``: ``"c"`` (compiled), ``"py"`` (twin, imported by ``twin()``) or
    None (the live one)."""
    if name is None:
        return compiled if compiled is not None else twin()
    if name == "py":
        return twin()
    if name == "c":
        if compiled is None:
            raise ImportError(
                "the compiled kitex_fast %s is not available%s; reinstall with a C compiler and "
                "Cython, or use implementation='py'"
                % (what, " (KITEX_FAST_NO_EXTENSIONS is set)" if NO_EXTENSIONS else "")
            )
        return compiled
    raise ValueError("implementation must be 'c', 'py' or None, not %r" % (name,))


def dispatch(
    namespace: Dict[str, object], module: str, what: str
) -> Tuple[Tuple[str, ...], bool, Callable[[Optional[str]], ModuleType], List[str]]:
    """Make the calling module (``namespace`` is its ``globals()``) the dispatcher of the compiled
    ``<this package>.<module>`` and its pure-Python twin ``<module>_py``: it gets the live module's
    public names, and this returns its own four, ``PUBLIC_API``, ``USING_EXTENSION``,
    ``implementation`` and ``__all__``. ``what`` names the module in implementation's ImportError.

    ``PUBLIC_API`` is the twin's ``__all__``: the one source list. The compiled module repeats it
    (and so does its .pyi), held to it by tests/unit/test_codec_exports.py and stubtest, so the
    live module's list is the same list."""
    # stacklevel 4: a warning names the line that imported the dispatcher, past this function
    # and the dispatcher's own module code (warnings skips importlib's frames).
    compiled = load_compiled(module, stacklevel=4)

    def twin() -> ModuleType:
        # Imported when first asked for (or when the compiled one is absent): a process on the
        # compiled core does not pay the twin's memory. Relative to this package, as
        # load_compiled is, so a vendored copy imports its own twin.
        return importlib.import_module("." + module + "_py", __package__)

    def implementation(name: Optional[str] = None) -> ModuleType:
        return choose(name, compiled, twin, what)

    # help(codec.implementation) reads as a function of the dispatcher
    implementation.__doc__ = (
        'The %s module for ``name``: ``"c"`` (compiled), ``"py"`` (twin) or None (the live one).' % what
    )
    implementation.__module__, implementation.__qualname__ = str(namespace["__name__"]), "implementation"
    live = implementation()
    public_api: Tuple[str, ...] = tuple(live.__all__)
    namespace.update({name: getattr(live, name) for name in public_api})
    own = ["USING_EXTENSION", "PUBLIC_API", "implementation"]
    return public_api, compiled is not None, implementation, list(public_api) + own
