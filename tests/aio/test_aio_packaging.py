"""kitex_fast.aio as a user gets it: the compiled protocol or its twin, no optional dependency
pulled in by an import, relative imports only (the package stays vendorable)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import kitex_fast.aio
from kitex_fast.aio import protocol

AIO_SOURCE = Path(__file__).resolve().parents[2] / "src" / "kitex_fast" / "aio"


def _python(code: str, **env: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_extension_loaded_when_expected() -> None:
    if os.environ.get("KITEX_FAST_EXPECT_EXTENSION") != "1":
        pytest.skip("set KITEX_FAST_EXPECT_EXTENSION=1 to require the compiled core")
    assert protocol.USING_EXTENSION, "compiled asyncio protocol expected but the twin is live"


def test_no_extensions_switch_selects_the_twin() -> None:
    code = "import kitex_fast.aio.protocol as p; print(p.USING_EXTENSION, p.Protocol.__module__)"
    assert _python(code, KITEX_FAST_NO_EXTENSIONS="1") == "False kitex_fast.aio._protocol_py"


def test_imports_pull_in_no_optional_dependency() -> None:
    code = (
        "import sys, kitex_fast\n"
        "print('kitex_fast.aio' in sys.modules, 'asyncio' in sys.modules)\n"
        "import kitex_fast.aio\n"
        "print('uvloop' in sys.modules)"
    )
    assert _python(code).split() == ["False", "False", "False"]


def test_public_names() -> None:
    for name in ("Client", "KitexOutputBinding", "InvokeRequest", "InvokeResponse", "Reply"):
        assert hasattr(kitex_fast.aio, name)
    assert kitex_fast.aio.InvokeRequest is kitex_fast.InvokeRequest


@pytest.mark.skipif(not AIO_SOURCE.is_dir(), reason="needs the source tree")
def test_every_import_inside_the_subpackage_is_relative() -> None:
    offenders = []
    for path in AIO_SOURCE.iterdir():
        if path.suffix in (".py", ".pyi"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                offenders += ["%s: %s" % (path.name, n) for n in names if n.split(".")[0] == "kitex_fast"]
        elif path.suffix == ".pyx":  # Cython: no ast; import statements start a line
            offenders += ["%s: %s" % (path.name, m.group(0)) for m in
                          re.finditer(r"^(from|import)\s+kitex_fast\b.*$", path.read_text(), re.M)]
    assert not offenders
