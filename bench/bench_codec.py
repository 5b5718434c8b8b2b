"""Codec benchmark: compiled core vs pure-Python twin, side by side in one run.

    PYTHONPATH=src python bench/bench_codec.py [--quick]

Each operation is timed on both implementations in interleaved rounds; the table shows the median
ns/op of each and the ratio twin / compiled. A 1 KiB call = CALL ``Echo`` whose args struct holds
one ~1 KiB string. No assertions: numbers only (STYLE.md: never a timing assert in tests).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Dict, List, Tuple

from kitex_fast import codec


def _setup(m):
    body = b"\x0c\x00\x01\x0b\x00\x01" + (1000).to_bytes(4, "big") + b"x" * 1000 + b"\x00\x00"
    msg = m.build_message(m.CALL, "Echo", 1, body)
    hdrs = dict(str_headers={"isn": "EchoService"}, int_headers={9: "Echo", 12: "1000"})
    frames = {
        "framed": b"".join(m.encode_frame("framed", msg, seq_id=1)),
        "buffered": msg,
        "ttheader": b"".join(m.encode_frame("ttheader", msg, seq_id=1, **hdrs)),
        "ttheader-framed": b"".join(m.encode_frame("ttheader-framed", msg, seq_id=1, **hdrs)),
    }
    ops: Dict[str, Callable[[], object]] = {}
    ops["parse_message"] = lambda: m.parse_message(msg)
    ops["rewrite_message (same name)"] = lambda: m.rewrite_message(msg, seq_id=7)
    ops["rewrite_message (new name)"] = lambda: m.rewrite_message(msg, seq_id=7, name="EchoLonger")
    parts = m.rewrite_message(msg, seq_id=7)
    for t in ("framed", "buffered"):
        ops["encode_frame %s" % t] = (lambda t=t: m.encode_frame(t, parts, seq_id=7))
    for t in ("ttheader", "ttheader-framed"):
        ops["encode_frame %s (3 headers)" % t] = (
            lambda t=t: m.encode_frame(t, parts, seq_id=7, **hdrs)
        )
    ops["encode_frame ttheader (no headers)"] = lambda: m.encode_frame("ttheader", parts, seq_id=7)
    for t, wire in frames.items():
        dec = m.FrameDecoder(t)
        ops["decode %s (feed)" % t] = (lambda dec=dec, wire=wire: dec.feed(wire))
    rdec = m.FrameDecoder("auto")
    n = len(frames["ttheader"])
    wire_tt = frames["ttheader"]

    def recv_into():
        view = rdec.get_buffer(-1)
        view[:n] = wire_tt
        return rdec.buffer_updated(n)

    ops["decode auto ttheader (get_buffer)"] = recv_into
    enc = m.RequestEncoder("ttheader", name="Echo", **hdrs)
    ops["RequestEncoder.encode ttheader"] = lambda: enc.encode(msg, 7)
    enc_f = m.RequestEncoder("framed")
    ops["RequestEncoder.encode framed"] = lambda: enc_f.encode(msg, 7)
    ops["find_struct_end 1 KiB struct"] = lambda: m.find_struct_end(msg, 16)
    bdec = m.FrameDecoder("buffered")
    ops["buffered skip (decode 1 KiB msg)"] = lambda: bdec.feed(msg)
    cdec = m.FrameDecoder("framed")

    def combined():
        # the "rewrite + encode + decode of a 1 KiB call"
        p = m.rewrite_message(msg, seq_id=9, name="EchoLonger")
        out = m.encode_frame("framed", p, seq_id=9)
        frames_ = []
        for part in out:
            frames_ += cdec.feed(part)
        return frames_

    ops["rewrite + encode + decode (framed, 1 KiB)"] = combined
    tdec = m.FrameDecoder("ttheader")

    def combined_tt():
        p = m.rewrite_message(msg, seq_id=9, name="EchoLonger")
        out = m.encode_frame("ttheader", p, seq_id=9, **hdrs)
        frames_ = []
        for part in out:
            frames_ += tdec.feed(part)
        return frames_

    ops["rewrite + encode + decode (ttheader, 1 KiB)"] = combined_tt
    # What Client.invoke + Connection.call + Client._classify do per call, minus the syscalls.
    ops["client call path (encode + get_buffer/buffer_updated + parse_message), 1 KiB framed"] = (
        _client_call(m, msg, body, "framed", {}, {})
    )
    # A Kitex server's TTHeader reply carries int header 22 (MsgType) and no string headers
    # (tests/golden/frames.json: ttheader-reply-meta).
    ops["client call path (encode + get_buffer/buffer_updated + parse_message), 1 KiB ttheader"] = (
        _client_call(m, msg, body, "ttheader", hdrs, {"int_headers": {22: "2"}})
    )
    return ops


def _client_call(m, msg, body, transport, req_hdrs, reply_hdrs):
    enc = m.RequestEncoder(transport, name="Echo", **req_hdrs)
    dec = m.FrameDecoder(transport)
    reply = m.build_message(m.REPLY, "Echo", 7, body)
    wire = b"".join(bytes(p) for p in m.encode_frame(transport, reply, seq_id=7, **reply_hdrs))
    n = len(wire)
    parse = m.parse_message

    def call():
        enc.encode(msg, 7)  # -> one sendmsg of these buffers
        # recv(2) into the decoder's view; the transport drops its export before buffer_updated.
        dec.get_buffer(-1)[:n] = wire
        frame = dec.buffer_updated(n)[0]
        header = parse(frame.payload)  # Client._classify
        if header.seq_id != 7 or header.name != "Echo" or header.type != 2:
            raise AssertionError("bad reply")
        str_headers = frame.str_headers
        keep = not (str_headers and str_headers.get("crrst") == "1")
        if str_headers:
            str_headers.get("biz-status")
        return keep, frame.transport, str_headers, frame.int_headers

    return call


def _time(fn: Callable[[], object], number: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(number):
        fn()
    return (time.perf_counter_ns() - t0) / number


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (fewer rounds)")
    ap.add_argument("-k", dest="only", default="", help="only rows whose name contains this")
    args = ap.parse_args(argv)
    rounds, budget = (5, 0.01) if args.quick else (15, 0.05)
    try:
        c = codec.implementation("c")
    except ImportError as exc:
        print("compiled codec not available: %s" % exc)
        return 1
    py = codec.implementation("py")
    ops_c, ops_py = _setup(c), _setup(py)
    results: List[Tuple[str, float, float]] = []
    for name in ops_c:
        if args.only not in name:
            continue
        fc, fp = ops_c[name], ops_py[name]
        # calibrate so each sample takes about ``budget`` seconds
        nc = max(1, int(budget * 1e9 / max(_time(fc, 200), 1)))
        npy = max(1, int(budget * 1e9 / max(_time(fp, 20), 1)))
        sc, sp = [], []
        for _ in range(rounds):  # interleaved: drift hits both sides alike
            sc.append(_time(fc, nc))
            sp.append(_time(fp, npy))
        results.append((name, statistics.median(sc), statistics.median(sp)))
    width = max(len(r[0]) for r in results)
    print("%-*s  %12s  %12s  %7s" % (width, "operation", "compiled ns", "twin ns", "ratio"))
    print("-" * (width + 38))
    for name, tc, tp in results:
        print("%-*s  %12.0f  %12.0f  %6.1fx" % (width, name, tc, tp, tp / tc))
    print("\nPython %s, %s" % (sys.version.split()[0], "quick" if args.quick else "full"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
