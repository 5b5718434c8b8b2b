"""``kitex-fast vendor DEST``: copy this package into another package's tree, as pip vendors its
dependencies, so that a sidecar ships one artifact with no dependency conflict.

The copy is the running package itself (every subpackage and data file), with the compiled
extensions built for the running interpreter, or none with ``--pure``. Every import inside the
package is relative, so the copy works under any parent package name and never mixes with another
kitex_fast installed beside it. The copy is checked in a fresh interpreter, loaded under a parent
package name that is not ``kitex_fast`` and without running any of the caller's own ``__init__``
files, before the command reports success.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence

from . import __version__
from ._argparse import ArgumentParser

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE_NAME = PACKAGE_DIR.name
LICENSE = "Apache-2.0"  # pyproject.toml's licence (SPDX); a test keeps the two equal
LICENSE_URL = "https://www.apache.org/licenses/LICENSE-2.0"
NOTE_NAME = "VENDORED.txt"

# Build inputs, caches and install-time notes: never part of a vendored copy.
_SKIP_DIRS = frozenset({"__pycache__"})
_SKIP_SUFFIXES = (".c", ".pyx", ".pxd", ".pyc", ".pyo", ".o", ".obj")
_SKIP_NAMES = frozenset({"_build_failed.txt", NOTE_NAME})
# Any compiled module, whichever interpreter it was built for.
_COMPILED_SUFFIXES = (".so", ".pyd", ".dylib")


class VendorError(Exception):
    """``vendor`` could not make a working copy; the message says why and what to do."""


class Plan(NamedTuple):
    files: List[Path]  # relative to PACKAGE_DIR, in copy order
    compiled: List[str]  # dotted module names (relative to the package) of the copied extensions
    left_out: List[Path]  # compiled files not copied: --pure, or built for another interpreter


def _extension_module(rel: Path) -> Optional[str]:
    """``"aio._proto"`` for ``aio/_proto.cpython-312-x86_64-linux-gnu.so`` when that file loads in
    the running interpreter; None for a file that is not such an extension."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        stem = rel.name[: -len(suffix)]
        # A bare ".so" suffix also matches "_codec.cpython-27-x86_64-linux-gnu.so", whose stem
        # is no module name: that file was built for another interpreter.
        if rel.name.endswith(suffix) and stem.isidentifier():
            return ".".join(rel.parent.parts + (stem,))
    return None


def plan(source: Path = PACKAGE_DIR, pure: bool = False) -> Plan:
    """What ``vendor`` copies from ``source``: every file of the package tree but build inputs
    and caches; extensions only when they load in this interpreter and ``pure`` is false."""
    files: List[Path] = []
    compiled: List[str] = []
    left_out: List[Path] = []
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(names):
            rel = Path(root, name).relative_to(source)
            if name in _SKIP_NAMES or name.endswith(_SKIP_SUFFIXES):
                continue
            if name.endswith(_COMPILED_SUFFIXES) or _extension_module(rel) is not None:
                module = None if pure else _extension_module(rel)
                if module is None:
                    left_out.append(rel)
                    continue
                compiled.append(module)
            files.append(rel)
    return Plan(files, compiled, left_out)


def import_prefix(dest: Path) -> str:
    """The dotted package name of ``dest``: its own name (when it is a package, or a directory
    without ``__init__.py`` inside one, which Python imports as a namespace package) and its
    parents' as long as each is a regular package; ``""`` when ``dest`` belongs on ``sys.path``."""
    here = dest.resolve()
    if not ((here / "__init__.py").is_file() or (here.parent / "__init__.py").is_file()):
        return ""
    names = [here.name]
    here = here.parent
    while (here / "__init__.py").is_file() and here.parent != here:
        names.append(here.name)
        here = here.parent
    return ".".join(reversed(names))


def import_line(dest: Path) -> str:
    prefix = import_prefix(dest)
    if prefix:
        return "from %s import %s" % (prefix, PACKAGE_NAME)
    return "import %s  # with %s on sys.path" % (PACKAGE_NAME, dest.resolve())


def _interpreter() -> str:
    import sysconfig  # here, not at import: sysconfig reads the environment when imported

    return "%s %s (%s)" % (
        sys.implementation.name,
        ".".join(map(str, sys.version_info[:3])),
        sysconfig.get_config_var("EXT_SUFFIX") or "no extension suffix",
    )


def _note(dest: Path, result: Plan) -> str:
    if result.compiled:
        core = "compiled for %s: %s" % (_interpreter(), ", ".join(result.compiled))
    else:
        core = "pure Python (the compiled core is left out; it is several times slower)"
    return (
        "%(name)s %(version)s, vendored with `kitex-fast vendor`.\n"
        "License: %(license)s (%(url)s)\n"
        "Import: %(line)s\n"
        "Core: %(core)s\n"
        "KITEX_FAST_NO_EXTENSIONS=1 in the environment selects the pure-Python twin at import.\n"
        "Do not edit this copy: run `kitex-fast vendor` again (from the version you want) to update it.\n"
    ) % {
        "name": PACKAGE_NAME,
        "version": __version__,
        "license": LICENSE,
        "url": LICENSE_URL,
        "line": import_line(dest),
        "core": core,
    }


# Run in a fresh interpreter: load the copy as a subpackage of a synthetic parent (no user
# __init__ runs), prove that importing it pulled in no module named kitex_fast (another installed
# copy) and that its compiled core is live, then load every other copied extension through the
# copy's own name (one whose subpackage needs a missing optional dependency is not checked).
_CHECK = r"""
import importlib, sys, types
dest, name, compiled = sys.argv[1], sys.argv[2], sys.argv[3:]
parent = types.ModuleType("_kitex_fast_vendor_check")
parent.__path__ = [dest]
sys.modules[parent.__name__] = parent
package = importlib.import_module(parent.__name__ + "." + name)
leaked = sorted(m for m in sys.modules if m == "kitex_fast" or m.startswith("kitex_fast."))
if leaked:
    sys.exit("the copy imported modules of another kitex_fast: %s" % ", ".join(leaked))
if compiled and not (package.codec.USING_EXTENSION and package.transport.USING_EXTENSION):
    sys.exit("the copied compiled core did not load")
for module in compiled:
    try:
        importlib.import_module(package.__name__ + "." + module)
    except ModuleNotFoundError as exc:  # (a .so that cannot load raises ImportError: fatal)
        if (exc.name or parent.__name__).startswith(parent.__name__):
            raise
        print("%s not checked: it needs %s" % (module, exc.name))
"""


def check(dest: Path, compiled: Sequence[str]) -> Optional[str]:
    """None if the copy in ``dest`` imports (with its extensions) in a fresh interpreter, else why not."""
    env = {k: v for k, v in os.environ.items() if k != "KITEX_FAST_NO_EXTENSIONS"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHECK, str(dest), PACKAGE_NAME, *compiled],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=120,
    )
    output = proc.stdout.decode(errors="replace").strip()
    if proc.returncode == 0:
        if output:
            print(output)
        return None
    # The error line(s), without the traceback's frames.
    lines = [line for line in output.splitlines() if line and not line[0].isspace() and not line.startswith("Traceback")]
    return "; ".join(lines) or "exit status %d" % proc.returncode


def vendor(dest: Path, pure: bool = False, force: bool = False, source: Path = PACKAGE_DIR) -> Plan:
    """Copy the package (``source``: this one) into ``dest / PACKAGE_NAME`` and check the copy
    imports; raises :class:`VendorError` saying why not and what to do."""
    dest = dest.resolve()
    target = dest / PACKAGE_NAME
    if target == source or source in target.parents or target in source.parents:
        raise VendorError("%s overlaps the package being copied (%s)" % (target, source))
    if dest.exists() and not dest.is_dir():
        raise VendorError("%s is not a directory" % dest)
    if target.exists() and not force:
        raise VendorError("%s already exists: pass --force to replace it" % target)
    result = plan(source, pure)
    if not pure and not result.compiled:
        raise VendorError(
            "no compiled extension for %s in %s%s: reinstall kitex_fast with a C compiler "
            "(pip install --force-reinstall --no-binary kitex_fast kitex_fast), run this command "
            "with the interpreter the sidecar uses, or pass --pure to vendor the pure-Python twin"
            % (
                _interpreter(),
                source,
                " (found only %s)" % ", ".join(map(str, result.left_out)) if result.left_out else "",
            )
        )
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".%s-vendor-" % PACKAGE_NAME, dir=dest))
    try:
        copy = staging / PACKAGE_NAME
        for rel in result.files:
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, copy / rel)
        (copy / NOTE_NAME).write_text(_note(dest, result), encoding="utf-8")
        problem = check(staging, result.compiled)
        if problem is not None:
            raise VendorError("the vendored copy does not import: %s" % problem)
        if target.exists():
            shutil.rmtree(target)
        copy.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="kitex-fast vendor",
        description="Copy kitex_fast into DEST/kitex_fast (for example mysidecar/_vendor), with "
        "the compiled core built for this interpreter, and print the import line to use.",
    )
    parser.add_argument("dest", type=Path, help="the directory to copy into (usually a package: it has __init__.py)")
    parser.add_argument("--pure", action="store_true", help="leave the compiled core out: the pure-Python twin only")
    parser.add_argument("--force", action="store_true", help="replace an existing DEST/kitex_fast")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = vendor(args.dest, pure=args.pure, force=args.force)
    except VendorError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    target = args.dest.resolve() / PACKAGE_NAME
    core = ("compiled core for %s" % _interpreter()) if result.compiled else "pure-Python twin only"
    print("vendored %s %s into %s (%s, %d files)" % (PACKAGE_NAME, __version__, target, core, len(result.files) + 1))
    for rel in result.left_out:
        print("left out %s (%s)" % (rel, "--pure" if args.pure else "built for another interpreter"))
    print("import it with:\n    %s" % import_line(args.dest))
    return 0
