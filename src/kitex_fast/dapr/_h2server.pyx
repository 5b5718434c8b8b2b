"""The compiled component server's HTTP/2 connection: libnghttp2 under an asyncio protocol, and
gRPC over it. It knows nothing of Kitex, routes or bindings: it calls a Python ``app``
(``h2server.App``, typed by ``_server_api.ServerApp``) with decoded values, and hands an Invoke
first to the compiled Invoke path (``_invoke.pyx``) when the app gave it one.

The rooms: nghttp2's declarations (``_nghttp2.pxd``), the OutputBinding messages' protobuf codec
(``_protobuf.pyx``), this connection, and the Invoke path. Imports run one way: ``_h2server`` ->
``_invoke`` -> ``_protobuf``, through the C entry points of their ``.pxd`` files.

Shape (httptools over llhttp; nghttp2's own old python/nghttp2.pyx): ``Connection`` is an asyncio
protocol whose ``data_received`` feeds ``nghttp2_session_mem_recv``; nghttp2 calls back
``_on_begin_headers`` / ``_on_header`` / ``_on_data_chunk`` / ``_on_frame_recv`` /
``_on_stream_close``, which keep a ``_Stream`` per request; replies are queued with
``nghttp2_submit_response``/``nghttp2_submit_trailer`` and leave in one ``transport.write`` of what
``nghttp2_session_mem_send`` produced (nghttp2 API: lib/includes/nghttp2/nghttp2.h, v1.52).

gRPC over HTTP/2 (grpc/grpc doc/PROTOCOL-HTTP2.md): a message is a 1-byte compressed flag, a 4-byte
big-endian length and the message; a reply is HEADERS (:status 200, content-type), DATA, and
trailers with ``grpc-status`` and a percent-encoded ``grpc-message``; an error before any reply is
"trailers-only" (one HEADERS frame with END_STREAM). ``grpc-timeout`` is 1-8 digits and a unit.
The status text and timeout helpers stay here: they are gRPC's HTTP/2 mapping, not protobuf.

Every read of peer bytes is bounds-checked against the end of its buffer; lengths from the peer
are checked against what is there before use.
"""

from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.string cimport memcmp, memcpy
from cpython.bytearray cimport (
    PyByteArray_AS_STRING, PyByteArray_FromStringAndSize, PyByteArray_GET_SIZE, PyByteArray_Resize,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.pycapsule cimport PyCapsule_GetPointer

from ._nghttp2 cimport *
from ._protobuf cimport PROTOBUF_API_NAME, ProtobufAPI
from ._invoke cimport INVOKE_API_NAME, InvokeAPI


# --- limits -------------------------------------------------------------------------------------

# daprd's --max-body-size default (4Mi; dapr/dapr cmd/daprd/options/options.go, docs/dapr.md
# "Limits"): no larger request reaches us through daprd; a longer one is refused with
# RESOURCE_EXHAUSTED, as grpc-go's default receive limit does.
DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024
# Request bytes buffered at once in the whole process, across every connection and stream (one
# counter, _held); past it a stream is refused with RESOURCE_EXHAUSTED and its connection lives.
# Per connection, --max-connections (256) x 64 MiB could have held 16 GiB.
DEFAULT_MAX_BUFFERED = 64 * 1024 * 1024
DEFAULT_MAX_CONNECTION_BUFFER = DEFAULT_MAX_BUFFERED  # (its former name)
# Reply bytes queued on one connection that the peer has not let us send (its flow-control window
# is shut, or it does not read). Past it, new streams are refused with RST_STREAM REFUSED_STREAM
# (RFC 9113 8.7: never processed, safe to retry; grpc-go retries such a stream transparently) and
# the reflection stream is reset, until it drains. Reading goes on: the WINDOW_UPDATE that lets the
# queue drain arrives on the same socket, so pausing reads would deadlock an honest slow reader.
DEFAULT_MAX_QUEUED = 16 * 1024 * 1024
# The header list size we advertise (SETTINGS_MAX_HEADER_LIST_SIZE) and hold a request to, counted
# as RFC 9113 6.5.2 defines it (name + value + 32 per field). libnghttp2 only advertises it; a
# larger list gets RESOURCE_EXHAUSTED (the gRPC form of HTTP 431, RFC 9113 10.5.1).
MAX_HEADER_LIST = 64 * 1024
# A connection must finish the HTTP/2 preface and its first SETTINGS within this many seconds, or
# it is closed (it holds a --max-connections slot). grpc-go's server allows 120 s for its
# handshake (grpc-go server.go, ConnectionTimeout / defaultServerOptions connectionTimeout); daprd
# sends its preface at once on a Unix socket, so 10 s is plenty.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
# A connection with no stream for this many seconds gets GOAWAY (NO_ERROR) and is closed once the
# GOAWAY is out, as grpc-go's MaxConnectionIdle does (grpc-go internal/transport/http2_server.go
# keepalive): a gRPC client such as daprd reconnects on its next call. 0 disables it.
DEFAULT_IDLE_TIMEOUT = 300.0
# grpc-message: at most this many bytes of a status text, then a note that it was cut. gRPC
# over HTTP/2 suggests clients limit trailers to 8 KiB (grpc/grpc doc/PROTOCOL-HTTP2.md), and
# percent-encoding may triple the text; grpcio's server cuts the same way (component.py).
MAX_STATUS_TEXT = 1024
# Streams open at once per connection (SETTINGS_MAX_CONCURRENT_STREAMS; nghttp2 refuses more with
# RST_STREAM REFUSED_STREAM). daprd multiplexes every call on one connection.
DEFAULT_MAX_STREAMS = 1024

# gRPC status codes by name (grpc/grpc doc/statuscodes.md).
GRPC_STATUS_BY_NAME = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}
cdef enum:
    ST_RESOURCE_EXHAUSTED = 8
    ST_UNIMPLEMENTED = 12
    ST_INTERNAL = 13


# After our last frame, how long a peer may take to close its side before we close hard.
LINGER_SECONDS = 2.0

from asyncio import get_running_loop as _get_running_loop
# Package modules through importlib, not `from ..x import` (see _codec.pyx: Cython >= 3.2 resolves
# a relative import to the build-time name, which in a vendored copy is another copy's).
from importlib import import_module as _import_module

_protobuf = _import_module("._protobuf", __package__)
_ProtobufError = _protobuf.ProtobufError
cdef ProtobufAPI* _pb = <ProtobufAPI*>PyCapsule_GetPointer(_protobuf._C_API, PROTOBUF_API_NAME)
cdef InvokeAPI* _invoke_api = <InvokeAPI*>PyCapsule_GetPointer(
    _import_module("._invoke", __package__)._C_API, INVOKE_API_NAME)
if _pb.version < 1 or _invoke_api.version < 1:  # (entries are only appended: version 1 has all we use)
    raise ImportError("kitex_fast.dapr._protobuf/_invoke are older than this _h2server")


# --- gRPC over HTTP/2 ---------------------------------------------------------------------------

def status_text(text):
    """A status text as it goes out in grpc-message: at most MAX_STATUS_TEXT bytes of UTF-8 (lone
    surrogates escaped), then how long it was when cut; the rule component._status_text applies
    on the grpcio server."""
    cdef bytes raw = (<str>text).encode("utf-8", "backslashreplace")
    if len(raw) <= MAX_STATUS_TEXT:
        return raw.decode("utf-8")
    return "%s... (cut: %d bytes)" % (raw[:MAX_STATUS_TEXT].decode("utf-8", "ignore"), len(raw))


def percent_encode(text):
    """``grpc-message``'s encoding: UTF-8, then every byte outside 0x20-0x7E and ``%`` as %XX."""
    cdef bytes raw = text if type(text) is bytes else (<str>text).encode("utf-8")
    cdef bytearray out = bytearray()
    cdef uint8_t c
    for c in raw:
        if 0x20 <= c <= 0x7E and c != 0x25:
            out.append(c)
        else:
            out += b"%%%02X" % c
    return bytes(out)


cdef double _parse_timeout(const uint8_t* v, size_t n):
    """``grpc-timeout`` (TimeoutValue TimeoutUnit: 1-8 digits, one of H M S m u n) in seconds;
    -1 when malformed (the call is then refused with INTERNAL, as grpc-go's server does:
    grpc-go internal/transport/http2_server.go, "malformed grpc-timeout")."""
    cdef size_t i
    cdef double value = 0
    if n < 2 or n > 9:
        return -1
    for i in range(n - 1):
        if v[i] < 48 or v[i] > 57:
            return -1
        value = value * 10 + (v[i] - 48)
    c = v[n - 1]
    if c == 72:  # H
        return value * 3600
    if c == 77:  # M
        return value * 60
    if c == 83:  # S
        return value
    if c == 109:  # m
        return value / 1e3
    if c == 117:  # u
        return value / 1e6
    if c == 110:  # n
        return value / 1e9
    return -1


# Methods, by :path (the service and method names of bindings.proto; reflection v1alpha's
# grpc/reflection/v1alpha/reflection.proto).
cdef enum:
    M_INVOKE = 1
    M_INIT = 2
    M_LIST = 3
    M_PING = 4
    M_REFLECT = 5
    M_UNKNOWN = 6

cdef dict _METHODS = {
    b"/dapr.proto.components.v1.OutputBinding/Invoke": M_INVOKE,
    b"/dapr.proto.components.v1.OutputBinding/Init": M_INIT,
    b"/dapr.proto.components.v1.OutputBinding/ListOperations": M_LIST,
    b"/dapr.proto.components.v1.OutputBinding/Ping": M_PING,
    b"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": M_REFLECT,
}

cdef bytes _EMPTY_REPLY = b"\x00\x00\x00\x00\x00"
cdef bytes _NOT_GRPC = b"kitex_fast component: this socket speaks gRPC (content-type application/grpc) only\n"


cdef class _Stream:
    cdef int32_t id
    cdef bytes path
    cdef bytes method
    cdef bytes content_type
    cdef bytes encoding
    cdef str instance
    cdef double timeout
    cdef bytes bad_timeout  # a grpc-timeout that does not parse (the call is refused), or None
    cdef bytearray inbuf
    # A unary request whose one DATA frame ends the stream, read where nghttp2 holds it (the
    # buffer given to nghttp2_session_mem_recv) instead of copied into inbuf: valid only until
    # that call returns, so data_received copies what is still lent then (Connection._settle).
    cdef const uint8_t* lent
    cdef Py_ssize_t lent_len
    cdef bint replied      # response HEADERS submitted
    cdef bint finished     # nothing more to read from the request (refused, or processed)
    cdef bint ended        # the peer ended its side
    cdef object out        # bytearray of DATA to send
    cdef Py_ssize_t out_pos
    cdef bint out_final    # no more DATA: trailers follow
    cdef bint deferred
    cdef bint plain        # a plain HTTP reply (not gRPC): the body ends the stream, no trailers
    cdef bint reset_after  # RST_STREAM NO_ERROR once our last frame is out (the client still sends)
    cdef Py_ssize_t header_bytes  # the request's header list size so far (RFC 9113 6.5.2)
    cdef int status
    cdef bytes message
    cdef public object task
    # An Invoke the compiled path took (_invoke's start): the running call, until its answer
    # arrives (_invoke_done) or the stream lets it go (_abandon_call); and this connection while
    # it runs (the answer's way back).
    cdef object call
    cdef Connection conn

    def __cinit__(self):
        self.inbuf = bytearray()
        self.timeout = -1
        self.instance = ""
        self.path = b""
        self.method = b""
        self.content_type = b""
        self.encoding = b""
        self.message = b""
        self.out = None


cdef inline nghttp2_nv _nv(bytes name, bytes value):
    cdef nghttp2_nv nv
    nv.name = <uint8_t*>PyBytes_AS_STRING(name)
    nv.namelen = len(name)
    nv.value = <uint8_t*>PyBytes_AS_STRING(value)
    nv.valuelen = len(value)
    nv.flags = NGHTTP2_NV_FLAG_NONE
    return nv


cdef int _on_begin_headers(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    if frame.hd.type != NGHTTP2_HEADERS or frame.headers.cat != NGHTTP2_HCAT_REQUEST:
        return 0
    try:
        if conn.queued > conn.max_queued:
            # Replies the peer has not taken fill this connection's budget (DEFAULT_MAX_QUEUED):
            # refuse the new stream unread; nghttp2 ignores the rest of its frames.
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame.hd.stream_id, NGHTTP2_REFUSED_STREAM)
            conn.refused_streams += 1
            return 0
        s = _Stream()
        s.id = frame.hd.stream_id
        conn.streams[s.id] = s
        if conn.idle_since:
            conn.idle_since = 0  # (a stream is open: not idle)
    except BaseException as exc:
        conn.error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef inline bint _is(const uint8_t* name, size_t n, const char* lit, size_t litn) noexcept:
    return n == litn and memcmp(name, lit, n) == 0


cdef int _on_header(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                    size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                    void* user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    cdef _Stream s
    if frame.hd.type != NGHTTP2_HEADERS or frame.headers.cat != NGHTTP2_HCAT_REQUEST:
        return 0  # trailers from the client: gRPC gives them no meaning
    try:
        s = conn.streams.get(frame.hd.stream_id)
        if s is None:
            return 0
        s.header_bytes += namelen + valuelen + 32
        if s.header_bytes > MAX_HEADER_LIST:
            return 0  # refused once the block is in (_on_frame_recv); nothing more is kept
        if _is(name, namelen, ":path", 5):
            s.path = PyBytes_FromStringAndSize(<const char*>value, valuelen)
        elif _is(name, namelen, ":method", 7):
            s.method = PyBytes_FromStringAndSize(<const char*>value, valuelen)
        elif _is(name, namelen, "content-type", 12):
            s.content_type = PyBytes_FromStringAndSize(<const char*>value, valuelen)
        elif _is(name, namelen, "grpc-timeout", 12):
            s.timeout = _parse_timeout(value, valuelen)
            if s.timeout < 0:
                s.bad_timeout = PyBytes_FromStringAndSize(<const char*>value, valuelen)
        elif _is(name, namelen, "grpc-encoding", 13):
            s.encoding = PyBytes_FromStringAndSize(<const char*>value, valuelen)
        elif _is(name, namelen, "x-component-instance", 20):
            s.instance = (<const char*>value)[:valuelen].decode("utf-8", "replace")
    except BaseException as exc:
        conn.error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_data_chunk(nghttp2_session* session, uint8_t flags, int32_t stream_id,
                        const uint8_t* data, size_t length, void* user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    try:
        try:
            conn._data(stream_id, data, length, flags)
        except Exception as exc:  # per-call code: this stream ends, the connection lives
            conn._stream_crashed(stream_id, exc)
    except BaseException as exc:
        conn.error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_frame_recv(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    cdef _Stream s
    if frame.hd.type == NGHTTP2_SETTINGS:
        if not frame.hd.flags & NGHTTP2_FLAG_ACK and not conn.settled:
            try:
                conn._handshake_done()
            except BaseException as exc:
                conn.error = exc
                return NGHTTP2_ERR_CALLBACK_FAILURE
        return 0
    if frame.hd.type == NGHTTP2_HEADERS and frame.headers.cat == NGHTTP2_HCAT_REQUEST:
        s = conn.streams.get(frame.hd.stream_id)
        if s is not None and s.header_bytes > MAX_HEADER_LIST and not s.finished:
            try:
                conn._refuse(s, ST_RESOURCE_EXHAUSTED,
                             "request header list is larger than the advertised SETTINGS_MAX_HEADER_LIST_SIZE "
                             "%d (counted as RFC 9113 6.5.2 does)" % MAX_HEADER_LIST)
            except BaseException as exc:
                conn.error = exc
                return NGHTTP2_ERR_CALLBACK_FAILURE
    if (frame.hd.type == NGHTTP2_DATA or frame.hd.type == NGHTTP2_HEADERS) and \
            frame.hd.flags & NGHTTP2_FLAG_END_STREAM:
        try:
            try:
                conn._end_stream(frame.hd.stream_id)
            except Exception as exc:  # per-call code: this stream ends, the connection lives
                conn._stream_crashed(frame.hd.stream_id, exc)
        except BaseException as exc:
            conn.error = exc
            return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_frame_send(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) noexcept:
    # A reset submitted together with the reply would make nghttp2 drop the queued reply (seen
    # with 1.52): the RST_STREAM that stops a client we stopped reading goes after our last frame.
    cdef Connection conn = <Connection>user_data
    cdef _Stream s
    if frame.hd.flags & NGHTTP2_FLAG_END_STREAM and (frame.hd.type == NGHTTP2_HEADERS or frame.hd.type == NGHTTP2_DATA):
        s = conn.streams.get(frame.hd.stream_id)
        if s is not None and s.reset_after and not s.ended:
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_NO_ERROR)
    return 0


cdef int _on_frame_not_send(nghttp2_session* session, const nghttp2_frame* frame, int lib_error_code,
                            void* user_data) noexcept:
    # A reply or trailers nghttp2 could not send (a header block over its limit, the stream
    # already closing...): end the stream with RST_STREAM INTERNAL_ERROR, never leave it open
    # holding a MAX_CONCURRENT_STREAMS slot (nghttp2 closes a stream only for a request it sent).
    if frame.hd.type == NGHTTP2_HEADERS or frame.hd.type == NGHTTP2_DATA:
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame.hd.stream_id, NGHTTP2_INTERNAL_ERROR)
    return 0


cdef int _on_stream_close(nghttp2_session* session, int32_t stream_id, uint32_t error_code,
                          void* user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    try:
        try:
            conn._stream_closed(stream_id)
        except Exception as exc:  # per-call code (abandoning its call): the stream is gone anyway
            conn.app.call_crashed(conn, "", exc)
    except BaseException as exc:
        conn.error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef ssize_t _read_data(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                        uint32_t* data_flags, nghttp2_data_source* source, void* user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    cdef _Stream s
    cdef Py_ssize_t n
    cdef nghttp2_nv nva[2]
    try:
        s = conn.streams.get(stream_id)
        if s is None:
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE  # (resets this stream only)
        out = <bytearray>s.out
        n = len(out) - s.out_pos
        if n > <Py_ssize_t>length:
            n = length
        if n > 0:
            memcpy(buf, <char*>out + s.out_pos, n)
            s.out_pos += n
            conn.queued -= n
            if s.out_pos == len(out):
                del out[:]
                s.out_pos = 0
        if len(out) == 0 and s.plain:
            data_flags[0] |= NGHTTP2_DATA_FLAG_EOF
            return n
        if len(out) == 0 and s.out_final:
            # The trailers end the stream (nghttp2.h: NGHTTP2_DATA_FLAG_NO_END_STREAM + submit_trailer
            # from inside the read callback).
            data_flags[0] |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM
            status = b"%d" % s.status
            nva[0] = _nv(b"grpc-status", status)
            if s.message:
                nva[1] = _nv(b"grpc-message", s.message)
            if nghttp2_submit_trailer(session, stream_id, nva, 2 if s.message else 1) != 0:
                # nghttp2.h, nghttp2_data_source_read_callback: this resets the stream with
                # INTERNAL_ERROR (CALLBACK_FAILURE would end the whole session)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
            return n
        if n == 0:
            s.deferred = True
            return NGHTTP2_ERR_DEFERRED
        return n
    except BaseException as exc:
        conn.error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int _invoke_done(object sink, object reply, int status, object text) except -1:
    """The answer of a call the compiled Invoke path took (``InvokeDone`` in _invoke.pxd):
    ``sink`` is its stream."""
    cdef _Stream s = <_Stream>sink
    cdef Connection conn = s.conn
    s.conn = None
    s.call = None
    conn.calls -= 1
    try:
        if status < 0:
            raise text  # per-call code raised: the except below ends this stream with its status
        if conn.streams.get(s.id) is not s:
            return 0  # (the connection is gone)
        if reply is not None:
            conn._reply(s, reply)
        else:
            conn.reply_status(s.id, status, text)
    except Exception as exc:  # per-call code: this stream ends, the connection lives
        conn._stream_crashed(s.id, exc)
        conn._flush()
        return 0
    if conn.calls:
        conn._flush_soon()  # more replies may complete in this iteration: one write for all
    else:
        conn._flush()  # the last call running: no reason to wait
    return 0


# Request bytes buffered by every connection of the process (DEFAULT_MAX_BUFFERED).
cdef Py_ssize_t _held = 0


def buffered_total():
    """Request bytes buffered right now across every connection of the process."""
    return _held


cdef class Connection:
    """One HTTP/2 connection of daprd (or any gRPC client): an asyncio protocol.

    ``app`` is the Python side (h2server.App; what it answers is ``_server_api.ServerApp``):
    ``invoke(conn, stream_id, instance, operation, data, metadata, timeout)`` and ``init(conn,
    stream_id, instance, properties)`` start the call and answer later through
    :meth:`reply_invoke` / :meth:`reply_empty` / :meth:`reply_status`; ``operations(instance)``
    and ``reflect(request bytes) -> reply bytes`` answer at once; ``connection_done(conn)`` is
    told when the connection is gone. ``invoke_path`` (an ``_invoke.InvokePath``, or None) gets
    each Invoke first, as decoded values; what it does not take goes to ``app.invoke``.

    Closing: ``goaway_sent`` (our final GOAWAY is queued), ``write_closed`` (our side is done:
    write_eof sent, reading to the peer's EOF); ``_close_write`` closes our side gracefully,
    ``_close_now`` aborts the transport, ``_linger_expired`` is the hard close after
    LINGER_SECONDS; ``_stream_closed`` is nghttp2 closing one stream."""

    cdef nghttp2_session* session
    cdef object transport
    cdef object app
    cdef dict streams
    cdef object error
    cdef Py_ssize_t buffered          # request bytes held across streams
    cdef Py_ssize_t max_message
    cdef Py_ssize_t max_buffer
    cdef bint paused
    cdef bint goaway_sent             # our final GOAWAY is queued: no new streams
    cdef bint write_closed            # our side is done: write_eof sent, reading to the peer's EOF
    cdef object linger                # the hard close if the peer never closes its side
    cdef public int calls             # calls running (Invoke/Init) on this connection
    cdef public long long compiled_calls  # Invokes sent on the compiled path (a count for tests and stats)
    cdef object invoke_path           # the compiled Invoke path (_invoke.InvokePath), or None
    cdef _Stream lent                 # the stream whose request bytes are lent (_Stream.lent), or None
    cdef object loop
    cdef bint flush_due               # a flush is scheduled for the end of this loop iteration
    cdef Py_ssize_t queued            # reply bytes in the streams' out buffers, not yet taken by nghttp2
    cdef Py_ssize_t max_queued
    cdef public long long refused_streams  # streams refused past max_queued (a count for tests and logs)
    cdef double handshake_timeout
    cdef double idle_timeout
    cdef object handshake             # the timer that closes a connection still without its preface
    cdef object idle_timer            # the timer that ends a connection idle for idle_timeout
    cdef double idle_since            # loop time the last stream closed (0: a stream is open)
    cdef bint settled                 # the client's preface and first SETTINGS are in

    def __init__(self, app, Py_ssize_t max_message=DEFAULT_MAX_MESSAGE,
                  Py_ssize_t max_buffer=DEFAULT_MAX_BUFFERED, int max_streams=DEFAULT_MAX_STREAMS,
                  Py_ssize_t max_queued=DEFAULT_MAX_QUEUED, double handshake_timeout=DEFAULT_HANDSHAKE_TIMEOUT,
                  double idle_timeout=DEFAULT_IDLE_TIMEOUT, invoke_path=None):
        """``max_buffer`` bounds the request bytes of the whole process (shared by every
        connection); the others hold for this connection (the DEFAULT_* above say what each is)."""
        cdef nghttp2_session_callbacks* cbs
        cdef nghttp2_settings_entry iv[2]
        self.app = app
        self.invoke_path = invoke_path
        self.streams = {}
        self.max_message = max_message
        self.max_buffer = max_buffer
        self.max_queued = max_queued
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        if nghttp2_session_callbacks_new(&cbs) != 0:
            raise MemoryError()
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, _on_begin_headers)
        nghttp2_session_callbacks_set_on_header_callback(cbs, _on_header)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, _on_data_chunk)
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, _on_frame_recv)
        nghttp2_session_callbacks_set_on_frame_send_callback(cbs, _on_frame_send)
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, _on_stream_close)
        nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, _on_frame_not_send)
        rv = nghttp2_session_server_new(&self.session, cbs, <void*>self)
        nghttp2_session_callbacks_del(cbs)
        if rv != 0:
            raise MemoryError(nghttp2_strerror(rv).decode())
        iv[0].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        iv[0].value = max_streams
        iv[1].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
        iv[1].value = MAX_HEADER_LIST
        nghttp2_submit_settings(self.session, NGHTTP2_FLAG_NONE, iv, 2)

    def __dealloc__(self):
        if self.session is not NULL:
            nghttp2_session_del(self.session)
            self.session = NULL

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        try:
            self.loop = _get_running_loop()
        except RuntimeError:  # driven by hand (the fuzz targets): replies are written at once
            self.loop = None
        if self.loop is not None and self.handshake_timeout > 0:
            self.handshake = self.loop.call_later(self.handshake_timeout, self._handshake_expired)
        self._flush()  # our SETTINGS go first (RFC 9113 3.4: the server preface)

    # -- bounded time without a handshake, or without a stream -----------------------------------

    cdef _handshake_done(self):
        """The client's preface and first SETTINGS are in."""
        self.settled = True
        if self.handshake is not None:
            self.handshake.cancel()
            self.handshake = None
        if self.loop is not None and self.idle_timeout > 0:
            self.idle_since = self.loop.time()
            self.idle_timer = self.loop.call_later(self.idle_timeout, self._idle_check)

    def _handshake_expired(self):
        self.handshake = None
        if self.transport is not None:
            self.app.handshake_expired(self, self.handshake_timeout)
            self._close_now()  # it never spoke HTTP/2: nothing to say GOAWAY to

    def _idle_check(self):
        self.idle_timer = None
        if self.transport is None or self.goaway_sent or self.write_closed:
            return
        now = self.loop.time()
        if self.streams or self.calls or not self.idle_since:
            wake = now + self.idle_timeout
        elif now - self.idle_since >= self.idle_timeout:
            # GOAWAY NO_ERROR naming the last stream, then close once it is out (_flush): the
            # client reconnects on its next call, as after grpc-go's MaxConnectionIdle.
            self.app.idle_closed(self, self.idle_timeout)
            self.goaway()
            return
        else:
            wake = self.idle_since + self.idle_timeout
        self.idle_timer = self.loop.call_at(wake, self._idle_check)

    def data_received(self, data):
        cdef const uint8_t[::1] view = data
        cdef ssize_t rv
        if self.session is NULL or view.shape[0] == 0 or self.write_closed:
            return  # (after our last frame: read and drop until the peer closes)
        rv = nghttp2_session_mem_recv(self.session, &view[0], view.shape[0])
        self._settle()  # (first: what nghttp2 lent us dies with `data`)
        if self.error is not None:
            err, self.error = self.error, None
            self.app.connection_error(self, err)
            self._close_write()
            return
        if rv < 0:
            # Not HTTP/2 (or a fatal protocol error): nghttp2 has queued GOAWAY where it could.
            self.app.protocol_error(self, nghttp2_strerror(<int>rv).decode(), bytes(data[:16]))
            self._flush()
            self._close_write()
            return
        self._flush()

    def eof_received(self):
        return False  # close our side too

    def connection_lost(self, exc):
        global _held
        streams, self.streams = self.streams, {}
        for s in streams.values():
            task = (<_Stream>s).task
            if task is not None and not task.done():
                task.cancel()
            try:
                self._abandon_call(<_Stream>s)
            except Exception as err:  # per-call code: the other streams are still to be let go
                self.app.call_crashed(self, (<_Stream>s).instance, err)
        _held -= self.buffered
        self.buffered = 0
        self.queued = 0
        self.transport = None
        if self.handshake is not None:
            self.handshake.cancel()
            self.handshake = None
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        self.app.connection_done(self)

    def pause_writing(self):
        # The peer does not read: stop reading from it too, so nothing piles up here.
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self):
        self.paused = False
        if self.transport is not None:
            self.transport.resume_reading()

    # -- the send side --------------------------------------------------------------------------

    cdef _flush(self):
        cdef const uint8_t* data
        cdef ssize_t n
        cdef Py_ssize_t have
        cdef bytearray out = None
        if self.session is NULL or self.transport is None:
            return
        while True:
            n = nghttp2_session_mem_send(self.session, &data)
            if n < 0:
                self._close_now()
                return
            if n == 0:
                break
            # One buffer for everything nghttp2 produces (its data is valid until the next
            # mem_send): one copy per byte, and one write per batch of frames. A new bytearray
            # each time: the transport may keep it (a partial send), so it is never reused.
            if out is None:
                out = PyByteArray_FromStringAndSize(<const char*>data, n)
            else:
                have = PyByteArray_GET_SIZE(out)
                PyByteArray_Resize(out, have + n)
                memcpy(PyByteArray_AS_STRING(out) + have, data, n)
        if self.error is not None:
            err, self.error = self.error, None
            self.app.connection_error(self, err)
            self._close_write()
            return
        if out is not None:
            self.transport.write(out)
        if not nghttp2_session_want_read(self.session) and not nghttp2_session_want_write(self.session):
            self._close_write()  # GOAWAY sent or received, and every stream done

    cdef _close_write(self):
        """Close our side gracefully: closing a socket with unread bytes in it sends TCP RST,
        and a RST can make the peer drop our last frames (the GOAWAY) unread. So: shutdown(SHUT_WR),
        read and drop until the peer closes, and close hard after LINGER_SECONDS at the latest."""
        if self.write_closed or self.transport is None:
            return
        self.write_closed = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.linger = _get_running_loop().call_later(LINGER_SECONDS, self._linger_expired)
        else:
            self.transport.close()

    def _linger_expired(self):
        self.linger = None
        self._close_now()

    cdef _close_now(self):
        if self.transport is not None:
            self.transport.abort()

    # -- the receive side (called from nghttp2's callbacks) -------------------------------------

    cdef _data(self, int32_t stream_id, const uint8_t* data, size_t length, uint8_t flags):
        global _held
        cdef Py_ssize_t have
        cdef _Stream s = self.streams.get(stream_id)
        if s is None or s.finished or s.inbuf is None:
            return
        if s.lent != NULL:
            self._settle()  # (more of the same stream: keep what was lent first, in order)
        if not s.content_type.startswith(b"application/grpc") or s.path not in _METHODS or s.bad_timeout is not None:
            return  # answered at END_STREAM (415 / UNIMPLEMENTED / INTERNAL); the body is not kept
        if _held + <Py_ssize_t>length > self.max_buffer:
            self._refuse(s, ST_RESOURCE_EXHAUSTED,
                         "the server holds %d request bytes already across its connections (limit %d): "
                         "try again later" % (_held, self.max_buffer))
            return
        self.buffered += length
        _held += length
        if (flags & NGHTTP2_FLAG_END_STREAM and self.lent is None and PyByteArray_GET_SIZE(s.inbuf) == 0
                and _METHODS[s.path] != M_REFLECT):
            # The whole request in one DATA frame that ends the stream, the usual unary call:
            # its END_STREAM is handled in this same nghttp2_session_mem_recv when the frame is
            # all in, so the message is read where it lies, with no copy at all.
            s.lent = data
            s.lent_len = length
            self.lent = s
            self._messages(s, False)
            return
        # (into the stream's buffer directly: `+= data[:length]` would first copy it into a bytes)
        have = PyByteArray_GET_SIZE(s.inbuf)
        PyByteArray_Resize(s.inbuf, have + <Py_ssize_t>length)
        memcpy(PyByteArray_AS_STRING(s.inbuf) + have, data, length)
        self._messages(s, False)

    cdef _settle(self):
        """Copy the request bytes still lent (the DATA frame was cut by the end of the input, or
        more data follows) into their stream's buffer: nghttp2's buffer is about to go."""
        cdef _Stream s = self.lent
        cdef Py_ssize_t have
        if s is None:
            return
        self.lent = None
        if s.lent != NULL:
            have = PyByteArray_GET_SIZE(s.inbuf)
            PyByteArray_Resize(s.inbuf, have + s.lent_len)
            memcpy(PyByteArray_AS_STRING(s.inbuf) + have, s.lent, s.lent_len)
            s.lent = NULL
            s.lent_len = 0

    cdef _drop_lent(self, _Stream s):
        """``s`` keeps no request bytes: release what it has lent (never copied)."""
        if s.lent != NULL:
            self._release(s.lent_len)
            s.lent = NULL
            s.lent_len = 0
        if self.lent is s:
            self.lent = None

    cdef _messages(self, _Stream s, bint at_end):
        """Act on the gRPC messages at the head of ``s.inbuf``: each one as it completes for the
        reflection stream; the one request of a unary method at END_STREAM."""
        cdef const uint8_t* p
        cdef Py_ssize_t have, n
        cdef bytearray buf
        cdef int method = _METHODS.get(s.path, M_UNKNOWN)
        while not s.finished:
            if s.lent != NULL:  # (never on the reflection stream, never together with inbuf bytes)
                have = s.lent_len
                p = s.lent
            else:
                have = len(s.inbuf)
                p = <const uint8_t*><char*>s.inbuf
            if have < 5:
                if at_end and have:
                    self._refuse(s, ST_INTERNAL, "request ends inside a gRPC message prefix (%d bytes)" % have)
                return
            n = (<Py_ssize_t>p[1] << 24) | (<Py_ssize_t>p[2] << 16) | (<Py_ssize_t>p[3] << 8) | p[4]
            if p[0] != 0:
                self._refuse(s, ST_UNIMPLEMENTED,
                             "compressed messages are not supported (grpc-encoding %r); send identity"
                             % s.encoding.decode("latin-1"))
                return
            if n > self.max_message:
                self._refuse(s, ST_RESOURCE_EXHAUSTED,
                             "grpc: received message larger than max (%d vs. %d)" % (n, self.max_message))
                return
            if have - 5 < n:
                if at_end:
                    self._refuse(s, ST_INTERNAL, "request ends inside a gRPC message (%d of %d bytes)" % (have - 5, n))
                return
            if method != M_REFLECT:
                if have > 5 + n:
                    self._refuse(s, ST_INTERNAL, "more than one request message for a unary method")
                    return
                if not at_end:
                    return  # a unary request is one message, then END_STREAM
            if method == M_REFLECT:
                message = PyBytes_FromStringAndSize(<const char*>p + 5, n)  # (the app keeps it)
                del s.inbuf[:5 + n]
                self._release(5 + n)
                if self.queued > self.max_queued:
                    # The peer takes none of the replies: answer no more on this stream.
                    self._reset(s, NGHTTP2_REFUSED_STREAM if not s.replied else NGHTTP2_INTERNAL_ERROR)
                    return
                self._reflect(s, message)
            elif s.lent != NULL:
                # Lent by nghttp2 and still valid (this is its mem_recv): decoded where it lies.
                self._drop_lent(s)
                s.finished = True
                self._unary(s, method, p + 5, n)
                return
            else:
                # The one request message is decoded where it lies (no slice, no bytes() copy):
                # the buffer leaves the stream first, so nothing can free or grow it meanwhile.
                buf = s.inbuf
                s.inbuf = bytearray()
                self._release(5 + n)
                s.finished = True
                self._unary(s, method, <const uint8_t*>PyByteArray_AS_STRING(buf) + 5, n)
                return

    cdef _end_stream(self, int32_t stream_id):
        cdef _Stream s = self.streams.get(stream_id)
        cdef int method
        if s is None:
            return
        s.ended = True
        if s.finished:
            return
        if not s.content_type.startswith(b"application/grpc"):
            # Not gRPC (gRPC over HTTP/2: "SHOULD respond with HTTP status 415").
            s.finished = True
            self._respond_http(s, b"415")
            return
        method = _METHODS.get(s.path, M_UNKNOWN)
        if s.bad_timeout is not None:
            s.finished = True
            self.reply_status(s.id, ST_INTERNAL, "malformed grpc-timeout %r: 1-8 digits and a unit, one of H M S m u n"
                              % s.bad_timeout.decode("latin-1"))
            return
        if method == M_UNKNOWN or s.method != b"POST":
            s.finished = True
            self.reply_status(s.id, ST_UNIMPLEMENTED,
                              "unknown method %s" % s.path.decode("latin-1") if method == M_UNKNOWN
                              else "gRPC needs POST, not %s" % s.method.decode("latin-1"))
            return
        self._messages(s, True)
        if s.finished:
            return
        if method == M_REFLECT:
            s.finished = True
            self._finish(s, 0, b"")
            return
        if len(s.inbuf) == 0:
            s.finished = True
            self.reply_status(s.id, ST_INTERNAL, "no request message for a unary method")

    cdef _release(self, Py_ssize_t n):
        """``n`` request bytes are no longer held."""
        global _held
        self.buffered -= n
        _held -= n

    cdef _reset(self, _Stream s, uint32_t code):
        """End ``s`` with RST_STREAM ``code``, dropping what it holds (its replies included)."""
        s.finished = True
        self._drop_lent(s)
        self._release(len(s.inbuf))
        s.inbuf = bytearray()
        if s.out is not None:
            self.queued -= len(<bytearray>s.out) - s.out_pos
            s.out = bytearray()
            s.out_pos = 0
        nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, s.id, code)

    cdef _stream_crashed(self, int32_t stream_id, exc):
        """Per-call code raised for ``stream_id``: that stream ends with the status the error maps
        to (the app logs one line), every other stream and the connection go on."""
        cdef _Stream s = self.streams.get(stream_id)
        instance = s.instance if s is not None else ""
        code, text = self.app.call_crashed(self, instance, exc)
        if s is None:
            return
        if s.replied:
            self._reset(s, NGHTTP2_INTERNAL_ERROR)  # a reply is under way: no status can follow it cleanly
        else:
            self._refuse(s, code, text)

    cdef _stream_closed(self, int32_t stream_id):
        cdef _Stream s = self.streams.pop(stream_id, None)
        if s is None:
            return
        self._drop_lent(s)
        self._release(len(s.inbuf))
        s.inbuf = None
        if s.out is not None:
            self.queued -= len(<bytearray>s.out) - s.out_pos
        if not self.streams and self.idle_timer is not None:
            self.idle_since = self.loop.time()
        if s.task is not None and not s.task.done():
            s.task.cancel()  # RST_STREAM from daprd: its deadline passed, or it went away
        self._abandon_call(s)

    cdef _refuse(self, _Stream s, int status, str text):
        """End a request we will not read further: the status, then RST_STREAM NO_ERROR so the
        client stops sending (gRPC over HTTP/2: a server may end a stream before the client)."""
        s.finished = True
        self._drop_lent(s)
        self._release(len(s.inbuf))
        s.inbuf = bytearray()
        s.reset_after = True
        self.reply_status(s.id, status, text)

    cdef _unary(self, _Stream s, int method, const uint8_t* p, Py_ssize_t n):
        """The one request message of a unary method, at ``p[0:n]`` (valid during this call)."""
        try:
            if method == M_INVOKE:
                data, metadata, operation = _pb.decode_invoke_request(p, n)
                if self.invoke_path is not None:
                    call = _invoke_api.start(self.invoke_path, s, _invoke_done, s.instance, operation,
                                             data, metadata, s.timeout)
                    if call is not None:
                        self.calls += 1
                        self.compiled_calls += 1
                        s.conn = self
                        s.call = call
                        return
                self.calls += 1
                try:
                    s.task = self.app.invoke(self, s.id, s.instance, operation, data, metadata,
                                             s.timeout if s.timeout >= 0 else None)
                except BaseException:
                    self.calls -= 1
                    raise
            elif method == M_INIT:
                properties = _pb.decode_init_request(p, n)
                self.calls += 1
                s.task = self.app.init(self, s.id, s.instance, properties)
            elif method == M_LIST:
                _pb.check_message(p, n)
                self._reply(s, _pb.encode_strings(self.app.operations(s.instance), 1, True))
            else:  # M_PING
                _pb.check_message(p, n)
                self._reply(s, _EMPTY_REPLY)
        except _ProtobufError as exc:
            self.reply_status(s.id, ST_INTERNAL, "grpc: error unmarshalling request: %s" % exc)
        except Exception as exc:
            # Per-call code failed: this call ends with its status (INTERNAL, grpcio's answer, for
            # an untyped error), and the connection and the other calls on it go on.
            self._stream_crashed(s.id, exc)

    cdef _reflect(self, _Stream s, bytes message):
        reply = self.app.reflect(message)
        self._headers(s)
        self._queue(s, reply)
        self._resume(s)

    # -- the compiled Invoke path's calls ------------------------------------------------------
    # (_invoke.pyx runs them; _invoke_done, below the class, is how their answers come back)

    cdef _abandon_call(self, _Stream s):
        """Let the compiled path's call on ``s`` go (daprd reset the stream, the connection is
        gone, or a drain ran out of time)."""
        call = s.call
        if call is not None and _invoke_api.abandon(call):
            s.call = None
            s.conn = None
            self.calls -= 1

    cdef _flush_soon(self):
        """Replies that complete in one loop iteration leave in one write."""
        if self.loop is None:
            self._flush()
        elif not self.flush_due:
            self.flush_due = True
            self.loop.call_soon(self._scheduled_flush)  # (not kept: a bound method would be a cycle)

    def _scheduled_flush(self):
        self.flush_due = False
        self._flush()

    # -- replies --------------------------------------------------------------------------------

    cdef _headers(self, _Stream s):
        cdef nghttp2_nv nva[2]
        cdef nghttp2_data_provider prd
        if s.replied:
            return
        s.replied = True
        s.out = bytearray()
        nva[0] = _nv(b":status", b"200")
        nva[1] = _nv(b"content-type", b"application/grpc")
        prd.source.ptr = NULL
        prd.read_callback = _read_data
        if nghttp2_submit_response(self.session, s.id, nva, 2, &prd) != 0:
            self._reset(s, NGHTTP2_INTERNAL_ERROR)  # never leave a stream without an end

    cdef _resume(self, _Stream s):
        if s.deferred:
            s.deferred = False
            nghttp2_session_resume_data(self.session, s.id)

    cdef _finish(self, _Stream s, int status, bytes message):
        self._headers(s)
        s.status = status
        s.message = message
        s.out_final = True
        self._resume(s)

    cdef _queue(self, _Stream s, object framed):
        """``framed`` goes out as DATA of ``s`` (after its HEADERS): a bytearray made for this
        reply becomes the stream's buffer when that is empty, instead of being copied into it."""
        if s.out_pos == 0 and PyByteArray_GET_SIZE(s.out) == 0 and type(framed) is bytearray:
            s.out = framed
        else:
            (<bytearray>s.out).extend(framed)
        self.queued += len(framed)

    cdef _reply(self, _Stream s, object framed):
        self._headers(s)
        self._queue(s, framed)
        self._finish(s, 0, b"")

    cdef _respond_http(self, _Stream s, bytes status):
        """A plain HTTP reply with a short text body, for a request that is not gRPC."""
        cdef nghttp2_nv nva[2]
        cdef nghttp2_data_provider prd
        s.replied = True
        s.plain = True
        s.out = bytearray(_NOT_GRPC)
        self.queued += len(_NOT_GRPC)
        nva[0] = _nv(b":status", status)
        nva[1] = _nv(b"content-type", b"text/plain")
        prd.source.ptr = NULL
        prd.read_callback = _read_data
        if nghttp2_submit_response(self.session, s.id, nva, 2, &prd) != 0:
            self._reset(s, NGHTTP2_INTERNAL_ERROR)

    def reply_invoke(self, int32_t stream_id, data, metadata, content_type):
        """The call on ``stream_id`` succeeded: its InvokeResponse, then grpc-status 0."""
        cdef _Stream s = self.streams.get(stream_id)
        self.calls -= 1
        if s is None:
            return  # reset by the client meanwhile
        try:
            framed = _pb.encode_invoke_response(data, metadata, content_type, True)
        except Exception as exc:  # a response that cannot be encoded: this call's status
            self._stream_crashed(stream_id, exc)
        else:
            self._reply(s, framed)
        self._flush()

    def reply_empty(self, int32_t stream_id):
        """The call on ``stream_id`` succeeded with an empty message (Init)."""
        cdef _Stream s = self.streams.get(stream_id)
        self.calls -= 1
        if s is None:
            return
        self._reply(s, _EMPTY_REPLY)
        self._flush()

    def call_failed(self, int32_t stream_id, int status, text):
        """A call started by the app failed with this gRPC status."""
        self.calls -= 1
        self.reply_status(stream_id, status, text)
        self._flush()

    def call_cancelled(self):
        self.calls -= 1

    def cancel_calls(self):
        """Give up the calls on the compiled path (a drain that ran out of time)."""
        for s in list(self.streams.values()):
            self._abandon_call(<_Stream>s)

    def reply_status(self, int32_t stream_id, int status, text):
        """End ``stream_id`` with a non-OK status: trailers-only when nothing was sent yet."""
        cdef _Stream s = self.streams.get(stream_id)
        cdef nghttp2_nv nva[4]
        cdef bytes code, message
        if s is None:
            return
        # The one place trailers get their text (the trailers writer, _read_data, sends
        # s.message): bounded, so that no status can outgrow a header block.
        message = percent_encode(status_text(text))
        if s.replied:
            self._finish(s, status, message)
            return
        s.replied = True
        code = b"%d" % status
        nva[0] = _nv(b":status", b"200")
        nva[1] = _nv(b"content-type", b"application/grpc")
        nva[2] = _nv(b"grpc-status", code)
        nva[3] = _nv(b"grpc-message", message)
        if nghttp2_submit_response(self.session, s.id, nva, 4 if message else 3, NULL) != 0:
            self._reset(s, NGHTTP2_INTERNAL_ERROR)  # never leave a stream without an end

    def shutdown_notice(self):
        """Start a graceful shutdown (GOAWAY with the last stream id 2^31-1: RFC 9113 6.8)."""
        if self.session is not NULL and not self.goaway_sent:
            nghttp2_submit_shutdown_notice(self.session)
            self._flush()

    def goaway(self):
        """Final GOAWAY naming the last stream processed; the connection closes once the streams
        still open are done."""
        if self.session is not NULL and not self.goaway_sent:
            self.goaway_sent = True
            nghttp2_submit_goaway(self.session, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(self.session),
                                  NGHTTP2_NO_ERROR, NULL, 0)
            self._flush()

    def close(self):
        if self.transport is not None:
            self.transport.close()

    @property
    def open_streams(self):
        return len(self.streams)

    @property
    def buffered_bytes(self):
        return self.buffered

    @property
    def queued_bytes(self):
        return self.queued
