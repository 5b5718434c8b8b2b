"""Pure-Python twin of ``_codec.pyx``: same names, same results, same error texts.

The Kitex wire facts and their upstream sources are in ``docs/protocol.md`` (sections cited
inline), the API in ``docs/internals.md``. Only ``kitex_fast.codec`` imports this module.
"""

from __future__ import annotations

import struct
import threading
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import FrameTooLargeError, ProtocolError

# The codec's public names, for both implementations: this is the source list. kitex_fast.codec
# re-exports it as PUBLIC_API; the compiled core and _codec.pyi repeat it (a stub needs a literal,
# and the core imports nothing of the package but errors), and tests/unit/test_codec_exports.py
# holds both to it (stubtest also holds the stub to the compiled module).
__all__ = [
    "MessageHeader",
    "Frame",
    "FrameDecoder",
    "RequestEncoder",
    "parse_message",
    "rewrite_message",
    "encode_frame",
    "build_message",
    "find_struct_end",
    "decode_application_exception",
    "encode_application_exception",
    "CALL",
    "REPLY",
    "EXCEPTION",
    "ONEWAY",
    "TRANSPORTS",
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_I32",
    "INT_KEY_TRANSPORT_TYPE",
    "INT_KEY_LOG_ID",
    "INT_KEY_FROM_SERVICE",
    "INT_KEY_TO_SERVICE",
    "INT_KEY_TO_METHOD",
    "INT_KEY_RPC_TIMEOUT",
    "INT_KEY_MSG_TYPE",
    "STR_KEY_IDL_SERVICE",
    "STR_KEY_CONN_RESET",
    "STR_KEY_BIZ_STATUS",
    "STR_KEY_BIZ_MESSAGE",
    "STR_KEY_BIZ_EXTRA",
    "TRANSIENT_PREFIX",
    "PERSISTENT_PREFIX",
]

CALL = 1
REPLY = 2
EXCEPTION = 3
ONEWAY = 4
TRANSPORTS = ("framed", "buffered", "ttheader", "ttheader-framed")
DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024
# The largest i32 (docs/protocol.md §4, §7): the largest seq id, and the largest value written in a
# 32-bit length field (u32 and i32 readers alike take it as the same positive number).
MAX_I32 = 0x7FFFFFFF

# TTHeader keys (docs/protocol.md §5; cloudwego/gopkg protocol/ttheader/metakey.go). Integer keys
# (INFO_INTKEYVALUE, §5.1):
INT_KEY_TRANSPORT_TYPE = 1
INT_KEY_LOG_ID = 2
INT_KEY_FROM_SERVICE = 3
INT_KEY_TO_SERVICE = 6
INT_KEY_TO_METHOD = 9
INT_KEY_RPC_TIMEOUT = 12
INT_KEY_MSG_TYPE = 22
# String keys (INFO_KEYVALUE, §5.2): the IDL service name, the server's "connection ready to
# reset" notice (§9.5), the business status (§9.4), and the prefixes of transient and persistent
# metainfo values (bytedance/gopkg cloud/metainfo PrefixTransient, PrefixPersistent).
STR_KEY_IDL_SERVICE = "isn"
STR_KEY_CONN_RESET = "crrst"
STR_KEY_BIZ_STATUS = "biz-status"
STR_KEY_BIZ_MESSAGE = "biz-message"
STR_KEY_BIZ_EXTRA = "biz-extra"
TRANSIENT_PREFIX = "RPC_TRANSIT_"
PERSISTENT_PREFIX = "RPC_PERSIST_"

_TYPE_NAMES = {1: "CALL", 2: "REPLY", 3: "EXCEPTION", 4: "ONEWAY"}

# Frame.str_headers / int_headers when a frame carries none (every framed/buffered frame): one
# shared read-only mapping instead of two fresh dicts per frame. The compiled core uses the same.
_EMPTY_HEADERS: Mapping[Any, str] = MappingProxyType({})

_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_MSG_BEGIN = struct.Struct(">Ii")  # version|type word, name length
# LENGTH, magic, flags, seq id, header size (docs/protocol.md §2)
_TT_FIXED = struct.Struct(">IHHiH")
_TT_MAGIC = 0x1000
# Strict-binary version word: 80 01 00 TT, the type in the low byte (docs/protocol.md §6.1).
_VERSION_1 = 0x80010000

# Transport codes (the compiled core uses the same numbering).
_T_FRAMED, _T_BUFFERED, _T_TTHEADER, _T_TTHEADER_FRAMED, _T_AUTO = 0, 1, 2, 3, 4
_TRANSPORT_CODES = {name: code for code, name in enumerate(TRANSPORTS)}

_INT32_MIN = -MAX_I32 - 1
_MAX_FRAME_FIELD = MAX_I32  # a 32-bit length field that every peer reads as positive
_MAX_U16 = 0xFFFF  # TTHeader counts, int keys and string lengths are u16 (docs/protocol.md §3.2)
_MAX_HEADER_STRING = _MAX_U16  # gopkg protocol/ttheader/utils.go: maxHeaderStringSize
_MAX_HEADER_BLOCK = 262140  # gopkg >= v0.1.8 MaxHeaderSize = 4*MaxUint16 (docs/protocol.md §4)
_MAX_DEPTH = 64  # gopkg protocol/thrift: defaultRecursionDepth (docs/protocol.md §10)

# Thrift binary type ids and the fixed sizes gopkg skips in bulk (binary.go: typeToSize).
_STOP, _BOOL, _BYTE, _DOUBLE, _I16, _I32T, _I64 = 0, 2, 3, 4, 6, 8, 10
_STRING, _STRUCT, _MAP, _SET, _LIST = 11, 12, 13, 14, 15
_FIXED_SIZE = [0] * 256
for _t, _s in ((_BOOL, 1), (_BYTE, 1), (_DOUBLE, 8), (_I16, 2), (_I32T, 4), (_I64, 8)):
    _FIXED_SIZE[_t] = _s
del _t, _s

# TTHeader info ids (gopkg protocol/ttheader/encode.go: InfoIDType).
_INFO_PADDING, _INFO_KV, _INFO_INT_KV, _INFO_ACL = 0x00, 0x01, 0x10, 0x11

_INITIAL_CAPACITY = 4096  # one page per connection to start (_codec.pyx: INITIAL_CAPACITY)
_KEEP_CAPACITY = 262144  # a drained buffer larger than this is let go (the shared one serves)
_MIN_READ = 4096
_SHARED_CAPACITY = 4096  # the shared receive buffer: as much as a fresh decoder's own would take

BytesLike = Union[bytes, bytearray, memoryview]


# --------------------------------------------------------------------------- helpers


def _hex(buf: BytesLike, start: int, end: int) -> str:
    """The first (up to 8) bytes at ``start`` in hex, for error texts."""
    n = min(end - start, 8)
    text = " ".join("%02x" % buf[start + i] for i in range(n))
    if end - start > 8:
        text += " ..."
    return text if n else "none"


# First bytes of what a non-Kitex server sends back: an HTTP/1 status line or request, the
# HTTP/2 preface, a TLS record (content type 20-23, version major 3).
_HTTP_STARTS = (b"HTTP", b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN",
                b"TRAC", b"PRI ")


def _looks_like(buf: BytesLike, start: int, end: int) -> str:
    """A hint for error texts when the bytes are plainly another protocol."""
    if end - start >= 4 and bytes(buf[start : start + 4]) in _HTTP_STARTS:
        return "; this looks like HTTP: is the port an HTTP server rather than Kitex?"
    if end - start >= 2 and 20 <= buf[start] <= 23 and buf[start + 1] == 3:
        return "; this looks like TLS: does the server expect TLS?"
    return ""


def _as_bytes_view(buf: object) -> BytesLike:
    """``buf`` itself when it can be indexed by byte, else a flat byte memoryview of it."""
    if type(buf) is bytes or type(buf) is bytearray:
        return buf  # type: ignore[return-value]
    mv = memoryview(buf)  # type: ignore[arg-type]
    if not mv.c_contiguous:
        # What the compiled core's PyObject_GetBuffer(PyBUF_SIMPLE) raises: same class, same text.
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    return mv


def _check_seq_id(seq_id: object) -> int:
    if not isinstance(seq_id, int):
        raise TypeError("seq_id must be an int, not %s" % type(seq_id).__name__)
    if not _INT32_MIN <= seq_id <= MAX_I32:
        raise ValueError("seq_id must fit in a signed 32-bit integer, got %d" % seq_id)
    return seq_id


def _encode_str(value: object, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise TypeError("%s must be str or bytes, not %s" % (what, type(value).__name__))


def _encode_name(name: object) -> bytes:
    if isinstance(name, str):
        return name.encode("utf-8", "surrogateescape")
    if isinstance(name, (bytes, bytearray)):
        return bytes(name)
    raise TypeError("name must be str or bytes, not %s" % type(name).__name__)


def _nbytes(part: object) -> int:
    if type(part) is bytes:
        return len(part)  # type: ignore[arg-type]
    return memoryview(part).nbytes  # type: ignore[arg-type]


def _transport_code(transport: object, allow_auto: bool) -> int:
    code = _TRANSPORT_CODES.get(transport) if isinstance(transport, str) else None  # type: ignore[arg-type]
    if code is None:
        if allow_auto and transport == "auto":
            return _T_AUTO
        raise ValueError(
            "unknown transport %r: expected one of framed, buffered, ttheader, ttheader-framed%s"
            % (transport, " or auto" if allow_auto else "")
        )
    return code


# --------------------------------------------------------------------------- value classes


class MessageHeader:
    """A parsed strict-binary Thrift message header."""

    __slots__ = ("_type", "_name", "_seq_id", "_body_offset")

    def __init__(self, type: int, name: str, seq_id: int, body_offset: int) -> None:
        self._type = type
        self._name = name
        self._seq_id = seq_id
        self._body_offset = body_offset

    @property
    def type(self) -> int:
        return self._type

    @property
    def name(self) -> str:
        return self._name

    @property
    def seq_id(self) -> int:
        return self._seq_id

    @property
    def body_offset(self) -> int:
        return self._body_offset

    def _key(self) -> Tuple[object, ...]:
        return (self._type, self._name, self._seq_id, self._body_offset)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MessageHeader):
            return self._key() == other._key()
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, MessageHeader):
            return self._key() != other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "MessageHeader(type=%d, name=%r, seq_id=%d, body_offset=%d)" % (
            self._type, self._name, self._seq_id, self._body_offset)


class Frame:
    """One decoded frame: the Thrift message and what the framing carried."""

    __slots__ = (
        "_payload",
        "_transport",
        "_seq_id",
        "_flags",
        "_str_headers",
        "_int_headers",
        "_acl_token",
    )

    def __init__(
        self,
        payload: bytes,
        transport: str,
        seq_id: Optional[int] = None,
        flags: int = 0,
        str_headers: Optional[Mapping[str, str]] = None,
        int_headers: Optional[Mapping[int, str]] = None,
        acl_token: Optional[str] = None,
    ) -> None:
        self._payload = payload
        self._transport = transport
        self._seq_id = seq_id
        self._flags = flags
        self._str_headers = _EMPTY_HEADERS if str_headers is None else str_headers
        self._int_headers = _EMPTY_HEADERS if int_headers is None else int_headers
        self._acl_token = acl_token

    @property
    def payload(self) -> bytes:
        return self._payload

    @property
    def transport(self) -> str:
        return self._transport

    @property
    def seq_id(self) -> Optional[int]:
        return self._seq_id

    @property
    def flags(self) -> int:
        return self._flags

    @property
    def str_headers(self) -> Mapping[str, str]:
        return self._str_headers

    @property
    def int_headers(self) -> Mapping[int, str]:
        return self._int_headers

    @property
    def acl_token(self) -> Optional[str]:
        return self._acl_token

    def _key(self) -> Tuple[object, ...]:
        return (
            self._payload,
            self._transport,
            self._seq_id,
            self._flags,
            self._str_headers,
            self._int_headers,
            self._acl_token,
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Frame):
            return self._key() == other._key()
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, Frame):
            return self._key() != other._key()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # holds dicts: not hashable

    def __repr__(self) -> str:
        return "Frame(transport=%r, seq_id=%r, flags=%d, payload=<%d bytes>, str_headers=%r, " \
            "int_headers=%r, acl_token=%r)" % (
                self._transport,
                self._seq_id,
                self._flags,
                len(self._payload),
                dict(self._str_headers),
                dict(self._int_headers),
                self._acl_token,
            )


# --------------------------------------------------------------------------- message header


def _header_end(buf: BytesLike, start: int, end: int, max_size: int) -> int:
    """End offset of the strict-binary message header at ``start``.

    ``max_size < 0``: ``buf[start:end]`` is a whole message; a short one is an error.
    ``max_size >= 0``: a stream; returns ``-need`` (the total end offset needed) when incomplete,
    and a name length beyond ``max_size`` raises FrameTooLargeError.
    """
    n = end - start
    if n <= 0:
        if max_size < 0:
            raise ProtocolError(
                "empty Thrift message: expected a strict binary message header (80 01 00 TT)"
            )
        return -(start + 4)
    b0 = buf[start]
    if b0 == 0x82:
        # Compact protocol id 0x82: Kitex refuses compact in every framing (docs/protocol.md §6.2).
        raise ProtocolError(
            "compact protocol message (first bytes %s): Kitex speaks strict binary Thrift only "
            "(80 01 00 TT)" % _hex(buf, start, end)
        )
    if b0 < 0x80:
        # First i32 >= 0: old non-strict binary, name length first (docs/protocol.md §6.2).
        raise ProtocolError(
            "non-strict binary Thrift message (first i32 >= 0, first bytes %s): Kitex accepts "
            "strict binary only (80 01 00 TT)%s" % (_hex(buf, start, end), _looks_like(buf, start, end))
        )
    if n < 4:
        if max_size < 0:
            raise ProtocolError(
                "truncated Thrift message header: %d bytes (first bytes %s)"
                % (n, _hex(buf, start, end))
            )
        return -(start + 4)
    if b0 != 0x80 or buf[start + 1] != 0x01 or buf[start + 2] != 0x00:
        # Byte 2 must be 0: Kitex masks the type with 0x0000FFFF (docs/protocol.md §6.2).
        raise ProtocolError(
            "bad Thrift binary version (first bytes %s): expected 80 01 00 TT%s"
            % (_hex(buf, start, end), _looks_like(buf, start, end))
        )
    mtype = buf[start + 3]
    if mtype < 1 or mtype > 4:
        raise ProtocolError(
            "unknown Thrift message type %d (first bytes %s): expected 1 (CALL), 2 (REPLY), "
            "3 (EXCEPTION) or 4 (ONEWAY)" % (mtype, _hex(buf, start, end))
        )
    if n < 8:
        if max_size < 0:
            raise ProtocolError(
                "truncated Thrift message header: %d bytes (first bytes %s)"
                % (n, _hex(buf, start, end))
            )
        return -(start + 8)
    name_len: int = _I32.unpack_from(buf, start + 4)[0]
    if name_len < 0:
        raise ProtocolError(
            "negative method name length %d (first bytes %s)" % (name_len, _hex(buf, start, end))
        )
    if 12 + name_len > n:
        if max_size < 0:
            raise ProtocolError(
                "method name length %d does not fit in a %d-byte message (first bytes %s)"
                % (name_len, n, _hex(buf, start, end))
            )
        if 12 + name_len > max_size:
            raise FrameTooLargeError(
                "buffered message declares a %d-byte method name, over max_frame_size %d"
                % (name_len, max_size)
            )
        return -(start + 12 + name_len)
    return start + 12 + name_len


def parse_message(buf: BytesLike) -> MessageHeader:
    """Parse the strict-binary message header at the start of ``buf``."""
    b = _as_bytes_view(buf)
    end = len(b)
    hend = _header_end(b, 0, end, -1)
    name_len = hend - 12
    try:
        name = bytes(b[8 : 8 + name_len]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(
            "method name is not valid UTF-8 (first bytes %s)" % _hex(b, 0, end)
        ) from None
    return MessageHeader(b[3], name, _I32.unpack_from(b, hend - 4)[0], hend)


def _message_begin(mtype: int, name: bytes, seq_id: int) -> bytes:
    return b"".join(
        (_MSG_BEGIN.pack(_VERSION_1 | mtype, len(name)), name, _I32.pack(seq_id))
    )


def rewrite_message(buf: BytesLike, *, seq_id: int, name: Optional[str] = None) -> List[BytesLike]:
    """``[new header bytes, memoryview(body)]``; the body is a view of ``buf``, never a copy."""
    _check_seq_id(seq_id)
    b = _as_bytes_view(buf)
    end = len(b)
    hend = _header_end(b, 0, end, -1)
    if name is None:
        head = bytes(b[0 : hend - 4]) + _I32.pack(seq_id)
    else:
        head = _message_begin(b[3], _encode_name(name), seq_id)
    if hend == end:
        return [head]
    return [head, memoryview(buf)[hend:] if b is buf else b[hend:]]  # type: ignore[index]


def build_message(mtype: int, name: str, seq_id: int, body: BytesLike = b"") -> bytes:
    """A whole strict-binary message: header + ``body`` (a struct, normally)."""
    if not isinstance(mtype, int) or mtype < 1 or mtype > 4:
        raise ValueError(
            "message type must be 1 (CALL), 2 (REPLY), 3 (EXCEPTION) or 4 (ONEWAY), got %r"
            % (mtype,)
        )
    _check_seq_id(seq_id)
    return _message_begin(mtype, _encode_name(name), seq_id) + bytes(body)


# --------------------------------------------------------------------------- struct skip


def _skip(buf: BytesLike, pos: int, end: int, ttype: int, depth: int, base: int) -> int:
    """Skip one value of ``ttype`` at ``pos``; ``depth`` as gopkg's ``maxdepth`` argument.

    Returns the end offset, or ``-need`` (the total end offset needed) when ``buf[:end]`` is too
    short. Iterative with an explicit stack so hostile nesting cannot exhaust the C stack; the
    nesting limit mirrors gopkg protocol/thrift/skipdecoder.go (``maxdepth == 0`` is an error,
    fixed-size container elements are skipped in bulk, empty containers are not type-checked).
    """
    fixed = _FIXED_SIZE
    # Stack entries: [kind, remaining, type_a, type_b, depth]; kind is the container type id.
    stack: List[List[int]] = []
    t = ttype
    d = depth
    while True:
        # ---- skip one value of type t at nesting budget d
        if d == 0:
            raise ProtocolError(
                "Thrift struct nesting exceeds the depth limit of %d at offset %d"
                % (_MAX_DEPTH, pos - base)
            )
        sz = fixed[t]
        if sz:
            if pos + sz > end:
                return -(pos + sz)
            pos += sz
        elif t == _STRING:
            if pos + 4 > end:
                return -(pos + 4)
            n: int = _I32.unpack_from(buf, pos)[0]
            if n < 0:
                raise ProtocolError("negative length %d at offset %d" % (n, pos - base))
            if pos + 4 + n > end:
                return -(pos + 4 + n)
            pos += 4 + n
        elif t == _STRUCT:
            stack.append([_STRUCT, 0, 0, 0, d])
        elif t == _MAP:
            if pos + 6 > end:
                return -(pos + 6)
            kt = buf[pos]
            vt = buf[pos + 1]
            n = _I32.unpack_from(buf, pos + 2)[0]
            if n < 0:
                raise ProtocolError("negative length %d at offset %d" % (n, pos - base))
            pos += 6
            ks = fixed[kt]
            vs = fixed[vt]
            if ks and vs:
                need = pos + n * (ks + vs)
                if need > end:
                    return -need
                pos = need
            elif n:
                stack.append([_MAP, 2 * n, kt, vt, d])
        elif t == _SET or t == _LIST:
            if pos + 5 > end:
                return -(pos + 5)
            et = buf[pos]
            n = _I32.unpack_from(buf, pos + 1)[0]
            if n < 0:
                raise ProtocolError("negative length %d at offset %d" % (n, pos - base))
            pos += 5
            es = fixed[et]
            if es:
                need = pos + n * es
                if need > end:
                    return -need
                pos = need
            elif n:
                stack.append([_LIST, n, et, et, d])
        else:
            raise ProtocolError("unknown Thrift type id %d at offset %d" % (t, pos - base))
        # ---- pick the next value to skip from the innermost open container
        while True:
            if not stack:
                return pos
            top = stack[-1]
            kind = top[0]
            if kind == _STRUCT:
                if pos + 1 > end:
                    return -(pos + 1)
                ft = buf[pos]
                if ft == _STOP:
                    pos += 1
                    stack.pop()
                    continue
                if pos + 3 > end:
                    return -(pos + 3)
                pos += 3
                t = ft
                d = top[4] - 1
                break
            remaining = top[1]
            if remaining == 0:
                stack.pop()
                continue
            top[1] = remaining - 1
            # Map elements alternate key, value: an even count left means a key is next.
            t = top[2] if (kind == _LIST or remaining % 2 == 0) else top[3]
            d = top[4] - 1
            break


def find_struct_end(buf: BytesLike, offset: int = 0) -> int:
    """End offset of the Thrift binary struct at ``offset``, or -1 if more bytes are needed."""
    b = _as_bytes_view(buf)
    end = len(b)
    if not isinstance(offset, int) or offset < 0 or offset > end:
        raise ValueError("offset %r out of range for a %d-byte buffer" % (offset, end))
    r = _skip(b, offset, end, _STRUCT, _MAX_DEPTH, 0)
    return r if r >= 0 else -1


# --------------------------------------------------------------------------- exceptions


def decode_application_exception(message: BytesLike) -> Tuple[int, str]:
    """``(type_code, text)`` of a whole EXCEPTION message (docs/protocol.md §8)."""
    b = _as_bytes_view(message)
    end = len(b)
    hend = _header_end(b, 0, end, -1)
    mtype = b[3]
    if mtype != EXCEPTION:
        raise ProtocolError(
            "expected an EXCEPTION message, got type %d (%s)" % (mtype, _TYPE_NAMES[mtype])
        )
    type_code = 0
    text = ""
    pos = hend
    while True:
        if pos + 1 > end:
            break
        ft = b[pos]
        if ft == _STOP:
            return type_code, text
        if pos + 3 > end:
            break
        fid = (b[pos + 1] << 8) | b[pos + 2]
        pos += 3
        if fid == 1 and ft == _STRING:
            if pos + 4 > end:
                break
            n = _I32.unpack_from(b, pos)[0]
            if n < 0:
                raise ProtocolError("negative length %d at offset %d" % (n, pos))
            if pos + 4 + n > end:
                break
            text = bytes(b[pos + 4 : pos + 4 + n]).decode("utf-8", "replace")
            pos += 4 + n
        elif fid == 2 and ft == _I32T:
            if pos + 4 > end:
                break
            type_code = _I32.unpack_from(b, pos)[0]
            pos += 4
        else:
            # Unknown or wrong-typed field: skip it where it stands (gopkg's FastRead skips it
            # too, from the wrong offset: docs/protocol.md §8).
            r = _skip(b, pos, end, ft, _MAX_DEPTH - 1, 0)
            if r < 0:
                break
            pos = r
    raise ProtocolError(
        "truncated TApplicationException struct in a %d-byte message (first bytes %s)"
        % (end, _hex(b, 0, end))
    )


def encode_application_exception(type_code: int, text: str) -> bytes:
    """The TApplicationException struct: field 1 message, field 2 type, STOP (gopkg order)."""
    _check_i32(type_code, "type_code")
    data = _encode_str(text, "text")
    return b"".join(
        (b"\x0b\x00\x01", _I32.pack(len(data)), data, b"\x08\x00\x02", _I32.pack(type_code), b"\x00")
    )


def _check_i32(value: object, what: str) -> int:
    if not isinstance(value, int):
        raise TypeError("%s must be an int, not %s" % (what, type(value).__name__))
    if not _INT32_MIN <= value <= MAX_I32:
        raise ValueError("%s must fit in a signed 32-bit integer, got %d" % (what, value))
    return value


# --------------------------------------------------------------------------- encoding


def _put_string(out: List[bytes], data: bytes, what: str) -> None:
    if len(data) > _MAX_HEADER_STRING:
        raise ValueError(
            "TTHeader string too long: %s is %d bytes (max %d)"
            % (what, len(data), _MAX_HEADER_STRING)
        )
    out.append(_U16.pack(len(data)))
    out.append(data)


def _header_block(
    str_headers: Optional[Dict[str, str]],
    int_headers: Optional[Dict[int, str]],
    acl_token: Optional[str],
    prefix: bool = True,
) -> bytes:
    """PROTOCOL ID .. padding of a TTHeader, in Kitex's block order (docs/protocol.md §3, §4).
    With ``prefix`` False: only the info blocks and their padding (a call's own headers, which
    follow the encoder's block: padding may stand anywhere and blocks may repeat, §3.2)."""
    out: List[bytes] = [b"\x00\x00" if prefix else b""]  # protocol 0 (binary), 0 transforms
    if acl_token is not None:
        token = _encode_str(acl_token, "acl_token")
        if token:
            out.append(b"\x11")
            _put_string(out, token, "acl_token")
    if str_headers:
        if len(str_headers) > _MAX_U16:
            raise ValueError("too many str_headers: %d (max %d)" % (len(str_headers), _MAX_U16))
        out.append(b"\x01")
        out.append(_U16.pack(len(str_headers)))
        for key, value in str_headers.items():
            kb = _encode_str(key, "str_headers key")
            _put_string(out, kb, "str_headers key")
            _put_string(out, _encode_str(value, "str_headers value"), "str_headers value")
    if int_headers:
        if len(int_headers) > _MAX_U16:
            raise ValueError("too many int_headers: %d (max %d)" % (len(int_headers), _MAX_U16))
        out.append(b"\x10")
        out.append(_U16.pack(len(int_headers)))
        for ikey, value in int_headers.items():
            if not isinstance(ikey, int):
                raise TypeError("int_headers key must be an int, not %s" % type(ikey).__name__)
            if ikey < 0 or ikey > _MAX_U16:
                raise ValueError("int_headers key %d is not in 0..%d" % (ikey, _MAX_U16))
            out.append(_U16.pack(ikey))
            _put_string(out, _encode_str(value, "int_headers value"), "int_headers value")
    block = b"".join(out)
    pad = (4 - len(block) % 4) % 4
    if len(block) + pad > _MAX_HEADER_BLOCK:
        raise ValueError(
            "TTHeader header block of %d bytes exceeds the %d-byte limit"
            % (len(block) + pad, _MAX_HEADER_BLOCK)
        )
    return block + b"\x00" * pad


def _check_no_headers(transport: str, str_headers: object, int_headers: object, acl_token: object) -> None:
    if str_headers or int_headers or acl_token:
        raise ValueError(
            "str_headers, int_headers and acl_token need a ttheader transport, not %r" % transport
        )


def _check_max_frame_size(value: object) -> int:
    """A RequestEncoder limit: None (0 internally: only the 32-bit field bounds it) or a positive int."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("max_frame_size must be a positive int or None, got %r" % (value,))
    return value


def _request_too_large(size: int, limit: int) -> FrameTooLargeError:
    # The peer would refuse it (or reset mid-request): refuse before any byte is written.
    return FrameTooLargeError(
        "request frame of %d bytes exceeds max_frame_size %d; nothing was sent (raise "
        "max_frame_size, metadata maxFrameSize, if the server accepts larger frames)"
        % (size, limit)
    )


def _frame_too_large(size: int) -> ValueError:
    return ValueError(
        "frame of %d bytes does not fit a 32-bit length field (max %d)" % (size, _MAX_FRAME_FIELD)
    )


def encode_frame(
    transport: str,
    message: Union[BytesLike, Sequence[BytesLike]],
    *,
    seq_id: int,
    str_headers: Optional[Dict[str, str]] = None,
    int_headers: Optional[Dict[int, str]] = None,
    acl_token: Optional[str] = None,
) -> List[BytesLike]:
    """``[prefix, *message_parts]`` for ``writev`` (no prefix for buffered); nothing is copied."""
    code = _transport_code(transport, False)
    _check_seq_id(seq_id)
    if isinstance(message, (list, tuple)):
        parts = list(message)
    else:
        parts = [message]
    size = 0
    for part in parts:
        size += _nbytes(part)
    if size == 0:
        raise ValueError("message is empty: nothing to frame")
    if code == _T_BUFFERED or code == _T_FRAMED:
        _check_no_headers(transport, str_headers, int_headers, acl_token)
        if code == _T_BUFFERED:
            return parts
        if size > _MAX_FRAME_FIELD:
            raise _frame_too_large(size)
        return [_U32.pack(size)] + parts
    block = _header_block(str_headers, int_headers, acl_token)
    inner = 4 if code == _T_TTHEADER_FRAMED else 0
    length = 10 + len(block) + inner + size
    if length > _MAX_FRAME_FIELD:
        raise _frame_too_large(length)
    prefix = _TT_FIXED.pack(length, _TT_MAGIC, 0, seq_id, len(block) // 4) + block
    if inner:
        prefix += _U32.pack(size)
    return [prefix] + parts


class RequestEncoder:
    """The client's hot path: framing + TTHeader precomputed once, one ``head`` per call."""

    __slots__ = ("_code", "_transport", "_name", "_block", "_validate", "_max")

    def __init__(
        self,
        transport: str,
        *,
        name: Optional[str] = None,
        str_headers: Optional[Dict[str, str]] = None,
        int_headers: Optional[Dict[int, str]] = None,
        acl_token: Optional[str] = None,
        validate: bool = True,
        max_frame_size: Optional[int] = None,
    ) -> None:
        self._code = _transport_code(transport, False)
        self._max = _check_max_frame_size(max_frame_size)
        self._transport = transport
        self._name = None if name is None else _encode_name(name)
        if self._code == _T_FRAMED or self._code == _T_BUFFERED:
            _check_no_headers(transport, str_headers, int_headers, acl_token)
            self._block = b""
        else:
            self._block = _header_block(str_headers, int_headers, acl_token)
        self._validate = bool(validate)

    @property
    def transport(self) -> str:
        return self._transport

    def encode(
        self,
        message: BytesLike,
        seq_id: int,
        str_headers: Optional[Dict[str, str]] = None,
        int_headers: Optional[Dict[int, str]] = None,
    ) -> List[BytesLike]:
        """``[head, memoryview(args body)]`` for one CALL message (``[head]`` for an empty body).
        ``str_headers``/``int_headers`` are this call's own TTHeader headers, sent after the
        encoder's own in a second block: Kitex reads repeated blocks into one map, later keys
        winning (docs/protocol.md §3.2). Framed and Buffered carry none."""
        _check_seq_id(seq_id)
        extra = b""
        if str_headers or int_headers:
            if self._code == _T_FRAMED or self._code == _T_BUFFERED:
                _check_no_headers(self._transport, str_headers, int_headers, None)
            extra = _header_block(str_headers, int_headers, None, False)
            if len(self._block) + len(extra) > _MAX_HEADER_BLOCK:
                raise ValueError(
                    "TTHeader header block of %d bytes exceeds the %d-byte limit"
                    % (len(self._block) + len(extra), _MAX_HEADER_BLOCK)
                )
        b = _as_bytes_view(message)
        end = len(b)
        hend = _header_end(b, 0, end, -1)
        mtype = b[3]
        if mtype != CALL:
            raise ProtocolError(
                "RequestEncoder needs a CALL message, got type %d (%s)"
                % (mtype, _TYPE_NAMES[mtype])
            )
        if self._validate:
            r = _skip(b, hend, end, _STRUCT, _MAX_DEPTH, hend)
            if r < 0:
                raise ProtocolError(
                    "the args struct is truncated: %d body bytes end before the struct does"
                    % (end - hend)
                )
            if r != end:
                raise ProtocolError(
                    "%d trailing bytes after the args struct (a message carries exactly one "
                    "struct)" % (end - r)
                )
        name = self._name
        if name is None:
            mhead = bytes(b[0 : hend - 4]) + _I32.pack(seq_id)
        else:
            mhead = _MSG_BEGIN.pack(_VERSION_1 | CALL, len(name)) + name + _I32.pack(seq_id)
        msg_len = len(mhead) + end - hend
        code = self._code
        if code == _T_BUFFERED:
            if self._max and msg_len > self._max:
                raise _request_too_large(msg_len, self._max)
            head = mhead
        elif code == _T_FRAMED:
            if msg_len > _MAX_FRAME_FIELD:
                raise _frame_too_large(msg_len)
            if self._max and msg_len > self._max:
                raise _request_too_large(msg_len, self._max)
            head = _U32.pack(msg_len) + mhead
        else:
            block = self._block + extra
            inner = 4 if code == _T_TTHEADER_FRAMED else 0
            length = 10 + len(block) + inner + msg_len
            if length > _MAX_FRAME_FIELD:
                raise _frame_too_large(length)
            if self._max and length > self._max:
                raise _request_too_large(length, self._max)
            head = _TT_FIXED.pack(length, _TT_MAGIC, 0, seq_id, len(block) // 4) + block
            if inner:
                head += _U32.pack(msg_len)
            head += mhead
        if hend == end:
            return [head]
        return [head, memoryview(message)[hend:] if b is message else b[hend:]]  # type: ignore[index]

    def is_plain_reply(self, frame: Any, seq_id: int) -> bool:
        """True when ``frame`` is the plain answer to the request this encoder sent with
        ``seq_id``: a strict-binary REPLY with that seq id and this encoder's method name, and no
        TTHeader string headers. Anything else (malformed replies included) gives False and never
        raises: the caller's full check then names what is wrong."""
        name = self._name
        if type(frame) is not Frame or name is None or type(seq_id) is not int:
            return False
        if frame._str_headers:
            return False
        payload = frame._payload
        nlen = len(name)
        if len(payload) < 12 + nlen or bytes(payload[0:4]) != b"\x80\x01\x00\x02":
            return False
        if _I32.unpack_from(payload, 4)[0] != nlen or bytes(payload[8 : 8 + nlen]) != name:
            return False
        return bool(_I32.unpack_from(payload, 8 + nlen)[0] == seq_id)


# --------------------------------------------------------------------------- decoding


class _Lender:
    """A thread's receive buffer, shared by its decoders that hold no byte (_codec.pyx: _shared).

    A pooled connection sits idle far longer than it reads, and between reads its decoder holds no
    byte: get_buffer(-1) lends it this buffer and buffer_updated decodes straight out of it, so an
    idle connection costs no buffer of its own. Only the bytes of an incomplete frame move to a
    buffer of the decoder's own, which it then keeps as before (no allocation per call). A
    transport holds the view from get_buffer until buffer_updated returns, and no other read runs
    on its thread meanwhile. One per thread, not one per process as in the compiled core: without
    the GIL held across a whole get_buffer, two threads could take one buffer at once.
    """

    __slots__ = ("buf", "owner")

    def __init__(self) -> None:
        self.buf = bytearray(_SHARED_CAPACITY)
        self.owner: Optional[FrameDecoder] = None  # lent to, until its buffer_updated

    def take_from(self, owner: "FrameDecoder") -> None:
        """``owner`` never handed the buffer back: its read found nothing, or its caller dropped
        the view before buffer_updated (then what it wrote moves to a buffer of its own), or a
        view of it is still alive (a view kept in a traceback, a slice; or the caller's): then
        its holders keep it, and a fresh one is shared from now on."""
        buf = self.buf
        try:
            buf.append(0)  # a bytearray with a live view refuses to resize
        except BufferError:
            self.buf = bytearray(_SHARED_CAPACITY)
        else:
            del buf[-1]
            if owner._lent_buf is buf:
                owner._evict()
        self.owner = None


# A decoder's _buf while it has no buffer of its own (never written to: it has no room).
_NO_BUFFER = bytearray()


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.lender = _Lender()


_per_thread = _PerThread()


class FrameDecoder:
    """Incremental decoder: bytes in (any chunking), :class:`Frame` objects out."""

    __slots__ = (
        "_code",
        "_max",
        "_buf",
        "_start",
        "_end",
        "_error",
        "_need",
        "_lent",
        "_lender",
        "_lent_buf",
    )

    def __init__(self, transport: str, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._code = _transport_code(transport, True)
        if not isinstance(max_frame_size, int) or max_frame_size <= 0:
            raise ValueError("max_frame_size must be a positive int, got %r" % (max_frame_size,))
        self._max = max_frame_size
        # _NO_BUFFER while nothing is buffered and no buffer of its own was needed yet (a
        # _Lender's serves); _start == _end == 0 then.
        self._buf = _NO_BUFFER
        self._lender: Optional[_Lender] = None  # lent its buffer by the last get_buffer
        self._lent_buf: Optional[bytearray] = None  # the buffer it lent, until buffer_updated
        self._start = 0  # first unconsumed byte
        self._end = 0  # end of received bytes
        self._error: Optional[Tuple[type, str]] = None
        self._need = 0  # do not rescan before this many bytes are buffered (any framing)
        self._lent = 0  # size of the last get_buffer view

    @property
    def pending(self) -> int:
        """Buffered bytes that are not yet a whole frame."""
        return self._end - self._start

    def _check_error(self) -> None:
        if self._error is not None:
            cls, text = self._error
            raise cls("FrameDecoder stopped after an earlier error: %s" % text)

    def _reserve(self, want: int) -> None:
        """Make room for ``want`` more bytes after ``_end``.

        A new bytearray is allocated rather than resizing in place: a memoryview handed out by
        ``get_buffer`` may still be alive, and a bytearray with exports cannot be resized.
        """
        buf = self._buf
        cap = len(buf)
        end = self._end
        if cap - end >= want:
            return
        start = self._start
        pending = end - start
        if pending + want <= cap and start > 0:
            buf[0:pending] = buf[start:end]  # same-size slice assignment: a memmove, no resize
        else:
            new_cap = cap * 2 if cap else _INITIAL_CAPACITY
            while new_cap < pending + want:
                new_cap *= 2
            new = bytearray(new_cap)
            if pending:
                new[0:pending] = buf[start:end]
            self._buf = new
        self._start = 0
        self._end = pending
        if self._need:
            self._need -= start

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable view of free space to receive into (``asyncio.BufferedProtocol``): while the
        decoder holds no byte, of the receive buffer its thread's decoders share (hold the view
        until ``buffer_updated`` returns, as transports do); else of the decoder's own buffer."""
        self._check_error()
        want = sizehint if sizehint > _MIN_READ else _MIN_READ
        if self._buf is _NO_BUFFER and want <= _SHARED_CAPACITY:
            lender = _per_thread.lender
            owner = lender.owner
            if owner is not None and owner is not self:
                lender.take_from(owner)
            lender.owner = self
            self._lender = lender
            buf = self._lent_buf = lender.buf
            self._lent = _SHARED_CAPACITY
            return memoryview(buf)
        self._reserve(want)
        self._lent = len(self._buf) - self._end
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> List["Frame"]:
        """``nbytes`` were written into the last :meth:`get_buffer` view: decode what is complete."""
        self._check_error()
        if not isinstance(nbytes, int) or nbytes < 0 or nbytes > self._lent:
            raise ValueError(
                "nbytes %r out of range 0..%d (the size of the last get_buffer)"
                % (nbytes, self._lent)
            )
        self._lent = 0
        buf = self._lent_buf
        if buf is not None:  # received into the shared buffer lent: decoded where it stands
            lender = self._lender
            if lender is not None and lender.owner is self:
                lender.owner = None
            self._lender = self._lent_buf = None
            self._buf = buf
            self._end = nbytes
            try:
                frames = self._decode()
            except BaseException:
                self._keep_pending(buf)
                raise
            if self._start == self._end:  # (every frame whole: _decode has reset the offsets)
                self._buf = _NO_BUFFER
            else:
                self._keep_pending(buf)
            return frames
        self._end += nbytes
        return self._decode()

    def _keep_pending(self, buf: bytearray) -> None:
        """Leave the shared buffer ``buf``: the bytes of an incomplete frame move to a buffer of
        this decoder's own, as large as its own would have grown to for the next read."""
        start = self._start
        end = self._end
        self._buf = _NO_BUFFER
        self._start = self._end = 0
        if end > start:
            self._reserve(end - start + _MIN_READ)
            self._buf[0 : end - start] = buf[start:end]
            self._end = end - start
            if self._need:
                self._need -= start

    def _evict(self) -> None:
        """The shared buffer goes to another decoder before this one's buffer_updated: the bytes
        lent (whatever was written into them) move to a buffer of this decoder's own."""
        buf = self._lent_buf
        assert buf is not None
        self._lender = self._lent_buf = None
        self._buf = buf[: self._lent]

    def feed(self, data: BytesLike) -> List["Frame"]:
        """Copy ``data`` into the buffer and decode what is complete."""
        self._check_error()
        lender = self._lender
        if lender is not None:  # what get_buffer lent is void now, as buffer_updated says
            if lender.owner is self:
                lender.owner = None
            self._lender = self._lent_buf = None
        n = _nbytes(data)
        self._reserve(n)
        end = self._end
        if n:
            self._buf[end : end + n] = data
        self._end = end + n
        self._lent = 0
        return self._decode()

    def _decode(self) -> List["Frame"]:
        frames = []
        try:
            while self._end > self._start:
                if self._need > self._end:
                    break
                frame = self._next()
                if frame is None:
                    break
                frames.append(frame)
                self._need = 0
        except ProtocolError as exc:
            self._error = (type(exc), str(exc))
            raise
        if self._start == self._end:
            self._start = self._end = 0
            self._need = 0
            if len(self._buf) > _KEEP_CAPACITY:
                # One large reply must not pin megabytes to an idle pooled connection: the
                # shared buffer serves the next read.
                self._buf = _NO_BUFFER
        return frames

    def _next(self) -> Optional[Frame]:
        buf = self._buf
        start = self._start
        end = self._end
        code = self._code
        if code == _T_AUTO:
            # Per message, in Kitex's order: TTHeader, buffered, framed (docs/protocol.md §9.1).
            if end - start < 8:
                return None
            if buf[start + 4] == 0x10 and buf[start + 5] == 0x00:
                return self._ttheader(buf, start, end)
            if buf[start] == 0x80 and buf[start + 1] == 0x01:
                return self._buffered(buf, start, end)
            if buf[start + 4] == 0x80 and buf[start + 5] == 0x01:
                return self._framed(buf, start, end)
            raise ProtocolError(
                "unrecognised framing (first bytes %s): expected TTHeader (10 00 at bytes 4-5), "
                "buffered (80 01 ...) or framed (80 01 at bytes 4-5)%s"
                % (_hex(buf, start, end), _looks_like(buf, start, end))
            )
        if code == _T_FRAMED:
            return self._framed(buf, start, end)
        if code == _T_BUFFERED:
            return self._buffered(buf, start, end)
        return self._ttheader(buf, start, end)

    def _framed(self, buf: bytearray, start: int, end: int) -> Optional[Frame]:
        if end - start < 4:
            return None
        length = _I32.unpack_from(buf, start)[0]
        if length <= 0:
            raise ProtocolError(
                "framed length %d is not positive (first bytes %s)%s"
                % (length, _hex(buf, start, end), _looks_like(buf, start, end))
            )
        if length > self._max:
            raise FrameTooLargeError(
                "framed length %d exceeds max_frame_size %d (first bytes %s)%s"
                % (length, self._max, _hex(buf, start, end), _looks_like(buf, start, end))
            )
        stop = start + 4 + length
        if stop > end:
            self._need = stop
            return None
        payload = bytes(memoryview(buf)[start + 4 : stop])
        self._start = stop
        return Frame(payload, "framed", None, 0, _EMPTY_HEADERS, _EMPTY_HEADERS, None)

    def _buffered(self, buf: bytearray, start: int, end: int) -> Optional[Frame]:
        hend = _header_end(buf, start, end, self._max)
        if hend >= 0:
            stop = _skip(buf, hend, end, _STRUCT, _MAX_DEPTH, start)
        else:
            stop = hend
        if stop < 0:
            if end - start > self._max:
                raise FrameTooLargeError(
                    "buffered message exceeds max_frame_size %d: %d bytes pending without a "
                    "complete message" % (self._max, end - start)
                )
            if -stop - start > self._max:
                # A length inside the message (a string, a fixed-size container) declares more
                # than the maximum: refuse now, not after buffering up to what it declares.
                raise FrameTooLargeError(
                    "buffered message exceeds max_frame_size %d: its lengths declare at least %d "
                    "bytes (first bytes %s)" % (self._max, -stop - start, _hex(buf, start, end))
                )
            self._need = -stop
            return None
        if stop - start > self._max:
            raise FrameTooLargeError(
                "buffered message exceeds max_frame_size %d: %d bytes pending without a "
                "complete message" % (self._max, stop - start)
            )
        payload = bytes(memoryview(buf)[start:stop])
        self._start = stop
        return Frame(payload, "buffered", None, 0, _EMPTY_HEADERS, _EMPTY_HEADERS, None)

    def _ttheader(self, buf: bytearray, start: int, end: int) -> Optional[Frame]:
        # Fixed part (docs/protocol.md §2): LENGTH u32 | 10 00 | FLAGS | SEQ i32 | HEADER SIZE u16.
        if end - start < 14:
            return None
        length, magic, flags, seq_id, hs = _TT_FIXED.unpack_from(buf, start)
        if magic != _TT_MAGIC:
            raise ProtocolError(
                "not a TTHeader frame (first bytes %s): expected 10 00 at bytes 4-5%s"
                % (_hex(buf, start, end), _looks_like(buf, start, end))
            )
        if length > self._max:
            raise FrameTooLargeError(
                "TTHeader LENGTH %d exceeds max_frame_size %d" % (length, self._max)
            )
        if hs == 0:
            raise ProtocolError(
                "TTHeader HEADER SIZE is 0 words (first bytes %s): at least 1 is required"
                % _hex(buf, start, end)
            )
        hbytes = hs * 4
        if 14 + hbytes >= 4 + length:
            raise ProtocolError(
                "TTHeader HEADER SIZE %d words (%d bytes) leaves no payload in LENGTH %d"
                % (hs, hbytes, length)
            )
        stop = start + 4 + length
        if stop > end:
            self._need = stop
            return None
        pos = start + 14
        hend = pos + hbytes
        proto = buf[pos]
        if proto != 0:
            # gopkg decode.go checkProtocolID also allows 3/4/0x10/0x11, none of them plain binary.
            raise ProtocolError(
                "unsupported TTHeader protocol id %d: kitex_fast speaks Thrift binary "
                "(protocol id 0) only" % proto
            )
        ntrans = buf[pos + 1]
        pos += 2
        if pos + ntrans > hend:
            raise ProtocolError(
                "TTHeader declares %d transforms but the header block ends first" % ntrans
            )
        pos += ntrans  # transform ids are read and ignored, as gopkg does
        # Created on the first header: most frames carry none of a kind.
        str_headers: Optional[Dict[str, str]] = None
        int_headers: Optional[Dict[int, str]] = None
        acl_token = None
        while pos < hend:
            info = buf[pos]
            at = pos - start
            pos += 1
            if info == _INFO_PADDING:
                continue
            if info == _INFO_KV:
                if pos + 2 > hend:
                    raise _truncated_block("string KV", at)
                count = (buf[pos] << 8) | buf[pos + 1]
                pos += 2
                for _ in range(count):
                    if pos + 2 > hend:
                        raise _truncated_block("string KV", at)
                    n = (buf[pos] << 8) | buf[pos + 1]
                    kstart = pos + 2
                    pos = kstart + n
                    if pos + 2 > hend:
                        raise _truncated_block("string KV", at)
                    n = (buf[pos] << 8) | buf[pos + 1]
                    vstart = pos + 2
                    if vstart + n > hend:
                        raise _truncated_block("string KV", at)
                    key = bytes(buf[kstart:pos]).decode("utf-8", "surrogateescape")
                    pos = vstart + n
                    if str_headers is None:
                        str_headers = {}
                    str_headers[key] = bytes(buf[vstart:pos]).decode("utf-8", "surrogateescape")
            elif info == _INFO_INT_KV:
                if pos + 2 > hend:
                    raise _truncated_block("int KV", at)
                count = (buf[pos] << 8) | buf[pos + 1]
                pos += 2
                for _ in range(count):
                    if pos + 4 > hend:
                        raise _truncated_block("int KV", at)
                    ikey = (buf[pos] << 8) | buf[pos + 1]
                    n = (buf[pos + 2] << 8) | buf[pos + 3]
                    vstart = pos + 4
                    if vstart + n > hend:
                        raise _truncated_block("int KV", at)
                    pos = vstart + n
                    if int_headers is None:
                        int_headers = {}
                    int_headers[ikey] = bytes(buf[vstart:pos]).decode("utf-8", "surrogateescape")
            elif info == _INFO_ACL:
                if pos + 2 > hend:
                    raise _truncated_block("ACL token", at)
                n = (buf[pos] << 8) | buf[pos + 1]
                vstart = pos + 2
                if vstart + n > hend:
                    raise _truncated_block("ACL token", at)
                pos = vstart + n
                acl_token = bytes(buf[vstart:pos]).decode("utf-8", "surrogateescape")
            else:
                raise ProtocolError(
                    "unknown TTHeader info id 0x%02x at byte %d of the frame" % (info, at)
                )
        pstart = hend
        plen = stop - pstart
        transport = "ttheader"
        # An inner Framed payload (TTHeaderFramed, docs/protocol.md §1.3, §9.1): not 80 01 at 0,
        # 80 01 at bytes 4-5, and a length that matches what is left.
        if (
            plen >= 8
            and not (buf[pstart] == 0x80 and buf[pstart + 1] == 0x01)
            and buf[pstart + 4] == 0x80
            and buf[pstart + 5] == 0x01
            and _U32.unpack_from(buf, pstart)[0] == plen - 4
        ):
            pstart += 4
            transport = "ttheader-framed"
        payload = bytes(memoryview(buf)[pstart:stop])
        self._start = stop
        return Frame(
            payload,
            transport,
            seq_id,
            flags,
            _EMPTY_HEADERS if str_headers is None else str_headers,
            _EMPTY_HEADERS if int_headers is None else int_headers,
            acl_token,
        )


def _truncated_block(kind: str, at: int) -> ProtocolError:
    return ProtocolError("truncated TTHeader %s block at byte %d of the frame" % (kind, at))
