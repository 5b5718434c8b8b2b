"""The command line as a user runs it: options, exit codes, JSON + IDL calls, raw calls, metainfo
headers, repeated calls and ``serve``, on both implementations, against the embedded Python
server (the real-Kitex proof of the same paths is tests/interop/test_cli_interop.py)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import List, Tuple

import pytest

from kitex_fast import cli
from kitex_fast.errors import BizStatusError
from kitex_fast.testing import KitexTestServer, ServerRequest, echo_handler, echo_request

ROOT = Path(__file__).resolve().parents[2]
IDL_DIR = ROOT / "tests" / "interop" / "go" / "idl"
ECHO_IDL = str(IDL_DIR / "echo.thrift")
RICH_IDL = str(IDL_DIR / "rich.thrift")


def run(capsys, *argv: str) -> Tuple[int, str, str]:
    """``kitex-fast argv`` in this process: (exit status, stdout, stderr)."""
    try:
        status = cli.main(list(argv))
    except SystemExit as exc:  # argparse (usage, --help, --version)
        status = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def echo_server(impl):
    with KitexTestServer({"echo": echo_handler}, service="echo", implementation=impl.name) as server:
        yield server


class RichHandler:
    """The rich IDL's service in Python (thriftpy2 handler convention)."""

    def __init__(self, module) -> None:
        self.module = module

    def roundtrip(self, value):
        return value

    def raise_declared(self, code, reason):
        raise self.module.RichError(code=code, reason=reason)

    def sleep(self, millis):
        return "slept %d" % millis

    def fail(self, message):
        raise RuntimeError(message)

    def biz(self, code, message, extra):
        raise BizStatusError(code, message, extra or {})

    def crash(self, message):
        raise RuntimeError(message)


@pytest.fixture
def rich_server(impl):
    pytest.importorskip("thriftpy2")
    from kitex_fast.idl import IdlService

    service = IdlService(RICH_IDL)
    handlers = service.handlers(RichHandler(service.module))
    with KitexTestServer(handlers, service="Rich", implementation=impl.name) as server:
        yield server


# -- options, help, exit codes ----------------------------------------------------------------------


def test_version(capsys) -> None:
    status, out, _ = run(capsys, "--version")
    assert status == 0 and out.startswith("kitex-fast 0.")
    status, out, _ = run(capsys, "call", "--version")
    assert status == 0 and out.startswith("kitex-fast 0.")


@pytest.mark.parametrize("before", [True, False])
def test_implementation_before_or_after_the_command(capsys, impl, before) -> None:
    argv = ["--implementation", impl.name, "demo"] if before else ["demo", "--implementation", impl.name]
    status, out, _ = run(capsys, *argv)
    assert status == 0
    assert "implementation : %s" % impl.name in out
    assert "echo('hello dapr') -> 'hello dapr,hi Kitex'" in out


def test_unavailable_implementation_is_a_usage_error_not_a_traceback() -> None:
    env = dict(os.environ, KITEX_FAST_NO_EXTENSIONS="1")
    out = subprocess.run([sys.executable, "-m", "kitex_fast", "demo", "--implementation", "c"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "--implementation c: the compiled kitex_fast codec is not available" in out.stderr


def test_help_is_plain_text_and_every_option_explained() -> None:
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in [("kitex-fast", parser)] + sorted(commands.items()):
        text = sub.format_help()
        assert "``" not in text, name
        for action in sub._actions:
            if action.option_strings:
                assert action.help, "%s %s has no help" % (name, action.option_strings)


def test_parsers_do_not_import_shutil() -> None:
    # argparse's HelpFormatter imports shutil (and bz2, lzma, zlib: ~0.5 MiB) for the terminal
    # width, and add_argument makes one per option: the package's parsers take the width without
    # it (kitex_fast._argparse), so the component pays nothing for its command line.
    script = textwrap.dedent("""
        import sys
        from kitex_fast import cli, testing
        from kitex_fast.dapr import component
        component.build_parser().parse_args([])
        cli.build_parser().parse_args(["demo"])
        parser = cli.build_parser()
        for sub in parser._subparsers._group_actions[0].choices.values():
            sub.format_usage()
        print(sorted(m for m in ("shutil", "bz2", "lzma") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("columns", ["50", "", "junk"])
def test_help_is_as_wide_as_argparse_makes_it(columns) -> None:
    # the same text as argparse's own formatter (which asks shutil): $COLUMNS, else the terminal
    # (none here: stdout is a pipe), else 80
    script = textwrap.dedent("""
        import argparse
        from kitex_fast import cli
        from kitex_fast.dapr import component
        for build in (component.build_parser, cli.build_parser):
            ours, theirs = build(), build()
            theirs.formatter_class = argparse.HelpFormatter
            assert ours.format_help() == theirs.format_help()
    """)
    env = dict(os.environ, COLUMNS=columns)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr


def test_bad_input_exits_2_and_failed_calls_exit_1(capsys, impl, echo_server) -> None:
    base = ["call", "--implementation", impl.name, "-e", echo_server.address, "-s", "echo", "-m", "echo"]
    status, _, err = run(capsys, *base, "--data-hex", "zz")
    assert status == 2 and "--data-hex is not hex" in err
    status, _, err = run(capsys, *base, "--data-hex", "00", "--rpc-timeout", "soon")
    assert status == 2 and "rpcTimeout: 'soon' is not a duration" in err
    status, _, err = run(capsys, *base)
    assert status == 2 and "nothing to send" in err
    status, _, err = run(capsys, "call", "--implementation", impl.name, "-e", "127.0.0.1:1", "-s", "echo",
                         "-m", "echo", "--data-hex", echo_request("x").hex())
    assert status == 1 and "ConnectError" in err
    status, _, err = run(capsys, "call", "-e", echo_server.address, "-m", "echo", "--data-hex", "00")
    assert status == 2 and "--dest-service" in err


def test_max_frame_size_2gib_is_accepted(capsys, impl, echo_server) -> None:
    status, out, err = run(capsys, "call", "--implementation", impl.name, "-e", echo_server.address,
                           "-m", "echo/echo", "--data-hex", echo_request("big").hex(), "--max-frame-size", "2GiB")
    assert status == 0, err
    assert b"big,hi Kitex" in bytes.fromhex(out.strip())


def test_plugins_get_their_own_argv(capsys, monkeypatch) -> None:
    seen: List[List[str]] = []
    module = types.ModuleType("kitex_fast_test_plugin")
    module.main = lambda argv: seen.append(argv) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kitex_fast_test_plugin", module)
    monkeypatch.setitem(cli.PLUGINS, "plug", ("kitex_fast_test_plugin", "a plug-in"))
    assert cli.main(["--implementation", "py", "plug", "--x", "1"]) == 3
    assert seen == [["--x", "1"]]
    assert "plug" in cli.build_parser().format_help()


# -- raw mode ---------------------------------------------------------------------------------------


def test_raw_call_in_hex_base64_and_file(capsys, impl, echo_server, tmp_path) -> None:
    message = echo_request("raw")
    base = ["call", "--implementation", impl.name, "-e", echo_server.address, "-s", "echo", "-m", "echo"]
    status, out, _ = run(capsys, *base, "--data-base64", base64.b64encode(message).decode())
    assert status == 0 and b"raw,hi Kitex" in bytes.fromhex(out.strip())
    path = tmp_path / "call.bin"
    path.write_bytes(message)
    status, out, _ = run(capsys, *base, "--file", str(path), "--output", "base64")
    assert status == 0 and b"raw,hi Kitex" in base64.b64decode(out.strip())


def test_raw_output_writes_the_reply_bytes(impl, echo_server) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kitex_fast", "call", "--implementation", impl.name, "-e", echo_server.address,
         "-m", "echo/echo", "--data-hex", echo_request("bytes").hex(), "-o", "raw"],
        capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(b"\x80\x01\x00\x02") and out.stdout.endswith(b"bytes,hi Kitex\x00\x00")


# -- JSON + IDL -------------------------------------------------------------------------------------


def test_json_call_through_the_echo_idl(capsys, impl, echo_server) -> None:
    pytest.importorskip("thriftpy2")
    status, out, err = run(capsys, "call", "--implementation", impl.name, "-e", echo_server.address,
                           "--idl", ECHO_IDL, "-m", "Echo/echo", "-d", '{"message": "hello"}')
    assert status == 0, err
    assert json.loads(out) == {"message": "hello,hi Kitex"}
    assert out.count("\n") == 1  # compact when stdout is not a terminal
    status, out, _ = run(capsys, "call", "--implementation", impl.name, "-e", echo_server.address,
                         "--idl", ECHO_IDL, "-m", "echo", "-d", '{"message": "x"}', "--pretty")
    assert status == 0 and out.startswith("{\n  "), err


def test_json_from_stdin_and_file(impl, echo_server, tmp_path) -> None:
    pytest.importorskip("thriftpy2")
    base = [sys.executable, "-m", "kitex_fast", "call", "--implementation", impl.name, "-e", echo_server.address,
            "--idl", ECHO_IDL, "-m", "echo"]
    out = subprocess.run(base, input='{"message": "stdin"}', capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"message": "stdin,hi Kitex"}
    (tmp_path / "req.json").write_text('{"message": "file"}')
    out = subprocess.run(base + ["--file", str(tmp_path / "req.json")], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout) == {"message": "file,hi Kitex"}


ALL_TYPES = {
    "flag": True, "tiny": -128, "small": -32768, "medium": 2147483647,
    "large": 9007199254740993, "ratio": -0.5, "text": "héllo ✓", "blob": "AAEC/w==",
    "numbers": [1, -2, 3], "tags": ["a", "b"], "index": {"k": {"id": 1, "name": "n"}},
    "inner": {"id": 2, "name": "x"}, "color": 3, "inners": [{"id": 3, "name": "y"}],
    "nested": {"-9223372036854775808": ["p"], "12": []},
}


def test_every_type_round_trips_as_json(capsys, impl, rich_server) -> None:
    status, out, err = run(capsys, "call", "--implementation", impl.name, "-e", rich_server.address,
                           "--idl", RICH_IDL, "-m", "roundtrip", "-d", json.dumps(ALL_TYPES))
    assert status == 0, err
    assert json.loads(out) == ALL_TYPES
    # enums by name, i64 as a string: read like their numbers
    status, out, _ = run(capsys, "call", "--implementation", impl.name, "-e", rich_server.address,
                         "--idl", RICH_IDL, "-m", "roundtrip", "-d", '{"color": "BLUE", "large": "-9007199254740993"}')
    assert json.loads(out) == {"color": 3, "large": -9007199254740993}


def test_declared_application_and_biz_errors_are_json_with_exit_1(capsys, impl, rich_server) -> None:
    base = ["call", "--implementation", impl.name, "-e", rich_server.address, "--idl", RICH_IDL]
    status, out, _ = run(capsys, *base, "-m", "raise_declared", "-d", '{"code": 7, "reason": "boom"}')
    assert status == 1
    assert json.loads(out) == {"exception": "RichError", "field": "err", "value": {"code": 7, "reason": "boom"}}
    status, out, _ = run(capsys, *base, "-m", "fail", "-d", '"bad"')
    assert status == 1
    assert json.loads(out) == {"error": "ApplicationError", "type_code": 6, "type_name": "INTERNAL_ERROR",
                               "message": "biz error: bad"}
    status, out, _ = run(capsys, *base, "-m", "biz", "-t", "ttheader",
                         "-d", '{"code": 100, "message": "nope", "extra": {"a": "b"}}')
    assert status == 1
    assert json.loads(out) == {"error": "BizStatusError", "status_code": 100, "message": "nope", "extra": {"a": "b"}}
    status, out, _ = run(capsys, *base, "-m", "sleep", "-d", '{"millis": 4}')
    assert status == 0 and json.loads(out) == "slept 4"


@pytest.mark.parametrize("data, message", [
    ('{"tiny": 200}', "value.tiny: 200 does not fit a byte"),
    ('{"large": 1.5}', "value.large: expected i64, got 1.5"),
    ('{"color": "PINK"}', "value.color: expected enum Color: one of RED, GREEN, BLUE or a number"),
    ('{"blob": "not base64!"}', "value.blob: expected binary as a base64 string"),
    ('{"nested": {"x": []}}', "value.nested key 'x': expected i64"),
    ('{"nope": 1}', "AllTypes has no field 'nope'"),
    ('{"flag": ', "--data is not valid JSON"),
])
def test_json_that_does_not_fit_the_idl_is_a_usage_error(capsys, impl, rich_server, data, message) -> None:
    status, out, err = run(capsys, "call", "--implementation", impl.name, "-e", rich_server.address,
                           "--idl", RICH_IDL, "-m", "roundtrip", "-d", data)
    assert status == 2 and out == ""
    assert message in err


def test_unknown_method_and_missing_idl(capsys, rich_server) -> None:
    pytest.importorskip("thriftpy2")
    status, _, err = run(capsys, "call", "-e", rich_server.address, "--idl", RICH_IDL, "-m", "Rich/nope", "-d", "1")
    assert status == 2 and "has no method 'nope' (methods: roundtrip, raise_declared" in err
    status, _, err = run(capsys, "call", "-e", rich_server.address, "--idl", "missing.thrift", "-m", "x", "-d", "1")
    assert status == 2 and "IDL file 'missing.thrift' does not exist" in err


# -- metainfo and headers ---------------------------------------------------------------------------


def test_metainfo_goes_out_as_kitex_ttheader_keys(capsys, impl) -> None:
    seen = {}

    def handler(request: ServerRequest) -> bytes:
        seen.update(request.str_headers)
        return echo_handler(request)

    with KitexTestServer({"echo": handler}, implementation=impl.name) as server:
        status, out, err = run(capsys, "call", "--implementation", impl.name, "-e", server.address, "-m", "echo/echo",
                               "--data-hex", echo_request("m").hex(), "-T", "tenant=a", "-P", "trace=t1",
                               "--header", "x=y")
    assert status == 0, err
    assert seen["RPC_TRANSIT_tenant"] == "a" and seen["RPC_PERSIST_trace"] == "t1" and seen["x"] == "y"


# -- repeat and concurrency -------------------------------------------------------------------------


def test_repeat_with_concurrency_prints_a_latency_summary(capsys, impl, echo_server) -> None:
    status, out, err = run(capsys, "call", "--implementation", impl.name, "-e", echo_server.address, "-m", "echo/echo",
                           "--data-hex", echo_request("n").hex(), "-n", "40", "-c", "4")
    assert status == 0, err
    assert b"n,hi Kitex" in bytes.fromhex(out.strip())  # the first reply, once
    assert "40 calls, 40 ok, 0 failed, concurrency 4" in err and "calls/s" in err
    assert "p50" in err and "p90" in err and "p99" in err
    assert "progress: 40/40" in err
    assert echo_server.calls == 40


def test_repeat_counts_failures_and_exits_1(capsys, impl) -> None:
    status, _, err = run(capsys, "call", "--implementation", impl.name, "-e", "127.0.0.1:1", "-m", "echo/echo",
                         "--data-hex", echo_request("n").hex(), "-n", "5", "-c", "2", "--no-progress")
    assert status == 1
    assert "5 calls, 0 ok, 5 failed" in err and "5 x error: ConnectError" in err
    assert "progress" not in err


# -- serve ------------------------------------------------------------------------------------------


def _start(argv: List[str], cwd: Path = ROOT) -> Tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=str(cwd))
    line = proc.stdout.readline()  # the server prints its address once it listens
    if "listening on" not in line:
        proc.kill()
        raise AssertionError("no address line: %r %s" % (line, proc.stderr.read()))
    return proc, line.split()[-1]


@pytest.mark.parametrize("module", ["kitex_fast serve", "kitex_fast.testing"])
def test_serve_echo_from_the_shell(capsys, impl, module) -> None:
    proc, address = _start(module.split() + ["--port", "0", "--implementation", impl.name])
    try:
        status, out, _ = run(capsys, "call", "--implementation", impl.name, "-e", address, "-m", "echo/echo",
                             "--data-hex", echo_request("shell").hex(), "-t", "ttheader")
        assert status == 0 and b"shell,hi Kitex" in bytes.fromhex(out.strip())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "stopped after 1 calls" in proc.stderr.read()


def test_serve_a_users_idl_and_handler(capsys, impl, tmp_path) -> None:
    pytest.importorskip("thriftpy2")
    (tmp_path / "my_echo.py").write_text(textwrap.dedent("""
        class Echo:
            def echo(self, req):
                req.message = req.message.upper()
                return req
    """))
    proc, address = _start(["kitex_fast", "serve", "--port", "0", "--idl", ECHO_IDL, "--handler", "my_echo:Echo"],
                           cwd=tmp_path)
    try:
        status, out, err = run(capsys, "call", "--implementation", impl.name, "-e", address, "--idl", ECHO_IDL,
                               "-m", "echo", "-d", '{"message": "shout"}')
        assert status == 0, err
        assert json.loads(out) == {"message": "SHOUT"}
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


def test_serve_usage_errors(capsys) -> None:
    status, _, err = run(capsys, "serve", "--handler", "x:y")
    assert status == 2 and "--handler needs --idl" in err


def test_latency_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [cli._percentile(values, p) for p in (0.5, 0.9, 0.99, 1.0)] == [50.0, 90.0, 99.0, 100.0]
    assert cli._percentile([7.0], 0.99) == 7.0


def test_header_flags_pick_ttheader(capsys, impl) -> None:
    seen = {}

    def handler(request: ServerRequest) -> bytes:
        seen["transport"] = request.transport
        seen.update({"int%d" % k: v for k, v in request.int_headers.items()})
        return echo_handler(request)

    with KitexTestServer({"echo": handler}, implementation=impl.name) as server:
        status, _, err = run(capsys, "call", "--implementation", impl.name, "-e", server.address, "-m", "echo/echo",
                             "--data-hex", echo_request("h").hex(), "--from-service", "cli-test")
    assert status == 0, err
    assert seen["transport"] == "ttheader" and seen["int3"] == "cli-test"  # FromService, int key 3


@pytest.mark.parametrize("port", ["+5", "\u0663", "\uff18\uff18", "70000", "-1"])
def test_serve_port_is_ascii_digits_in_range(port) -> None:
    """kitex-fast serve --port: a usage error, never another script's digits or a traceback."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "kitex_fast", "serve", "--port", port],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "is not a port number in 0-65535" in proc.stderr and "Traceback" not in proc.stderr
