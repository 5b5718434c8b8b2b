"""Metadata validation: every error names the field and the bad value; nothing does I/O."""

from __future__ import annotations

import pytest

from kitex_fast.errors import MetadataError
from kitex_fast.metadata import parse_duration, parse_options, parse_size, validate_defaults
from kitex_fast.pool import Endpoint, parse_host_ports

GOOD = {"destService": "echo", "hostPorts": "127.0.0.1:8888", "methodName": "echo", "version": "v1"}


def md(**changes: object) -> dict:
    out = dict(GOOD)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(
    "missing, expected",
    [
        (("destService", "hostPorts", "methodName", "version"), "destService"),
        (("hostPorts", "methodName", "version"), "hostPorts"),
        (("methodName", "version"), "methodName"),
        (("version",), "version"),
        (("hostPorts", "version"), "hostPorts"),
    ],
)
def test_missing_fields_in_the_go_bindings_order(missing: tuple, expected: str) -> None:
    with pytest.raises(MetadataError) as err:
        parse_options(md(**{k: None for k in missing}), {})
    assert str(err.value) == "dapr binding kitex: missing metadata field %s" % expected


@pytest.mark.parametrize("field", ["destService", "hostPorts", "methodName", "version"])
def test_empty_required_fields(field: str) -> None:
    with pytest.raises(MetadataError, match="metadata field %s is empty" % field):
        parse_options(md(**{field: "  "}), {})


def test_white_space_around_a_value_is_rejected() -> None:
    with pytest.raises(MetadataError, match=r"methodName: ' echo' has leading or trailing white space"):
        parse_options(md(methodName=" echo"), {})


def test_defaults_fill_in_and_requests_override() -> None:
    defaults = {"hostPorts": "10.0.0.1:1", "destService": "svc", "version": "v9", "transport": "ttheader"}
    options = parse_options({"methodName": "m", "hostPorts": "127.0.0.1:2"}, defaults)
    assert options.dest_service == "svc"
    assert options.endpoints == (Endpoint("127.0.0.1", 2),)
    assert options.version == "v9"
    assert options.transport == "ttheader"


@pytest.mark.parametrize(
    "value, endpoints",
    [
        ("127.0.0.1:8888", [("127.0.0.1", 8888)]),
        ("localhost:1", [("localhost", 1)]),
        ("[::1]:65535", [("::1", 65535)]),
        ("a.example:80, b.example:81", [("a.example", 80), ("b.example", 81)]),
        ("[fe80::1%eth0]:9", [("fe80::1%eth0", 9)]),
    ],
)
def test_host_ports_accepted(value: str, endpoints: list) -> None:
    assert parse_host_ports(value) == tuple(Endpoint(*e) for e in endpoints)


@pytest.mark.parametrize(
    "value, message",
    [
        ("127.0.0.1", "'127.0.0.1' is not host:port"),
        ("127.0.0.1:0", "port 0 outside 1-65535"),
        ("127.0.0.1:65536", "port 65536 outside 1-65535"),
        ("127.0.0.1:http", "port 'http' that is not a number"),
        (":8888", "':8888' has no host"),
        ("::1:8888", "put IPv6 addresses in brackets"),
        ("[::1]8888", "is not \\[ipv6\\]:port"),
        ("[nothex]:1", "'nothex' is not an IPv6 address"),
        ("a:1,,b:2", "empty entry in 'a:1,,b:2'"),
        ("a:1,", "empty entry"),
        ("a b:1", "'a b' is not a host name or address"),
        ("unix:/tmp/x.sock", "port '/tmp/x.sock' that is not a number"),
    ],
)
def test_host_ports_rejected(value: str, message: str) -> None:
    with pytest.raises(MetadataError, match=message) as err:
        parse_options(md(hostPorts=value), {})
    assert str(err.value).startswith("dapr binding kitex: metadata field hostPorts: ")


@pytest.mark.parametrize(
    "text, seconds",
    [("500ms", 0.5), ("2s", 2.0), ("1m30s", 90.0), ("1.5s", 1.5), ("250", 0.25), ("100us", 1e-4), ("1h", 3600.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration("rpcTimeout", text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["0", "0s", "0ms"])
def test_zero_duration_means_no_limit(text: str) -> None:
    assert parse_duration("rpcTimeout", text) is None


@pytest.mark.parametrize("text", ["", "5 sec", "-1s", "1.2.3s", "s", "10x", "1s2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(MetadataError, match="metadata field rpcTimeout: %r is not a duration" % text):
        parse_options(md(rpcTimeout=text), {})


def test_sizes() -> None:
    assert parse_size("maxFrameSize", "16MiB") == 16 * 1024 * 1024
    assert parse_size("maxFrameSize", "4096") == 4096
    with pytest.raises(MetadataError, match="maxFrameSize: '12 parsecs' is not a size"):
        parse_options(md(maxFrameSize="12 parsecs"), {})
    with pytest.raises(MetadataError, match="maxFrameSize: '10' is outside 1KiB-2GiB"):
        parse_options(md(maxFrameSize="10"), {})


def test_transport_must_be_known() -> None:
    with pytest.raises(MetadataError, match="transport: 'grpc' is not one of framed, buffered, ttheader, ttheader-framed"):
        parse_options(md(transport="grpc"), {})
    assert parse_options(md(transport="TTHeader"), {}).transport == "ttheader"


@pytest.mark.parametrize("key", ["idlService", "fromService", "logID", "header.x", "intHeader.7"])
def test_ttheader_only_fields_need_ttheader(key: str) -> None:
    with pytest.raises(MetadataError, match="%s needs transport ttheader or ttheader-framed" % key.replace(".", r"\.")):
        parse_options(md(**{key: "v"}), {})


def test_ttheader_headers() -> None:
    options = parse_options(
        md(transport="ttheader", idlService="Echo", fromService="me", logID="42", rpcTimeout="1500ms",
           **{"header.RPC_PERSIST_k": "v", "intHeader.10": "prod"}),
        {},
    )
    assert dict(options.str_headers) == {"isn": "Echo", "RPC_PERSIST_k": "v"}
    assert dict(options.int_headers) == {2: "42", 3: "me", 10: "prod", 12: "1500"}
    assert options.rpc_timeout == 1.5


def test_rpc_timeout_header_only_when_explicit() -> None:
    assert dict(parse_options(md(transport="ttheader"), {}).int_headers) == {}


def test_bad_int_header_key() -> None:
    with pytest.raises(MetadataError, match="intHeader.x: 'x' is not a whole number in 0-65535"):
        parse_options(md(transport="ttheader", **{"intHeader.x": "1"}), {})


def test_pool_size() -> None:
    assert parse_options(md(poolSize="0"), {}).pool_size == 0
    with pytest.raises(MetadataError, match="poolSize: 'many' is not a whole number"):
        parse_options(md(poolSize="many"), {})


def test_miscased_known_key_is_a_typo() -> None:
    with pytest.raises(MetadataError, match="unknown metadata field 'rpctimeout': did you mean 'rpcTimeout'"):
        parse_options(md(rpctimeout="1s"), {})


def test_unknown_keys_from_daprd_are_ignored() -> None:
    options = parse_options(md(traceparent="00-abc-def-01", baggage="k=v"), {})
    assert options.method_name == "echo"


def test_non_string_value() -> None:
    with pytest.raises(MetadataError, match="metadata field hostPorts: value 8888 is not a string"):
        parse_options(md(hostPorts=8888), {})


def test_init_defaults_are_validated_but_none_required() -> None:
    assert validate_defaults({}) == {}
    assert validate_defaults({"transport": "ttheader"}) == {"transport": "ttheader"}
    with pytest.raises(MetadataError, match="connectTimeout: 'soon' is not a duration"):
        validate_defaults({"connectTimeout": "soon"})
    with pytest.raises(MetadataError, match="hostPorts: entry 'nope' is not host:port"):
        validate_defaults({"hostPorts": "nope"})


def test_client_key_holds_only_what_needs_its_own_connections() -> None:
    a = parse_options(md(methodName="a", version="1"), {})
    b = parse_options(md(methodName="b", version="2", rpcTimeout="1s"), {})
    assert a.client_key == b.client_key
    t1 = parse_options(md(transport="ttheader", idlService="A", rpcTimeout="1s"), {})
    t2 = parse_options(md(transport="ttheader", **{"header.x": "y"}), {})
    assert t1.client_key == t2.client_key
    assert t1.headers == ((("isn", "A"),), ((12, "1000"),)) and t2.headers == ((("x", "y"),), ())
    assert a.headers is None
    for other in (md(connectTimeout="1s"), md(transport="ttheader"), md(poolSize="3"),
                  md(maxFrameSize="1MiB"), md(maxIdleTime="5s"), md(hostPorts="127.0.0.1:2"),
                  md(destService="other")):
        assert parse_options(other, {}).client_key != a.client_key, other


def test_defaults_and_limits_come_from_one_table() -> None:
    """kitex_fast.limits holds each default and limit once: the binding's DEFAULTS (metadata
    syntax) and the client's keyword defaults are derived from it, and the codec agrees."""
    import inspect

    from kitex_fast import codec, limits
    from kitex_fast.client import ClientCore
    from kitex_fast.metadata import DEFAULTS, MAX_DURATION

    options = parse_options({"destService": "s", "hostPorts": "127.0.0.1:1", "methodName": "m",
                             "version": "v"}, {})
    assert options.connect_timeout == limits.DEFAULT_CONNECT_TIMEOUT
    assert options.rpc_timeout == limits.DEFAULT_RPC_TIMEOUT
    assert options.max_idle_time == limits.DEFAULT_MAX_IDLE_TIME
    assert options.max_connections == limits.DEFAULT_MAX_CONNECTIONS
    assert options.max_frame_size == limits.DEFAULT_MAX_FRAME_SIZE == codec.DEFAULT_MAX_FRAME_SIZE
    assert options.transport == limits.DEFAULT_TRANSPORT == DEFAULTS["transport"]
    assert (DEFAULTS["connectTimeout"], DEFAULTS["rpcTimeout"], DEFAULTS["maxIdleTime"]) == ("50ms", "30s", "60s")
    given = inspect.signature(ClientCore.__init__).parameters
    assert given["connect_timeout"].default == options.connect_timeout
    assert given["rpc_timeout"].default == options.rpc_timeout
    assert given["max_idle_time"].default == options.max_idle_time
    assert given["max_connections"].default == options.max_connections
    assert given["transport"].default == options.transport
    assert limits.MAX_I32 == codec.MAX_I32 and MAX_DURATION is limits.MAX_DURATION
    assert "send_rpc_timeout" not in type(options)._fields  # never read: gone (issue 25)


@pytest.mark.parametrize("extra, client_kwargs, rule", [
    ({"muxConnection": "true"}, {"mux_connection": True}, "needs transport ttheader or ttheader-framed"),
    ({"muxConnection": "true", "pipelining": "true", "transport": "ttheader"},
     {"mux_connection": True, "pipelining": True, "transport": "ttheader"}, "exclude each other"),
])
def test_one_rule_for_client_options_and_metadata(extra: dict, client_kwargs: dict, rule: str) -> None:
    from kitex_fast import Client

    meta = {"destService": "s", "hostPorts": "127.0.0.1:1", "methodName": "m", "version": "v"}
    with pytest.raises(MetadataError) as from_metadata:
        parse_options(dict(meta, **extra), {})
    with pytest.raises(MetadataError) as from_client:
        Client("s", "127.0.0.1:1", **client_kwargs)
    assert rule in str(from_metadata.value) and rule in str(from_client.value)
    assert str(from_metadata.value).startswith("dapr binding kitex: metadata field")
    assert str(from_client.value).startswith("mux_connection")
