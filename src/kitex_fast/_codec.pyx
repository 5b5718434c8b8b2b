# Compiled core of the Kitex wire codec. Its twin is _codec_py.py: same names, results, error texts.
#
# Every read goes through a (pointer, end) pair with an explicit length check first, in the style of
# py-pgproto's FRBuffer: no boundscheck/wraparound directives are changed, and no length read from
# the wire is trusted before it is compared with what is buffered. The Kitex wire facts and their
# upstream sources are in docs/protocol.md (sections cited inline), the API in docs/internals.md.
# Only kitex_fast.codec imports this.

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_FillInfo, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.unicode cimport PyUnicode_DecodeUTF8

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL
    # get_buffer's cached view: a memoryview released by its holder must never be handed out
    # again. CPython sets this flag in memory_release(); it is in the non-limited headers since 3.3.
    ctypedef struct _PyManagedBufferObject:
        Py_ssize_t exports  # memoryviews made from it (the shared receive buffer's slices too)
    ctypedef struct PyMemoryViewObject:
        int flags
        _PyManagedBufferObject* mbuf
    int _Py_MEMORYVIEW_RELEASED
    ctypedef struct PyByteArrayObject:
        Py_ssize_t ob_exports  # buffer exports: one per memoryview base (managed buffer)
from cpython.object cimport PyTypeObject
from cpython.pycapsule cimport PyCapsule_New

from ._codec_api cimport CODEC_API_NAME, CodecAPI
from cpython.ref cimport PyObject
cdef extern from "Python.h":
    Py_ssize_t Py_REFCNT_PTR "Py_REFCNT" (PyObject* o)
from cpython.long cimport PyLong_CheckExact
from libc.stdint cimport int32_t, int64_t, uint32_t
from libc.string cimport memcmp, memcpy, memmove, memset
from types import MappingProxyType

# Package modules come through importlib, not `from .x import`: Cython >= 3.2 resolves a relative
# import to the build-time name (kitex_fast.x) and takes it from sys.modules when present
# (cython/cython#7035), which in a vendored copy is another installed kitex_fast's module.
from importlib import import_module as _import_module
_errors = _import_module(".errors", __package__)
FrameTooLargeError = _errors.FrameTooLargeError
ProtocolError = _errors.ProtocolError

# The twin's __all__ is the source of this list; it is repeated here rather than imported so that
# this module needs no other module of the package than errors (tests/unit/test_codec_exports.py
# holds the two equal, and stubtest holds _codec.pyi to this one).
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
# shared read-only mapping instead of two fresh dicts per frame. The twin uses the same type.
cdef object EMPTY_HEADERS = MappingProxyType({})

# Transport codes, the same numbering as the twin.
cdef enum:
    T_FRAMED = 0
    T_BUFFERED = 1
    T_TTHEADER = 2
    T_TTHEADER_FRAMED = 3
    T_AUTO = 4

cdef enum:
    MAX_U16 = 0xFFFF  # TTHeader counts, int keys and string lengths are u16 (docs/protocol.md §3.2)
    MAX_HEADER_STRING = MAX_U16  # gopkg protocol/ttheader/utils.go: maxHeaderStringSize
    MAX_HEADER_BLOCK = 262140  # gopkg >= v0.1.8 MaxHeaderSize = 4*MaxUint16 (docs/protocol.md §4)
    MAX_DEPTH = 64  # gopkg protocol/thrift: defaultRecursionDepth (docs/protocol.md §10)
    # One page per connection to start: a pool keeps as many idle connections as calls were in
    # flight (64 callers: 64 decoders), and most replies fit; a larger one grows the buffer.
    INITIAL_CAPACITY = 4096
    KEEP_CAPACITY = 262144  # a drained buffer larger than this is let go (the shared one serves)
    MIN_READ = 4096
    SHARED_CAPACITY = 4096  # the shared receive buffer: as much as a fresh decoder's own would take

# Thrift binary type ids (gopkg protocol/thrift/thrift.go).
cdef enum:
    TT_STOP = 0
    TT_BOOL = 2
    TT_BYTE = 3
    TT_DOUBLE = 4
    TT_I16 = 6
    TT_I32 = 8
    TT_I64 = 10
    TT_STRING = 11
    TT_STRUCT = 12
    TT_MAP = 13
    TT_SET = 14
    TT_LIST = 15

cdef int64_t INT32_MAX_ = MAX_I32
cdef int64_t INT32_MIN_ = -INT32_MAX_ - 1
cdef int64_t MAX_FRAME_FIELD = INT32_MAX_  # a 32-bit length that every peer reads as positive
# Sentinel for "a Python exception is set" from functions whose normal results can be negative.
cdef int64_t ERR = -4611686018427387904
# Strict-binary version word: 80 01 00 TT, the type in the low byte (docs/protocol.md §6.1).
cdef uint32_t VERSION_1 = 0x80010000

cdef unsigned char _EMPTY[1]  # what an empty buffer's NULL pointer is replaced with

cdef str S_FRAMED = "framed"
cdef str S_BUFFERED = "buffered"
cdef str S_TTHEADER = "ttheader"
cdef str S_TTHEADER_FRAMED = "ttheader-framed"

# Static 4-byte header block of a TTHeader with no headers: protocol 0, 0 transforms, 2 pad bytes.
cdef bytes EMPTY_BLOCK = b"\x00\x00\x00\x00"


# --------------------------------------------------------------------------- low-level helpers


cdef inline int _fixed_size(unsigned int t) noexcept:
    # The sizes gopkg skips in bulk (protocol/thrift/binary.go: typeToSize).
    if t == TT_BOOL or t == TT_BYTE:
        return 1
    if t == TT_I16:
        return 2
    if t == TT_I32:
        return 4
    if t == TT_DOUBLE or t == TT_I64:
        return 8
    return 0


cdef inline uint32_t _u32(const unsigned char* p) noexcept:
    return ((<uint32_t>p[0]) << 24) | ((<uint32_t>p[1]) << 16) | ((<uint32_t>p[2]) << 8) | p[3]


cdef inline int32_t _i32(const unsigned char* p) noexcept:
    return <int32_t>_u32(p)


cdef inline unsigned int _u16(const unsigned char* p) noexcept:
    return ((<unsigned int>p[0]) << 8) | p[1]


cdef inline void _put32(unsigned char* p, uint32_t v) noexcept:
    p[0] = <unsigned char>(v >> 24)
    p[1] = <unsigned char>(v >> 16)
    p[2] = <unsigned char>(v >> 8)
    p[3] = <unsigned char>v


cdef inline void _put16(unsigned char* p, unsigned int v) noexcept:
    p[0] = <unsigned char>(v >> 8)
    p[1] = <unsigned char>v


cdef str _hex(const unsigned char* p, int64_t n):
    """The first (up to 8) bytes in hex, for error texts (same format as the twin)."""
    cdef int64_t k = n if n < 8 else 8
    cdef int64_t i
    if k <= 0:
        return "none"
    text = " ".join(["%02x" % p[i] for i in range(k)])
    if n > 8:
        text += " ..."
    return text


# First bytes of what a non-Kitex server sends back: an HTTP/1 status line or request, the
# HTTP/2 preface, a TLS record (content type 20-23, version major 3).
cdef tuple _HTTP_STARTS = (b"HTTP", b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI",
                           b"PATC", b"CONN", b"TRAC", b"PRI ")


cdef str _looks_like(const unsigned char* p, int64_t n):
    """A hint for error texts when the bytes are plainly another protocol (same as the twin)."""
    if n >= 4 and PyBytes_FromStringAndSize(<const char*>p, 4) in _HTTP_STARTS:
        return "; this looks like HTTP: is the port an HTTP server rather than Kitex?"
    if n >= 2 and 20 <= p[0] <= 23 and p[1] == 3:
        return "; this looks like TLS: does the server expect TLS?"
    return ""


cdef inline const unsigned char* _acquire(object obj, Py_buffer* view, Py_ssize_t* size) except NULL:
    """Pointer and size of a bytes-like; ``view.len == -1`` marks "nothing to release"."""
    cdef const unsigned char* p
    if PyBytes_CheckExact(obj):
        # bytes: no buffer export needed, the object keeps the memory alive.
        view.len = -1
        size[0] = PyBytes_GET_SIZE(obj)
        return <const unsigned char*>PyBytes_AS_STRING(obj)
    PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    size[0] = view.len
    p = <const unsigned char*>view.buf
    if p == NULL:
        p = _EMPTY
    return p


cdef inline void _release(Py_buffer* view) noexcept:
    if view.len != -1:  # a real export always has len >= 0
        PyBuffer_Release(view)


@cython.final
@cython.freelist(8)
cdef class _Tail:
    """Exports ``obj[offset:]`` through the buffer protocol, holding an export of ``obj``.

    memoryview(_Tail) is one object cheaper than memoryview(obj)[offset:] and skips slice parsing;
    the held export keeps ``obj``'s memory alive and unresizable for as long as the view lives.
    """

    cdef Py_buffer _view
    cdef Py_ssize_t _offset

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        PyBuffer_FillInfo(buffer, self, <char*>self._view.buf + self._offset,
                          self._view.len - self._offset, self._view.readonly, flags)

    def __releasebuffer__(self, Py_buffer* buffer):
        pass

    def __dealloc__(self):
        # Safe on a zeroed view too (GetBuffer failed): PyBuffer_Release ignores a NULL obj.
        PyBuffer_Release(&self._view)


cdef extern from "Python.h":
    Py_buffer* PyMemoryView_GET_BUFFER(object mv)
from libc.string cimport strcmp


cdef object _body_view(object buf, Py_ssize_t offset):
    """A memoryview of ``buf[offset:]`` as unsigned bytes; the body is never copied."""
    cdef Py_buffer* b
    cdef _Tail tail
    mv = PyMemoryView_FromObject(buf)
    b = PyMemoryView_GET_BUFFER(mv)
    if (b.ndim == 1 and b.itemsize == 1 and b.shape != NULL and b.strides != NULL
            and b.strides[0] == 1 and b.suboffsets == NULL
            and (b.format == NULL or strcmp(b.format, "B") == 0)):
        # Flat unsigned bytes (bytes, bytearray, the usual memoryview): narrow this brand-new,
        # unshared view in place, as memoryview slicing does to its copy (init_slice), instead
        # of allocating a second memoryview. The managed buffer still holds the whole export.
        if offset > b.len:
            offset = b.len
        b.buf = <char*>b.buf + offset
        b.len -= offset
        b.shape[0] -= offset
        return mv
    mv = None
    tail = _Tail.__new__(_Tail)
    PyObject_GetBuffer(buf, &tail._view, PyBUF_SIMPLE)
    tail._offset = offset if offset <= tail._view.len else tail._view.len
    return PyMemoryView_FromObject(tail)


cdef int32_t _check_seq_id(object seq_id) except? -1:
    cdef int overflow = 0
    cdef long long v
    if not isinstance(seq_id, int):
        raise TypeError("seq_id must be an int, not %s" % type(seq_id).__name__)
    v = PyLong_AsLongLongAndOverflow(seq_id, &overflow)
    if overflow or v < INT32_MIN_ or v > INT32_MAX_:
        raise ValueError("seq_id must fit in a signed 32-bit integer, got %d" % seq_id)
    return <int32_t>v


cdef int32_t _check_i32(object value, str what) except? -1:
    cdef int overflow = 0
    cdef long long v
    if not isinstance(value, int):
        raise TypeError("%s must be an int, not %s" % (what, type(value).__name__))
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or v < INT32_MIN_ or v > INT32_MAX_:
        raise ValueError("%s must fit in a signed 32-bit integer, got %d" % (what, value))
    return <int32_t>v


cdef bytes _encode_str(object value, str what):
    if isinstance(value, str):
        return (<str>value).encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise TypeError("%s must be str or bytes, not %s" % (what, type(value).__name__))


cdef bytes _encode_name(object name):
    if isinstance(name, str):
        return (<str>name).encode("utf-8", "surrogateescape")
    if isinstance(name, (bytes, bytearray)):
        return bytes(name)
    raise TypeError("name must be str or bytes, not %s" % type(name).__name__)


cdef int _transport_code(object transport, bint allow_auto) except -1:
    if isinstance(transport, str):
        if transport == S_FRAMED:
            return T_FRAMED
        if transport == S_BUFFERED:
            return T_BUFFERED
        if transport == S_TTHEADER:
            return T_TTHEADER
        if transport == S_TTHEADER_FRAMED:
            return T_TTHEADER_FRAMED
        if allow_auto and transport == "auto":
            return T_AUTO
    raise ValueError(
        "unknown transport %r: expected one of framed, buffered, ttheader, ttheader-framed%s"
        % (transport, " or auto" if allow_auto else "")
    )


# --------------------------------------------------------------------------- value classes


@cython.freelist(8)
cdef class MessageHeader:
    """A parsed strict-binary Thrift message header."""

    cdef readonly object type
    cdef readonly object name
    cdef readonly object seq_id
    cdef readonly object body_offset

    def __init__(self, type, name, seq_id, body_offset):
        self.type = type
        self.name = name
        self.seq_id = seq_id
        self.body_offset = body_offset

    def _key(self):
        return (self.type, self.name, self.seq_id, self.body_offset)

    def __eq__(self, other):
        if isinstance(other, MessageHeader):
            return self._key() == (<MessageHeader>other)._key()
        return NotImplemented

    def __ne__(self, other):
        if isinstance(other, MessageHeader):
            return self._key() != (<MessageHeader>other)._key()
        return NotImplemented

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return "MessageHeader(type=%d, name=%r, seq_id=%d, body_offset=%d)" % self._key()


@cython.freelist(8)
cdef class Frame:
    """One decoded frame: the Thrift message and what the framing carried."""

    cdef readonly object payload
    cdef readonly object transport
    cdef readonly object seq_id
    cdef readonly object flags
    cdef readonly object str_headers
    cdef readonly object int_headers
    cdef readonly object acl_token

    def __init__(self, payload, transport, seq_id=None, flags=0, str_headers=None,
                 int_headers=None, acl_token=None):
        self.payload = payload
        self.transport = transport
        self.seq_id = seq_id
        self.flags = flags
        self.str_headers = EMPTY_HEADERS if str_headers is None else str_headers
        self.int_headers = EMPTY_HEADERS if int_headers is None else int_headers
        self.acl_token = acl_token

    def _key(self):
        return (self.payload, self.transport, self.seq_id, self.flags, self.str_headers,
                self.int_headers, self.acl_token)

    def __eq__(self, other):
        if isinstance(other, Frame):
            return self._key() == (<Frame>other)._key()
        return NotImplemented

    def __ne__(self, other):
        if isinstance(other, Frame):
            return self._key() != (<Frame>other)._key()
        return NotImplemented

    __hash__ = None  # holds dicts: not hashable, as in the twin

    def __repr__(self):
        return ("Frame(transport=%r, seq_id=%r, flags=%d, payload=<%d bytes>, str_headers=%r, "
                "int_headers=%r, acl_token=%r)") % (
                    self.transport, self.seq_id, self.flags, len(self.payload),
                    dict(self.str_headers), dict(self.int_headers), self.acl_token)




cdef inline Frame _new_frame(object payload, object transport):
    # Frame.__new__ skips __init__'s argument parsing: this is the decoder's per-frame cost.
    cdef Frame f = Frame.__new__(Frame)
    f.payload = payload
    f.transport = transport
    f.seq_id = None
    f.flags = 0
    f.str_headers = EMPTY_HEADERS
    f.int_headers = EMPTY_HEADERS
    f.acl_token = None
    return f


# --------------------------------------------------------------------------- message header


cdef int64_t _header_end(const unsigned char* p, int64_t start, int64_t end,
                         int64_t max_size) except -1:
    """End offset of the strict-binary message header at ``start`` (see the twin's docstring).

    Returns ``-need`` (need >= 4, so never -1) when ``max_size >= 0`` and more bytes are needed.
    """
    cdef int64_t n = end - start
    cdef unsigned int b0, mtype
    cdef int64_t name_len
    if n <= 0:
        if max_size < 0:
            raise ProtocolError(
                "empty Thrift message: expected a strict binary message header (80 01 00 TT)"
            )
        return -(start + 4)
    b0 = p[start]
    if b0 == 0x82:
        # Compact protocol id 0x82: Kitex refuses compact in every framing (docs/protocol.md §6.2).
        raise ProtocolError(
            "compact protocol message (first bytes %s): Kitex speaks strict binary Thrift only "
            "(80 01 00 TT)" % _hex(p + start, n)
        )
    if b0 < 0x80:
        # First i32 >= 0: old non-strict binary, name length first (docs/protocol.md §6.2).
        raise ProtocolError(
            "non-strict binary Thrift message (first i32 >= 0, first bytes %s): Kitex accepts "
            "strict binary only (80 01 00 TT)%s" % (_hex(p + start, n), _looks_like(p + start, n))
        )
    if n < 4:
        if max_size < 0:
            raise ProtocolError(
                "truncated Thrift message header: %d bytes (first bytes %s)"
                % (n, _hex(p + start, n))
            )
        return -(start + 4)
    if b0 != 0x80 or p[start + 1] != 0x01 or p[start + 2] != 0x00:
        # Byte 2 must be 0: Kitex masks the type with 0x0000FFFF (docs/protocol.md §6.2).
        raise ProtocolError(
            "bad Thrift binary version (first bytes %s): expected 80 01 00 TT%s"
            % (_hex(p + start, n), _looks_like(p + start, n))
        )
    mtype = p[start + 3]
    if mtype < 1 or mtype > 4:
        raise ProtocolError(
            "unknown Thrift message type %d (first bytes %s): expected 1 (CALL), 2 (REPLY), "
            "3 (EXCEPTION) or 4 (ONEWAY)" % (mtype, _hex(p + start, n))
        )
    if n < 8:
        if max_size < 0:
            raise ProtocolError(
                "truncated Thrift message header: %d bytes (first bytes %s)"
                % (n, _hex(p + start, n))
            )
        return -(start + 8)
    name_len = _i32(p + start + 4)
    if name_len < 0:
        raise ProtocolError(
            "negative method name length %d (first bytes %s)" % (name_len, _hex(p + start, n))
        )
    if 12 + name_len > n:
        if max_size < 0:
            raise ProtocolError(
                "method name length %d does not fit in a %d-byte message (first bytes %s)"
                % (name_len, n, _hex(p + start, n))
            )
        if 12 + name_len > max_size:
            raise FrameTooLargeError(
                "buffered message declares a %d-byte method name, over max_frame_size %d"
                % (name_len, max_size)
            )
        return -(start + 12 + name_len)
    return start + 12 + name_len


# The last method name parse_message decoded: a client sees the same few names over and over, and
# equal bytes give an equal str, so the object is reused (one global: no torn (bytes, str) pair).
cdef str _last_name = ""


def parse_message(buf):
    """parse_message(buf) -> MessageHeader

    Parse the strict-binary message header at the start of ``buf``.
    """
    global _last_name
    cdef Py_buffer view
    cdef Py_ssize_t size, nlen, clen
    cdef const unsigned char* p = _acquire(buf, &view, &size)
    cdef const char* cached
    cdef int64_t hend
    cdef MessageHeader h
    cdef str name
    try:
        hend = _header_end(p, 0, size, -1)
        nlen = hend - 12
        name = _last_name
        # ASCII names (the norm) are their own UTF-8: no encoding, no allocation here.
        cached = PyUnicode_AsUTF8AndSize(name, &clen)
        if clen != nlen or memcmp(cached, p + 8, nlen) != 0:
            try:
                name = PyUnicode_DecodeUTF8(<const char*>p + 8, nlen, NULL)
            except UnicodeDecodeError:
                raise ProtocolError(
                    "method name is not valid UTF-8 (first bytes %s)" % _hex(p, size)
                ) from None
            _last_name = name
        h = MessageHeader.__new__(MessageHeader)
        h.type = p[3]
        h.name = name
        h.seq_id = _i32(p + hend - 4)
        h.body_offset = hend
        return h
    finally:
        _release(&view)


def rewrite_message(buf, *, seq_id, name=None):
    """rewrite_message(buf, *, seq_id, name=None) -> list

    ``[new header bytes, memoryview(body)]``; the body is a view of ``buf``, never a copy.
    """
    cdef int32_t seq = _check_seq_id(seq_id)
    cdef Py_buffer view
    cdef Py_ssize_t size
    cdef const unsigned char* p
    cdef int64_t hend
    cdef bytes head, nb
    cdef unsigned char* w
    cdef Py_ssize_t nlen
    nb = None if name is None else _encode_name(name)
    p = _acquire(buf, &view, &size)
    try:
        hend = _header_end(p, 0, size, -1)
        if nb is None:
            # Same name: copy the first 8+N bytes and patch the seq id at [8+N, 12+N)
            # (docs/protocol.md §6.1).
            head = PyBytes_FromStringAndSize(NULL, hend)
            w = <unsigned char*>PyBytes_AS_STRING(head)
            memcpy(w, p, hend - 4)
        else:
            nlen = PyBytes_GET_SIZE(nb)
            head = PyBytes_FromStringAndSize(NULL, 12 + nlen)
            w = <unsigned char*>PyBytes_AS_STRING(head)
            memcpy(w, p, 4)
            _put32(w + 4, <uint32_t>nlen)
            memcpy(w + 8, PyBytes_AS_STRING(nb), nlen)
        _put32(w + PyBytes_GET_SIZE(head) - 4, <uint32_t>seq)
    finally:
        _release(&view)
    if hend == size:
        return [head]
    return [head, _body_view(buf, hend)]


def build_message(mtype, name, seq_id, body=b""):
    """build_message(type, name, seq_id, body=b"") -> bytes

    A whole strict-binary message: header + ``body`` (a struct, normally).
    """
    cdef int32_t seq
    cdef bytes nb, out
    cdef Py_buffer view
    cdef Py_ssize_t bsize, nlen
    cdef const unsigned char* bp
    cdef unsigned char* w
    if not isinstance(mtype, int) or mtype < 1 or mtype > 4:
        raise ValueError(
            "message type must be 1 (CALL), 2 (REPLY), 3 (EXCEPTION) or 4 (ONEWAY), got %r"
            % (mtype,)
        )
    seq = _check_seq_id(seq_id)
    nb = _encode_name(name)
    nlen = PyBytes_GET_SIZE(nb)
    bp = _acquire(body, &view, &bsize)
    try:
        out = PyBytes_FromStringAndSize(NULL, 12 + nlen + bsize)
        w = <unsigned char*>PyBytes_AS_STRING(out)
        _put32(w, VERSION_1 | <uint32_t>(<int>mtype))
        _put32(w + 4, <uint32_t>nlen)
        memcpy(w + 8, PyBytes_AS_STRING(nb), nlen)
        _put32(w + 8 + nlen, <uint32_t>seq)
        memcpy(w + 12 + nlen, bp, bsize)
    finally:
        _release(&view)
    return out


# --------------------------------------------------------------------------- struct skip


cdef struct _Level:
    int kind  # TT_STRUCT, TT_MAP or TT_LIST (sets share the list path)
    int depth  # gopkg's maxdepth of this container
    int64_t remaining  # values left (a map counts keys and values)
    unsigned int ta  # list element type / map key type
    unsigned int tb  # map value type


cdef int64_t _skip(const unsigned char* p, int64_t pos, int64_t end, unsigned int ttype,
                   int depth, int64_t base) except? -4611686018427387904:
    """Skip one value of ``ttype`` at ``pos``; ``depth`` as gopkg's ``maxdepth`` argument.

    Returns the end offset, or ``-need`` (the total end offset needed) when ``p[:end]`` is too
    short. Iterative with a fixed explicit stack (at most MAX_DEPTH levels, since a level is only
    opened when its depth is >= 1) so hostile nesting cannot exhaust the C stack. Mirrors gopkg
    protocol/thrift/skipdecoder.go: ``maxdepth == 0`` is an error, fixed-size container elements
    are skipped in bulk, and empty containers are not type-checked.
    """
    cdef _Level stack[MAX_DEPTH + 1]
    cdef int top = 0  # number of open levels
    cdef unsigned int t = ttype
    cdef int d = depth
    cdef int64_t n, need
    cdef int sz, ks, vs
    cdef unsigned int kt, vt, ft
    cdef _Level* lv
    while True:
        # ---- skip one value of type t with nesting budget d
        if d <= 0:
            raise ProtocolError(
                "Thrift struct nesting exceeds the depth limit of %d at offset %d"
                % (MAX_DEPTH, pos - base)
            )
        sz = _fixed_size(t)
        if sz:
            if pos + sz > end:
                return -(pos + sz)
            pos += sz
        elif t == TT_STRING:
            if pos + 4 > end:
                return -(pos + 4)
            n = _i32(p + pos)
            if n < 0:
                raise ProtocolError("negative length %d at offset %d" % (n, pos - base))
            if pos + 4 + n > end:
                return -(pos + 4 + n)
            pos += 4 + n
        elif t == TT_STRUCT:
            if top >= MAX_DEPTH:  # unreachable (depth bounds it), kept as a hard guard
                raise ProtocolError(
                    "Thrift struct nesting exceeds the depth limit of %d at offset %d"
                    % (MAX_DEPTH, pos - base)
                )
            lv = &stack[top]
            top += 1
            lv.kind = TT_STRUCT
            lv.depth = d
            lv.remaining = 0
        elif t == TT_MAP:
            if pos + 6 > end:
                return -(pos + 6)
            kt = p[pos]
            vt = p[pos + 1]
            n = _i32(p + pos + 2)
            if n < 0:
                raise ProtocolError("negative length %d at offset %d" % (n, pos - base))
            pos += 6
            ks = _fixed_size(kt)
            vs = _fixed_size(vt)
            if ks and vs:
                need = pos + n * (ks + vs)
                if need > end:
                    return -need
                pos = need
            elif n:
                if top >= MAX_DEPTH:
                    raise ProtocolError(
                        "Thrift struct nesting exceeds the depth limit of %d at offset %d"
                        % (MAX_DEPTH, pos - base)
                    )
                lv = &stack[top]
                top += 1
                lv.kind = TT_MAP
                lv.depth = d
                lv.remaining = 2 * n
                lv.ta = kt
                lv.tb = vt
        elif t == TT_SET or t == TT_LIST:
            if pos + 5 > end:
                return -(pos + 5)
            kt = p[pos]
            n = _i32(p + pos + 1)
            if n < 0:
                raise ProtocolError("negative length %d at offset %d" % (n, pos - base))
            pos += 5
            ks = _fixed_size(kt)
            if ks:
                need = pos + n * ks
                if need > end:
                    return -need
                pos = need
            elif n:
                if top >= MAX_DEPTH:
                    raise ProtocolError(
                        "Thrift struct nesting exceeds the depth limit of %d at offset %d"
                        % (MAX_DEPTH, pos - base)
                    )
                lv = &stack[top]
                top += 1
                lv.kind = TT_LIST
                lv.depth = d
                lv.remaining = n
                lv.ta = kt
                lv.tb = kt
        else:
            raise ProtocolError("unknown Thrift type id %d at offset %d" % (t, pos - base))
        # ---- pick the next value from the innermost open container
        while True:
            if top == 0:
                return pos
            lv = &stack[top - 1]
            if lv.kind == TT_STRUCT:
                if pos + 1 > end:
                    return -(pos + 1)
                ft = p[pos]
                if ft == TT_STOP:
                    pos += 1
                    top -= 1
                    continue
                if pos + 3 > end:  # type byte + i16 field id
                    return -(pos + 3)
                pos += 3
                t = ft
                d = lv.depth - 1
                break
            if lv.remaining == 0:
                top -= 1
                continue
            # Map elements alternate key, value: an even count left means a key is next.
            if lv.kind == TT_LIST or (lv.remaining & 1) == 0:
                t = lv.ta
            else:
                t = lv.tb
            lv.remaining -= 1
            d = lv.depth - 1
            break


def find_struct_end(buf, offset=0):
    """find_struct_end(buf, offset=0) -> int

    End offset of the Thrift binary struct at ``offset``, or -1 if more bytes are needed.
    """
    cdef Py_buffer view
    cdef Py_ssize_t size
    cdef const unsigned char* p = _acquire(buf, &view, &size)
    cdef int64_t r
    try:
        if not isinstance(offset, int) or offset < 0 or offset > size:
            raise ValueError("offset %r out of range for a %d-byte buffer" % (offset, size))
        r = _skip(p, <int64_t>offset, size, TT_STRUCT, MAX_DEPTH, 0)
    finally:
        _release(&view)
    return r if r >= 0 else -1


# --------------------------------------------------------------------------- exceptions


def decode_application_exception(message):
    """decode_application_exception(message) -> (type_code, text)

    ``(type_code, text)`` of a whole EXCEPTION message (docs/protocol.md §8).
    """
    cdef Py_buffer view
    cdef Py_ssize_t size
    cdef const unsigned char* p = _acquire(message, &view, &size)
    cdef int64_t pos, end, n, r
    cdef unsigned int ft, fid, mtype
    cdef int32_t type_code = 0
    text = ""
    try:
        end = size
        pos = _header_end(p, 0, end, -1)
        mtype = p[3]
        if mtype != EXCEPTION:
            raise ProtocolError(
                "expected an EXCEPTION message, got type %d (%s)" % (mtype, _TYPE_NAMES[mtype])
            )
        while True:
            if pos + 1 > end:
                break
            ft = p[pos]
            if ft == TT_STOP:
                return type_code, text
            if pos + 3 > end:
                break
            fid = _u16(p + pos + 1)
            pos += 3
            if fid == 1 and ft == TT_STRING:
                if pos + 4 > end:
                    break
                n = _i32(p + pos)
                if n < 0:
                    raise ProtocolError("negative length %d at offset %d" % (n, pos))
                if pos + 4 + n > end:
                    break
                text = PyUnicode_DecodeUTF8(<const char*>p + pos + 4, n, "replace")
                pos += 4 + n
            elif fid == 2 and ft == TT_I32:
                if pos + 4 > end:
                    break
                type_code = _i32(p + pos)
                pos += 4
            else:
                # Unknown or wrong-typed field: skip it where it stands (gopkg's FastRead skips it
                # too, from the wrong offset: docs/protocol.md §8).
                r = _skip(p, pos, end, ft, MAX_DEPTH - 1, 0)
                if r < 0:
                    break
                pos = r
        raise ProtocolError(
            "truncated TApplicationException struct in a %d-byte message (first bytes %s)"
            % (end, _hex(p, end))
        )
    finally:
        _release(&view)


def encode_application_exception(type_code, text):
    """encode_application_exception(type_code, text) -> bytes

    The TApplicationException struct: field 1 message, field 2 type, STOP (gopkg order).
    """
    cdef int32_t code = _check_i32(type_code, "type_code")
    cdef bytes data = _encode_str(text, "text")
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + 15)
    cdef unsigned char* w = <unsigned char*>PyBytes_AS_STRING(out)
    w[0] = TT_STRING
    _put16(w + 1, 1)
    _put32(w + 3, <uint32_t>n)
    memcpy(w + 7, PyBytes_AS_STRING(data), n)
    w += 7 + n
    w[0] = TT_I32
    _put16(w + 1, 2)
    _put32(w + 3, <uint32_t>code)
    w[7] = TT_STOP
    return out


# --------------------------------------------------------------------------- encoding


cdef Py_ssize_t _add_string(list keep, object value, str what) except -1:
    """Validate one header string and remember it for pass 2; returns its encoded size + 2.

    str is read through PyUnicode_AsUTF8AndSize (no copy for ASCII, cached UTF-8 otherwise); only
    strings with lone surrogates are encoded separately (surrogateescape, as the decoder).
    """
    cdef const char* s
    cdef Py_ssize_t n
    if isinstance(value, str):
        try:
            s = PyUnicode_AsUTF8AndSize(value, &n)
        except UnicodeEncodeError:
            value = (<str>value).encode("utf-8", "surrogateescape")
            n = PyBytes_GET_SIZE(value)
    elif isinstance(value, (bytes, bytearray)):
        value = bytes(value)
        n = PyBytes_GET_SIZE(value)
    else:
        raise TypeError("%s must be str or bytes, not %s" % (what, type(value).__name__))
    if n > MAX_HEADER_STRING:
        raise ValueError(
            "TTHeader string too long: %s is %d bytes (max %d)" % (what, n, MAX_HEADER_STRING)
        )
    keep.append(value)
    return 2 + n


cdef inline unsigned char* _write_string(unsigned char* w, object item) except NULL:
    # u16 length + bytes; ``item`` is a str that already passed _add_string, or bytes.
    cdef const char* s
    cdef Py_ssize_t n
    if PyBytes_CheckExact(item):
        s = PyBytes_AS_STRING(item)
        n = PyBytes_GET_SIZE(item)
    else:
        s = PyUnicode_AsUTF8AndSize(item, &n)
    _put16(w, <unsigned int>n)
    memcpy(w + 2, s, n)
    return w + 2 + n


cdef bytes _header_block(object str_headers, object int_headers, object acl_token,
                         bint prefix=True):
    """PROTOCOL ID .. padding of a TTHeader, in Kitex's block order (docs/protocol.md §3, §4).
    With ``prefix`` False: only the info blocks and their padding (a call's own headers, which
    follow the encoder's block: padding may stand anywhere and blocks may repeat, §3.2).

    Pass 1 validates every string into ``keep``; pass 2 writes one bytes object from ``keep``
    alone, and sizes are re-checked, so nothing can be written past the allocation.
    """
    cdef list keep = []
    cdef Py_ssize_t size = 2 if prefix else 0  # protocol 0 (binary), 0 transforms
    cdef Py_ssize_t n_acl = 0, n_str = 0, n_int = 0, i, j, pad, total
    cdef bytes out
    cdef unsigned char* w
    cdef unsigned char* wend
    cdef long key
    if acl_token is not None and (
            not isinstance(acl_token, (str, bytes, bytearray)) or len(acl_token)):
        size += 1 + _add_string(keep, acl_token, "acl_token")
        n_acl = 1
    if str_headers:
        if len(str_headers) > MAX_U16:
            raise ValueError("too many str_headers: %d (max %d)" % (len(str_headers), MAX_U16))
        size += 3
        for k, v in str_headers.items():
            size += _add_string(keep, k, "str_headers key")
            size += _add_string(keep, v, "str_headers value")
            n_str += 1
    if int_headers:
        if len(int_headers) > MAX_U16:
            raise ValueError("too many int_headers: %d (max %d)" % (len(int_headers), MAX_U16))
        size += 3
        for k, v in int_headers.items():
            if not isinstance(k, int):
                raise TypeError("int_headers key must be an int, not %s" % type(k).__name__)
            if k < 0 or k > MAX_U16:
                raise ValueError("int_headers key %d is not in 0..%d" % (k, MAX_U16))
            keep.append(k)
            size += 2 + _add_string(keep, v, "int_headers value")
            n_int += 1
    pad = (4 - size % 4) % 4
    total = size + pad
    if total > MAX_HEADER_BLOCK:
        raise ValueError(
            "TTHeader header block of %d bytes exceeds the %d-byte limit" % (total, MAX_HEADER_BLOCK)
        )
    out = PyBytes_FromStringAndSize(NULL, total)
    w = <unsigned char*>PyBytes_AS_STRING(out)
    wend = w + total
    if prefix:
        w[0] = 0
        w[1] = 0
        w += 2
    i = 0
    if n_acl:
        w[0] = 0x11  # InfoIDACLToken: one u16-length string, no key (docs/protocol.md §3.2)
        w = _write_string(w + 1, keep[i])
        i += 1
    if n_str:
        w[0] = 0x01  # InfoIDKeyValue
        _put16(w + 1, <unsigned int>n_str)
        w += 3
        for j in range(2 * n_str):
            w = _write_string(w, keep[i])
            i += 1
    if n_int:
        w[0] = 0x10  # InfoIDIntKeyValue
        _put16(w + 1, <unsigned int>n_int)
        w += 3
        for j in range(n_int):
            key = keep[i]
            _put16(w, <unsigned int>key)
            w = _write_string(w + 2, keep[i + 1])
            i += 2
    if w + pad != wend:  # unreachable: pass 1 sized exactly these strings
        raise RuntimeError("TTHeader size mismatch")
    memset(w, 0, pad)
    return out


cdef int _check_no_headers(object transport, object str_headers, object int_headers,
                           object acl_token) except -1:
    if str_headers or int_headers or acl_token:
        raise ValueError(
            "str_headers, int_headers and acl_token need a ttheader transport, not %r" % (transport,)
        )
    return 0


cdef object _frame_too_large(int64_t size):
    return ValueError(
        "frame of %d bytes does not fit a 32-bit length field (max %d)" % (size, MAX_FRAME_FIELD)
    )


cdef object _request_too_large(int64_t size, int64_t limit):
    # The peer would refuse it (or reset mid-request): refuse before any byte is written.
    return FrameTooLargeError(
        "request frame of %d bytes exceeds max_frame_size %d; nothing was sent (raise "
        "max_frame_size, metadata maxFrameSize, if the server accepts larger frames)"
        % (size, limit)
    )


cdef inline void _write_tt_fixed(unsigned char* w, int64_t length, int32_t seq, Py_ssize_t hlen) noexcept:
    # LENGTH u32 | MAGIC 0x1000 | FLAGS 0 | SEQ i32 | HEADER SIZE in 4-byte words
    # (docs/protocol.md §2).
    _put32(w, <uint32_t>length)
    w[4] = 0x10
    w[5] = 0
    w[6] = 0
    w[7] = 0
    _put32(w + 8, <uint32_t>seq)
    _put16(w + 12, <unsigned int>(hlen // 4))


cdef inline Py_ssize_t _nbytes(object part) except -1:
    cdef Py_buffer view
    cdef Py_ssize_t n
    if PyBytes_CheckExact(part):
        return PyBytes_GET_SIZE(part)
    PyObject_GetBuffer(part, &view, PyBUF_SIMPLE)
    n = view.len
    PyBuffer_Release(&view)
    return n


def encode_frame(transport, message, *, seq_id, str_headers=None, int_headers=None,
                 acl_token=None):
    """encode_frame(transport, message, *, seq_id, str_headers=None, int_headers=None, acl_token=None) -> list

    ``[prefix, *message_parts]`` for ``writev`` (no prefix for buffered); nothing is copied.
    """
    cdef int code = _transport_code(transport, False)
    cdef int32_t seq = _check_seq_id(seq_id)
    cdef list parts
    cdef int64_t size = 0, length
    cdef bytes block, prefix
    cdef Py_ssize_t hlen, inner
    cdef unsigned char* w
    if isinstance(message, (list, tuple)):
        parts = list(message)
    else:
        parts = [message]
    for part in parts:
        size += _nbytes(part)
    if size == 0:
        raise ValueError("message is empty: nothing to frame")
    if code == T_BUFFERED or code == T_FRAMED:
        _check_no_headers(transport, str_headers, int_headers, acl_token)
        if code == T_BUFFERED:
            return parts
        if size > MAX_FRAME_FIELD:
            raise _frame_too_large(size)
        prefix = PyBytes_FromStringAndSize(NULL, 4)
        _put32(<unsigned char*>PyBytes_AS_STRING(prefix), <uint32_t>size)
        parts.insert(0, prefix)
        return parts
    if not str_headers and not int_headers and acl_token is None:
        block = EMPTY_BLOCK
    else:
        block = _header_block(str_headers, int_headers, acl_token)
    hlen = PyBytes_GET_SIZE(block)
    inner = 4 if code == T_TTHEADER_FRAMED else 0
    length = 10 + hlen + inner + size
    if length > MAX_FRAME_FIELD:
        raise _frame_too_large(length)
    prefix = PyBytes_FromStringAndSize(NULL, 14 + hlen + inner)
    w = <unsigned char*>PyBytes_AS_STRING(prefix)
    _write_tt_fixed(w, length, seq, hlen)
    memcpy(w + 14, PyBytes_AS_STRING(block), hlen)
    if inner:
        _put32(w + 14 + hlen, <uint32_t>size)
    parts.insert(0, prefix)
    return parts


cdef struct _HeadPlan:
    # What RequestEncoder._plan found: where the message header ends, the sizes of the head.
    int64_t hend
    Py_ssize_t nlen
    int64_t msg_len
    int64_t length
    Py_ssize_t mpos
    Py_ssize_t total
    Py_ssize_t xlen  # the call's own header blocks (encode's str_headers/int_headers)


cdef class RequestEncoder:
    """RequestEncoder(transport, *, name=None, str_headers=None, int_headers=None, acl_token=None, validate=True)

    The client's hot path: framing + TTHeader precomputed once, one ``head`` per call.
    """

    cdef int _code
    cdef object _transport
    cdef bytes _name
    cdef bytes _block
    cdef bint _validate
    cdef int64_t _max  # the request frame limit; 0: only the 32-bit length field bounds it

    def __init__(self, transport, *, name=None, str_headers=None, int_headers=None,
                 acl_token=None, validate=True, max_frame_size=None):
        self._code = _transport_code(transport, False)
        if max_frame_size is None:
            self._max = 0
        elif isinstance(max_frame_size, bool) or not isinstance(max_frame_size, int) or max_frame_size <= 0:
            raise ValueError("max_frame_size must be a positive int or None, got %r" % (max_frame_size,))
        else:
            self._max = max_frame_size if max_frame_size < (1 << 62) else (1 << 62)
        self._transport = transport
        self._name = None if name is None else _encode_name(name)
        if self._code == T_FRAMED or self._code == T_BUFFERED:
            _check_no_headers(transport, str_headers, int_headers, acl_token)
            self._block = b""
        else:
            self._block = _header_block(str_headers, int_headers, acl_token)
        self._validate = bool(validate)

    @property
    def transport(self):
        return self._transport

    def encode(self, message, seq_id, str_headers=None, int_headers=None):
        """encode(message, seq_id, str_headers=None, int_headers=None) -> list

        ``[head, memoryview(args body)]`` for one CALL message (``[head]`` for an empty body).
        ``str_headers``/``int_headers`` are this call's own TTHeader headers (a trace context, a
        deadline's RPCTimeout), sent after the encoder's own in a second block: Kitex reads
        repeated blocks into one map, later keys winning (docs/protocol.md §3.2), so a call's
        value replaces the encoder's for the same key. Framed and Buffered carry none.
        """
        cdef int32_t seq = _check_seq_id(seq_id)
        cdef Py_buffer view
        cdef Py_ssize_t size
        cdef const unsigned char* p
        cdef _HeadPlan plan
        cdef bytes head
        cdef bytes extra = None
        if str_headers or int_headers:
            if self._code == T_FRAMED or self._code == T_BUFFERED:
                _check_no_headers(self._transport, str_headers, int_headers, None)
            extra = _header_block(str_headers, int_headers, None, False)
            if PyBytes_GET_SIZE(self._block) + PyBytes_GET_SIZE(extra) > MAX_HEADER_BLOCK:
                raise ValueError(
                    "TTHeader header block of %d bytes exceeds the %d-byte limit"
                    % (PyBytes_GET_SIZE(self._block) + PyBytes_GET_SIZE(extra), MAX_HEADER_BLOCK)
                )
        p = _acquire(message, &view, &size)
        try:
            self._plan(p, size, &plan, 0 if extra is None else PyBytes_GET_SIZE(extra))
            # One allocation, filled in place: framing prefix + TTHeader + message header.
            head = PyBytes_FromStringAndSize(NULL, plan.total)
            self._write(<unsigned char*>PyBytes_AS_STRING(head), p, &plan, seq)
            if plan.xlen:
                memcpy(<unsigned char*>PyBytes_AS_STRING(head) + 14 + PyBytes_GET_SIZE(self._block),
                       PyBytes_AS_STRING(extra), plan.xlen)
        finally:
            _release(&view)
        if plan.hend == size:
            return [head]
        return [head, _body_view(message, plan.hend)]

    cdef int _plan(self, const unsigned char* p, Py_ssize_t size, _HeadPlan* plan,
                   Py_ssize_t xlen=0) except -1:
        """Validate a CALL message and size the head that frames it (nothing written); ``xlen``
        bytes of the call's own header blocks follow the encoder's."""
        cdef int64_t hend, r, msg_len, length = 0
        cdef Py_ssize_t nlen, mpos, hlen = 0, inner = 0
        cdef unsigned int mtype
        cdef int code = self._code
        plan.xlen = xlen
        hend = _header_end(p, 0, size, -1)
        mtype = p[3]
        if mtype != CALL:
            raise ProtocolError(
                "RequestEncoder needs a CALL message, got type %d (%s)"
                % (mtype, _TYPE_NAMES[mtype])
            )
        if self._validate:
            r = _skip(p, hend, size, TT_STRUCT, MAX_DEPTH, hend)
            if r < 0:
                raise ProtocolError(
                    "the args struct is truncated: %d body bytes end before the struct does"
                    % (size - hend)
                )
            if r != size:
                raise ProtocolError(
                    "%d trailing bytes after the args struct (a message carries exactly one "
                    "struct)" % (size - r)
                )
        nlen = hend - 12 if self._name is None else PyBytes_GET_SIZE(self._name)
        msg_len = 12 + nlen + (size - hend)
        if code == T_BUFFERED:
            if self._max and msg_len > self._max:
                raise _request_too_large(msg_len, self._max)
            mpos = 0
        elif code == T_FRAMED:
            if msg_len > MAX_FRAME_FIELD:
                raise _frame_too_large(msg_len)
            if self._max and msg_len > self._max:
                raise _request_too_large(msg_len, self._max)
            mpos = 4
        else:
            hlen = PyBytes_GET_SIZE(self._block) + plan.xlen
            inner = 4 if code == T_TTHEADER_FRAMED else 0
            length = 10 + hlen + inner + msg_len
            if length > MAX_FRAME_FIELD:
                raise _frame_too_large(length)
            if self._max and length > self._max:
                raise _request_too_large(length, self._max)
            mpos = 14 + hlen + inner
        plan.hend = hend
        plan.nlen = nlen
        plan.msg_len = msg_len
        plan.length = length
        plan.mpos = mpos
        plan.total = mpos + 12 + nlen
        return 0

    cdef void _write(self, unsigned char* w, const unsigned char* p, _HeadPlan* plan,
                     int32_t seq) noexcept:
        """Write the head ``_plan`` sized (``plan.total`` bytes at ``w``)."""
        cdef int code = self._code
        cdef Py_ssize_t hlen, mpos = plan.mpos, nlen = plan.nlen, total = plan.total
        if code == T_FRAMED:
            _put32(w, <uint32_t>plan.msg_len)
        elif code != T_BUFFERED:
            hlen = PyBytes_GET_SIZE(self._block)
            _write_tt_fixed(w, plan.length, seq, hlen + plan.xlen)
            memcpy(w + 14, PyBytes_AS_STRING(self._block), hlen)  # (the call's blocks follow: encode)
            if code == T_TTHEADER_FRAMED:
                _put32(w + 14 + hlen + plan.xlen, <uint32_t>plan.msg_len)
        if self._name is None:
            memcpy(w + mpos, p, plan.hend - 4)
        else:
            memcpy(w + mpos, p, 4)
            _put32(w + mpos + 4, <uint32_t>nlen)
            memcpy(w + mpos + 8, PyBytes_AS_STRING(self._name), nlen)
        _put32(w + total - 4, <uint32_t>seq)

    def is_plain_reply(self, frame, seq_id):
        """is_plain_reply(frame, seq_id) -> bool

        True when ``frame`` (a :class:`Frame`) is the plain answer to the request this encoder
        sent with ``seq_id``: a strict-binary REPLY carrying that seq id and this encoder's method
        name, with no TTHeader string headers (no biz status, no close notice). A client's common
        case costs these few byte compares, with no header object made. Anything else, malformed
        replies included, gives False and never raises: the caller's full check then names what
        is wrong.
        """
        cdef int overflow = 0
        cdef long long want
        if type(seq_id) is not int:
            return False
        want = PyLong_AsLongLongAndOverflow(seq_id, &overflow)
        if overflow:
            return False
        return self._is_plain_reply(frame, want) == 1

    cdef int _is_plain_reply(self, object frame, long long want) except -1:
        cdef Frame f
        cdef const unsigned char* p
        cdef Py_ssize_t size, nlen
        cdef object payload
        if type(frame) is not Frame or self._name is None:
            return False
        f = <Frame>frame
        if f.str_headers is not EMPTY_HEADERS and len(f.str_headers) != 0:
            return False
        payload = f.payload
        if not PyBytes_CheckExact(payload):  # the decoder's payloads are bytes
            return False
        p = <const unsigned char*>PyBytes_AS_STRING(payload)
        size = PyBytes_GET_SIZE(payload)
        nlen = PyBytes_GET_SIZE(self._name)
        # 80 01 00 02 | name length | name | seq id, compared where they stand
        return (size >= 12 + nlen and p[0] == 0x80 and p[1] == 0x01 and p[2] == 0x00
                and p[3] == 2 and _i32(p + 4) == nlen  # 2: REPLY
                and memcmp(p + 8, PyBytes_AS_STRING(self._name), nlen) == 0
                and _i32(p + 8 + nlen) == want)


# --------------------------------------------------------------------------- decoding


cdef object _truncated_block(str kind, int64_t at):
    return ProtocolError("truncated TTHeader %s block at byte %d of the frame" % (kind, at))


# The receive buffer that decoders with nothing buffered share. A pooled connection sits idle far
# longer than it reads, and between reads its decoder holds no byte: get_buffer(-1) lends it this
# buffer and buffer_updated decodes straight out of it, so an idle connection costs no buffer of its
# own (it cost 4 KiB and a view: 4.5 KiB of the 7.4 KiB of Python heap an idle asyncio connection
# held, 1,000 idle connections). Only the bytes of an incomplete frame move to a buffer of the
# decoder's own, which it then keeps as before (a connection that carries large or split replies
# reads as it did, with no allocation per call). A transport holds the view from get_buffer until
# buffer_updated returns (asyncio's loops, uvloop), and no other read runs on its thread meanwhile.
# The buffer is lent again only once nothing holds its view or a slice of it; while something does
# (a read in progress on another thread, its recv without the GIL; a view kept in a traceback) the
# holders keep that buffer and a fresh one is shared from then on. Each decoder decodes from the
# buffer it was lent (_lent_buf). Relies on the GIL, as the rest of the compiled core does
# (pyproject.toml builds no free-threaded wheels).
cdef bytearray _shared = PyByteArray_FromStringAndSize(NULL, SHARED_CAPACITY)
cdef object _shared_view = PyMemoryView_FromObject(_shared)
# The decoder it was lent to last, until its buffer_updated: borrowed (its __dealloc__ lets go).
cdef PyObject* _shared_owner = NULL


cdef inline int _lend_shared(FrameDecoder d) except -1:
    """Lend the shared buffer to ``d``, which holds no byte."""
    global _shared, _shared_view, _shared_owner
    cdef PyObject* v = <PyObject*>_shared_view
    if (Py_REFCNT_PTR(v) != 1 or (<PyMemoryViewObject*>v).flags & _Py_MEMORYVIEW_RELEASED
            or (<PyMemoryViewObject*>v).mbuf.exports != 1
            or (<PyByteArrayObject*>_shared).ob_exports != 1):
        # Held: its holders keep it (a decoder lent it decodes from its _lent_buf).
        _shared = PyByteArray_FromStringAndSize(NULL, SHARED_CAPACITY)
        _shared_view = PyMemoryView_FromObject(_shared)
        _shared_owner = NULL
    elif _shared_owner != NULL and _shared_owner != <PyObject*>d:
        # Lent before and never handed back (its read found nothing: EAGAIN, a closed socket; or
        # a caller that dropped the view before buffer_updated): what it may hold moves out.
        (<FrameDecoder>_shared_owner)._evict()
    _shared_owner = <PyObject*>d
    d._lent_buf = _shared
    d._lent = SHARED_CAPACITY
    return 0


cdef class FrameDecoder:
    """FrameDecoder(transport, *, max_frame_size=DEFAULT_MAX_FRAME_SIZE)

    Incremental decoder: bytes in (any chunking), Frame objects out.
    """

    cdef int _code
    cdef int64_t _max
    cdef bytearray _buf  # None while it needs none of its own (_start == _end == 0 then)
    cdef Py_ssize_t _start  # first unconsumed byte
    cdef Py_ssize_t _end  # end of received bytes
    cdef Py_ssize_t _need  # do not rescan before this many bytes are buffered
    cdef Py_ssize_t _lent  # size of the last get_buffer view
    cdef object _error
    cdef object _view  # the last get_buffer view, of _buf[_view_at:], or None
    cdef Py_ssize_t _view_at
    cdef bytearray _lent_buf  # the shared buffer the last get_buffer lent, until buffer_updated

    def __init__(self, transport, *, max_frame_size=DEFAULT_MAX_FRAME_SIZE):
        self._code = _transport_code(transport, True)
        if not isinstance(max_frame_size, int) or max_frame_size <= 0:
            raise ValueError("max_frame_size must be a positive int, got %r" % (max_frame_size,))
        self._max = max_frame_size if max_frame_size < (1 << 62) else (1 << 62)
        self._buf = None
        self._start = 0
        self._end = 0
        self._need = 0
        self._lent = 0
        self._error = None
        self._view = None
        self._view_at = 0
        self._lent_buf = None

    def __dealloc__(self):
        global _shared_owner
        if _shared_owner == <PyObject*>self:
            _shared_owner = NULL

    @property
    def pending(self):
        """Buffered bytes that are not yet a whole frame."""
        return self._end - self._start

    cdef int _check_error(self) except -1:
        if self._error is not None:
            cls, text = self._error
            raise cls("FrameDecoder stopped after an earlier error: %s" % text)
        return 0

    cdef int _reserve(self, Py_ssize_t want) except -1:
        """Make room for ``want`` more bytes after ``_end``.

        A new bytearray is allocated rather than resizing in place: a memoryview handed out by
        get_buffer may still be alive, and a bytearray with exports cannot be resized.
        """
        cdef Py_ssize_t cap = 0 if self._buf is None else PyByteArray_GET_SIZE(self._buf)
        cdef Py_ssize_t start = self._start
        cdef Py_ssize_t pending = self._end - start
        cdef Py_ssize_t new_cap
        cdef bytearray new
        if cap - self._end >= want:
            return 0
        if pending + want <= cap and start > 0:
            memmove(PyByteArray_AS_STRING(self._buf), PyByteArray_AS_STRING(self._buf) + start,
                    pending)
        else:
            new_cap = cap * 2 if cap else INITIAL_CAPACITY
            while new_cap < pending + want:
                new_cap *= 2
            new = PyByteArray_FromStringAndSize(NULL, new_cap)
            if pending:
                memcpy(PyByteArray_AS_STRING(new), PyByteArray_AS_STRING(self._buf) + start, pending)
            self._buf = new
            self._view = None  # a view of the old buffer: let it (and the buffer) go
        self._start = 0
        self._end = pending
        if self._need:
            self._need -= start
        return 0

    def get_buffer(self, sizehint=-1):
        """get_buffer(sizehint=-1) -> memoryview

        A writable view of free space to receive into (asyncio.BufferedProtocol): while the
        decoder holds no byte, of the receive buffer that decoders share (hold the view until
        buffer_updated returns, as transports do); else of the decoder's own buffer.
        """
        cdef object view
        cdef PyObject* v
        cdef Py_ssize_t want = MIN_READ  # asyncio and the transports always ask for -1
        self._check_error()
        if not (PyLong_CheckExact(sizehint) and sizehint == -1) and sizehint > MIN_READ:
            want = sizehint
        if self._buf is None and want <= SHARED_CAPACITY:
            _lend_shared(self)
            return _shared_view
        self._reserve(want)
        self._lent = PyByteArray_GET_SIZE(self._buf) - self._end
        # Steady state (each reply consumed whole, so _end is back at 0): hand out the same view
        # again instead of building a memoryview and a slice of it. Only when nobody else holds
        # it (refcount 1: only self._view) and nobody released it; the view never goes stale,
        # since _buf is never resized in place (_reserve allocates a new bytearray).
        v = <PyObject*>self._view  # borrowed: the refcount below is exactly ours
        if (v != <PyObject*>None and self._view_at == self._end and Py_REFCNT_PTR(v) == 1
                and not ((<PyMemoryViewObject*>v).flags & _Py_MEMORYVIEW_RELEASED)):
            return <object>v
        view = PyMemoryView_FromObject(self._buf)[self._end:]
        self._view = view
        self._view_at = self._end
        return view

    def buffer_updated(self, nbytes):
        """buffer_updated(nbytes) -> list

        ``nbytes`` were written into the last get_buffer view: decode what is complete.
        """
        cdef Py_ssize_t n = -1
        cdef long long v
        cdef int overflow = 0
        self._check_error()
        if PyLong_CheckExact(nbytes):
            v = PyLong_AsLongLongAndOverflow(nbytes, &overflow)  # no exception on overflow
            if not overflow and 0 <= v <= self._lent:
                n = <Py_ssize_t>v
        elif isinstance(nbytes, int) and 0 <= nbytes <= self._lent:
            n = nbytes  # an int subclass (bool)
        if n < 0:
            raise ValueError(
                "nbytes %r out of range 0..%d (the size of the last get_buffer)"
                % (nbytes, self._lent)
            )
        self._lent = 0
        if self._lent_buf is not None:
            return self._decode_shared(n)
        self._end += n
        return self._decode()

    cdef list _decode_shared(self, Py_ssize_t n):
        """Decode the ``n`` bytes received into the shared buffer lent, where they stand."""
        global _shared_owner
        cdef list frames
        if _shared_owner == <PyObject*>self:
            _shared_owner = NULL
        self._buf = self._lent_buf
        self._lent_buf = None
        self._end = n
        try:
            frames = self._decode()
        except BaseException:
            self._keep_pending()
            raise
        if self._start == self._end:  # (every frame whole: _decode has reset the offsets)
            self._buf = None
        else:
            self._keep_pending()
        return frames

    cdef int _keep_pending(self) except -1:
        """Leave the shared buffer: the bytes of an incomplete frame move to a buffer of this
        decoder's own, as large as its own would have grown to for the next read."""
        cdef bytearray lent = self._buf
        cdef Py_ssize_t start = self._start
        cdef Py_ssize_t pending = self._end - start
        self._buf = None
        self._start = 0
        self._end = 0
        if pending:
            self._reserve(pending + MIN_READ)
            memcpy(PyByteArray_AS_STRING(self._buf), PyByteArray_AS_STRING(lent) + start, pending)
            self._end = pending
            if self._need:
                self._need -= start
        return 0

    cdef int _evict(self) except -1:
        """The shared buffer goes to another decoder before this one's buffer_updated: the
        bytes lent (whatever was written into them) move to a buffer of this decoder's own."""
        global _shared_owner
        cdef Py_ssize_t lent = self._lent
        cdef bytearray buf = self._lent_buf
        _shared_owner = NULL
        if buf is None:  # (cleared by the garbage collector's tp_clear: nothing to keep)
            return 0
        self._lent_buf = None
        self._lent = 0  # (should the copy fail, buffer_updated takes no bytes)
        self._buf = PyByteArray_FromStringAndSize(PyByteArray_AS_STRING(buf), lent)
        self._lent = lent
        return 0

    def feed(self, data):
        """feed(data) -> list

        Copy ``data`` into the buffer and decode what is complete.
        """
        cdef Py_buffer view
        cdef Py_ssize_t size
        cdef const unsigned char* p
        global _shared_owner
        self._check_error()
        if self._lent_buf is not None:  # what get_buffer lent is void now, as buffer_updated says
            self._lent_buf = None
            if _shared_owner == <PyObject*>self:
                _shared_owner = NULL
        p = _acquire(data, &view, &size)
        try:
            self._reserve(size)
            if size:
                memcpy(PyByteArray_AS_STRING(self._buf) + self._end, p, size)
        finally:
            _release(&view)
        self._end += size
        self._lent = 0
        return self._decode()

    cdef list _decode(self):
        cdef list frames = []
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
            self._start = 0
            self._end = 0
            self._need = 0
            if self._buf is not None and PyByteArray_GET_SIZE(self._buf) > KEEP_CAPACITY:
                # One large reply must not pin megabytes to an idle pooled connection: the
                # shared buffer serves the next read. A view handed out earlier keeps the old
                # buffer alive for as long as it is held.
                self._buf = None
                self._view = None
        return frames

    cdef object _next(self):
        # The pointer is fetched here and never kept across a call that could replace _buf.
        cdef const unsigned char* p = <const unsigned char*>PyByteArray_AS_STRING(self._buf)
        cdef int64_t start = self._start
        cdef int64_t end = self._end
        cdef int code = self._code
        if code == T_AUTO:
            # Per message, in Kitex's order: TTHeader, buffered, framed (docs/protocol.md §9.1).
            if end - start < 8:
                return None
            if p[start + 4] == 0x10 and p[start + 5] == 0x00:
                return self._ttheader(p, start, end)
            if p[start] == 0x80 and p[start + 1] == 0x01:
                return self._buffered(p, start, end)
            if p[start + 4] == 0x80 and p[start + 5] == 0x01:
                return self._framed(p, start, end)
            raise ProtocolError(
                "unrecognised framing (first bytes %s): expected TTHeader (10 00 at bytes 4-5), "
                "buffered (80 01 ...) or framed (80 01 at bytes 4-5)%s"
                % (_hex(p + start, end - start), _looks_like(p + start, end - start))
            )
        if code == T_FRAMED:
            return self._framed(p, start, end)
        if code == T_BUFFERED:
            return self._buffered(p, start, end)
        return self._ttheader(p, start, end)

    cdef object _framed(self, const unsigned char* p, int64_t start, int64_t end):
        cdef int64_t length, stop
        if end - start < 4:
            return None
        length = _i32(p + start)
        if length <= 0:
            raise ProtocolError(
                "framed length %d is not positive (first bytes %s)%s"
                % (length, _hex(p + start, end - start), _looks_like(p + start, end - start))
            )
        if length > self._max:
            raise FrameTooLargeError(
                "framed length %d exceeds max_frame_size %d (first bytes %s)%s"
                % (length, self._max, _hex(p + start, end - start),
                   _looks_like(p + start, end - start))
            )
        stop = start + 4 + length
        if stop > end:
            self._need = stop
            return None
        # The one copy out of the receive buffer.
        payload = PyBytes_FromStringAndSize(<const char*>p + start + 4, length)
        self._start = stop
        return _new_frame(payload, S_FRAMED)

    cdef object _buffered(self, const unsigned char* p, int64_t start, int64_t end):
        cdef int64_t hend, stop
        hend = _header_end(p, start, end, self._max)
        if hend >= 0:
            stop = _skip(p, hend, end, TT_STRUCT, MAX_DEPTH, start)
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
                    "bytes (first bytes %s)" % (self._max, -stop - start, _hex(p + start, end - start))
                )
            self._need = -stop
            return None
        if stop - start > self._max:
            raise FrameTooLargeError(
                "buffered message exceeds max_frame_size %d: %d bytes pending without a "
                "complete message" % (self._max, stop - start)
            )
        payload = PyBytes_FromStringAndSize(<const char*>p + start, stop - start)
        self._start = stop
        return _new_frame(payload, S_BUFFERED)

    cdef object _ttheader(self, const unsigned char* p, int64_t start, int64_t end):
        cdef int64_t length, stop, pos, hend, at, pstart, plen, kstart, vstart
        cdef unsigned int flags, hs, proto, ntrans, info, count, n, i, ikey
        cdef int32_t seq
        cdef dict str_headers, int_headers
        cdef Frame f
        # Fixed part (docs/protocol.md §2): LENGTH u32 | 10 00 | FLAGS | SEQ i32 | HEADER SIZE u16.
        if end - start < 14:
            return None
        if p[start + 4] != 0x10 or p[start + 5] != 0x00:
            raise ProtocolError(
                "not a TTHeader frame (first bytes %s): expected 10 00 at bytes 4-5%s"
                % (_hex(p + start, end - start), _looks_like(p + start, end - start))
            )
        length = _u32(p + start)
        flags = _u16(p + start + 6)
        seq = _i32(p + start + 8)
        hs = _u16(p + start + 12)
        if length > self._max:
            raise FrameTooLargeError(
                "TTHeader LENGTH %d exceeds max_frame_size %d" % (length, self._max)
            )
        if hs == 0:
            raise ProtocolError(
                "TTHeader HEADER SIZE is 0 words (first bytes %s): at least 1 is required"
                % _hex(p + start, end - start)
            )
        if 14 + 4 * <int64_t>hs >= 4 + length:
            raise ProtocolError(
                "TTHeader HEADER SIZE %d words (%d bytes) leaves no payload in LENGTH %d"
                % (hs, 4 * hs, length)
            )
        stop = start + 4 + length
        if stop > end:
            self._need = stop
            return None
        pos = start + 14
        hend = pos + 4 * <int64_t>hs  # < stop, checked above
        proto = p[pos]
        if proto != 0:
            # gopkg decode.go checkProtocolID also allows 3/4/0x10/0x11, none of them plain binary.
            raise ProtocolError(
                "unsupported TTHeader protocol id %d: kitex_fast speaks Thrift binary "
                "(protocol id 0) only" % proto
            )
        ntrans = p[pos + 1]
        pos += 2
        if pos + ntrans > hend:
            raise ProtocolError(
                "TTHeader declares %d transforms but the header block ends first" % ntrans
            )
        pos += ntrans  # transform ids are read and ignored, as gopkg does
        str_headers = None  # created on the first header: most frames carry none of a kind
        int_headers = None
        acl_token = None
        while pos < hend:
            info = p[pos]
            at = pos - start
            pos += 1
            if info == 0x00:  # padding: one byte at a time, anywhere (docs/protocol.md §3.2)
                continue
            if info == 0x01:  # string KV: u16 count, (u16 klen, key, u16 vlen, value) x count
                if pos + 2 > hend:
                    raise _truncated_block("string KV", at)
                count = _u16(p + pos)
                pos += 2
                for i in range(count):
                    if pos + 2 > hend:
                        raise _truncated_block("string KV", at)
                    n = _u16(p + pos)
                    kstart = pos + 2
                    pos = kstart + n
                    if pos + 2 > hend:
                        raise _truncated_block("string KV", at)
                    n = _u16(p + pos)
                    vstart = pos + 2
                    if vstart + n > hend:
                        raise _truncated_block("string KV", at)
                    key = PyUnicode_DecodeUTF8(<const char*>p + kstart, pos - kstart,
                                               "surrogateescape")
                    pos = vstart + n
                    if str_headers is None:
                        str_headers = {}
                    str_headers[key] = PyUnicode_DecodeUTF8(<const char*>p + vstart, n,
                                                            "surrogateescape")
            elif info == 0x10:  # int KV: u16 count, (u16 key, u16 vlen, value) x count
                if pos + 2 > hend:
                    raise _truncated_block("int KV", at)
                count = _u16(p + pos)
                pos += 2
                for i in range(count):
                    if pos + 4 > hend:
                        raise _truncated_block("int KV", at)
                    ikey = _u16(p + pos)
                    n = _u16(p + pos + 2)
                    vstart = pos + 4
                    if vstart + n > hend:
                        raise _truncated_block("int KV", at)
                    pos = vstart + n
                    if int_headers is None:
                        int_headers = {}
                    int_headers[ikey] = PyUnicode_DecodeUTF8(<const char*>p + vstart, n,
                                                             "surrogateescape")
            elif info == 0x11:  # ACL token: u16 len, token (no key)
                if pos + 2 > hend:
                    raise _truncated_block("ACL token", at)
                n = _u16(p + pos)
                vstart = pos + 2
                if vstart + n > hend:
                    raise _truncated_block("ACL token", at)
                pos = vstart + n
                acl_token = PyUnicode_DecodeUTF8(<const char*>p + vstart, n, "surrogateescape")
            else:
                raise ProtocolError(
                    "unknown TTHeader info id 0x%02x at byte %d of the frame" % (info, at)
                )
        pstart = hend
        plen = stop - pstart
        transport = S_TTHEADER
        # An inner Framed payload (TTHeaderFramed, docs/protocol.md §1.3, §9.1): not 80 01 at 0,
        # 80 01 at bytes 4-5, and a length that matches what is left.
        if (plen >= 8 and not (p[pstart] == 0x80 and p[pstart + 1] == 0x01)
                and p[pstart + 4] == 0x80 and p[pstart + 5] == 0x01
                and <int64_t>_u32(p + pstart) == plen - 4):
            pstart += 4
            transport = S_TTHEADER_FRAMED
        payload = PyBytes_FromStringAndSize(<const char*>p + pstart, stop - pstart)
        self._start = stop
        f = Frame.__new__(Frame)
        f.payload = payload
        f.transport = transport
        f.seq_id = seq
        f.flags = flags
        f.str_headers = EMPTY_HEADERS if str_headers is None else str_headers
        f.int_headers = EMPTY_HEADERS if int_headers is None else int_headers
        f.acl_token = acl_token
        return f


# --------------------------------------------------------------------------- C API
#
# Entry points for the other compiled modules (the sync driver's call path): a C call each, no
# Python objects made for the head, no method lookup. Exported as the capsule ``_C_API``; a
# module takes it from its own package's _codec (imported relatively, so a vendored copy never
# mixes with another installed kitex_fast).


cdef Py_ssize_t _api_encode_head(object encoder, const unsigned char* message, Py_ssize_t size,
                                 long long seq_id, unsigned char* out, Py_ssize_t cap,
                                 Py_ssize_t* body_at) except -1:
    cdef RequestEncoder enc = <RequestEncoder?>encoder
    cdef _HeadPlan plan
    if seq_id < INT32_MIN_ or seq_id > INT32_MAX_:
        raise ValueError("seq_id must fit in a signed 32-bit integer, got %d" % seq_id)
    enc._plan(message, size, &plan)
    body_at[0] = <Py_ssize_t>plan.hend
    if plan.total <= cap:
        enc._write(out, message, &plan, <int32_t>seq_id)
    return plan.total


cdef int _api_is_plain_reply(object encoder, object frame, long long seq_id) except -1:
    return (<RequestEncoder?>encoder)._is_plain_reply(frame, seq_id)


cdef Py_ssize_t _api_recv_space(object decoder, char** out) except -1:
    # FrameDecoder.get_buffer without the view: the decoder's single user (a connection) writes
    # straight into its bytearray, which nothing resizes until data_received.
    global _shared_owner
    cdef FrameDecoder d = <FrameDecoder?>decoder
    d._check_error()
    if d._lent_buf is not None:  # (a C caller reads into the decoder's own buffer only)
        d._lent_buf = None
        if _shared_owner == <PyObject*>d:
            _shared_owner = NULL
    d._reserve(MIN_READ)
    d._lent = PyByteArray_GET_SIZE(d._buf) - d._end
    out[0] = PyByteArray_AS_STRING(d._buf) + d._end
    return d._lent


cdef list _api_data_received(object decoder, Py_ssize_t nbytes):
    # FrameDecoder.buffer_updated for a C caller: no int objects in between.
    cdef FrameDecoder d = <FrameDecoder?>decoder
    d._check_error()
    if nbytes < 0 or nbytes > d._lent:
        raise ValueError(
            "nbytes %d out of range 0..%d (the size of the last get_buffer)" % (nbytes, d._lent)
        )
    d._lent = 0
    d._end += nbytes
    return d._decode()


cdef int _api_message_seq_id(const unsigned char* message, Py_ssize_t size,
                             int32_t* seq_id) except -1:
    # parse_message without the MessageHeader: the same checks, the same errors.
    cdef int64_t hend = _header_end(message, 0, size, -1)
    seq_id[0] = _i32(message + hend - 4)
    return 0


cdef CodecAPI _c_api
_c_api.version = 2
_c_api.message_seq_id = _api_message_seq_id
_c_api.recv_space = _api_recv_space
_c_api.data_received = _api_data_received
_c_api.encode_head = _api_encode_head
_c_api.is_plain_reply = _api_is_plain_reply
_C_API = PyCapsule_New(<void*>&_c_api, CODEC_API_NAME, NULL)
