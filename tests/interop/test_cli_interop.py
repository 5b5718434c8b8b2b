"""``kitex-fast call`` against real Kitex: JSON <-> Thrift checked against Kitex's own JSON generic
client (``generic.JSONThriftGeneric``, tests/interop/go/cmd/jsonpeer) on the rich IDL, error
replies from a real Kitex server, and metainfo read and written by a real Kitex handler."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Tuple

import peers
import pytest

from kitex_fast import cli
from kitex_fast.testing import KitexTestServer

pytest.importorskip("thriftpy2")

IDL_DIR = Path(peers.GO_DIR) / "idl"
RICH_IDL = str(IDL_DIR / "rich.thrift")
ECHO_IDL = str(IDL_DIR / "echo.thrift")

FULL = {
    "flag": True, "tiny": -128, "small": -32768, "medium": 2147483647,
    "large": 9007199254740993, "ratio": -0.5, "text": "héllo ✓", "blob": "AAEC/w==",
    "numbers": [1, -2, 3], "tags": ["a", "b", "c"], "index": {"k": {"id": 1, "name": "n"}, "": {"id": -1, "name": ""}},
    "inner": {"id": 2, "name": "x"}, "color": 3, "inners": [{"id": 3, "name": "y"}, {"id": 4, "name": "z"}],
    "nested": {"-9223372036854775808": ["p"], "9223372036854775807": [], "12": ["q", "r"]},
}
EDGES = {"large": -9223372036854775808, "tiny": 127, "blob": "", "text": "", "numbers": [], "ratio": 1e300}
PARTIAL = {"large": 5, "inner": {"id": 7}}


def kitex_json_call(address: str, method: str, data: Any, transport: str = "framed") -> Tuple[str, str]:
    """One call through Kitex's JSON generic client: ("REPLY", json text) or ("ERROR", text)."""
    proc = subprocess.run(
        [peers._binary("jsonpeer"), "call", "-idl", RICH_IDL, "-hostports", address, "-method", method,
         "-data", json.dumps(data), "-transport", transport],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    word, _, rest = proc.stdout.strip().partition(" ")
    return word, rest


def our_call(capsys, impl, address: str, method: str, data: Any, *extra: str) -> Tuple[int, str, str]:
    status = cli.main(["call", "--implementation", impl.name, "-e", address, "--idl", RICH_IDL, "-m", method,
                       "-d", json.dumps(data), *extra])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("value", [FULL, EDGES, PARTIAL, {}], ids=["full", "edges", "partial", "empty"])
def test_replies_read_like_kitexs_json_client(capsys, impl, kitex_server, value) -> None:
    server = kitex_server("default", "rich")
    word, kitex_reply = kitex_json_call(server.address, "roundtrip", value)
    assert word == "REPLY", kitex_reply
    status, out, err = our_call(capsys, impl, server.address, "roundtrip", value)
    assert status == 0, err
    # The same JSON document (Kitex's key order is Go's map order; i64 beyond 2^53 exact in both).
    # One known difference, from the request: Kitex's client sends a struct field missing from
    # the JSON as an empty struct, we leave it out; the Go server then echoes a zero struct to
    # Kitex and an empty one to us.
    assert same_but_zero(json.loads(out), json.loads(kitex_reply))
    if value is FULL:
        assert json.loads(out) == json.loads(kitex_reply)


def test_our_extensions_mean_what_kitex_means_by_numbers(capsys, impl, kitex_server) -> None:
    # Enums by name and i64 as strings: Kitex's client reads "BLUE" as 0, we read it as 3.
    server = kitex_server("default", "rich")
    _, kitex_reply = kitex_json_call(server.address, "roundtrip", {"color": 3, "large": -9007199254740993})
    status, out, _ = our_call(capsys, impl, server.address, "roundtrip", {"color": "BLUE", "large": "-9007199254740993"})
    assert status == 0 and same_but_zero(json.loads(out), json.loads(kitex_reply))
    assert json.loads(out)["color"] == 3 and json.loads(out)["large"] == -9007199254740993


@pytest.mark.parametrize("value", [FULL, PARTIAL], ids=["full", "partial"])
def test_requests_carry_what_kitexs_json_client_sends(impl, go_peers, value) -> None:
    """Kitex's JSON client and ours send to a recording server; the args decode the same. Kitex
    writes every non-optional field (zero when the JSON lacks it, in Go's map order), we write
    the fields given: the same values to a Kitex server, which reads a missing field as zero."""
    from kitex_fast.idl import IdlService
    from kitex_fast.codec import parse_message

    method = IdlService(RICH_IDL).method("roundtrip")
    bodies = []

    def record(request) -> bytes:
        bodies.append(bytes(request.body))
        return b"\x0c\x00\x00" + bytes(request.body)[3:]  # {1: value} -> {0: value}: echo it back

    with KitexTestServer({"roundtrip": record}, implementation=impl.name) as server:
        word, _ = kitex_json_call(server.address, "roundtrip", value)
    assert word == "REPLY"
    ours = method.encode_call(value)
    theirs = method.decode_args(bodies[0])["value"]
    mine = method.decode_args(ours[parse_message(ours).body_offset:])["value"]
    from kitex_fast.idl import struct_to_json

    assert same_but_zero(struct_to_json(mine), struct_to_json(theirs))
    if value is FULL:
        assert struct_to_json(mine) == struct_to_json(theirs)


ZERO = (0, False, "", [], {}, 0.0)


def same_but_zero(mine: Any, theirs: Any) -> bool:
    """Equal JSON, where a field one side lacks is a zero value (or an all-zero struct) on the
    other: Kitex's JSON client writes every non-optional field, zero when the JSON lacks it."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for key in set(mine) | set(theirs):
            if key in mine and key in theirs:
                if not same_but_zero(mine[key], theirs[key]):
                    return False
            elif not _zero(mine.get(key, theirs.get(key))):
                return False
        return True
    return bool(mine == theirs)


def _zero(value: Any) -> bool:
    if isinstance(value, dict) and value:
        return all(_zero(v) for v in value.values())
    return value in ZERO


def test_errors_from_a_real_kitex_server(capsys, impl, kitex_server) -> None:
    server = kitex_server("meta", "rich")  # the TTHeader meta handler sends biz status
    status, out, _ = our_call(capsys, impl, server.address, "raise_declared", {"code": 7, "reason": "boom"})
    assert status == 1
    assert json.loads(out) == {"exception": "RichError", "field": "err", "value": {"code": 7, "reason": "boom"}}
    word, text = kitex_json_call(server.address, "raise_declared", 7)
    assert word == "ERROR" and '"code":7' in text  # Kitex's client sees the same declared exception

    status, out, _ = our_call(capsys, impl, server.address, "fail", "bad")
    assert status == 1
    assert json.loads(out) == {"error": "ApplicationError", "type_code": 6, "type_name": "INTERNAL_ERROR",
                               "message": "biz error: bad"}
    word, text = kitex_json_call(server.address, "fail", "bad")
    assert word == "ERROR" and text.endswith("biz error: bad")

    status, out, _ = our_call(capsys, impl, server.address, "biz", {"code": 100, "message": "nope", "extra": {"a": "b"}},
                              "-t", "ttheader")
    assert status == 1
    assert json.loads(out) == {"error": "BizStatusError", "status_code": 100, "message": "nope", "extra": {"a": "b"}}

    status, out, _ = our_call(capsys, impl, server.address, "sleep", {"millis": 3}, "-t", "ttheader")
    assert status == 0 and json.loads(out) == "slept 3"


@pytest.mark.parametrize("transport", ["framed", "buffered", "ttheader", "ttheader-framed"])
def test_every_transport(capsys, impl, kitex_server, transport) -> None:
    server = kitex_server("default", "rich")
    status, out, err = our_call(capsys, impl, server.address, "Rich/sleep", 1, "-t", transport, "-v")
    assert status == 0, err
    assert json.loads(out) == "slept 1" and "# transport = %s" % transport in err


class MetaServer(peers.KitexServer):
    """``jsonpeer metaserver``: a Kitex Echo server whose handler reports the metainfo it got."""

    def __init__(self) -> None:
        super().__init__("metaserver", "echo")

    def start(self) -> "MetaServer":
        self._log = tempfile.NamedTemporaryFile(prefix="jsonpeer-", suffix=".log", delete=False)
        self._proc = subprocess.Popen([peers._binary("jsonpeer"), "metaserver", "-listen", "127.0.0.1:0"],
                                      stdout=subprocess.PIPE, stderr=self._log)
        peers._live.add(self)
        try:
            self._wait_listening(peers.START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        return self


@pytest.fixture(scope="module")
def meta_server(go_peers):
    with MetaServer() as server:
        yield server


@pytest.mark.parametrize("transport", ["ttheader", "ttheader-framed"])
def test_metainfo_reaches_a_kitex_handler_and_backward_values_return(capsys, impl, meta_server, transport) -> None:
    status = cli.main(["call", "--implementation", impl.name, "-e", meta_server.address, "--idl", ECHO_IDL,
                       "-m", "Echo/echo", "-d", '{"message": "hi"}', "-t", transport,
                       "--transient", "tenant=a", "-T", "zone=z1", "--persistent", "trace=t9"])
    out, err = capsys.readouterr()
    assert status == 0, err
    seen = json.loads(json.loads(out)["message"])
    assert seen == {"message": "hi", "transient": {"tenant": "a", "zone": "z1"}, "persistent": {"trace": "t9"}}
    # Kitex sends backward values under their plain names (no RPC_BACKWARD_ prefix on TTHeader).
    assert 'metainfo backward: {"echo-tenant":"a","echo-zone":"z1"}' in err


def test_metainfo_picks_ttheader_by_itself(capsys, impl, meta_server) -> None:
    status = cli.main(["call", "--implementation", impl.name, "-e", meta_server.address, "--idl", ECHO_IDL,
                       "-m", "echo", "-d", '{"message": "x"}', "-P", "p=1", "-v"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert json.loads(json.loads(out)["message"])["persistent"] == {"p": "1"}
    assert "# transport = ttheader" in err
