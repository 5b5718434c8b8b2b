"""The package as a user gets it: the extension switch, the public API, the demo and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

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
