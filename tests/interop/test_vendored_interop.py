"""Issue 13 against real Kitex: a copy made by ``kitex-fast vendor`` and imported as
``sidecar._vendor.kitex_fast`` calls a real Kitex server through its binding (framed and TTHeader)
and surfaces Kitex's unknown-method exception as its own ``ApplicationError``, caught through the
vendored name; in a process where another kitex_fast is installed (imported before or after the
copy) and in one where none is, on both implementations. The rest of the vendoring tests are in
tests/unit/test_vendoring.py (their child script, vendored_app.py, is shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import pytest

from kitex_fast import vendoring

APP = Path(__file__).resolve().parents[1] / "unit" / "vendored_app.py"
VENDORED_NAME = "sidecar._vendor.kitex_fast"


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    """(root for sys.path, the vendored package directory)."""
    root = tmp_path_factory.mktemp("vendored_interop")
    dest = root / "sidecar" / "_vendor"
    dest.mkdir(parents=True)
    (root / "sidecar" / "__init__.py").write_text("")
    (dest / "__init__.py").write_text("")
    pure = [] if vendoring.plan().compiled else ["--pure"]
    out = subprocess.run([sys.executable, "-m", "kitex_fast", "vendor", str(dest), *pure],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return root, dest / "kitex_fast"


@pytest.mark.parametrize("other", ["installed-first", "installed-later", "none"])
def test_vendored_copy_calls_real_kitex(impl, kitex_server, sidecar, other) -> None:
    root, package_dir = sidecar
    server = kitex_server("default", "echo")
    flags = ["-I", "-S"] if other == "none" else ["-I"]  # -S: no site-packages, no other copy
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, *flags, str(APP), str(root), VENDORED_NAME, impl.name, other, server.address],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)

    assert (facts["other_origin"] is None) == (other == "none")
    assert all(Path(p).resolve().is_relative_to(package_dir) for p in facts["impl_files"])
    assert facts["impl_names"][0] == VENDORED_NAME + ("._codec_py" if impl.name == "py" else "._codec")
    assert facts["kitex_reply"] == ["vendored,hi Kitex", "vendored,hi Kitex"]
    error = facts["kitex_error"]
    assert error["type"] == "ApplicationError" and error["module"] == VENDORED_NAME + ".errors", error
    assert "unknown service , method nope" in error["message"]  # Kitex's own text
    assert error["is_other"] is False
