"""Property tests for the codec (hypothesis, modest example counts), on both implementations."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kitex_fast import codec
from kitex_fast.errors import KitexError

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

header_text = st.text(max_size=20)
str_headers = st.dictionaries(header_text, header_text, max_size=4)
int_headers = st.dictionaries(st.integers(0, 65535), header_text, max_size=4)
seq_ids = st.integers(-(2**31), 2**31 - 1)
names = st.text(min_size=0, max_size=12)
TRANSPORTS = ["framed", "buffered", "ttheader", "ttheader-framed"]


@st.composite
def thrift_structs(draw, depth=0):
    """Random valid Thrift binary structs (bytes)."""
    out = bytearray()
    for fid in range(draw(st.integers(0, 4 if depth < 3 else 1))):
        kind = draw(st.sampled_from(["i32", "i64", "str", "bool", "list", "map", "struct"]))
        if kind == "struct" and depth >= 3:
            kind = "i32"
        if kind == "i32":
            out += b"\x08" + fid.to_bytes(2, "big") + draw(st.binary(min_size=4, max_size=4))
        elif kind == "i64":
            out += b"\x0a" + fid.to_bytes(2, "big") + draw(st.binary(min_size=8, max_size=8))
        elif kind == "bool":
            out += b"\x02" + fid.to_bytes(2, "big") + b"\x01"
        elif kind == "str":
            s = draw(st.binary(max_size=40))
            out += b"\x0b" + fid.to_bytes(2, "big") + len(s).to_bytes(4, "big") + s
        elif kind == "list":
            items = draw(st.lists(st.binary(max_size=8), max_size=4))
            out += b"\x0f" + fid.to_bytes(2, "big") + b"\x0b" + len(items).to_bytes(4, "big")
            for s in items:
                out += len(s).to_bytes(4, "big") + s
        elif kind == "map":
            n = draw(st.integers(0, 3))
            out += b"\x0d" + fid.to_bytes(2, "big") + b"\x08\x0c" + n.to_bytes(4, "big")
            for i in range(n):
                out += i.to_bytes(4, "big") + draw(thrift_structs(depth=depth + 1))
        else:
            out += b"\x0c" + fid.to_bytes(2, "big") + draw(thrift_structs(depth=depth + 1))
    out += b"\x00"
    return bytes(out)


@st.composite
def messages(draw, mtype=None):
    m = codec.implementation("py")
    return m.build_message(
        mtype or draw(st.integers(1, 4)), draw(names), draw(seq_ids), draw(thrift_structs())
    )


def chunked(data, sizes):
    pos = 0
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)] if sizes else len(data)
        yield data[pos : pos + n]
        pos += n
        i += 1


def join(parts):
    return b"".join(bytes(p) for p in parts)


@st.composite
def frames(draw):
    transport = draw(st.sampled_from(TRANSPORTS))
    tt = transport.startswith("ttheader")
    kw = dict(
        seq_id=draw(seq_ids),
        str_headers=draw(str_headers) if tt else None,
        int_headers=draw(int_headers) if tt else None,
        acl_token=draw(st.one_of(st.none(), header_text)) if tt else None,
    )
    return transport, draw(messages()), kw


@SETTINGS
@given(case=frames(), sizes=st.lists(st.integers(1, 64), max_size=6))
def test_round_trip_any_chunking(impl, case, sizes):
    transport, msg, kw = case
    wire = join(impl.codec.encode_frame(transport, msg, **kw))
    for decoder_transport in (transport, "auto"):
        dec = impl.codec.FrameDecoder(decoder_transport)
        got = []
        for chunk in chunked(wire, sizes):
            got += dec.feed(chunk)
        assert dec.pending == 0
        (f,) = got
        assert f.payload == msg
        assert f.transport == transport
        if transport.startswith("ttheader"):
            assert f.seq_id == kw["seq_id"]
            assert f.str_headers == kw["str_headers"]
            assert f.int_headers == kw["int_headers"]
            assert f.acl_token == (kw["acl_token"] or None)
        else:
            assert f.seq_id is None


@SETTINGS
@given(cases=st.lists(frames(), min_size=1, max_size=5), sizes=st.lists(st.integers(1, 300), max_size=6))
def test_stream_of_frames_via_get_buffer(impl, cases, sizes):
    wire = b"".join(join(impl.codec.encode_frame(t, m, **kw)) for t, m, kw in cases)
    dec = impl.codec.FrameDecoder("auto")
    got = []
    for chunk in chunked(wire, sizes):
        pos = 0
        while pos < len(chunk):
            view = dec.get_buffer(len(chunk) - pos)
            n = min(len(view), len(chunk) - pos)
            view[:n] = chunk[pos : pos + n]
            got += dec.buffer_updated(n)
            pos += n
    assert [f.payload for f in got] == [m for _, m, _ in cases]


@SETTINGS
@given(
    streams=st.lists(st.lists(frames(), min_size=1, max_size=3), min_size=2, max_size=4),
    steps=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 5000), st.sampled_from(["read", "hold", "drop"])), max_size=60),
)
def test_decoders_sharing_the_receive_buffer(impl, streams, steps):
    # Several connections' decoders reading in any interleaving, each read through get_buffer(-1)
    # (the shared buffer while its decoder holds nothing): "hold" keeps a lent view across other
    # decoders' reads (a read in progress elsewhere), "drop" writes, drops the view and calls
    # buffer_updated only after other decoders' reads (a lend they take over). Every stream
    # decodes as sent.
    wires = [b"".join(join(impl.codec.encode_frame(t, m, **kw)) for t, m, kw in cases) for cases in streams]
    decs = [impl.codec.FrameDecoder("auto") for _ in wires]
    pos = [0] * len(wires)
    got = [[] for _ in wires]
    held = {}  # decoder index -> (view, nbytes written)

    def finish(i):
        view, n = held.pop(i)
        del view
        got[i].extend(decs[i].buffer_updated(n))
        pos[i] += n

    def read(i, size, how):
        if i in held:
            finish(i)
        view = decs[i].get_buffer(-1)
        n = min(len(view), len(wires[i]) - pos[i], size)
        view[:n] = wires[i][pos[i] : pos[i] + n]
        if how != "read":
            held[i] = (view if how == "hold" else None, n)
            return
        del view
        got[i].extend(decs[i].buffer_updated(n))
        pos[i] += n

    for i, size, how in steps:
        i %= len(wires)
        if pos[i] < len(wires[i]):
            read(i, size, how)
    for i in list(held):
        finish(i)
    for i in range(len(wires)):
        while pos[i] < len(wires[i]):
            read(i, 4096, "read")
        assert [f.payload for f in got[i]] == [m for _, m, _ in streams[i]]
        assert decs[i].pending == 0


@SETTINGS
@given(case=frames(), name=st.one_of(st.none(), names), seq=seq_ids)
def test_c_and_py_byte_identical(codecs, case, name, seq):
    c, py = codecs
    transport, msg, kw = case
    assert join(c.encode_frame(transport, msg, **kw)) == join(py.encode_frame(transport, msg, **kw))
    assert join(c.rewrite_message(msg, seq_id=seq, name=name)) == join(
        py.rewrite_message(msg, seq_id=seq, name=name)
    )
    assert repr(c.parse_message(msg)) == repr(py.parse_message(msg))
    h = py.parse_message(msg)
    if h.type == 1:
        enc_kw = {k: v for k, v in kw.items() if k != "seq_id"}
        a = c.RequestEncoder(transport, name=name, **enc_kw).encode(msg, seq)
        b = py.RequestEncoder(transport, name=name, **enc_kw).encode(msg, seq)
        assert join(a) == join(b)
    wire = join(py.encode_frame(transport, msg, **kw))
    assert [repr(f) for f in c.FrameDecoder("auto").feed(wire)] == [
        repr(f) for f in py.FrameDecoder("auto").feed(wire)
    ]


def _outcome(fn):
    try:
        return ("ok", fn())
    except KitexError as exc:
        return (type(exc).__name__, str(exc))


@SETTINGS
@given(
    case=frames(),
    mutations=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 10**6),
    decoder_transport=st.sampled_from(TRANSPORTS + ["auto"]),
    sizes=st.lists(st.integers(1, 32), max_size=4),
)
def test_mutations_only_raise_kitex_errors(impl, case, mutations, cut, decoder_transport, sizes):
    transport, msg, kw = case
    wire = bytearray(join(impl.codec.encode_frame(transport, msg, **kw)))
    for pos, value in mutations:
        wire[pos % len(wire)] = value
    wire = bytes(wire[: cut % (len(wire) + 1)] if cut % 3 == 0 else wire)
    dec = impl.codec.FrameDecoder(decoder_transport, max_frame_size=1 << 16)
    try:
        for chunk in chunked(wire, sizes):
            for f in dec.feed(chunk):
                _outcome(lambda: impl.codec.parse_message(f.payload))
                _outcome(lambda: impl.codec.decode_application_exception(f.payload))
    except KitexError:
        with pytest.raises(KitexError):
            dec.feed(b"\x00")
    # the message-level functions on raw garbage
    _outcome(lambda: impl.codec.parse_message(wire))
    _outcome(lambda: impl.codec.find_struct_end(wire))
    _outcome(lambda: impl.codec.decode_application_exception(wire))
    _outcome(lambda: impl.codec.rewrite_message(wire, seq_id=1))
    _outcome(lambda: impl.codec.RequestEncoder("framed").encode(wire, 1))


@SETTINGS
@given(data=st.binary(max_size=200), offset=st.integers(0, 20))
def test_find_struct_end_garbage_agrees(codecs, data, offset):
    c, py = codecs
    offset = min(offset, len(data))
    assert _outcome(lambda: c.find_struct_end(data, offset)) == _outcome(
        lambda: py.find_struct_end(data, offset)
    )
    assert _outcome(lambda: c.decode_application_exception(data)) == _outcome(
        lambda: py.decode_application_exception(data)
    )
    dc, dp = c.FrameDecoder("auto", max_frame_size=4096), py.FrameDecoder("auto", max_frame_size=4096)
    a = _outcome(lambda: [repr(f) for f in dc.feed(data)])
    b = _outcome(lambda: [repr(f) for f in dp.feed(data)])
    assert a == b


@SETTINGS
@given(st_=thrift_structs(), trailing=st.binary(max_size=5))
def test_find_struct_end_on_valid_structs(impl, st_, trailing):
    assert impl.codec.find_struct_end(st_ + trailing) == len(st_)
    for cut in range(0, len(st_), max(1, len(st_) // 7)):
        assert impl.codec.find_struct_end(st_[:cut]) == -1
