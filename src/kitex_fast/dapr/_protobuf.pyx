"""The protobuf codec of the OutputBinding messages, for the compiled component server.

Requests are decoded from a pointer and a length (the connection's own buffer: no copy of the
message), replies are encoded into a bytearray the caller keeps. The other compiled modules reach
the C entry points through the capsule ``_C_API`` (declared in ``_protobuf.pxd``); the ``def``
functions below are the same codec for Python (the server's reflection replies, the tests and the
fuzz targets).

Messages: dapr/proto/components/v1 bindings.proto, common.proto. Every read of peer bytes is
bounds-checked against the end of its buffer; a length from the peer is checked against what is
there before use.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.pycapsule cimport PyCapsule_New
from cpython.list cimport PyList_GET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memcmp

cdef extern from "Python.h":
    # CPython's str layout macros (Include/cpython/unicodeobject.h): a compact ASCII str holds its
    # characters as bytes right after the object, so they compare with memcmp.
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)


__all__ = [
    "ProtobufError", "decode_invoke_request", "decode_init_request", "scan_fields",
    "encode_invoke_response", "encode_strings", "encode_fields", "map_entry",
]


class ProtobufError(ValueError):
    """Bytes that are not the message they claim to be (the text says what was found where)."""


# --- protobuf: the OutputBinding messages (dapr/proto/components/v1 bindings.proto, common.proto)
# Wire format: protobuf docs "Encoding" (varint, tag = field << 3 | wire type; 0 varint, 1 fixed64,
# 2 length-delimited, 5 fixed32; 3/4 groups are deprecated and refused here).

cdef inline Py_ssize_t _varint(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, uint64_t* out) except -1:
    cdef uint64_t value = 0
    cdef int shift = 0
    cdef uint8_t b
    while True:
        if pos >= end:
            raise ProtobufError("truncated varint at byte %d" % pos)
        if shift >= 64:
            raise ProtobufError("varint longer than 10 bytes at byte %d" % pos)
        b = p[pos]
        pos += 1
        value |= (<uint64_t>(b & 0x7F)) << shift
        shift += 7
        if b < 0x80:
            out[0] = value
            return pos


cdef Py_ssize_t _skip(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, uint32_t wire) except -1:
    """Past an unknown field's value (protobuf keeps unknown fields; these messages need none)."""
    cdef uint64_t n
    if wire == 0:
        return _varint(p, pos, end, &n)
    if wire == 1:
        if end - pos < 8:
            raise ProtobufError("truncated fixed64 at byte %d" % pos)
        return pos + 8
    if wire == 5:
        if end - pos < 4:
            raise ProtobufError("truncated fixed32 at byte %d" % pos)
        return pos + 4
    if wire == 2:
        pos = _varint(p, pos, end, &n)
        if n > <uint64_t>(end - pos):
            raise ProtobufError("length %d at byte %d runs past the end (%d bytes left)" % (n, pos, end - pos))
        return pos + <Py_ssize_t>n
    raise ProtobufError("wire type %d at byte %d is not supported" % (wire, pos))


cdef inline Py_ssize_t _tag(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, uint32_t* field, uint32_t* wire) except -1:
    cdef uint64_t t
    cdef Py_ssize_t start = pos
    pos = _varint(p, pos, end, &t)
    if pos - start > 5:
        # A tag is a 32-bit varint: upb (Python's protobuf) refuses a longer, zero-padded one;
        # protobuf-go reads it. No encoder writes one, so refusing it is the stricter of the two.
        raise ProtobufError("tag varint longer than 5 bytes at byte %d" % start)
    if t >> 3 == 0 or t >> 3 > 0x1FFFFFFF:
        raise ProtobufError("field number 0 or out of range at byte %d" % pos)
    field[0] = <uint32_t>(t >> 3)
    wire[0] = <uint32_t>(t & 7)
    return pos


cdef inline Py_ssize_t _delimited(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t* start) except -1:
    """Length-delimited value: its start in ``start``, its end returned."""
    cdef uint64_t n
    pos = _varint(p, pos, end, &n)
    if n > <uint64_t>(end - pos):
        raise ProtobufError("length %d at byte %d runs past the end (%d bytes left)" % (n, pos, end - pos))
    start[0] = pos
    return pos + <Py_ssize_t>n


cdef inline str _utf8(const uint8_t* p, Py_ssize_t start, Py_ssize_t stop, str what):
    try:
        return PyUnicode_DecodeUTF8(<const char*>p + start, stop - start, NULL)
    except UnicodeDecodeError:
        raise ProtobufError("%s is not valid UTF-8 (proto3 string)" % what) from None


# Recent map texts, by a hash of their length and a few of their bytes: daprd sends the same keys
# and most of the same values (hostPorts, destService, methodName, user-agent, ...) on every call,
# and a str taken from here is neither decoded nor allocated again and carries its hash already
# (the compiled path hashes every key and route value). 64 ASCII strs of at most 64 bytes: a few
# KiB, whatever the traffic; a slot holds the last text that hashed to it.
cdef enum:
    _TEXT_SLOTS = 64  # a power of two
    _TEXT_MAX = 64
cdef list _texts = [None] * _TEXT_SLOTS


cdef str _map_text(const uint8_t* p, Py_ssize_t start, Py_ssize_t stop, str what, bint is_key):
    """A map entry's key or value: :func:`_utf8`, through ``_texts``."""
    cdef Py_ssize_t n = stop - start
    cdef Py_ssize_t slot
    cdef object known
    cdef str text
    if n == 0:
        return ""
    if n > _TEXT_MAX:
        return _utf8(p, start, stop, what + (" key" if is_key else " value"))
    slot = (n * 31 + p[start] * 7 + p[stop - 1] * 3 + p[start + n // 2]) & (_TEXT_SLOTS - 1)
    known = <object>PyList_GET_ITEM(_texts, slot)
    if (known is not None and PyUnicode_GET_LENGTH(known) == n
            and memcmp(PyUnicode_DATA(known), p + start, n) == 0):
        return <str>known
    text = _utf8(p, start, stop, what + (" key" if is_key else " value"))
    if PyUnicode_IS_COMPACT_ASCII(text):  # (its characters are its UTF-8 bytes: memcmp above holds)
        _texts[slot] = text
    return text


cdef int _map_entry(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, dict out, str what) except -1:
    """A map<string, string> entry (key = 1, value = 2); absent parts are ""; last one wins."""
    cdef uint32_t field, wire
    cdef Py_ssize_t start
    cdef str key = "", value = ""
    while pos < end:
        pos = _tag(p, pos, end, &field, &wire)
        if (field == 1 or field == 2) and wire == 2:
            pos = _delimited(p, pos, end, &start)
            if field == 1:
                key = _map_text(p, start, pos, what, True)
            else:
                value = _map_text(p, start, pos, what, False)
        else:
            pos = _skip(p, pos, end, wire)
    out[key] = value
    return 0


cdef tuple _decode_invoke_request(const uint8_t* p, Py_ssize_t end):
    cdef uint32_t field, wire
    cdef Py_ssize_t pos = 0, start, stop
    cdef bytes data = b""
    cdef str operation = ""
    cdef dict metadata = {}
    while pos < end:
        pos = _tag(p, pos, end, &field, &wire)
        if field <= 3 and wire == 2:
            stop = _delimited(p, pos, end, &start)
            if field == 1:
                data = PyBytes_FromStringAndSize(<const char*>p + start, stop - start)
            elif field == 2:
                _map_entry(p, start, stop, metadata, "InvokeRequest.metadata")
            else:
                operation = _utf8(p, start, stop, "InvokeRequest.operation")
            pos = stop
        else:
            pos = _skip(p, pos, end, wire)
    return data, metadata, operation


cdef dict _decode_init_request(const uint8_t* p, Py_ssize_t end):
    cdef uint32_t field, wire, inner_field, inner_wire
    cdef Py_ssize_t pos = 0, start, stop, ipos, istart, istop
    cdef dict properties = {}
    while pos < end:
        pos = _tag(p, pos, end, &field, &wire)
        if field == 1 and wire == 2:  # OutputBindingInitRequest.metadata: MetadataRequest
            stop = _delimited(p, pos, end, &start)
            ipos = start
            while ipos < stop:
                ipos = _tag(p, ipos, stop, &inner_field, &inner_wire)
                if inner_field == 1 and inner_wire == 2:  # MetadataRequest.properties
                    istop = _delimited(p, ipos, stop, &istart)
                    _map_entry(p, istart, istop, properties, "MetadataRequest.properties")
                    ipos = istop
                else:
                    ipos = _skip(p, ipos, stop, inner_wire)
            pos = stop
        else:
            pos = _skip(p, pos, end, wire)
    return properties


cdef int _check_message(const uint8_t* p, Py_ssize_t end) except -1:
    """Any message with no field we read (the empty requests): only well-formed fields."""
    cdef uint32_t field, wire
    cdef Py_ssize_t pos = 0
    while pos < end:
        pos = _tag(p, pos, end, &field, &wire)
        pos = _skip(p, pos, end, wire)
    return 0


def decode_invoke_request(message):
    """``InvokeRequest`` bytes -> ``(data: bytes, metadata: dict, operation: str)``."""
    cdef const uint8_t[::1] view = message
    if view.shape[0] == 0:
        return b"", {}, ""
    return _decode_invoke_request(&view[0], view.shape[0])


def decode_init_request(message):
    """``OutputBindingInitRequest`` bytes -> its ``metadata.properties`` as a dict."""
    cdef const uint8_t[::1] view = message
    if view.shape[0] == 0:
        return {}
    return _decode_init_request(&view[0], view.shape[0])


def scan_fields(message):
    """Any message's top-level fields as ``[(field number, value)]``: ints for varint/fixed,
    bytes for length-delimited (the reflection requests, which are rare, use this)."""
    cdef const uint8_t[::1] view = message
    cdef Py_ssize_t pos = 0, end = view.shape[0], start, stop
    cdef uint32_t field, wire
    cdef uint64_t n
    cdef list out = []
    if end == 0:
        return out
    cdef const uint8_t* p = &view[0]
    while pos < end:
        pos = _tag(p, pos, end, &field, &wire)
        if wire == 2:
            stop = _delimited(p, pos, end, &start)
            out.append((field, PyBytes_FromStringAndSize(<const char*>p + start, stop - start)))
            pos = stop
        elif wire == 0:
            pos = _varint(p, pos, end, &n)
            out.append((field, n))
        else:
            start = pos
            pos = _skip(p, pos, end, wire)
            out.append((field, int.from_bytes((<const char*>p)[start:pos], "little")))
    return out


# -- encoding: into a bytearray, fields in number order, map entries by key (what protobuf's
# deterministic serialization writes; key and value always present, as upb's encode_mapentry).

cdef inline int _append(bytearray out, const char* p, Py_ssize_t n) except -1:
    """``out += p[:n]`` without the bytes object a slice of a char* would make first."""
    cdef Py_ssize_t have = PyByteArray_GET_SIZE(out)
    if n:
        PyByteArray_Resize(out, have + n)
        memcpy(PyByteArray_AS_STRING(out) + have, p, n)
    return 0


cdef inline int _put_varint(bytearray out, uint64_t v) except -1:
    cdef uint8_t buf[10]
    cdef int n = 0
    while v >= 0x80:
        buf[n] = <uint8_t>(v & 0x7F) | 0x80
        v >>= 7
        n += 1
    buf[n] = <uint8_t>v
    return _append(out, <char*>buf, n + 1)


cdef inline int _varint_size(uint64_t v) noexcept:
    cdef int n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline int _varint_into(uint8_t* buf, int pos, uint64_t v) noexcept:
    """``v`` as a varint at ``buf[pos:]`` (room for 10 bytes); returns the position after it."""
    while v >= 0x80:
        buf[pos] = <uint8_t>(v & 0x7F) | 0x80
        v >>= 7
        pos += 1
    buf[pos] = <uint8_t>v
    return pos + 1


cdef int _put_bytes_field(bytearray out, uint32_t field, const char* p, Py_ssize_t n) except -1:
    cdef uint8_t head[20]
    cdef int h = _varint_into(head, 0, (field << 3) | 2)
    h = _varint_into(head, h, <uint64_t>n)
    _append(out, <char*>head, h)  # (each append resizes the bytearray: the head goes in one)
    return _append(out, p, n)


cdef enum:
    _SHORT_ENTRY = 256  # an entry this short (key + value) is assembled on the stack, appended once


cdef int _put_entry(bytearray out, const char* key, Py_ssize_t klen, const char* value, Py_ssize_t vlen) except -1:
    """One ``map<string, string>`` entry of InvokeResponse.metadata (field 2)."""
    return _put_map_entry(out, 2, key, klen, value, vlen)


cdef int _put_map_entry(bytearray out, uint32_t field, const char* key, Py_ssize_t klen, const char* value,
                        Py_ssize_t vlen) except -1:
    """One ``map<string, string>`` entry of message field ``field`` (key = 1, value = 2)."""
    cdef uint8_t buf[_SHORT_ENTRY + 40]
    cdef int n
    cdef uint64_t size = <uint64_t>(_varint_size(klen) + klen + _varint_size(vlen) + vlen + 2)
    if klen + vlen > _SHORT_ENTRY:
        _put_varint(out, (field << 3) | 2)
        _put_varint(out, size)
        _put_bytes_field(out, 1, key, klen)
        return _put_bytes_field(out, 2, value, vlen)
    n = _varint_into(buf, 0, (field << 3) | 2)
    n = _varint_into(buf, n, size)
    n = _varint_into(buf, n, (1 << 3) | 2)
    n = _varint_into(buf, n, <uint64_t>klen)
    memcpy(&buf[n], key, klen)
    n += <int>klen
    n = _varint_into(buf, n, (2 << 3) | 2)
    n = _varint_into(buf, n, <uint64_t>vlen)
    memcpy(&buf[n], value, vlen)
    n += <int>vlen
    return _append(out, <char*>buf, n)


cdef bytes _as_utf8(object s):
    if type(s) is bytes:
        return <bytes>s
    return (<str>s).encode("utf-8")


cdef int _put_string_map(bytearray out, uint32_t field, object mapping) except -1:
    cdef bytes k, v
    cdef list items = sorted([(_as_utf8(a), _as_utf8(b)) for a, b in mapping.items()])
    for k, v in items:
        _put_map_entry(out, field, PyBytes_AS_STRING(k), len(k), PyBytes_AS_STRING(v), len(v))
    return 0


cdef int _grpc_prefix(bytearray out) except -1:
    return _append(out, b"\x00\x00\x00\x00\x00", 5)  # compressed flag 0, length patched by _patch_length


cdef int _patch_length(bytearray out) except -1:
    cdef Py_ssize_t n = len(out) - 5
    if n > 0xFFFFFFFF:
        raise ProtobufError("reply of %d bytes does not fit a gRPC message" % n)
    out[1] = (n >> 24) & 0xFF
    out[2] = (n >> 16) & 0xFF
    out[3] = (n >> 8) & 0xFF
    out[4] = n & 0xFF
    return 0


cdef bytearray _encode_invoke_response(object data, object metadata, object content_type, bint framed):
    cdef bytearray out = bytearray()
    cdef const uint8_t[::1] view = data
    cdef bytes ct
    if framed:
        _grpc_prefix(out)
    if view.shape[0]:
        _put_bytes_field(out, 1, <const char*>&view[0], view.shape[0])
    if metadata:
        _put_string_map(out, 2, metadata)
    if content_type:
        ct = _as_utf8(content_type)
        _put_bytes_field(out, 3, PyBytes_AS_STRING(ct), len(ct))
    if framed:
        _patch_length(out)
    return out


cdef bytearray _encode_strings(object strings, uint32_t field, bint framed):
    cdef bytearray out = bytearray()
    cdef bytes b
    if framed:
        _grpc_prefix(out)
    for s in strings:
        b = _as_utf8(s)
        _put_bytes_field(out, field, PyBytes_AS_STRING(b), len(b))
    if framed:
        _patch_length(out)
    return out


def encode_invoke_response(data, metadata, content_type, bint framed=False):
    """``InvokeResponse`` bytes (with the 5-byte gRPC prefix when ``framed``)."""
    return bytes(_encode_invoke_response(data, metadata, content_type, framed))


def encode_strings(strings, uint32_t field=1, bint framed=False):
    """A message whose only field is ``repeated string`` number ``field`` (ListOperationsResponse)."""
    return bytes(_encode_strings(strings, field, framed))


def encode_fields(fields, bint framed=False):
    """``[(field number, bytes | int)]`` -> a message (length-delimited for bytes, varint for int);
    for the prebuilt reflection replies."""
    cdef bytearray out = bytearray()
    cdef bytes b
    if framed:
        _grpc_prefix(out)
    for field, value in fields:
        if isinstance(value, int):
            _put_varint(out, (<uint32_t>field << 3) | 0)
            _put_varint(out, <uint64_t>value)
        else:
            b = bytes(value)
            _put_bytes_field(out, field, PyBytes_AS_STRING(b), len(b))
    if framed:
        _patch_length(out)
    return bytes(out)


def map_entry(key, value):
    """One encoded ``map<string, string>`` entry of InvokeResponse.metadata (the compiled Invoke
    path's constant response entries, FastRoute.entries)."""
    cdef bytearray out = bytearray()
    cdef bytes k = _as_utf8(key), v = _as_utf8(value)
    _put_entry(out, PyBytes_AS_STRING(k), len(k), PyBytes_AS_STRING(v), len(v))
    return bytes(out)


# The C entry points for _h2server and _invoke (see _protobuf.pxd).
cdef ProtobufAPI _api
_api.version = 1
_api.decode_invoke_request = _decode_invoke_request
_api.decode_init_request = _decode_init_request
_api.check_message = _check_message
_api.encode_invoke_response = _encode_invoke_response
_api.encode_strings = _encode_strings
_api.put_bytes_field = _put_bytes_field
_api.put_entry = _put_entry
_api.grpc_prefix = _grpc_prefix
_api.patch_length = _patch_length
_C_API = PyCapsule_New(<void*>&_api, PROTOBUF_API_NAME, NULL)
