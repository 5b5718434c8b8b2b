"""Differential fuzz targets: the compiled core and the twin must agree on every input.

One input drives one target. Byte 0 picks the target, byte 1 is a knob (chunk size, limits,
offsets), the rest is the data. For each implementation the target records what happened (frames,
results, pending bytes, or the error's class and text); the records must be equal, every error must
be one the package documents for that entry point (a ``ProtocolError`` for bytes from a peer), and
the decoder must never hold more than ``max_frame_size`` (+ a length prefix) for one message.

Anything else raises :class:`FuzzFailure` (or lets an untyped exception through), which the fuzz
engines report as a crash. ``tests/fuzz/test_fuzz_regressions.py`` replays every saved crash.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, List, Sequence, Tuple

from kitex_fast import codec as codec_dispatch
from kitex_fast.errors import FrameTooLargeError, ProtocolError

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "frames.json"

FEED_TRANSPORTS = ("framed", "buffered", "ttheader", "ttheader-framed", "auto")
MAX_FRAME_SIZES = (64, 1024, 65536, 1 << 20)


class FuzzFailure(AssertionError):
    """The implementations disagree, or one broke a rule (untyped error, unbounded buffering)."""


def implementations() -> List[ModuleType]:
    """Both codecs when the compiled one is available, else the twin alone (invariants only)."""
    impls = []
    for name in ("c", "py"):
        try:
            impls.append(codec_dispatch.implementation(name))
        except ImportError:
            pass
    return impls


Record = List[Tuple[Any, ...]]


def _error(exc: BaseException, allowed: Tuple[type, ...], where: str) -> Tuple[Any, ...]:
    if not isinstance(exc, allowed):
        raise FuzzFailure(
            "%s raised %s (%s), outside the documented %s"
            % (where, type(exc).__name__, exc, "/".join(c.__name__ for c in allowed))
        ) from exc
    return ("error", type(exc).__name__, str(exc))


def _frame(f: Any) -> Tuple[Any, ...]:
    return (
        bytes(f.payload), f.transport, f.seq_id, f.flags,
        sorted(dict(f.str_headers).items()), sorted(dict(f.int_headers).items()), f.acl_token,
    )


def _feed(transport: str) -> Callable[[ModuleType, int, bytes], Record]:
    def target(codec: ModuleType, knob: int, data: bytes) -> Record:
        limit = MAX_FRAME_SIZES[knob & 3]
        chunk = (knob >> 2) + 1  # 1..64 bytes a read, or everything at once for 64
        if chunk == 64:
            chunk = len(data) or 1
        decoder = codec.FrameDecoder(transport, max_frame_size=limit)
        record: Record = []
        for pos in range(0, len(data), chunk):
            try:
                frames = decoder.feed(data[pos : pos + chunk])
            except BaseException as exc:
                record.append(_error(exc, (ProtocolError,), "FrameDecoder(%r).feed" % transport))
                # Poisoned: every later call fails the same way.
                try:
                    decoder.feed(b"\x00")
                except BaseException as again:
                    if type(again) is not type(exc):
                        raise FuzzFailure("a poisoned decoder raised %r after %r" % (again, exc))
                else:
                    raise FuzzFailure("a decoder accepted bytes after %r" % (exc,))
                return record
            if decoder.pending > limit + 4:
                raise FuzzFailure(
                    "FrameDecoder(%r) holds %d bytes for one message, max_frame_size %d"
                    % (transport, decoder.pending, limit)
                )
            record.append(("frames", [_frame(f) for f in frames], decoder.pending))
        return record

    return target


def _parse_message(codec: ModuleType, knob: int, data: bytes) -> Record:
    try:
        h = codec.parse_message(data)
        return [("ok", h.type, h.name, h.seq_id, h.body_offset)]
    except BaseException as exc:
        return [_error(exc, (ProtocolError,), "parse_message")]


def _rewrite_message(codec: ModuleType, knob: int, data: bytes) -> Record:
    name = None if knob & 1 else "m" * (knob >> 1)
    try:
        parts = codec.rewrite_message(data, seq_id=knob * 16777 - 99, name=name)
        return [("ok", b"".join(bytes(p) for p in parts))]
    except BaseException as exc:
        return [_error(exc, (ProtocolError,), "rewrite_message")]


def _find_struct_end(codec: ModuleType, knob: int, data: bytes) -> Record:
    offset = min(knob, len(data))
    try:
        return [("ok", codec.find_struct_end(data, offset))]
    except BaseException as exc:
        return [_error(exc, (ProtocolError,), "find_struct_end")]


def _decode_application_exception(codec: ModuleType, knob: int, data: bytes) -> Record:
    try:
        return [("ok",) + tuple(codec.decode_application_exception(data))]
    except BaseException as exc:
        return [_error(exc, (ProtocolError,), "decode_application_exception")]


def _request_encoder(codec: ModuleType, knob: int, data: bytes) -> Record:
    transport = codec.TRANSPORTS[knob & 3]
    limit = MAX_FRAME_SIZES[(knob >> 2) & 3]
    try:
        encoder = codec.RequestEncoder(transport, name="echo" if knob & 16 else None, max_frame_size=limit)
        parts = encoder.encode(data, (knob >> 5) + 1)
        return [("ok", b"".join(bytes(p) for p in parts))]
    except BaseException as exc:
        return [_error(exc, (ProtocolError,), "RequestEncoder.encode")]


TARGETS: Dict[str, Callable[[ModuleType, int, bytes], Record]] = {
    "feed-" + t: _feed(t) for t in FEED_TRANSPORTS
}
TARGETS.update(
    {
        "parse_message": _parse_message,
        "rewrite_message": _rewrite_message,
        "find_struct_end": _find_struct_end,
        "decode_application_exception": _decode_application_exception,
        "request_encoder": _request_encoder,
    }
)

try:  # the compiled component server's byte layer (no twin: checked against oracles)
    from . import h2targets  # type: ignore[attr-defined]
except ImportError:  # run.py imports this file as a top-level module
    import h2targets  # type: ignore[no-redef]

H2_EXTENSION = h2targets.extension()


def _h2(target: Callable[[ModuleType, int, bytes], Record]) -> Callable[[ModuleType, int, bytes], Record]:
    def run(codec: ModuleType, knob: int, data: bytes) -> Record:
        # The same on every codec implementation: run once (for the first), record it for all.
        if H2_EXTENSION is None:
            return []
        if codec is not _FIRST[0]:
            return _LAST[0]
        _LAST[0] = target(H2_EXTENSION, knob, data)
        return _LAST[0]

    return run


_FIRST: List[Any] = [None]
_LAST: List[Record] = [[]]
# Appended after the codec targets, so that the saved crash inputs keep selecting what they did
# (their first byte is below the old count).
TARGETS.update({name: _h2(t) for name, t in h2targets.TARGETS.items()})
TARGET_NAMES = list(TARGETS)


def check(data: bytes, impls: Sequence[ModuleType]) -> None:
    """Run the target ``data`` selects on every implementation; raise on any disagreement."""
    if len(data) < 2:
        return
    name = TARGET_NAMES[data[0] % len(TARGET_NAMES)]
    target = TARGETS[name]
    _FIRST[0] = impls[0] if impls else None
    records = [target(codec, data[1], data[2:]) for codec in impls]
    for other, codec in zip(records[1:], impls[1:]):
        if other != records[0]:
            raise FuzzFailure(
                "%s: %s and %s disagree on %s\n  %r\n  %r"
                % (name, impls[0].__name__, codec.__name__, data.hex(), records[0], other)
            )


def selector(name: str) -> int:
    return TARGET_NAMES.index(name)


def seeds() -> List[bytes]:
    """Starting inputs from the golden bytes real Kitex produced (tests/golden/frames.json)."""
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    out: List[bytes] = []
    for item in golden["frames"]:
        frame = bytes.fromhex(item["frame"])
        for name in ("feed-" + item["transport"], "feed-auto"):
            for knob in (0, 3, 0xFC, 0x1D):
                out.append(bytes([selector(name), knob]) + frame + frame)
    for item in golden["messages"]:
        message = bytes.fromhex(item["message"])
        for name in ("parse_message", "rewrite_message", "decode_application_exception",
                     "request_encoder", "feed-buffered"):
            out.append(bytes([selector(name), 0x13]) + message)
        out.append(bytes([selector("find_struct_end"), item["body_offset"]]) + message)
    for item in golden["structs"]:
        out.append(bytes([selector("find_struct_end"), 0]) + bytes.fromhex(item["data"]))
    for name, knob, data in h2targets.seeds():
        out.append(bytes([selector(name), knob]) + data)
    return out
