"""The wire codec: every API, every error text, on both implementations (``impl`` fixture)."""

from __future__ import annotations

import struct

import pytest

from kitex_fast import codec
from kitex_fast.errors import FrameTooLargeError, KitexError, ProtocolError

# docs/protocol.md §11: CALL Echo, seq 1, args {1: struct{1: "hello"}} (33 bytes).
ECHO = bytes.fromhex(
    "80010001 00000004 4563686f 00000001 0c0001 0b0001 00000005 68656c6c6f 00 00".replace(" ", "")
)
ECHO_BODY = ECHO[16:]

# §1.12 frames, byte for byte.
TT_EMPTY = bytes.fromhex("0000002f 1000 0000 00000001 0001 00000000".replace(" ", "")) + ECHO
TT_HEADERS = (
    bytes.fromhex(
        "0000004f 1000 0000 00000001 0009"
        "0000"
        "01 0001 0003 69736e 000b 4563686f53657276696365"
        "10 0001 0009 0004 4563686f"
        "0000".replace(" ", "")
    )
    + ECHO
)
TT_FRAMED = bytes.fromhex("00000033 1000 0000 00000001 0001 00000000 00000021".replace(" ", "")) + ECHO
FRAMED = b"\x00\x00\x00\x21" + ECHO

# §4.7: reply to Foo from no service, seq 1.
FOO_EXC = bytes.fromhex(
    "80010003 00000003 466f6f 00000001".replace(" ", "")
    + "0b0001 0000001c".replace(" ", "")
    + b"unknown service , method Foo".hex()
    + "080002 00000014 00".replace(" ", "")
)


def join(parts):
    return b"".join(bytes(p) for p in parts)


def err(impl, exc_type, fn, *args, **kwargs):
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------- API surface


def test_public_api_names_on_both(impl):
    for name in codec.PUBLIC_API:
        assert hasattr(impl.codec, name), name
    assert impl.codec.CALL == 1 and impl.codec.REPLY == 2
    assert impl.codec.EXCEPTION == 3 and impl.codec.ONEWAY == 4
    assert impl.codec.TRANSPORTS == ("framed", "buffered", "ttheader", "ttheader-framed")
    assert impl.codec.DEFAULT_MAX_FRAME_SIZE == 64 * 1024 * 1024


def test_dispatcher_exposes_live_implementation():
    live = codec.implementation()
    for name in codec.PUBLIC_API:
        assert getattr(codec, name) is getattr(live, name)
    assert codec.USING_EXTENSION == (live is not codec.implementation("py"))


# --------------------------------------------------------------------------- parse_message


def test_parse_message(impl):
    h = impl.codec.parse_message(ECHO)
    assert (h.type, h.name, h.seq_id, h.body_offset) == (1, "Echo", 1, 16)
    assert h == impl.codec.MessageHeader(1, "Echo", 1, 16)
    assert h != impl.codec.MessageHeader(1, "Echo", 2, 16)
    assert hash(h) == hash(impl.codec.MessageHeader(1, "Echo", 1, 16))
    assert repr(h) == "MessageHeader(type=1, name='Echo', seq_id=1, body_offset=16)"
    with pytest.raises(AttributeError):
        h.seq_id = 3  # type: ignore[misc]
    # any bytes-like
    assert impl.codec.parse_message(bytearray(ECHO)) == h
    assert impl.codec.parse_message(memoryview(ECHO)) == h
    neg = impl.codec.build_message(2, "é", -5)
    assert impl.codec.parse_message(neg) == impl.codec.MessageHeader(2, "é", -5, 14)


PARSE_ERRORS = [
    (b"", "empty Thrift message: expected a strict binary message header (80 01 00 TT)"),
    (
        bytes.fromhex("822101044563686f"),
        "compact protocol message (first bytes 82 21 01 04 45 63 68 6f): Kitex speaks strict "
        "binary Thrift only (80 01 00 TT)",
    ),
    (
        b"\x00\x00\x00\x04Echo\x01\x00\x00\x00\x01",
        "non-strict binary Thrift message (first i32 >= 0, first bytes 00 00 00 04 45 63 68 6f "
        "...): Kitex accepts strict binary only (80 01 00 TT)",
    ),
    (b"\x80\x01", "truncated Thrift message header: 2 bytes (first bytes 80 01)"),
    (
        b"\x80\x02\x00\x01",
        "bad Thrift binary version (first bytes 80 02 00 01): expected 80 01 00 TT",
    ),
    (
        b"\x80\x01\x01\x01",
        "bad Thrift binary version (first bytes 80 01 01 01): expected 80 01 00 TT",
    ),
    (
        b"\x80\x01\x00\x05\x00",
        "unknown Thrift message type 5 (first bytes 80 01 00 05 00): expected 1 (CALL), "
        "2 (REPLY), 3 (EXCEPTION) or 4 (ONEWAY)",
    ),
    (
        b"\x80\x01\x00\x00",
        "unknown Thrift message type 0 (first bytes 80 01 00 00): expected 1 (CALL), "
        "2 (REPLY), 3 (EXCEPTION) or 4 (ONEWAY)",
    ),
    (b"\x80\x01\x00\x01\x00\x00", "truncated Thrift message header: 6 bytes (first bytes 80 01 00 01 00 00)"),
    (
        b"\x80\x01\x00\x01\xff\xff\xff\xfe",
        "negative method name length -2 (first bytes 80 01 00 01 ff ff ff fe)",
    ),
    (
        b"\x80\x01\x00\x01\x7f\xff\xff\xff\x00\x00\x00\x00",
        "method name length 2147483647 does not fit in a 12-byte message (first bytes 80 01 00 "
        "01 7f ff ff ff ...)",
    ),
    (
        b"\x80\x01\x00\x01\x00\x00\x00\x04Echo\x00\x00",
        "method name length 4 does not fit in a 14-byte message (first bytes 80 01 00 01 00 00 "
        "00 04 ...)",
    ),
    (
        b"\x80\x01\x00\x01\x00\x00\x00\x02\xc3\x28\x00\x00\x00\x01",
        "method name is not valid UTF-8 (first bytes 80 01 00 01 00 00 00 02 ...)",
    ),
]


@pytest.mark.parametrize("data,text", PARSE_ERRORS)
def test_parse_message_errors(impl, data, text):
    assert err(impl, ProtocolError, impl.codec.parse_message, data) == text


# --------------------------------------------------------------------------- rewrite_message


def test_rewrite_message_same_name(impl):
    buf = bytearray(ECHO)
    parts = impl.codec.rewrite_message(buf, seq_id=0x01020304)
    assert len(parts) == 2
    assert parts[0] == ECHO[:12] + b"\x01\x02\x03\x04"
    assert isinstance(parts[0], bytes)
    body = parts[1]
    assert isinstance(body, memoryview) and bytes(body) == ECHO_BODY
    buf[16] = 0x0D  # the body is a view of the caller's buffer, not a copy
    assert body[0] == 0x0D
    assert buf == bytearray(ECHO[:16]) + b"\x0d" + ECHO[17:]  # the input itself is untouched


def test_rewrite_message_new_name(impl):
    parts = impl.codec.rewrite_message(ECHO, seq_id=-1, name="EchoLonger")
    assert parts[0] == b"\x80\x01\x00\x01\x00\x00\x00\x0aEchoLonger\xff\xff\xff\xff"
    assert bytes(parts[1]) == ECHO_BODY
    assert impl.codec.parse_message(join(parts)) == impl.codec.MessageHeader(1, "EchoLonger", -1, 22)
    short = impl.codec.rewrite_message(ECHO, seq_id=9, name="E")
    assert impl.codec.parse_message(join(short)).name == "E"
    same_len = impl.codec.rewrite_message(ECHO, seq_id=9, name="Ping")
    assert join(same_len) == ECHO[:8] + b"Ping\x00\x00\x00\x09" + ECHO_BODY


def test_rewrite_message_empty_body(impl):
    msg = impl.codec.build_message(2, "x", 1)
    assert impl.codec.rewrite_message(msg, seq_id=2) == [msg[:-4] + b"\x00\x00\x00\x02"]


@pytest.mark.parametrize("seq", [2**31, -(2**31) - 1, 2**70])
def test_rewrite_message_seq_id_range(impl, seq):
    assert err(impl, ValueError, impl.codec.rewrite_message, ECHO, seq_id=seq) == (
        "seq_id must fit in a signed 32-bit integer, got %d" % seq
    )


def test_seq_id_type(impl):
    assert err(impl, TypeError, impl.codec.rewrite_message, ECHO, seq_id=1.0) == (
        "seq_id must be an int, not float"
    )
    assert err(impl, TypeError, impl.codec.rewrite_message, ECHO, seq_id=1, name=3) == (
        "name must be str or bytes, not int"
    )


def test_rewrite_message_rejects_garbage(impl):
    assert "compact protocol" in err(impl, ProtocolError, impl.codec.rewrite_message, b"\x82\x21", seq_id=1)


# --------------------------------------------------------------------------- build / exceptions


def test_build_message(impl):
    assert impl.codec.build_message(1, "Echo", 1, ECHO_BODY) == ECHO
    assert impl.codec.build_message(4, b"raw", 2) == b"\x80\x01\x00\x04\x00\x00\x00\x03raw\x00\x00\x00\x02"
    assert impl.codec.build_message(1, "Echo", 1, memoryview(ECHO_BODY)) == ECHO
    for bad in (0, 5, "1"):
        assert err(impl, ValueError, impl.codec.build_message, bad, "x", 1) == (
            "message type must be 1 (CALL), 2 (REPLY), 3 (EXCEPTION) or 4 (ONEWAY), got %r" % (bad,)
        )
    assert err(impl, ValueError, impl.codec.build_message, 1, "x", 2**31) == (
        "seq_id must fit in a signed 32-bit integer, got 2147483648"
    )


def test_worked_example_4_7(impl):
    exc = impl.codec.encode_application_exception(20, "unknown service , method Foo")
    msg = impl.codec.build_message(impl.codec.EXCEPTION, "Foo", 1, exc)
    assert msg == FOO_EXC
    assert len(msg) == 58
    assert join(impl.codec.encode_frame("framed", msg, seq_id=1))[:4] == b"\x00\x00\x00\x3a"
    assert impl.codec.decode_application_exception(msg) == (20, "unknown service , method Foo")


def _exc_message(body):
    return b"\x80\x01\x00\x03\x00\x00\x00\x03Foo\x00\x00\x00\x01" + body


def test_decode_application_exception_field_order_and_skips(impl):
    d = impl.codec.decode_application_exception
    # type first, then message; Kitex code 21 kept
    body = b"\x08\x00\x02\x00\x00\x00\x15" + b"\x0b\x00\x01\x00\x00\x00\x02hi" + b"\x00"
    assert d(_exc_message(body)) == (21, "hi")
    # unknown fields (struct, list, i64) and wrong-typed known ids are skipped
    body = (
        b"\x0c\x00\x07" + b"\x08\x00\x01\x00\x00\x00\x01\x00"
        + b"\x0f\x00\x08\x0b\x00\x00\x00\x01\x00\x00\x00\x01z"
        + b"\x08\x00\x01\x00\x00\x00\x07"  # field 1 with the wrong type (i32)
        + b"\x0b\x00\x02\x00\x00\x00\x01q"  # field 2 with the wrong type (string)
        + b"\x0a\x00\x03" + b"\x00" * 8
        + b"\x0b\x00\x01\x00\x00\x00\x03abc"
        + b"\x00"
    )
    assert d(_exc_message(body)) == (0, "abc")
    assert d(_exc_message(b"\x00")) == (0, "")
    # invalid UTF-8 is replaced, not an error
    assert d(_exc_message(b"\x0b\x00\x01\x00\x00\x00\x01\xff\x00")) == (0, "\ufffd")
    assert d(bytearray(FOO_EXC)) == (20, "unknown service , method Foo")


def test_decode_application_exception_errors(impl):
    d = impl.codec.decode_application_exception
    assert err(impl, ProtocolError, d, ECHO) == "expected an EXCEPTION message, got type 1 (CALL)"
    truncated = FOO_EXC[:-3]
    assert err(impl, ProtocolError, d, truncated) == (
        "truncated TApplicationException struct in a 55-byte message (first bytes 80 01 00 03 "
        "00 00 00 03 ...)"
    )
    assert err(impl, ProtocolError, d, _exc_message(b"\x0b\x00\x01\xff\xff\xff\xff")) == (
        "negative length -1 at offset 18"
    )
    assert err(impl, ProtocolError, d, _exc_message(b"\x05\x00\x09\x00")) == (
        "unknown Thrift type id 5 at offset 18"
    )
    assert "compact" in err(impl, ProtocolError, d, b"\x82\x61\x01\x03Foo")


def test_encode_application_exception(impl):
    e = impl.codec.encode_application_exception
    assert e(6, "boom") == b"\x0b\x00\x01\x00\x00\x00\x04boom\x08\x00\x02\x00\x00\x00\x06\x00"
    assert e(-1, b"\xff") == b"\x0b\x00\x01\x00\x00\x00\x01\xff\x08\x00\x02\xff\xff\xff\xff\x00"
    assert err(impl, ValueError, e, 2**31, "x") == (
        "type_code must fit in a signed 32-bit integer, got 2147483648"
    )
    assert err(impl, TypeError, e, "1", "x") == "type_code must be an int, not str"
    assert err(impl, TypeError, e, 1, 5) == "text must be str or bytes, not int"


# --------------------------------------------------------------------------- find_struct_end


def test_find_struct_end_all_types(impl):
    f = impl.codec.find_struct_end
    struct_ = (
        b"\x02\x00\x01\x01"  # bool
        b"\x03\x00\x02\x7f"  # byte
        b"\x06\x00\x03\x00\x01"  # i16
        b"\x08\x00\x04\x00\x00\x00\x01"  # i32
        b"\x0a\x00\x05" + b"\x00" * 8  # i64
        + b"\x04\x00\x06" + b"\x00" * 8  # double
        + b"\x0b\x00\x07\x00\x00\x00\x03abc"  # string
        + b"\x0c\x00\x08\x08\x00\x01\x00\x00\x00\x01\x00"  # struct
        + b"\x0d\x00\x09\x0b\x08\x00\x00\x00\x01\x00\x00\x00\x01k\x00\x00\x00\x02"  # map<string,i32>
        + b"\x0d\x00\x0a\x08\x0a\x00\x00\x00\x01" + b"\x00" * 12  # map<i32,i64> (bulk)
        + b"\x0e\x00\x0b\x08\x00\x00\x00\x02" + b"\x00" * 8  # set<i32>
        + b"\x0f\x00\x0c\x0c\x00\x00\x00\x02\x00\x00"  # list<struct> of two empty structs
        + b"\x0f\x00\x0d\x0f\x00\x00\x00\x01\x0b\x00\x00\x00\x01\x00\x00\x00\x00"  # list<list<string>>
        + b"\x0d\x00\x0e\x01\xff\x00\x00\x00\x00"  # empty map: any key/value type bytes (gopkg)
        + b"\x0f\x00\x0f\x01\x00\x00\x00\x00"  # empty list of VOID
        + b"\x00"
    )
    assert f(struct_) == len(struct_)
    assert f(struct_ + b"xyz") == len(struct_)
    assert f(b"pad" + struct_, 3) == len(struct_) + 3
    for cut in range(len(struct_)):
        assert f(struct_[:cut]) == -1, cut
    assert f(b"\x00") == 1
    assert f(b"") == -1


def test_find_struct_end_errors(impl):
    f = impl.codec.find_struct_end
    assert err(impl, ProtocolError, f, b"\x01\x00\x01") == "unknown Thrift type id 1 at offset 3"
    assert err(impl, ProtocolError, f, b"\x10\x00\x01") == "unknown Thrift type id 16 at offset 3"
    assert err(impl, ProtocolError, f, b"\x0b\x00\x01\x80\x00\x00\x00") == (
        "negative length -2147483648 at offset 3"
    )
    assert err(impl, ProtocolError, f, b"\x0f\x00\x01\x08\xff\xff\xff\xff") == (
        "negative length -1 at offset 3"
    )
    assert err(impl, ProtocolError, f, b"\x0d\x00\x01\x08\x08\xff\xff\xff\xff") == (
        "negative length -1 at offset 3"
    )
    # a non-empty map/list with a bad element type is an error
    assert err(impl, ProtocolError, f, b"\x0f\x00\x01\x01\x00\x00\x00\x01") == (
        "unknown Thrift type id 1 at offset 8"
    )
    assert err(impl, ValueError, f, b"\x00", 2) == "offset 2 out of range for a 1-byte buffer"
    assert err(impl, ValueError, f, b"\x00", -1) == "offset -1 out of range for a 1-byte buffer"


def _nested(levels):
    # ``levels`` structs nested in field 1 of each other, innermost empty.
    return b"\x0c\x00\x01" * (levels - 1) + b"\x00" * levels


def test_find_struct_end_depth_limit(impl):
    f = impl.codec.find_struct_end
    ok = _nested(64)  # the top struct is depth 64 in gopkg's count, the innermost depth 1
    assert f(ok) == len(ok)
    bad = _nested(65)
    assert err(impl, ProtocolError, f, bad) == (
        "Thrift struct nesting exceeds the depth limit of 64 at offset 192"
    )
    # deeply nested lists never recurse in C: 100000 levels is a clean error
    deep = b"\x0f\x00\x01" + b"\x0f\x00\x00\x00\x01" * 100000
    assert "depth limit of 64" in err(impl, ProtocolError, f, deep)
    # a scalar inside the 64th level is past the limit, as in gopkg (maxdepth reaches 0)
    scalar = b"\x0c\x00\x01" * 63 + b"\x08\x00\x01\x00\x00\x00\x01" + b"\x00" * 64
    assert "depth limit of 64" in err(impl, ProtocolError, f, scalar)


# --------------------------------------------------------------------------- encode_frame


def test_encode_frame_worked_examples_1_12(impl):
    e = impl.codec.encode_frame
    parts = e("ttheader", ECHO, seq_id=1)
    assert join(parts) == TT_EMPTY and parts[1] is ECHO and len(parts) == 2
    assert join(e("ttheader", ECHO, seq_id=1, str_headers={"isn": "EchoService"}, int_headers={9: "Echo"})) == TT_HEADERS
    assert join(e("ttheader-framed", ECHO, seq_id=1)) == TT_FRAMED
    assert join(e("framed", ECHO, seq_id=1)) == FRAMED
    assert e("buffered", ECHO, seq_id=1) == [ECHO]


def test_encode_frame_reply_header_example(impl):
    # §1.12 "ServerTTHeaderHandler" reply: int KV 22="2", HS = 3.
    reply = impl.codec.build_message(2, "Echo", 1, b"\x00")
    frame = join(impl.codec.encode_frame("ttheader", reply, seq_id=1, int_headers={22: "2"}))
    assert frame[4:14] == bytes.fromhex("1000 0000 00000001 0003".replace(" ", ""))
    assert frame[14:26] == bytes.fromhex("0000 10 0001 0016 0001 32 0000".replace(" ", ""))
    assert struct.unpack(">I", frame[:4])[0] == 22 + len(reply)


def test_encode_frame_parts_not_copied(impl):
    parts = impl.codec.rewrite_message(ECHO, seq_id=5, name="Echo")
    out = impl.codec.encode_frame("framed", parts, seq_id=5)
    assert out[1] is parts[0] and out[2] is parts[1]
    assert join(out) == b"\x00\x00\x00\x21" + ECHO[:12] + b"\x00\x00\x00\x05" + ECHO_BODY
    assert impl.codec.encode_frame("buffered", tuple(parts), seq_id=5) == parts


def test_encode_frame_acl_and_order(impl):
    frame = join(
        impl.codec.encode_frame(
            "ttheader", ECHO, seq_id=-2, acl_token="tok", str_headers={"a": "b"}, int_headers={1: ""}
        )
    )
    # ACL 0x11 -> str KV 0x01 -> int KV 0x10, then padding (docs/protocol.md §3.3)
    block = b"\x00\x00" + b"\x11\x00\x03tok" + b"\x01\x00\x01\x00\x01a\x00\x01b" + b"\x10\x00\x01\x00\x01\x00\x00"
    block += b"\x00" * ((4 - len(block) % 4) % 4)
    assert frame[14 : 14 + len(block)] == block
    assert frame[8:12] == b"\xff\xff\xff\xfe"
    assert struct.unpack(">H", frame[12:14])[0] == len(block) // 4
    # empty containers and an empty token are omitted
    assert join(impl.codec.encode_frame("ttheader", ECHO, seq_id=1, str_headers={}, int_headers={}, acl_token="")) == TT_EMPTY
    # surrogateescape round trip
    odd = b"\xff\xfe".decode("utf-8", "surrogateescape")
    f = impl.codec.FrameDecoder("ttheader").feed(join(impl.codec.encode_frame("ttheader", ECHO, seq_id=1, str_headers={odd: odd})))
    assert f[0].str_headers == {odd: odd}


def test_encode_frame_errors(impl):
    e = impl.codec.encode_frame
    assert err(impl, ValueError, e, "http", ECHO, seq_id=1) == (
        "unknown transport 'http': expected one of framed, buffered, ttheader, ttheader-framed"
    )
    assert err(impl, ValueError, e, "auto", ECHO, seq_id=1) == (
        "unknown transport 'auto': expected one of framed, buffered, ttheader, ttheader-framed"
    )
    for t in ("framed", "buffered"):
        assert err(impl, ValueError, e, t, ECHO, seq_id=1, int_headers={1: "x"}) == (
            "str_headers, int_headers and acl_token need a ttheader transport, not %r" % t
        )
    assert err(impl, ValueError, e, "framed", b"", seq_id=1) == "message is empty: nothing to frame"
    assert err(impl, ValueError, e, "ttheader", [], seq_id=1) == "message is empty: nothing to frame"
    assert err(impl, ValueError, e, "ttheader", ECHO, seq_id=2**31) == (
        "seq_id must fit in a signed 32-bit integer, got 2147483648"
    )
    big = "x" * 65536
    assert err(impl, ValueError, e, "ttheader", ECHO, seq_id=1, str_headers={"k": big}) == (
        "TTHeader string too long: str_headers value is 65536 bytes (max 65535)"
    )
    assert err(impl, ValueError, e, "ttheader", ECHO, seq_id=1, str_headers={big: "v"}) == (
        "TTHeader string too long: str_headers key is 65536 bytes (max 65535)"
    )
    assert err(impl, ValueError, e, "ttheader", ECHO, seq_id=1, int_headers={1: big}) == (
        "TTHeader string too long: int_headers value is 65536 bytes (max 65535)"
    )
    assert err(impl, ValueError, e, "ttheader", ECHO, seq_id=1, acl_token=big) == (
        "TTHeader string too long: acl_token is 65536 bytes (max 65535)"
    )
    # exactly 65535 is fine
    ok = join(e("ttheader", ECHO, seq_id=1, acl_token="y" * 65535))
    assert impl.codec.FrameDecoder("ttheader").feed(ok)[0].acl_token == "y" * 65535
    assert err(impl, ValueError, e, "ttheader", ECHO, seq_id=1, int_headers={65536: "x"}) == (
        "int_headers key 65536 is not in 0..65535"
    )
    assert err(impl, ValueError, e, "ttheader", ECHO, seq_id=1, int_headers={-1: "x"}) == (
        "int_headers key -1 is not in 0..65535"
    )
    assert err(impl, TypeError, e, "ttheader", ECHO, seq_id=1, int_headers={"1": "x"}) == (
        "int_headers key must be an int, not str"
    )
    assert err(impl, TypeError, e, "ttheader", ECHO, seq_id=1, str_headers={"k": 1}) == (
        "str_headers value must be str or bytes, not int"
    )
    many = {i: "" for i in range(65536)}
    assert err(impl, ValueError, e, "ttheader", ECHO, seq_id=1, int_headers=many) == (
        "too many int_headers: 65536 (max 65535)"
    )
    many_s = {str(i): "" for i in range(65536)}
    assert err(impl, ValueError, e, "ttheader", ECHO, seq_id=1, str_headers=many_s) == (
        "too many str_headers: 65536 (max 65535)"
    )
    # 5 strings of 60000 bytes: a header block over 262140 bytes
    huge = {"k%d" % i: "v" * 60000 for i in range(5)}
    assert err(impl, ValueError, e, "ttheader", ECHO, seq_id=1, str_headers=huge) == (
        "TTHeader header block of 300036 bytes exceeds the 262140-byte limit"
    )


def test_encode_frame_length_field_limit(impl):
    chunk = memoryview(bytes(1 << 20))
    parts = [chunk] * 2048  # 2 GiB of views over one 1 MiB buffer: nothing is allocated
    assert err(impl, ValueError, impl.codec.encode_frame, "framed", parts, seq_id=1) == (
        "frame of 2147483648 bytes does not fit a 32-bit length field (max 2147483647)"
    )
    # fits a framed length, but not with the 14 bytes of an empty TTHeader on top
    almost = [chunk] * 2047 + [memoryview(bytes((1 << 20) - 10))]
    assert len(impl.codec.encode_frame("framed", almost, seq_id=1)) == 2049
    assert err(impl, ValueError, impl.codec.encode_frame, "ttheader", almost, seq_id=1) == (
        "frame of 2147483652 bytes does not fit a 32-bit length field (max 2147483647)"
    )


# --------------------------------------------------------------------------- RequestEncoder


@pytest.mark.parametrize(
    "transport,expected",
    [("ttheader", TT_EMPTY), ("ttheader-framed", TT_FRAMED), ("framed", FRAMED), ("buffered", ECHO)],
)
def test_request_encoder_matches_encode_frame(impl, transport, expected):
    enc = impl.codec.RequestEncoder(transport)
    assert enc.transport == transport
    parts = enc.encode(ECHO, 1)
    assert len(parts) == 2
    assert isinstance(parts[0], bytes) and isinstance(parts[1], memoryview)
    assert join(parts) == expected
    assert bytes(parts[1]) == ECHO_BODY


def test_request_encoder_headers_and_name(impl):
    enc = impl.codec.RequestEncoder(
        "ttheader", name="Echo", str_headers={"isn": "EchoService"}, int_headers={9: "Echo"}
    )
    assert join(enc.encode(impl.codec.build_message(1, "Other", 1, ECHO_BODY), 1)) == TT_HEADERS
    enc2 = impl.codec.RequestEncoder("framed", name="a-much-longer-method-name")
    out = join(enc2.encode(ECHO, 77))
    f = impl.codec.FrameDecoder("framed").feed(out)[0]
    assert impl.codec.parse_message(f.payload) == impl.codec.MessageHeader(1, "a-much-longer-method-name", 77, 37)
    assert f.payload[37:] == ECHO_BODY


@pytest.mark.parametrize("transport", ["ttheader", "ttheader-framed"])
def test_request_encoder_per_call_headers(impl, transport):
    """A call's own headers follow the encoder's in a second block; a decoder (ours, and Kitex's:
    docs/protocol.md §3.2) reads both into one map, the call's value winning for a repeated key.
    Calls without them are the encoder's bytes unchanged."""
    enc = impl.codec.RequestEncoder(transport, str_headers={"isn": "EchoService", "k": "old"},
                                    int_headers={12: "30000"})
    plain = join(enc.encode(ECHO, 5))
    assert join(enc.encode(ECHO, 5, None, None)) == plain == join(enc.encode(ECHO, 5, {}, {}))
    for trace in ("x", "ab", "abc", "abcd", "t" * 1000):  # every padding length
        out = join(enc.encode(ECHO, 6, {"RPC_TRANSIT_traceparent": trace, "k": "new"}, {12: "250"}))
        at = 14 + struct.unpack(">H", out[12:14])[0] * 4 + (4 if transport == "ttheader-framed" else 0)
        assert out[at:at + 2] == b"\x80\x01"  # HEADER SIZE counts the call's block and its padding
        f = impl.codec.FrameDecoder(transport).feed(out)[0]
        assert f.str_headers == {"isn": "EchoService", "k": "new", "RPC_TRANSIT_traceparent": trace}
        assert f.int_headers[12] == "250"
        assert f.seq_id == 6 and f.payload == ECHO[:-len(ECHO_BODY) - 4] + b"\x00\x00\x00\x06" + ECHO_BODY
        assert struct.unpack(">I", out[:4])[0] == len(out) - 4
    # the encoder is unchanged by a call's headers
    assert join(enc.encode(ECHO, 5)) == plain


def test_request_encoder_per_call_headers_errors(impl):
    framed = impl.codec.RequestEncoder("framed")
    assert "need a ttheader transport" in err(impl, ValueError, framed.encode, ECHO, 1, {"a": "b"})
    assert "need a ttheader transport" in err(impl, ValueError, framed.encode, ECHO, 1, None, {12: "1"})
    enc = impl.codec.RequestEncoder("ttheader", str_headers={"a": "x" * 65000})
    big = {"k%d" % i: "v" * 65000 for i in range(4)}
    assert "exceeds the 262140-byte limit" in err(impl, ValueError, enc.encode, ECHO, 1, big)
    assert "int_headers key 70000 is not in 0..65535" in err(impl, ValueError, enc.encode, ECHO, 1, None, {70000: "1"})
    assert "too long" in err(impl, ValueError, enc.encode, ECHO, 1, {"a": "y" * 70000})


def test_request_encoder_body_not_copied(impl):
    buf = bytearray(ECHO)
    parts = impl.codec.RequestEncoder("framed").encode(buf, 3)
    buf[-1] = 0x42
    assert parts[1][-1] == 0x42


def test_request_encoder_rejects(impl):
    enc = impl.codec.RequestEncoder("ttheader")
    reply = impl.codec.build_message(2, "Echo", 1, b"\x00")
    assert err(impl, ProtocolError, enc.encode, reply, 1) == (
        "RequestEncoder needs a CALL message, got type 2 (REPLY)"
    )
    oneway = impl.codec.build_message(4, "Echo", 1, b"\x00")
    assert err(impl, ProtocolError, enc.encode, oneway, 1) == (
        "RequestEncoder needs a CALL message, got type 4 (ONEWAY)"
    )
    assert err(impl, ProtocolError, enc.encode, ECHO[:-1], 1) == (
        "the args struct is truncated: 16 body bytes end before the struct does"
    )
    assert err(impl, ProtocolError, enc.encode, ECHO + b"\x00\x00", 1) == (
        "2 trailing bytes after the args struct (a message carries exactly one struct)"
    )
    empty = impl.codec.build_message(1, "Echo", 1)
    assert err(impl, ProtocolError, enc.encode, empty, 1) == (
        "the args struct is truncated: 0 body bytes end before the struct does"
    )
    assert "nesting exceeds" in err(impl, ProtocolError, enc.encode, impl.codec.build_message(1, "E", 1, _nested(65)), 1)
    assert "non-strict" in err(impl, ProtocolError, enc.encode, b"\x00\x00\x00\x01E\x01\x00\x00\x00\x01\x00", 1)
    assert err(impl, ValueError, enc.encode, ECHO, 2**31) == (
        "seq_id must fit in a signed 32-bit integer, got 2147483648"
    )
    # validate=False passes bodies through untouched, and an empty body gives just [head]
    raw = impl.codec.RequestEncoder("framed", validate=False)
    assert join(raw.encode(ECHO + b"junk", 1)) == struct.pack(">I", 37) + ECHO + b"junk"
    assert raw.encode(empty, 5) == [struct.pack(">I", 16) + empty[:12] + b"\x00\x00\x00\x05"]


def test_request_encoder_constructor_errors(impl):
    R = impl.codec.RequestEncoder
    assert err(impl, ValueError, R, "auto") == (
        "unknown transport 'auto': expected one of framed, buffered, ttheader, ttheader-framed"
    )
    assert err(impl, ValueError, R, "framed", acl_token="t") == (
        "str_headers, int_headers and acl_token need a ttheader transport, not 'framed'"
    )
    assert err(impl, ValueError, R, "ttheader", int_headers={70000: "x"}) == (
        "int_headers key 70000 is not in 0..65535"
    )


# --------------------------------------------------------------------------- FrameDecoder


@pytest.mark.parametrize(
    "transport,frame,seen",
    [
        ("ttheader", TT_EMPTY, "ttheader"),
        ("ttheader", TT_FRAMED, "ttheader-framed"),
        ("ttheader-framed", TT_FRAMED, "ttheader-framed"),
        ("ttheader-framed", TT_EMPTY, "ttheader"),
        ("framed", FRAMED, "framed"),
        ("buffered", ECHO, "buffered"),
        ("auto", TT_EMPTY, "ttheader"),
        ("auto", TT_FRAMED, "ttheader-framed"),
        ("auto", FRAMED, "framed"),
        ("auto", ECHO, "buffered"),
    ],
)
def test_decoder_every_transport_byte_by_byte(impl, transport, frame, seen):
    dec = impl.codec.FrameDecoder(transport)
    got = []
    for i in range(len(frame)):
        got += dec.feed(frame[i : i + 1])
        if i < len(frame) - 1:
            assert got == [] and dec.pending == i + 1
    assert dec.pending == 0
    (f,) = got
    assert f.payload == ECHO and f.transport == seen
    assert f.seq_id == (1 if seen.startswith("ttheader") else None)
    assert f.flags == 0 and f.str_headers == {} and f.int_headers == {} and f.acl_token is None


def test_decoder_headers_example(impl):
    (f,) = impl.codec.FrameDecoder("ttheader").feed(TT_HEADERS)
    assert f.str_headers == {"isn": "EchoService"} and f.int_headers == {9: "Echo"}
    assert f == impl.codec.Frame(ECHO, "ttheader", 1, 0, {"isn": "EchoService"}, {9: "Echo"}, None)
    assert f != impl.codec.Frame(ECHO, "ttheader", 2, 0, {"isn": "EchoService"}, {9: "Echo"}, None)
    assert repr(f) == (
        "Frame(transport='ttheader', seq_id=1, flags=0, payload=<33 bytes>, "
        "str_headers={'isn': 'EchoService'}, int_headers={9: 'Echo'}, acl_token=None)"
    )
    with pytest.raises(TypeError):
        hash(f)
    with pytest.raises(AttributeError):
        f.payload = b""  # type: ignore[misc]


def test_decoder_many_frames_one_chunk_and_mixed_auto(impl):
    stream = TT_EMPTY + FRAMED + ECHO + TT_HEADERS + TT_FRAMED
    got = impl.codec.FrameDecoder("auto").feed(stream)
    assert [f.transport for f in got] == ["ttheader", "framed", "buffered", "ttheader", "ttheader-framed"]
    assert all(f.payload == ECHO for f in got)


def test_decoder_ttheader_lenient_parsing(impl):
    # blocks in any order, repeated (merged), zero counts, extra zero padding, transforms ignored
    block = (
        b"\x00\x02\x01\x03"  # protocol 0, 2 transform ids (ignored)
        + b"\x10\x00\x01\x00\x05\x00\x01a"
        + b"\x00\x00"
        + b"\x01\x00\x00"
        + b"\x11\x00\x02t1"
        + b"\x01\x00\x01\x00\x01k\x00\x01v"
        + b"\x10\x00\x01\x00\x06\x00\x01b"
        + b"\x01\x00\x01\x00\x02k2\x00\x00"
        + b"\x11\x00\x02t2"
    )
    block += b"\x00" * ((4 - len(block) % 4) % 4 + 8)
    frame = struct.pack(">IHHiH", 10 + len(block) + len(ECHO), 0x1000, 0x0001, 99, len(block) // 4) + block + ECHO
    (f,) = impl.codec.FrameDecoder("ttheader").feed(frame)
    assert f.seq_id == 99 and f.flags == 1
    assert f.int_headers == {5: "a", 6: "b"}
    assert f.str_headers == {"k": "v", "k2": ""}
    assert f.acl_token == "t2"
    assert f.payload == ECHO


def _tt(block, payload=ECHO, hs=None, length=None):
    hs = len(block) // 4 if hs is None else hs
    length = 10 + len(block) + len(payload) if length is None else length
    return struct.pack(">IHHiH", length, 0x1000, 0, 1, hs) + block + payload


DECODER_ERRORS = [
    ("framed", b"\x00\x00\x00\x00", ProtocolError, "framed length 0 is not positive (first bytes 00 00 00 00)"),
    ("framed", b"\xff\xff\xff\xf0abcd", ProtocolError, "framed length -16 is not positive (first bytes ff ff ff f0 61 62 63 64)"),
    ("framed", b"\x00\x01\x00\x01", FrameTooLargeError, "framed length 65537 exceeds max_frame_size 65536 (first bytes 00 01 00 01)"),
    ("ttheader", b"\x00\x00\x00\x10\x0f\xff\x00\x00\x00\x00\x00\x01\x00\x01", ProtocolError,
     "not a TTHeader frame (first bytes 00 00 00 10 0f ff 00 00 ...): expected 10 00 at bytes 4-5"),
    ("ttheader", _tt(b"\x00\x00\x00\x00", hs=0), ProtocolError,
     "TTHeader HEADER SIZE is 0 words (first bytes 00 00 00 2f 10 00 00 00 ...): at least 1 is required"),
    ("ttheader", _tt(b"\x00\x00\x00\x00", hs=10), ProtocolError,
     "TTHeader HEADER SIZE 10 words (40 bytes) leaves no payload in LENGTH 47"),
    ("ttheader", _tt(b"\x00\x00\x00\x00", payload=b""), ProtocolError,
     "TTHeader HEADER SIZE 1 words (4 bytes) leaves no payload in LENGTH 14"),
    ("ttheader", _tt(b"\x00\x00\x00\x00", length=0x10001), FrameTooLargeError,
     "TTHeader LENGTH 65537 exceeds max_frame_size 65536"),
    ("ttheader", _tt(b"\x02\x00\x00\x00"), ProtocolError,
     "unsupported TTHeader protocol id 2: kitex_fast speaks Thrift binary (protocol id 0) only"),
    ("ttheader", _tt(b"\x03\x00\x00\x00"), ProtocolError,
     "unsupported TTHeader protocol id 3: kitex_fast speaks Thrift binary (protocol id 0) only"),
    ("ttheader", _tt(b"\x00\x05\x00\x00"), ProtocolError,
     "TTHeader declares 5 transforms but the header block ends first"),
    ("ttheader", _tt(b"\x00\x00\x12\x00"), ProtocolError, "unknown TTHeader info id 0x12 at byte 16 of the frame"),
    ("ttheader", _tt(b"\x00\x00\x00\x01"), ProtocolError, "truncated TTHeader string KV block at byte 17 of the frame"),
    ("ttheader", _tt(b"\x00\x00\x01\x00\x01\x00\x09ab\x00\x00\x00"), ProtocolError,
     "truncated TTHeader string KV block at byte 16 of the frame"),
    ("ttheader", _tt(b"\x00\x00\x01\x00\x01\x00\x01a\x00\x05b\x00"), ProtocolError,
     "truncated TTHeader string KV block at byte 16 of the frame"),
    ("ttheader", _tt(b"\x00\x00\x10\x00\x01\x00\x01\x00\x09abc\x00"), ProtocolError,
     "truncated TTHeader int KV block at byte 16 of the frame"),
    ("ttheader", _tt(b"\x00\x00\x00\x10"), ProtocolError, "truncated TTHeader int KV block at byte 17 of the frame"),
    ("ttheader", _tt(b"\x00\x00\x11\x00\x09ab\x00"), ProtocolError, "truncated TTHeader ACL token block at byte 16 of the frame"),
    ("ttheader", _tt(b"\x00\x00\x00\x11"), ProtocolError, "truncated TTHeader ACL token block at byte 17 of the frame"),
    ("buffered", b"\x82\x21\x01\x04", ProtocolError,
     "compact protocol message (first bytes 82 21 01 04): Kitex speaks strict binary Thrift only (80 01 00 TT)"),
    ("buffered", b"\x00\x00", ProtocolError,
     "non-strict binary Thrift message (first i32 >= 0, first bytes 00 00): Kitex accepts strict binary only (80 01 00 TT)"),
    ("buffered", b"\x80\x01\x00\x09", ProtocolError,
     "unknown Thrift message type 9 (first bytes 80 01 00 09): expected 1 (CALL), 2 (REPLY), 3 (EXCEPTION) or 4 (ONEWAY)"),
    ("buffered", b"\x80\x01\x00\x01\x80\x00\x00\x00", ProtocolError, "negative method name length -2147483648 (first bytes 80 01 00 01 80 00 00 00)"),
    ("buffered", b"\x80\x01\x00\x01\x00\x01\x00\x00", FrameTooLargeError,
     "buffered message declares a 65536-byte method name, over max_frame_size 65536"),
    ("buffered", b"\x80\x01\x00\x01\x00\x00\x00\x01E\x00\x00\x00\x01\x0b\x00\x01\xff\xff\xff\xff", ProtocolError, "negative length -1 at offset 16"),
    ("buffered", b"\x80\x01\x00\x01\x00\x00\x00\x01E\x00\x00\x00\x01\x0b\x00\x01\x00\x01\x00\x00" + b"x" * 65536, FrameTooLargeError,
     "buffered message exceeds max_frame_size 65536: 65556 bytes pending without a complete message"),
    ("auto", b"GET / HTTP/1.1\r\n", ProtocolError,
     "unrecognised framing (first bytes 47 45 54 20 2f 20 48 54 ...): expected TTHeader (10 00 at bytes 4-5), buffered (80 01 ...) or framed (80 01 at bytes 4-5); this looks like HTTP: is the port an HTTP server rather than Kitex?"),
    ("auto", b"\x82\x21\x01\x04Echo\x00", ProtocolError,
     "unrecognised framing (first bytes 82 21 01 04 45 63 68 6f ...): expected TTHeader (10 00 at bytes 4-5), buffered (80 01 ...) or framed (80 01 at bytes 4-5)"),
    ("auto", b"\x00\x00\x00\x00\x80\x01\x00\x01", ProtocolError, "framed length 0 is not positive (first bytes 00 00 00 00 80 01 00 01)"),
]


@pytest.mark.parametrize("transport,data,exc,text", DECODER_ERRORS)
def test_decoder_errors_and_poisoning(impl, transport, data, exc, text):
    dec = impl.codec.FrameDecoder(transport, max_frame_size=65536)
    with pytest.raises(exc) as info:
        dec.feed(data)
    assert str(info.value) == text
    # every later call raises the same class, with the original text
    later = "FrameDecoder stopped after an earlier error: " + text
    for call in (lambda: dec.feed(ECHO), lambda: dec.get_buffer(), lambda: dec.buffer_updated(0)):
        with pytest.raises(exc) as info:
            call()
        assert str(info.value) == later


def test_decoder_buffered_complete_message_over_limit(impl):
    msg = impl.codec.build_message(1, "E", 1, b"\x0b\x00\x01\x00\x00\x00\x64" + b"x" * 100 + b"\x00")
    dec = impl.codec.FrameDecoder("buffered", max_frame_size=64)
    with pytest.raises(FrameTooLargeError) as info:
        dec.feed(msg)
    assert str(info.value) == (
        "buffered message exceeds max_frame_size 64: %d bytes pending without a complete message" % len(msg)
    )


def test_decoder_checks_lengths_before_buffering(impl):
    # a 4 GiB TTHeader LENGTH is refused on the first 14 bytes, before any allocation
    dec = impl.codec.FrameDecoder("auto")
    with pytest.raises(FrameTooLargeError):
        dec.feed(b"\xff\xff\xff\xff\x10\x00\x00\x00\x00\x00\x00\x01\x00\x01")
    dec = impl.codec.FrameDecoder("framed", max_frame_size=10)
    with pytest.raises(FrameTooLargeError):
        dec.feed(b"\x00\x00\x00\x0b")


def test_decoder_get_buffer_buffer_updated(impl):
    dec = impl.codec.FrameDecoder("auto")
    stream = (TT_HEADERS + FRAMED) * 50 + ECHO
    got = []
    pos = 0
    step = 7
    while pos < len(stream):
        view = dec.get_buffer(-1)
        assert isinstance(view, memoryview) and not view.readonly and len(view) >= 1
        n = min(step, len(view), len(stream) - pos)
        view[:n] = stream[pos : pos + n]
        got += dec.buffer_updated(n)
        pos += n
        step = step * 3 % 101 + 1
    assert len(got) == 101 and all(f.payload == ECHO for f in got)
    assert dec.pending == 0
    # a large sizehint grows the buffer in one go
    assert len(dec.get_buffer(1 << 20)) >= 1 << 20


def test_decoder_get_buffer_survives_a_live_view(impl):
    # asyncio keeps the view alive while calling buffer_updated: growth must not resize in place
    dec = impl.codec.FrameDecoder("framed")
    big = struct.pack(">I", 100000) + b"\x80\x01\x00\x01" + bytes(99996)
    views = []
    pos = 0
    while pos < len(big):
        v = dec.get_buffer(5000)
        views.append(v)
        n = min(len(v), len(big) - pos, 5000)
        v[:n] = big[pos : pos + n]
        out = dec.buffer_updated(n)
        pos += n
    assert len(out) == 1 and out[0].payload == big[4:]


def test_decoder_buffer_updated_range(impl):
    dec = impl.codec.FrameDecoder("framed")
    view = dec.get_buffer(100)
    size = len(view)
    assert err(impl, ValueError, dec.buffer_updated, size + 1) == (
        "nbytes %d out of range 0..%d (the size of the last get_buffer)" % (size + 1, size)
    )
    assert err(impl, ValueError, dec.buffer_updated, -1) == (
        "nbytes -1 out of range 0..%d (the size of the last get_buffer)" % size
    )
    assert dec.buffer_updated(0) == []


# The receive buffer decoders share while they hold no byte (an idle pooled connection holds
# none of its own): get_buffer(-1) lends it, buffer_updated hands it back.

FOO_FRAMED = struct.pack(">I", len(FOO_EXC)) + FOO_EXC


def receive(dec, data):
    """One read as a transport does it: get_buffer(-1), write, buffer_updated (view held)."""
    view = dec.get_buffer(-1)
    view[: len(data)] = data
    return dec.buffer_updated(len(data))


def test_decoders_with_nothing_buffered_share_one_receive_buffer(impl):
    a = impl.codec.FrameDecoder("framed")
    b = impl.codec.FrameDecoder("framed")
    view = a.get_buffer(-1)
    shared = view.obj
    assert len(view) == 4096
    view[: len(FRAMED)] = FRAMED
    assert [f.payload for f in a.buffer_updated(len(FRAMED))] == [ECHO]
    del view
    view = b.get_buffer(-1)
    assert view.obj is shared and len(view) == 4096
    view[: len(FRAMED)] = FRAMED
    assert [f.payload for f in b.buffer_updated(len(FRAMED))] == [ECHO]
    assert a.pending == b.pending == 0


def test_idle_decoders_hold_no_receive_buffer(impl):
    import gc
    import tracemalloc

    receive(impl.codec.FrameDecoder("framed"), FRAMED)  # (the thread's shared buffer, once)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        decoders = [impl.codec.FrameDecoder("framed") for _ in range(200)]
        for dec in decoders:
            assert [f.payload for f in receive(dec, FRAMED)] == [ECHO]
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 200 * 512, held  # the decoder alone: its own buffer was 4 KiB more


def test_incomplete_frame_moves_to_a_buffer_of_its_own(impl):
    a = impl.codec.FrameDecoder("auto")
    b = impl.codec.FrameDecoder("auto")
    assert receive(a, TT_HEADERS[:20]) == [] and a.pending == 20
    # the shared buffer is free again: b reads into it, and a's 20 bytes are not overwritten
    view = b.get_buffer(-1)
    shared = view.obj
    view[: len(TT_HEADERS)] = TT_HEADERS
    assert [f.payload for f in b.buffer_updated(len(TT_HEADERS))] == [ECHO]
    del view
    view = a.get_buffer(-1)
    assert view.obj is not shared  # its own, until what it holds is decoded
    rest = TT_HEADERS[20:] + FRAMED
    view[: len(rest)] = rest
    frames = a.buffer_updated(len(rest))
    assert [f.payload for f in frames] == [ECHO, ECHO]
    assert frames[0].str_headers == {"isn": "EchoService"} and a.pending == 0


def test_a_read_in_progress_keeps_the_shared_buffer(impl):
    # A view still held (another thread's recv in progress, a slice kept) is never lent twice.
    a = impl.codec.FrameDecoder("framed")
    b = impl.codec.FrameDecoder("framed")
    c = impl.codec.FrameDecoder("framed")
    va = a.get_buffer(-1)
    part = va[0:]
    del va
    vb = b.get_buffer(-1)
    assert vb.obj is not part.obj
    vb[: len(FRAMED)] = FRAMED
    part[: len(FOO_FRAMED)] = FOO_FRAMED
    assert [f.payload for f in a.buffer_updated(len(FOO_FRAMED))] == [FOO_EXC]
    assert [f.payload for f in b.buffer_updated(len(FRAMED))] == [ECHO]
    del vb, part
    assert [f.payload for f in receive(c, FRAMED)] == [ECHO]


def test_a_lend_never_handed_back_is_taken_over(impl):
    # A read that found nothing (EAGAIN) never calls buffer_updated; nor does a caller that
    # dropped the view first. The next decoder takes the buffer; what was written stays the first's.
    a = impl.codec.FrameDecoder("framed")
    b = impl.codec.FrameDecoder("framed")
    a.get_buffer(-1)  # nothing written, nothing reported
    assert [f.payload for f in receive(b, FRAMED)] == [ECHO]
    assert [f.payload for f in receive(a, FRAMED)] == [ECHO]
    a.get_buffer(-1)[: len(FOO_FRAMED)] = FOO_FRAMED  # written, view dropped
    vb = b.get_buffer(-1)
    vb[: len(FRAMED)] = FRAMED
    assert [f.payload for f in a.buffer_updated(len(FOO_FRAMED))] == [FOO_EXC]
    assert [f.payload for f in b.buffer_updated(len(FRAMED))] == [ECHO]
    del vb
    assert [f.payload for f in receive(a, FRAMED)] == [ECHO]


def test_a_view_kept_after_the_read_does_not_stop_sharing(impl):
    # (an exception's traceback can keep the frame that held the view alive until gc runs)
    a = impl.codec.FrameDecoder("framed")
    b = impl.codec.FrameDecoder("framed")
    kept = a.get_buffer(-1)
    kept[: len(FRAMED)] = FRAMED
    assert [f.payload for f in a.buffer_updated(len(FRAMED))] == [ECHO]
    view = a.get_buffer(-1)
    shared = view.obj
    view[: len(FRAMED)] = FRAMED
    assert [f.payload for f in a.buffer_updated(len(FRAMED))] == [ECHO]
    del view
    view = b.get_buffer(-1)
    assert view.obj is shared
    view[: len(FRAMED)] = FRAMED
    assert [f.payload for f in b.buffer_updated(len(FRAMED))] == [ECHO]
    del view, kept


def test_a_read_in_progress_on_another_thread(impl):
    import threading

    a = impl.codec.FrameDecoder("framed")
    b = impl.codec.FrameDecoder("framed")
    lent = threading.Event()
    go = threading.Event()
    got = []

    def reader():
        view = a.get_buffer(-1)  # held across the wait, as a recv without the GIL holds it
        lent.set()
        go.wait(10)
        view[: len(FOO_FRAMED)] = FOO_FRAMED
        got.extend(f.payload for f in a.buffer_updated(len(FOO_FRAMED)))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert lent.wait(10)
        assert [f.payload for f in receive(b, FRAMED)] == [ECHO]
        assert [f.payload for f in receive(b, FRAMED * 2)] == [ECHO, ECHO]
    finally:
        go.set()
        thread.join(10)
    assert got == [FOO_EXC]
    assert [f.payload for f in receive(a, FRAMED)] == [ECHO]


def test_feed_voids_a_lend(impl):
    a = impl.codec.FrameDecoder("framed")
    a.get_buffer(-1)
    assert [f.payload for f in a.feed(FRAMED)] == [ECHO]
    assert err(impl, ValueError, a.buffer_updated, 1) == (
        "nbytes 1 out of range 0..0 (the size of the last get_buffer)"
    )
    assert [f.payload for f in receive(a, FRAMED)] == [ECHO]


def test_large_replies_through_the_shared_buffer(impl):
    dec = impl.codec.FrameDecoder("framed")
    body = b"\x80\x01\x00\x02" + bytes(range(256)) * 80  # 20 KiB: several reads
    big = struct.pack(">I", len(body)) + body
    stream = big + FRAMED + big
    got = []
    pos = 0
    while pos < len(stream):
        view = dec.get_buffer(-1)
        n = min(len(view), len(stream) - pos)
        view[:n] = stream[pos : pos + n]
        got += dec.buffer_updated(n)
        del view
        pos += n
    assert [f.payload for f in got] == [body, ECHO, body] and dec.pending == 0
    # a drained buffer past 256 KiB is let go: the next read is lent the shared one again
    huge = struct.pack(">I", 300000) + b"\x80\x01\x00\x02" + bytes(299996)
    assert len(dec.get_buffer(len(huge))) >= len(huge)
    assert len(receive(dec, huge)) == 1
    other = impl.codec.FrameDecoder("framed")
    view = other.get_buffer(-1)
    shared = view.obj
    del view
    other.buffer_updated(0)
    assert dec.get_buffer(-1).obj is shared


def test_protocol_error_in_the_shared_buffer_keeps_pending(impl):
    dec = impl.codec.FrameDecoder("framed")
    with pytest.raises(ProtocolError):
        receive(dec, FRAMED + b"\x00\x00\x00\x00\x80\x01")
    assert dec.pending == 6
    other = impl.codec.FrameDecoder("framed")
    assert [f.payload for f in receive(other, FRAMED)] == [ECHO]


def test_decoder_get_buffer_views_stay_safe(impl):
    """A view handed out by get_buffer is never re-used while someone holds or released it."""
    dec = impl.codec.FrameDecoder("framed")
    # the client's sequence: fill, drop the view, decode; the frame is consumed whole each time
    for i in range(3):
        dec.get_buffer(-1)[: len(FRAMED)] = FRAMED
        assert [f.payload for f in dec.buffer_updated(len(FRAMED))] == [ECHO]
    held = dec.get_buffer(-1)
    again = dec.get_buffer(-1)
    assert again is not held and len(again) == len(held)
    again[: len(FRAMED)] = FRAMED
    assert held[: len(FRAMED)] == FRAMED  # same memory
    assert [f.payload for f in dec.buffer_updated(len(FRAMED))] == [ECHO]
    held.release()
    del again
    v = dec.get_buffer(-1)  # never the released one
    v[: len(FRAMED)] = FRAMED
    with v:  # a holder may release its view and drop it ...
        pass
    del v
    assert [f.payload for f in dec.buffer_updated(len(FRAMED))] == [ECHO]
    w = dec.get_buffer()  # ... and the next caller still gets a live one
    w[:10] = FRAMED[:10]
    del w
    assert dec.buffer_updated(10) == [] and dec.pending == 10
    # a partial frame moves the free space: the view must start after the pending bytes
    w = dec.get_buffer(-1)
    w[: len(FRAMED) - 10] = FRAMED[10:]
    del w
    assert [f.payload for f in dec.buffer_updated(len(FRAMED) - 10)] == [ECHO]
    # growth allocates a new buffer: a view of the old one stays valid and writable
    old = dec.get_buffer(-1)
    new = dec.get_buffer(1 << 20)
    assert len(new) >= 1 << 20
    old[:4] = b"abcd"
    assert bytes(old[:4]) == b"abcd"
    new[: len(FRAMED)] = FRAMED
    assert [f.payload for f in dec.buffer_updated(len(FRAMED))] == [ECHO]
    assert err(impl, ValueError, dec.buffer_updated, True) == (
        "nbytes True out of range 0..0 (the size of the last get_buffer)"
    )
    assert err(impl, ValueError, dec.buffer_updated, 2**70) == (
        "nbytes %d out of range 0..0 (the size of the last get_buffer)" % 2**70
    )
    assert err(impl, ValueError, dec.buffer_updated, 1.0) == (
        "nbytes 1.0 out of range 0..0 (the size of the last get_buffer)"
    )


def test_frame_headers_empty_mapping(impl):
    """Frames without headers share one read-only empty mapping (both implementations)."""
    from collections.abc import Mapping

    c = impl.codec
    frames = c.FrameDecoder("auto").feed(FRAMED + ECHO + TT_EMPTY + TT_HEADERS)
    for f in frames[:3]:
        for h in (f.str_headers, f.int_headers):
            assert isinstance(h, Mapping) and not h and h == {} and len(h) == 0
            assert "x" not in h and h.get("crrst") is None and list(h) == [] and dict(h) == {}
            with pytest.raises(TypeError):
                h["x"] = "y"  # type: ignore[index]
    assert frames[0].str_headers is frames[1].int_headers
    assert type(frames[3].str_headers) is dict and frames[3].str_headers == {"isn": "EchoService"}
    assert frames[0] == c.Frame(ECHO, "framed") == c.Frame(ECHO, "framed", None, 0, {}, {}, None)
    assert "str_headers={}, int_headers={}" in repr(frames[0])
    tt_int_only = c.FrameDecoder("ttheader").feed(
        b"".join(bytes(p) for p in c.encode_frame("ttheader", ECHO, seq_id=1, int_headers={22: "2"}))
    )[0]
    assert tt_int_only.int_headers == {22: "2"} and tt_int_only.str_headers == {}
    assert not tt_int_only.str_headers


def test_parse_message_names_in_turn(impl):
    c = impl.codec
    names = ["Echo", "Echo", "EchoLonger", "", "Échö", "Échö", "Echo", "E"]
    for i, name in enumerate(names):
        h = c.parse_message(c.build_message(2, name, i, b"\x00"))
        assert (h.name, h.seq_id, h.body_offset) == (name, i, 12 + len(name.encode()))
    assert "not valid UTF-8" in err(impl, ProtocolError, c.parse_message,
                                    b"\x80\x01\x00\x02\x00\x00\x00\x01\xff\x00\x00\x00\x01")
    assert c.parse_message(c.build_message(2, "Echo", 1)).name == "Echo"


def test_body_view_of_each_bytes_like(impl):
    c = impl.codec
    for buf in (ECHO, bytearray(ECHO), memoryview(ECHO), memoryview(ECHO).cast("c"),
                memoryview(bytearray(ECHO))[0:]):
        for parts in (c.rewrite_message(buf, seq_id=5),
                      c.RequestEncoder("framed").encode(buf, 5)):
            body = parts[1]
            assert isinstance(body, memoryview) and body.format == "B" and body.ndim == 1
            assert body.nbytes == len(ECHO_BODY) and body.shape == (len(ECHO_BODY),)
            assert body == ECHO_BODY and body.tobytes() == ECHO_BODY and body.c_contiguous
            assert body.readonly == memoryview(buf).readonly
            assert bytes(body[1:3]) == ECHO_BODY[1:3]
            body.release()


def test_decoder_constructor_errors(impl):
    D = impl.codec.FrameDecoder
    assert err(impl, ValueError, D, "thrift") == (
        "unknown transport 'thrift': expected one of framed, buffered, ttheader, ttheader-framed or auto"
    )
    assert err(impl, ValueError, D, "framed", max_frame_size=0) == (
        "max_frame_size must be a positive int, got 0"
    )


def test_decoder_pending_and_compaction(impl):
    dec = impl.codec.FrameDecoder("framed")
    for _ in range(2000):
        assert dec.feed(FRAMED[:10]) == []
        assert dec.pending == 10
        assert len(dec.feed(FRAMED[10:] + FRAMED[:3])) == 1
        assert dec.pending == 3
        assert len(dec.feed(FRAMED[3:])) == 1
        assert dec.pending == 0


def test_errors_are_kitex_errors():
    assert issubclass(ProtocolError, KitexError) and issubclass(FrameTooLargeError, ProtocolError)


# --------------------------------------------------------------------------- c == py


def test_compiled_and_twin_identical(codecs):
    c, py = codecs
    calls = [
        lambda m: join(m.encode_frame("ttheader", ECHO, seq_id=7, str_headers={"a": "é"}, int_headers={3: "x"}, acl_token="z")),
        lambda m: join(m.encode_frame("ttheader-framed", [ECHO[:3], memoryview(ECHO)[3:]], seq_id=-7)),
        lambda m: join(m.encode_frame("framed", ECHO, seq_id=1)),
        lambda m: join(m.rewrite_message(ECHO, seq_id=5, name="renamed")),
        lambda m: join(m.RequestEncoder("ttheader", name="N", int_headers={9: "N"}).encode(ECHO, 3)),
        lambda m: m.build_message(3, "Foo", 9, m.encode_application_exception(7, "bad")),
        lambda m: repr(m.parse_message(ECHO)),
        lambda m: [repr(f) for f in m.FrameDecoder("auto").feed(TT_HEADERS + FRAMED + ECHO + TT_FRAMED)],
        lambda m: m.decode_application_exception(FOO_EXC),
        lambda m: m.find_struct_end(ECHO, 16),
    ]
    for call in calls:
        assert call(c) == call(py)


def test_a_drained_large_buffer_goes_back_to_its_initial_size(impl):
    # A pooled connection must not keep megabytes after one large reply.
    C = impl.codec
    big = C.build_message(C.REPLY, "echo", 1, b"\x0b\x00\x00" + (1 << 20).to_bytes(4, "big") + b"x" * (1 << 20) + b"\x00")
    stream = len(big).to_bytes(4, "big") + big
    dec = C.FrameDecoder("framed")
    initial = len(dec.get_buffer(-1))
    frames = []
    pos = 0
    while pos < len(stream):
        view = dec.get_buffer(-1)
        k = min(len(view), len(stream) - pos)
        view[:k] = stream[pos:pos + k]
        del view
        frames += dec.buffer_updated(k)
        pos += k
    assert [f.payload for f in frames] == [big]
    assert len(dec.get_buffer(-1)) == initial
    # and it still decodes what follows
    small = C.build_message(C.REPLY, "echo", 2, b"\x00")
    assert [f.payload for f in dec.feed(len(small).to_bytes(4, "big") + small)] == [small]
