"""The JSON <-> Thrift mapping of kitex_fast.idl on its own (types the test IDLs lack); the proof
against Kitex's JSON generic client is tests/interop/test_cli_interop.py."""

from __future__ import annotations

import pytest

pytest.importorskip("thriftpy2")

from kitex_fast.idl import IdlError, IdlService  # noqa: E402

IDL = """
namespace py odd
enum Mode { OFF = 0, ON = 1 }
struct Key { 1: i32 id }
struct Odd {
    1: required i32 must,
    2: required string name,
    3: optional map<bool, string> by_flag,
    4: optional map<double, i16> by_ratio,
    5: optional map<Mode, binary> by_mode,
    6: optional set<i64> ids,
    7: optional map<binary, i8> by_blob,
    8: optional double ratio,
    9: required Key key,
}
struct Holder { 1: map<Key, i32> by_struct }
service Odds {
    Odd same(1: Odd value)
    void nothing()
    i32 add(1: i32 a, 2: i32 b)
    Holder hold(1: Holder h)
}
"""


@pytest.fixture(scope="module")
def odds(tmp_path_factory):
    path = tmp_path_factory.mktemp("idl") / "odds.thrift"
    path.write_text(IDL)
    return IdlService(str(path))


def round_trip(method, value):
    """encode_call, then read the args back as the server does and answer with them."""
    from kitex_fast.codec import REPLY, build_message, parse_message

    message = method.encode_call(value)
    args = method.decode_args(message[parse_message(message).body_offset:])
    result = method.encode_result(next(iter(args.values())) if args else None)
    return method.decode_reply(build_message(REPLY, method.name, 1, result))


def test_required_fields_are_zero_when_missing_like_kitex(odds) -> None:
    outcome = round_trip(odds.method("same"), {"name": "x"})
    assert outcome.value == {"must": 0, "name": "x", "key": {}}  # a struct: empty, like Kitex


def test_map_keys_of_every_scalar_type(odds) -> None:
    value = {"must": 1, "name": "n", "key": {"id": 2},
             "by_flag": {"true": "t", "false": "f"}, "by_ratio": {"0.5": 1, "-2.0": 2},
             "by_mode": {"ON": "AQ==", "0": ""}, "by_blob": {"AAE=": -1},
             "ids": [9007199254740993, -1, 5], "ratio": "NaN"}
    outcome = round_trip(odds.method("same"), value)
    assert outcome.value["by_flag"] == {"true": "t", "false": "f"}
    assert outcome.value["by_ratio"] == {"0.5": 1, "-2.0": 2}
    assert outcome.value["by_mode"] == {"1": "AQ==", "0": ""}  # enums come back as numbers, as in Kitex
    assert outcome.value["by_blob"] == {"AAE=": -1}
    assert outcome.value["ids"] == [-1, 5, 9007199254740993]  # a set, in a stable order
    assert outcome.value["ratio"] == "NaN"


def test_several_arguments_by_name_and_void(odds) -> None:
    from kitex_fast.codec import parse_message

    add = odds.method("add")
    message = add.encode_call({"a": 2, "b": 3})
    assert add.decode_args(message[parse_message(message).body_offset:]) == {"a": 2, "b": 3}
    with pytest.raises(IdlError, match="Odds.add_args has no field 'c'|add_args has no field 'c'"):
        add.encode_call({"c": 1})
    assert round_trip(odds.method("nothing"), None).value is None


@pytest.mark.parametrize("value, message", [
    ({"by_flag": {"yes": "x"}}, "value.by_flag key 'yes': expected bool key"),
    ({"ids": {"a": 1}}, "value.ids: expected set<i64> as an array"),
    ({"must": True}, "value.must: expected i32, got True"),
    ({"must": 2 ** 31}, "value.must: 2147483648 does not fit a i32"),
    ({"must": "9" * 5000}, "value.must: '9999"),  # (int() itself refuses over 4,300 digits)
    ({"must": "-" + "9" * 20}, "does not fit a i32"),
    ({"name": 5}, "value.name: expected string, got 5"),
    ({"key": []}, "value.key: expected Key as an object"),
])
def test_values_that_do_not_fit(odds, value, message) -> None:
    with pytest.raises(IdlError) as info:
        odds.method("same").encode_call(value)
    assert message in str(info.value)


def test_struct_map_keys_cannot_be_json(odds) -> None:
    with pytest.raises(IdlError, match="Key keys cannot be written as JSON object keys"):
        odds.method("hold").encode_call({"by_struct": {"1": 1}})


def test_service_and_method_lookup(tmp_path) -> None:
    from kitex_fast.idl import load_service

    two = tmp_path / "two.thrift"
    two.write_text("service A { i32 f() }\nservice B { i32 g() }\n")
    with pytest.raises(IdlError, match="declares services A, B; name one as Service/method"):
        load_service(str(two), "f")
    service, method = load_service(str(two), "B/g")
    assert (service.name, method.name) == ("B", "g")
    with pytest.raises(IdlError, match="has no service 'C'"):
        load_service(str(two), "C/g")
    broken = tmp_path / "broken.thrift"
    broken.write_text("service {")
    with pytest.raises(IdlError, match="cannot load IDL"):
        load_service(str(broken), "x")


def test_call_refuses_oneway_methods(tmp_path, capsys) -> None:
    from kitex_fast import cli

    idl = tmp_path / "ow.thrift"
    idl.write_text("service S { oneway void ping(1: i32 x) }")
    assert cli.main(["call", "-e", "127.0.0.1:1", "--idl", str(idl), "-m", "ping", "-d", "1"]) == 2
    assert "S/ping is oneway" in capsys.readouterr().err


def test_thriftpy2_is_optional() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import kitex_fast, kitex_fast.cli, kitex_fast.testing\n"
        "assert 'thriftpy2' not in sys.modules, 'imported without need'\n"
        "sys.modules['thriftpy2'] = None  # as if it were not installed\n"
        "raise SystemExit(kitex_fast.cli.main(['call', '-e', '127.0.0.1:1', '--idl', sys.argv[1], '-m', 'x', '-d', '1']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, __file__], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "calls through an IDL need thriftpy2: pip install 'kitex_fast[idl]'" in out.stderr
