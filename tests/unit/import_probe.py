"""Imports a package and then every module in it, in this fresh interpreter, and reports as JSON
every global side effect the imports had. Run by tests/unit/test_vendoring.py:

    python import_probe.py PACKAGE [ROOT]

ROOT, if given, is put on sys.path first (a vendored copy). ``__main__`` modules are not imported:
running the command line is what they are for; nor are compiled modules (the package's dispatchers
load them, or not at all under KITEX_FAST_NO_EXTENSIONS). A module whose optional dependency (grpcio,
thriftpy2, uvloop) is not installed is reported as skipped, not failed.
"""

from __future__ import annotations

import atexit
import faulthandler
import gc
import importlib
import importlib.machinery
import importlib.util
import io
import json
import logging
import os
import pkgutil
import signal
import socket
import sys
import sysconfig
import threading
import traceback
import warnings
from typing import Any, Dict, List, Tuple

# Frames of the mapping machinery (os.environ, os.getenv) and of this probe: the reader is the
# first frame outside them.
_PLUMBING = frozenset({"os", "_collections_abc", "collections.abc", __name__})
phase = "import"  # "import": `import PACKAGE` alone; "walk": every other module
env_events: List[Tuple[str, str, str, str]] = []  # (phase, read|write, key, file of the reader)


def _caller() -> str:
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") in _PLUMBING:
        frame = frame.f_back  # type: ignore[assignment]
    return frame.f_code.co_filename if frame is not None else "?"


def _note(kind: str, key: Any) -> None:
    env_events.append((phase, kind, str(key), _caller()))


_Environ = type(os.environ)


class RecordingEnviron(_Environ):  # type: ignore[misc, valid-type]
    """os.environ (and os.getenv, which reads it) that notes who reads or writes which key."""

    def __getitem__(self, key: Any) -> Any:
        _note("read", key)
        return super().__getitem__(key)

    def __contains__(self, key: Any) -> bool:
        _note("read", key)
        return super().__contains__(key)

    def __iter__(self) -> Any:
        _note("read", "*")
        return super().__iter__()

    def __setitem__(self, key: Any, value: Any) -> None:
        _note("write", key)
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        _note("write", key)
        super().__delitem__(key)


def _recording(name: str, kind: str) -> Any:
    real = getattr(os, name)

    def wrapper(key: Any, *args: Any) -> Any:
        _note(kind, key)
        return real(key, *args)

    return wrapper


_SITE_PACKAGES = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}


def _in_site_packages(path: Any) -> bool:
    real = os.path.realpath(path) if isinstance(path, str) else ""
    return any(real.startswith(site + os.sep) for site in _SITE_PACKAGES)


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))  # every OS thread, C-level ones included
    except OSError:
        return threading.active_count()


# The optional extras' modules that subpackages import (kitex_fast.dapr, .idl, .aio on uvloop).
OPTIONAL_DEPENDENCIES = ("grpc", "grpc_reflection.v1alpha.reflection", "google.protobuf", "thriftpy2", "uvloop")


def _handlers(logger: Any) -> List[str]:
    return [type(h).__name__ for h in getattr(logger, "handlers", [])]


def snapshot() -> Dict[str, Any]:
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    old_umask = os.umask(0o22)
    os.umask(old_umask)
    manager = logging.Logger.manager
    return {
        "environ": dict(os.environ),
        "threads": _thread_count(),
        "signal handlers": {str(s): repr(signal.getsignal(s)) for s in signal.valid_signals()},
        "signal wakeup fd": wakeup,
        "root logger": [_handlers(logging.root), logging.root.level],
        "logger handlers": {name: _handlers(lg) for name, lg in manager.loggerDict.items() if _handlers(lg)},
        "logging disable": manager.disable,
        "logger class": repr(logging.getLoggerClass()),
        "warnings filters": repr(warnings.filters),
        "hooks": [repr(h) for h in (sys.excepthook, sys.displayhook, sys.unraisablehook, threading.excepthook)],
        "atexit callbacks": atexit._ncallbacks(),  # type: ignore[attr-defined]
        "faulthandler": faulthandler.is_enabled(),
        "socket default timeout": socket.getdefaulttimeout(),
        "sys.path": list(sys.path),
        "sys.meta_path": [repr(f) for f in sys.meta_path],
        "sys.path_hooks": [repr(h) for h in sys.path_hooks],
        "recursion limit": sys.getrecursionlimit(),
        "switch interval": sys.getswitchinterval(),
        "gc": [gc.isenabled(), gc.get_threshold()],
        "cwd": os.getcwd(),
        "umask": old_umask,
        "streams": [id(sys.stdin), id(sys.stdout), id(sys.stderr)],
    }


def main() -> None:
    package_name = sys.argv[1]
    if len(sys.argv) > 2:
        sys.path.insert(0, sys.argv[2])
    # What an optional dependency does when it is imported (grpc adds a NullHandler to its own
    # logger, ...) is not the package's doing: import the ones installed before the first snapshot.
    for dependency in OPTIONAL_DEPENDENCIES:
        try:
            importlib.import_module(dependency)
        except ImportError:
            pass
    modules_before = set(sys.modules)
    before = snapshot()
    os.environ.__class__ = RecordingEnviron
    os.environb.__class__ = RecordingEnviron
    os.putenv, os.unsetenv = _recording("putenv", "write"), _recording("unsetenv", "write")  # type: ignore[assignment]
    report: Dict[str, Any] = {"imported": [], "compiled": [], "skipped": {}, "failed": {}}
    out, err = io.StringIO(), io.StringIO()
    real_out, real_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        package = importlib.import_module(package_name)
        # What `import <package>` alone pulled in from outside the standard library.
        # A dependency is a module installed in site-packages (not the package itself).
        report["third_party_on_import"] = sorted(
            {m.split(".")[0] for m in set(sys.modules) - modules_before
             if m.split(".")[0] != package_name.split(".")[0]
             and _in_site_packages(getattr(sys.modules[m], "__file__", None))}
        )
        global phase
        phase = "walk"
        report["using_extension"] = [package.codec.USING_EXTENSION, package.transport.USING_EXTENSION]
        names = [package_name] + [
            info.name for info in pkgutil.walk_packages(
                package.__path__, package_name + ".", onerror=lambda name: report["failed"].setdefault(name, "walk failed"))
        ]
        for name in names:
            if name.rsplit(".", 1)[-1] == "__main__":
                continue
            spec = importlib.util.find_spec(name)
            if spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
                # Compiled modules are loaded by the package's dispatchers (which the walk
                # imports), or not at all under KITEX_FAST_NO_EXTENSIONS: never directly.
                report["compiled"].append(name)
                continue
            try:
                importlib.import_module(name)
                report["imported"].append(name)
            except ImportError as exc:
                missing = (exc.name or "").split(".")[0]
                if missing and missing != package_name.split(".")[0] and missing != "kitex_fast":
                    report["skipped"][name] = "optional dependency %s is not installed" % exc.name
                else:
                    report["failed"][name] = traceback.format_exc()
            except Exception:  # noqa: BLE001 - every failure is reported
                report["failed"][name] = traceback.format_exc()
    finally:
        sys.stdout, sys.stderr = real_out, real_err
        os.environ.__class__ = _Environ
        os.environb.__class__ = _Environ
    after = snapshot()
    report["changed"] = {k: [before[k], after[k]] for k in before if before[k] != after[k]}
    report["printed"] = out.getvalue() + err.getvalue()
    report["env"] = sorted(set(env_events))
    report["modules"] = {n: getattr(m, "__file__", None) for n, m in sys.modules.items()
                         if n == package_name or n.startswith(package_name + ".")}
    report["foreign_kitex_fast"] = sorted(n for n in sys.modules if n.split(".")[0] == "kitex_fast"
                                          and package_name.split(".")[0] != "kitex_fast")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
