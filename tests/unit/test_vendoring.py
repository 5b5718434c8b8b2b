"""Issue 13: kitex_fast vendored into another package's tree (as pip vendors its dependencies).

A copy made by ``kitex-fast vendor`` is imported as ``sidecar._vendor.kitex_fast`` in a fresh
interpreter (tests/unit/vendored_app.py) where another kitex_fast is installed and imported before
it, or after it, and where none can be found, on both implementations: it must use only its own
modules and compiled core, and raise its own error classes. Also: the command line from a vendored
copy, the ``vendor`` command itself, the import rule over the source, and that importing any module
of the package changes nothing global (tests/unit/import_probe.py). The same calls against a real
Kitex server are in tests/interop/test_vendored_interop.py.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

import kitex_fast
from kitex_fast import vendoring

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SOURCE = REPO / "src" / "kitex_fast"
INSTALLED = Path(kitex_fast.__file__).resolve().parent
VENDORED_NAME = "sidecar._vendor.kitex_fast"
ENV_SWITCH = "KITEX_FAST_NO_EXTENSIONS"


def make_sidecar(root: Path) -> Path:
    """``root/sidecar/_vendor``: the package directory a sidecar author vendors into."""
    dest = root / "sidecar" / "_vendor"
    dest.mkdir(parents=True)
    (root / "sidecar" / "__init__.py").write_text("")
    (dest / "__init__.py").write_text("")
    return dest


def run(args: List[str], env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def child_env(*drop: str, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) + drop}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, str]:
    """(root on sys.path, stdout of the command): ``python -m kitex_fast vendor`` of the installed
    package, with its compiled core when the install has one."""
    root = tmp_path_factory.mktemp("vendored")
    dest = make_sidecar(root)
    if os.environ.get("KITEX_FAST_EXPECT_EXTENSION") == "1":
        assert {"_codec", "_transport"} <= set(vendoring.plan().compiled), "no compiled core to vendor"
    pure = [] if vendoring.plan().compiled else ["--pure"]
    out = run([sys.executable, "-m", "kitex_fast", "vendor", str(dest), *pure], child_env())
    assert out.returncode == 0, out.stderr
    return root, out.stdout


@pytest.fixture(scope="module")
def pure_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy made with the console script and ``--pure``: no compiled module in it."""
    root = tmp_path_factory.mktemp("vendored_pure")
    dest = make_sidecar(root)
    script = Path(sys.executable).with_name("kitex-fast")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "kitex_fast"]
    out = run(command + ["vendor", str(dest), "--pure"], child_env())
    assert out.returncode == 0, out.stderr
    assert "pure-Python twin only" in out.stdout
    return root


def under(path: Any, root: Path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(root.resolve())


def extension_file(path: str) -> bool:
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


# -- the vendored copy in use ------------------------------------------------------------------


@pytest.mark.parametrize("other", ["installed-first", "installed-later", "none"])
def test_vendored_copy_uses_only_itself(impl, sidecar, other) -> None:
    root, _ = sidecar
    package_dir = root / "sidecar" / "_vendor" / "kitex_fast"
    if impl.name == "c" and not list(package_dir.glob("_codec.*")):
        pytest.fail("the installed package has a compiled core but the vendored copy has none")
    # -I: no PYTHONPATH, no user site; -S as well: no site-packages, so no other kitex_fast at all.
    flags = ["-I", "-S"] if other == "none" else ["-I"]
    out = run([sys.executable, *flags, str(HERE / "vendored_app.py"), str(root), VENDORED_NAME, impl.name, other], child_env())
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)

    if other != "none":
        assert facts["other_origin"] is not None and not under(facts["other_origin"], root)
        assert facts["other_is_distinct"], "the vendored errors are the installed copy's classes"
    if other == "installed-later":  # the other copy, imported last, still gets only its own modules
        assert not under(facts["other_impl_file"], root)
        assert facts["other_codec_error"] == "kitex_fast.errors.ProtocolError"
    if other == "none":
        assert facts["other_origin"] is None, "a kitex_fast is importable in the -S process"
        assert facts["foreign_modules"] == []
    assert under(facts["vendored_file"], package_dir)
    stray = {name: path for name, path in facts["vendored_modules"].items() if not under(path, package_dir)}
    assert not stray, "vendored modules loaded from elsewhere"

    # The implementation asked for is the copy's own: for c, its own .so files.
    assert facts["impl_names"] == [VENDORED_NAME + "._codec" + ("_py" if impl.name == "py" else ""),
                                   VENDORED_NAME + "._transport" + ("_py" if impl.name == "py" else "")]
    assert all(under(path, package_dir) for path in facts["impl_files"])
    assert all(extension_file(path) for path in facts["impl_files"]) == (impl.name == "c")
    assert facts["using_extension"] == [not os.environ.get(ENV_SWITCH) and bool(vendoring.plan().compiled)] * 2

    assert facts["embedded_reply"] == ["vendored,hi Kitex", "vendored,hi Kitex"]
    for key, expected in [("codec_error", "ProtocolError"), ("connect_error", "ConnectError"),
                          ("metadata_error", "MetadataError")]:
        error = facts[key]
        assert error["type"] == expected, error
        assert error["module"] == VENDORED_NAME + ".errors", error
        assert error["is_other"] is False, error


@pytest.fixture(scope="module")
def marked_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vendored copy with a file of its own (marker.txt), to tell which tree a command copied."""
    root = tmp_path_factory.mktemp("vendored_marked")
    dest = make_sidecar(root)
    pure = [] if vendoring.plan().compiled else ["--pure"]
    out = run([sys.executable, "-m", "kitex_fast", "vendor", str(dest), *pure], child_env())
    assert out.returncode == 0, out.stderr
    (dest / "kitex_fast" / "marker.txt").write_text("this copy")
    return root


def test_the_demo_runs_from_a_vendored_copy(impl, marked_sidecar) -> None:
    # python -m <vendored> (cwd on sys.path), the installed kitex_fast importable beside it.
    out = subprocess.run([sys.executable, "-m", VENDORED_NAME, "--implementation", impl.name, "demo"],
                         cwd=marked_sidecar, env=child_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "echo('hello dapr') -> 'hello dapr,hi Kitex'" in out.stdout


def test_vendor_run_from_a_vendored_copy_copies_that_copy(marked_sidecar, tmp_path) -> None:
    pure = [] if vendoring.plan().compiled else ["--pure"]
    out = subprocess.run([sys.executable, "-m", VENDORED_NAME, "vendor", str(tmp_path), *pure],
                         cwd=marked_sidecar, env=child_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "kitex_fast" / "marker.txt").read_text() == "this copy"


def test_without_the_compiled_files_the_copy_uses_the_twin(pure_sidecar) -> None:
    package_dir = pure_sidecar / "sidecar" / "_vendor" / "kitex_fast"
    assert not [p for p in package_dir.rglob("*") if extension_file(p.name)]
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from sidecar._vendor import kitex_fast as k\n"
        "print(k.codec.USING_EXTENSION, k.transport.USING_EXTENSION)\n"
        "try:\n    k.codec.implementation('c')\nexcept ImportError as e:\n    print('no c')\n"
    )
    # -W error: leaving the .so files out is a choice, not a failed build: no warning.
    out = run([sys.executable, "-I", "-S", "-W", "error", "-c", code, str(pure_sidecar)],
              child_env(ENV_SWITCH))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["False False", "no c"]


# -- the command ---------------------------------------------------------------------------------


def test_vendor_prints_the_import_line_and_writes_the_note(sidecar) -> None:
    root, stdout = sidecar
    assert "import it with:\n    from sidecar._vendor import kitex_fast\n" in stdout
    note = (root / "sidecar" / "_vendor" / "kitex_fast" / "VENDORED.txt").read_text()
    version = importlib.metadata.version("kitex_fast")
    assert kitex_fast.__version__ == version
    assert note.startswith("kitex_fast %s, vendored with `kitex-fast vendor`.\n" % version)
    assert "License: %s (" % vendoring.LICENSE in note
    assert "Import: from sidecar._vendor import kitex_fast\n" in note
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^license = "%s"$' % re.escape(vendoring.LICENSE), pyproject, re.M), "licence differs from pyproject.toml"


def test_vendor_copies_the_whole_installed_package(sidecar) -> None:
    root, _ = sidecar
    copy = root / "sidecar" / "_vendor" / "kitex_fast"

    def files(base: Path) -> set:
        return {p.relative_to(base).as_posix() for p in base.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}

    expected = {f for f in files(INSTALLED) if not f.endswith((".c", ".pyx", ".pxd")) and f != "_build_failed.txt"}
    assert files(copy) - {"VENDORED.txt"} == expected
    assert {"py.typed", "_codec.pyi", "vendoring.py", "__init__.py"} <= files(copy)


def test_plan_copies_every_subpackage_and_data_file_but_build_inputs(tmp_path) -> None:
    ext = importlib.machinery.EXTENSION_SUFFIXES[0]
    tree = {
        "__init__.py", "py.typed", "_codec.pyi", "_codec.pyx", "_codec.c", "_codec" + ext,
        "_old.cpython-27-x86_64-linux-gnu.so", "_build_failed.txt", "__pycache__/codec.cpython-311.pyc",
        "aio/__init__.py", "aio/_protocol" + ext, "aio/_protocol.pyx",
        "dapr/__init__.py", "dapr/proto/components.proto", "dapr/proto/components_pb2.py",
        "dapr/proto/components_pb2_grpc.py", "dapr/proto/components_pb2.pyi", "data/sample.json",
    }
    for rel in tree:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    result = vendoring.plan(tmp_path)
    assert {p.as_posix() for p in result.files} == {
        "__init__.py", "py.typed", "_codec.pyi", "_codec" + ext, "aio/__init__.py", "aio/_protocol" + ext,
        "dapr/__init__.py", "dapr/proto/components.proto", "dapr/proto/components_pb2.py",
        "dapr/proto/components_pb2_grpc.py", "dapr/proto/components_pb2.pyi", "data/sample.json",
    }
    assert sorted(result.compiled) == ["_codec", "aio._protocol"]
    assert [p.as_posix() for p in result.left_out] == ["_old.cpython-27-x86_64-linux-gnu.so"]
    pure = vendoring.plan(tmp_path, pure=True)
    assert pure.compiled == [] and len(pure.left_out) == 3


def test_vendor_checks_compiled_modules_in_subpackages(tmp_path, capsys) -> None:
    # A subpackage with its own compiled module (as kitex_fast.aio has) is copied and loaded by the
    # check; one whose subpackage needs a missing optional dependency is named, not fatal.
    if not vendoring.plan().compiled:
        pytest.skip("the installed package has no compiled core")
    source = tmp_path / "src" / "kitex_fast"
    shutil.copytree(INSTALLED, source, ignore=shutil.ignore_patterns("__pycache__"))
    codec_so = next(p for p in source.iterdir() if p.name.startswith("_codec.") and extension_file(p.name))
    for sub, init in [("fast", ""), ("extra", "import kitex_fast_missing_dependency\n")]:
        (source / sub).mkdir()
        (source / sub / "__init__.py").write_text(init)
        shutil.copy2(codec_so, source / sub / codec_so.name)  # init name PyInit__codec: any package
    (source / "fast" / "errors.py").write_text("from ..errors import *  # noqa: F403 - for the copied _codec\n")
    result = vendoring.vendor(tmp_path / "dest", source=source)
    assert sorted(result.compiled) == sorted(vendoring.plan().compiled + ["extra._codec", "fast._codec"])
    assert "extra._codec not checked: it needs kitex_fast_missing_dependency" in capsys.readouterr().out
    assert (tmp_path / "dest" / "kitex_fast" / "fast" / codec_so.name).is_file()
    # A compiled file that cannot load fails the check, and nothing is left in DEST.
    (source / "fast" / codec_so.name).write_bytes(b"not an ELF file")
    with pytest.raises(vendoring.VendorError, match=r"the vendored copy does not import: .*ImportError: .*fast.\S+\.(so|pyd)"):
        vendoring.vendor(tmp_path / "dest2", source=source)
    assert list((tmp_path / "dest2").iterdir()) == []


def test_vendor_refuses_to_overwrite_unless_forced(tmp_path, capsys) -> None:
    dest = tmp_path / "lib"  # not a package: the copy is imported as top-level kitex_fast
    assert vendoring.main([str(dest), "--pure"]) == 0
    assert "import kitex_fast  # with %s on sys.path" % dest.resolve() in capsys.readouterr().out
    (dest / "kitex_fast" / "stale.py").write_text("")
    assert vendoring.main([str(dest), "--pure"]) == 1
    assert "already exists: pass --force to replace it" in capsys.readouterr().err
    assert vendoring.main([str(dest), "--pure", "--force"]) == 0
    assert not (dest / "kitex_fast" / "stale.py").exists()
    assert not [p for p in dest.iterdir() if p.name != "kitex_fast"], "staging directory left behind"


def test_the_import_line_follows_the_package_tree(tmp_path) -> None:
    (tmp_path / "app" / "lib" / "_vendor").mkdir(parents=True)
    (tmp_path / "app" / "__init__.py").write_text("")
    assert vendoring.import_prefix(tmp_path / "app") == "app"
    # _vendor without __init__.py inside a package: Python imports it as a namespace package.
    assert vendoring.import_prefix(tmp_path / "app" / "lib") == "app.lib"
    assert vendoring.import_prefix(tmp_path / "app" / "lib" / "_vendor") == ""
    (tmp_path / "app" / "lib" / "__init__.py").write_text("")
    assert vendoring.import_prefix(tmp_path / "app" / "lib" / "_vendor") == "app.lib._vendor"
    assert vendoring.import_line(tmp_path / "app" / "lib" / "_vendor") == "from app.lib._vendor import kitex_fast"


def test_vendor_without_a_compiled_core_says_what_to_do(tmp_path) -> None:
    source = tmp_path / "src" / "kitex_fast"
    source.mkdir(parents=True)
    (source / "__init__.py").write_text("")
    (source / "_codec.cpython-27-x86_64-linux-gnu.so").write_text("")
    with pytest.raises(vendoring.VendorError, match=r"no compiled extension for .* \(found only _codec.cpython-27.*--pure"):
        vendoring.vendor(tmp_path / "dest", source=source)
    with pytest.raises(vendoring.VendorError, match="overlaps the package"):
        vendoring.vendor(tmp_path / "src", source=source, force=True)


def test_vendor_is_listed_by_the_command_line(capsys) -> None:
    from kitex_fast import cli

    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "vendor" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["vendor", "--help"])
    assert "--pure" in capsys.readouterr().out
    # After a global option: a usage error (exit status 2, returned or raised), not a traceback.
    try:
        status = cli.main(["--implementation", "py", "vendor"])
    except SystemExit as exc:
        status = exc.code
    assert status == 2


# -- the import rule -----------------------------------------------------------------------------

# In Cython source, `from .x import y` is no better than `from kitex_fast.x import y`: Cython >= 3.2
# resolves it to the build-time name and takes that from sys.modules when present
# (cython/cython#7035). Package modules come through importlib.import_module(".x", __package__).
# (A `cimport` is resolved at build time and is fine.)
_PYX_SELF_IMPORT = re.compile(r"^[ \t]*(from[ \t]+(kitex_fast\b|\.)[^\n]*[ \t]import\b|import[ \t]+kitex_fast\b)[^\n]*", re.M)


def _absolute_self_imports(path: Path, own_modules: set) -> List[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".pyx", ".pxd"):
        return [m.group(0).strip() for m in _PYX_SELF_IMPORT.finditer(text) if " cimport " not in m.group(0)]
    found = []
    stdlib = set(getattr(sys, "stdlib_module_names", ()))
    for node in ast.walk(ast.parse(text, str(path))):
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # A module path as data: importlib.import_module("kitex_fast.x"), a logger name, a
            # command table entry ("kitex_fast.vendoring")... (a bare "kitex_fast" is not a path.)
            if re.fullmatch(r"kitex_fast(\.[A-Za-z_]\w*)+", node.value):
                found.append("line %d: %r" % (node.lineno, node.value))
        for name in names:
            top = name.split(".")[0]
            # kitex_fast.x, or a module of this package imported as if top-level (`import x_pb2`,
            # as protoc generates): both break once the package lives under another name.
            if top == "kitex_fast" or (top in own_modules and top not in stdlib):
                found.append("line %d: import %s" % (node.lineno, name))
    return found


def test_every_import_inside_the_package_is_relative() -> None:
    if not SOURCE.is_dir():
        pytest.skip("needs the source tree (%s)" % SOURCE)
    sources = sorted(p for p in SOURCE.rglob("*") if p.suffix in (".py", ".pyi", ".pyx", ".pxd"))
    own = {p.stem for p in sources} | {p.name for p in SOURCE.rglob("*") if p.is_dir()}
    own.discard("__init__")
    bad = {str(p.relative_to(SOURCE)): hits for p in sources if (hits := _absolute_self_imports(p, own))}
    assert not bad, "absolute imports of the package itself (use relative imports): %s" % bad
    assert len(sources) >= 15  # the scan saw the tree


# -- nothing global on import --------------------------------------------------------------------


@pytest.mark.parametrize("where", ["installed", "vendored"])
def test_importing_every_module_changes_nothing_global(impl, sidecar, where) -> None:
    root, _ = sidecar
    if where == "installed":
        package, package_dir, args = "kitex_fast", INSTALLED, []
    else:
        package, package_dir, args = VENDORED_NAME, root / "sidecar" / "_vendor" / "kitex_fast", [str(root)]
    env = child_env(ENV_SWITCH, **({ENV_SWITCH: "1"} if impl.name == "py" else {}))
    # -I: the installed kitex_fast is importable (not imported) beside the vendored one.
    out = run([sys.executable, "-I", str(HERE / "import_probe.py"), package, *args], env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)

    assert report["failed"] == {}
    assert report["using_extension"] == [impl.name == "c"] * 2
    expected = {package + "." + m for m in ("binding", "cli", "client", "codec", "testing", "transport", "vendoring")}
    assert expected <= set(report["imported"])
    assert all(under(path, package_dir) for path in report["modules"].values() if path)
    assert report["foreign_kitex_fast"] == []
    assert report["third_party_on_import"] == [], "import kitex_fast pulled in a dependency"
    assert report["printed"] == ""
    assert report["changed"] == {}, "threads, signal handlers, logging, environment, hooks or paths changed"
    # `import kitex_fast` reads one variable, whoever reads it (no stdlib module that reads more
    # is imported at that point); the package's own code never reads another, in any module.
    assert {(kind, key) for when, kind, key, _ in report["env"] if when == "import"} == {("read", ENV_SWITCH)}
    ours = {(kind, key) for _, kind, key, path in report["env"] if under(path, package_dir)}
    assert ours == {("read", ENV_SWITCH)}, "the package may read only %s" % ENV_SWITCH
    assert not [e for e in report["env"] if e[1] == "write"], "the environment was written"


# -- the Dapr component from a vendored copy -------------------------------------------------------


def _component_start_log(root: Path, tmp_path: Path, env: Dict[str, str]) -> str:
    """Start ``python -m <vendored> component`` until it serves, stop it (SIGTERM), its log."""
    import signal
    import time

    tmp_path.mkdir(parents=True)
    folder = tmp_path / "sockets"
    log = tmp_path / "component.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", VENDORED_NAME, "component", "--socket-folder",
                                 str(folder)], cwd=root, env=env, stdout=f, stderr=f)
    try:
        deadline = time.monotonic() + 60
        while "serving bindings.kitex" not in log.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    return log.read_text()


def test_a_vendored_component_says_which_server_it_runs(sidecar, pure_sidecar, tmp_path) -> None:
    pytest.importorskip("grpc", reason='the grpcio fallback needs "kitex_fast[dapr]"')
    from kitex_fast.dapr import h2server

    text = _component_start_log(sidecar[0], tmp_path / "full", child_env())
    # The copy carries the compiled server when this install has it (and libnghttp2 loads).
    assert ("server compiled" if h2server.unavailable() is None else "server grpcio") in text, text
    text = _component_start_log(pure_sidecar, tmp_path / "pure", child_env(ENV_SWITCH))
    assert "server grpcio" in text and "the compiled server is not available" in text, text
