"""The package as a user gets it: the extension switch, the public API, the demo and the CLI."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import kitex_fast
from kitex_fast import codec, transport
from kitex_fast.testing import KitexTestServer, echo_handler, echo_request


def test_extension_loaded_when_expected() -> None:
    if os.environ.get("KITEX_FAST_EXPECT_EXTENSION") != "1":
        pytest.skip("set KITEX_FAST_EXPECT_EXTENSION=1 to require the compiled core")
    assert codec.USING_EXTENSION, "compiled codec expected but the twin is live"
    assert transport.USING_EXTENSION, "compiled transport expected but the twin is live"


def _python(code: str, **env: str) -> str:
    full_env = dict(os.environ, **env)
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_no_extensions_switch_selects_the_twins() -> None:
    code = "import kitex_fast.codec as c, kitex_fast.transport as t; print(c.USING_EXTENSION, t.USING_EXTENSION, c.parse_message.__module__)"
    assert _python(code, KITEX_FAST_NO_EXTENSIONS="1") == "False False kitex_fast._codec_py"


def test_requesting_a_missing_extension_says_how_to_fix_it() -> None:
    code = (
        "import kitex_fast.codec as c\n"
        "try:\n    c.implementation('c')\nexcept ImportError as e:\n    print(e)"
    )
    assert "KITEX_FAST_NO_EXTENSIONS is set" in _python(code, KITEX_FAST_NO_EXTENSIONS="1")


@pytest.mark.parametrize("module", [codec, transport])
def test_both_implementations_expose_the_public_api(impl, module) -> None:
    mod = getattr(impl, module.__name__.rsplit(".", 1)[1])
    missing = [name for name in module.PUBLIC_API if not hasattr(mod, name)]
    assert not missing


def test_package_reexports() -> None:
    for name in kitex_fast.__all__:
        assert hasattr(kitex_fast, name), name


@pytest.mark.parametrize("transport_name", ["framed", "ttheader"])
def test_demo(impl, transport_name) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kitex_fast", "--implementation", impl.name, "demo", "--transport", transport_name],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "echo('hello dapr') -> 'hello dapr,hi Kitex'" in out.stdout


def test_cli_call(impl) -> None:
    with KitexTestServer({"echo": echo_handler}) as server:
        args = [sys.executable, "-m", "kitex_fast", "--implementation", impl.name, "call",
                "--host-ports", server.address, "--dest-service", "echo", "--method", "echo",
                "--data-hex", echo_request("cli").hex()]
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        reply = bytes.fromhex(out.stdout.strip())
        assert b"cli,hi Kitex" in reply
        bad = subprocess.run(args[:-1] + ["zz"], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "--data-hex is not hex" in bad.stderr


def test_cli_call_reports_errors(impl) -> None:
    args = [sys.executable, "-m", "kitex_fast", "--implementation", impl.name, "call",
            "--host-ports", "nope", "--dest-service", "echo", "--method", "echo", "--data-hex", "00"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2  # refused before any I/O: a usage error
    assert "MetadataError: dapr binding kitex: metadata field hostPorts: entry 'nope' is not host:port" in out.stderr


def test_a_failed_build_is_reported_at_import(tmp_path, monkeypatch) -> None:
    # setup.py leaves this note when the compile failed and it installed the twins instead.
    from kitex_fast import _dispatch

    note = tmp_path / "_build_failed.txt"
    note.write_text("CompileError: no compiler\n")
    monkeypatch.setattr(_dispatch, "BUILD_FAILED_NOTE", note)
    monkeypatch.setattr(_dispatch, "NO_EXTENSIONS", False)
    monkeypatch.setattr(_dispatch, "_warned", False)
    with pytest.warns(RuntimeWarning, match=r"failed to build .*\(CompileError: no compiler\).*KITEX_FAST_NO_EXTENSIONS=1"):
        assert _dispatch.load_compiled("_no_such_module") is None
    note.unlink()
    monkeypatch.setattr(_dispatch, "_warned", False)
    import warnings as _w
    with _w.catch_warnings():
        _w.simplefilter("error")
        assert _dispatch.load_compiled("_no_such_module") is None  # no note, no .so: pure by design


# -- the sdist and the metadata a user sees -----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
# What `bash tests/run.sh` (the README's test command) reads from the tree, beyond the package.
NEEDED_BY_THE_TEST_COMMAND = [
    "LICENSE", "README.md", "pyproject.toml", "setup.py", "MANIFEST.in", ".ci/run",
    "tests/run.sh", "tests/stubtest-allowlist.txt", "tests/conftest.py", "tests/golden/frames.json",
    "tests/interop/go/go.mod", "tests/interop/go/go.sum", "tests/interop/go/idl/echo.thrift",
    "tests/interop/go/idl/rich.thrift", "tests/interop/go/cmd/jsonpeer/main.go", "tests/interop/peers.py",
    "bench/run.py", "bench/floor.c", "docs/internals.md",
    "src/kitex_fast/_codec.pyx", "src/kitex_fast/_codec.pyi", "src/kitex_fast/py.typed",
]
_SKIP_COPY = shutil.ignore_patterns(".git", ".venv", "bin", "build", "dist", "*.egg-info", "__pycache__",
                                    "*.so", ".mypy_cache", ".pytest_cache", ".hypothesis", "tmp")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> tarfile.TarFile:
    """The sdist built by the build backend from a copy of this tree (the tree stays untouched)."""
    pytest.importorskip("setuptools", minversion="77")
    work = tmp_path_factory.mktemp("sdist")
    shutil.copytree(ROOT, work / "src-tree", ignore=_SKIP_COPY, symlinks=True)
    # The C files Cython generates beside each .pyx, as any build leaves them in the tree
    # (test_sdist_ships_no_generated_c: the sdist must not carry them).
    for pyx in (work / "src-tree" / "src").rglob("*.pyx"):
        c_file = pyx.with_suffix(".c")
        if not c_file.exists():
            c_file.write_text("/* Generated by Cython (a stand-in) */\n")
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))",
         str(work / "dist")],
        cwd=str(work / "src-tree"), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with tarfile.open(work / "dist" / out.stdout.strip().splitlines()[-1]) as tar:
        yield tar


def _names(tar: tarfile.TarFile) -> set:
    return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


def test_sdist_has_what_the_readme_test_command_needs(sdist) -> None:
    names = _names(sdist)
    assert not [n for n in NEEDED_BY_THE_TEST_COMMAND if n not in names]
    assert not [n for n in names if n.endswith((".so", ".pyd")) or n == "src/kitex_fast/_codec.c"]
    assert not [n for n in names if n.startswith("tests/interop/bin/")]
    if (ROOT / ".git").exists():  # a checkout: every tracked source file ships (CI config and the plot excepted)
        tracked = subprocess.run(["git", "ls-files"], cwd=str(ROOT), capture_output=True, text=True).stdout.split()
        left_out = [n for n in tracked if n not in names
                    and not n.startswith(".github/") and n not in (".gitignore", "bench/results/latency.png")]
        assert not left_out


def test_sdist_metadata_has_license_and_urls(sdist) -> None:
    member = next(m for m in sdist.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO"))
    info = sdist.extractfile(member).read().decode()
    assert "License-Expression: Apache-2.0" in info and "License-File: LICENSE" in info
    assert "Project-URL: " in info
    assert 'Provides-Extra: idl' in info and 'Requires-Dist: thriftpy2>=0.5; extra == "idl"' in info
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()


def test_installed_metadata_names_the_license() -> None:
    from importlib.metadata import metadata

    meta = metadata("kitex_fast")
    assert meta.get("License-Expression") == "Apache-2.0" or meta.get("License") == "Apache-2.0"


PUBLIC_MODULES = ["kitex_fast", "kitex_fast.binding", "kitex_fast.client", "kitex_fast.testing",
                  "kitex_fast.errors", "kitex_fast.metadata", "kitex_fast.pool", "kitex_fast.cli"]


def test_every_public_function_and_method_has_a_docstring() -> None:
    import importlib

    modules = list(PUBLIC_MODULES)
    try:
        import thriftpy2  # noqa: F401

        modules.append("kitex_fast.idl")
    except ImportError:
        pass
    missing = []
    for name in modules:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", [a for a in vars(module) if not a.startswith("_")]):
            obj = getattr(module, attr)
            if not getattr(obj, "__module__", "").startswith("kitex_fast"):
                continue  # imported from elsewhere
            if inspect.isfunction(obj) and not obj.__doc__:
                missing.append("%s.%s" % (name, attr))
            if inspect.isclass(obj):
                if not obj.__doc__:
                    missing.append("%s.%s" % (name, attr))
                for member, value in vars(obj).items():
                    function = value.fget if isinstance(value, property) else value
                    if member.startswith("_") or not (inspect.isfunction(function) or isinstance(value, property)):
                        continue
                    if not function.__doc__:
                        missing.append("%s.%s.%s" % (name, attr, member))
    assert not missing


def test_sdist_ships_no_generated_c(sdist) -> None:
    """Cython writes the C at build time; a shipped one is 2.5 MB (_h2server.c) that may not match
    its .pyx. (bench/floor.c is source, not generated.)"""
    names = _names(sdist)
    assert not [n for n in names if n.startswith("src/") and n.endswith((".c", ".html"))]
    assert "src/kitex_fast/dapr/_h2server.pyx" in names and "bench/floor.c" in names


def test_sdist_ships_the_image_the_manifests_and_the_notices(sdist) -> None:
    names = _names(sdist)
    for name in ("Dockerfile", ".dockerignore", "CHANGELOG.md", "LICENSES/nghttp2.txt",
                 "deploy/kubernetes/deployment.yaml", "tests/image/build_image.sh", "tests/wheel/smoke.py"):
        assert name in names, name
    member = next(m for m in sdist.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO"))
    info = sdist.extractfile(member).read().decode()
    assert "License-File: LICENSES/nghttp2.txt" in info
    assert "Project-URL: Changelog, " in info and "CHANGELOG.md" in info
    assert "Version: %s\n" % kitex_fast.__version__ in info


# -- the version's one home, and the release build's rules -------------------------------------------

def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # (Python 3.11+)
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_the_version_has_one_home() -> None:
    from importlib.metadata import version

    project = _pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kitex_fast.__version__"}
    assert version("kitex_fast") == kitex_fast.__version__


def test_changelog_is_linked_from_the_metadata_and_the_docs_nav() -> None:
    assert (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").startswith("# Changelog")
    assert _pyproject()["project"]["urls"]["Changelog"].endswith("/CHANGELOG.md")
    mkdocs = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "- Changelog: changelog.md" in mkdocs and "- Install: install.md" in mkdocs
    assert '--8<-- "CHANGELOG.md"' in (ROOT / "docs" / "changelog.md").read_text(encoding="utf-8")


def test_wheel_matrix_says_what_is_built() -> None:
    cibw = _pyproject()["tool"]["cibuildwheel"]
    assert cibw["build"].split() == ["cp39-*", "cp310-*", "cp311-*", "cp312-*", "cp313-*", "cp314-*"]
    assert "cp31?t-*" in cibw["skip"].split()  # free-threaded: skipped on purpose (the GIL)
    assert cibw["environment"]["CIBUILDWHEEL"] == "1"
    assert "nghttp2" in cibw["linux"]["before-all"] and "libnghttp2" in cibw["macos"]["before-all"]
    assert any("tests/wheel/smoke.py" in c for c in cibw["test-command"])
    workflow = (ROOT / ".github" / "workflows" / "wheels.yml").read_text(encoding="utf-8")
    assert "pypa/cibuildwheel@v3." in workflow
    for runner in ("ubuntu-latest", "ubuntu-24.04-arm", "macos-14", "macos-15-intel"):
        assert runner in workflow
    # the PyPI job takes the sdist and the platform wheels, never the pure wheel
    publish = workflow[workflow.index("publish-pypi:"):workflow.index("publish-image:")]
    assert 'pattern: "wheels-*"' in publish and "pure" not in publish


def _setup_module(monkeypatch: pytest.MonkeyPatch):
    """setup.py as a module, without running setup() (it runs only as __main__)."""
    import importlib.util

    monkeypatch.syspath_prepend(str(ROOT))
    spec = importlib.util.spec_from_file_location("kitex_fast_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_release_build_without_libnghttp2_fails_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = _setup_module(monkeypatch)
    monkeypatch.setattr(setup, "find_nghttp2", lambda: None)
    monkeypatch.setattr(setup, "NO_EXTENSIONS", False)
    monkeypatch.setattr(setup, "IN_CIBUILDWHEEL", True)
    with pytest.raises(SystemExit) as info:
        setup.extensions()
    assert "libnghttp2" in str(info.value) and "_h2server" in str(info.value)


def test_release_builds_carry_no_debug_info(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = _setup_module(monkeypatch)
    monkeypatch.setattr(setup, "IN_CIBUILDWHEEL", True)
    flags = setup.release_flags()
    assert flags["extra_compile_args"] == ["-g0"] and flags["extra_link_args"]
    monkeypatch.setattr(setup, "IN_CIBUILDWHEEL", False)
    assert setup.release_flags() == {}  # a user's own build keeps the toolchain's defaults
