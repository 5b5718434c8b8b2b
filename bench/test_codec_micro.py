"""Codec micro-benchmarks, compiled core vs pure-Python twin (pytest-benchmark).

    PYTHONPATH=src python -m pytest bench/test_codec_micro.py --benchmark-group-by=group

Each operation is one benchmark group with a ``c`` and a ``py`` member, so pytest-benchmark prints
them side by side; ``bench/run.py`` runs this file and turns its JSON into the ratio table.
Inputs are built once per test, outside the timed function.
"""

from __future__ import annotations

import struct

import pytest

from kitex_fast import codec
from kitex_fast.testing import echo_request, echo_result

IMPLS = ["c", "py"]
FRAMINGS = ["framed", "buffered", "ttheader", "ttheader-framed"]
# What a Kitex server sends back over TTHeader (pkg/transmeta/ttheader.go server side).
REPLY_INT_HEADERS = {1: "unframed", 6: "echo", 9: "echo", 14: "2"}


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    try:
        return codec.implementation(request.param)
    except ImportError as exc:  # a pure install: the twin rows still run
        pytest.skip(str(exc))


REQUEST_1K = echo_request("x" * 1024)  # identical bytes from either implementation
REPLY_1K = codec.implementation("py").build_message(
    codec.REPLY, "echo", 7, echo_result("x" * 1024 + ",hi Kitex"))


def struct_1k() -> bytes:
    """A ~1 KiB Thrift binary struct with every kind of field, so find_struct_end walks many
    fields and containers rather than skipping one long string."""
    out = bytearray()

    def field(ttype: int, fid: int) -> None:
        out.extend(struct.pack(">bh", ttype, fid))

    fid = 1
    for _ in range(4):  # scalars
        field(8, fid); out.extend(struct.pack(">i", fid)); fid += 1          # i32
        field(10, fid); out.extend(struct.pack(">q", fid)); fid += 1         # i64
        field(4, fid); out.extend(struct.pack(">d", 0.5)); fid += 1          # double
        field(2, fid); out.append(1); fid += 1                               # bool
    for i in range(8):  # strings
        s = b"s" * (16 + i)
        field(11, fid); out.extend(struct.pack(">i", len(s)) + s); fid += 1
    field(15, fid); out.extend(struct.pack(">bi", 8, 64) + struct.pack(">64i", *range(64))); fid += 1
    field(13, fid); out.extend(struct.pack(">bbi", 11, 10, 12))                # map<string,i64>
    for i in range(12):
        k = b"key-%02d" % i
        out.extend(struct.pack(">i", len(k)) + k + struct.pack(">q", i))
    fid += 1
    field(12, fid); fid += 1                                                     # nested struct
    for j in range(6):
        field(8, j + 1); out.extend(struct.pack(">i", j))
        field(11, j + 100); out.extend(struct.pack(">i", 24) + b"n" * 24)
    out.append(0)
    while len(out) < 1023:  # pad with i16 fields up to ~1 KiB
        field(6, fid); out.extend(struct.pack(">h", 1)); fid += 1
    out.append(0)
    return bytes(out)


STRUCT_1K = struct_1k()


@pytest.mark.benchmark(group="parse_message (1 KiB request)")
def test_parse(benchmark, impl):  # type: ignore[no-untyped-def]
    header = benchmark(impl.parse_message, REQUEST_1K)
    assert header.name == "echo"


@pytest.mark.benchmark(group="rewrite_message (1 KiB request)")
def test_rewrite(benchmark, impl):  # type: ignore[no-untyped-def]
    parts = benchmark(impl.rewrite_message, REQUEST_1K, seq_id=7, name="echo")
    assert len(parts) == 2


@pytest.mark.parametrize("transport", ["framed", "ttheader"])
def test_request_encode(benchmark, impl, transport):  # type: ignore[no-untyped-def]
    benchmark.group = "RequestEncoder.encode %s (1 KiB)" % transport
    headers = ({1: "unframed", 3: "echo", 9: "echo", 14: "1"}
               if transport == "ttheader" else None)
    encoder = impl.RequestEncoder(transport, name="echo", int_headers=headers)
    parts = benchmark(encoder.encode, REQUEST_1K, 7)
    assert len(parts) == 2


@pytest.mark.parametrize("transport", FRAMINGS)
def test_frame_decode(benchmark, impl, transport):  # type: ignore[no-untyped-def]
    benchmark.group = "FrameDecoder.feed %s (1 KiB reply)" % transport
    headers = REPLY_INT_HEADERS if transport.startswith("ttheader") else None
    frame = b"".join(bytes(p) for p in impl.encode_frame(transport, REPLY_1K, seq_id=7, int_headers=headers))
    # One decoder reused across calls, as a connection keeps its own.
    feed = impl.FrameDecoder(transport).feed
    frames = benchmark(feed, frame)
    assert len(frames) == 1 and frames[0].payload == REPLY_1K


@pytest.mark.benchmark(group="find_struct_end (1 KiB struct)")
def test_find_struct_end(benchmark, impl):  # type: ignore[no-untyped-def]
    end = benchmark(impl.find_struct_end, STRUCT_1K)
    assert end == len(STRUCT_1K)
