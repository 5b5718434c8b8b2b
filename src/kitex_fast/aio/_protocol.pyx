"""The asyncio connection protocol, compiled: the per-reply path of ``kitex_fast.aio``.

One :class:`Protocol` per TCP connection. Requests go out as soon as they are encoded (several in
flight, each under its own seq id); replies are received straight into the frame decoder's buffer
(``asyncio.BufferedProtocol``), cut into frames, matched to their call by seq id and handed to the
future the call awaits, all in C but for the decoder and the future calls themselves.

A call that is cancelled or times out leaves its entry in the table: its late reply is consumed and
dropped, so the byte stream never desyncs. A connection whose state cannot be trusted any more (a
protocol error, a reply nobody asked for, the peer closing) is closed and every call still waiting
on it fails with a typed error.

Pure-Python twin: ``_protocol_py.py`` (same names, results and error texts).
"""

import asyncio
import sys
import time
from collections import deque

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject, PyObject_Call, PyTypeObject
from cpython.ref cimport Py_INCREF
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int32_t
from libc.string cimport memcpy

from .._codec_api cimport CODEC_API_NAME, CodecAPI

# Package modules come through importlib, not `from ..x import` (see _codec.pyx: Cython >= 3.2
# resolves a relative import to the build-time name, which in a vendored copy is another copy's).
from importlib import import_module as _import_module
texts = _import_module(".._transport_errors", __package__)
_errors = _import_module("..errors", __package__)
ConnectionClosedError = _errors.ConnectionClosedError
KitexError = _errors.KitexError
ProtocolError = _errors.ProtocolError
ResponseMismatchError = _errors.ResponseMismatchError
TransportError = _errors.TransportError
del _errors

__all__ = ["CallPath", "Deadlines", "Exchange", "PingPongCore", "Protocol", "pick", "seq_id_of"]

# The codec: its message-header parse through its C entry points (_codec_api.pxd), taken from
# this package's own codec dispatcher as _transport.pyx does; without them (a codec built apart
# from this module) its parse_message.
_codec = _import_module("..codec", __package__)
_parse_message = _codec.parse_message
cdef CodecAPI* _codec_api = NULL
try:
    _codec_api = <CodecAPI*>PyCapsule_GetPointer(_codec.implementation("c")._C_API, CODEC_API_NAME)
    if _codec_api.version < 2:  # message_seq_id came with version 2
        _codec_api = NULL
except (ImportError, AttributeError, ValueError):
    _codec_api = NULL
cdef int32_t _MAX_SEQ_ID = _codec.MAX_I32  # seq ids: 1 .. MAX_I32, then 1 again
cdef str _CONN_RESET = _codec.STR_KEY_CONN_RESET  # crrst: the server closes this connection
# Requests made in one loop iteration are written together up to this many bytes.
cdef Py_ssize_t _CORK_LIMIT = 65536
cdef bint _WRITELINES_MAY_NOT_PAUSE = sys.version_info >= (3, 12)
_JOINING_WRITELINES = asyncio.WriteTransport.writelines if sys.version_info < (3, 12) else None
# asyncio's own loops keep time with time.monotonic() and make futures with asyncio.Future, in
# Python methods: where a loop's class keeps those, they are called here without the frames.
_BaseEventLoop = _import_module("asyncio.base_events").BaseEventLoop
_BASE_TIME = _BaseEventLoop.time
_BASE_CREATE_FUTURE = _BaseEventLoop.create_future
_monotonic = time.monotonic
_Future = asyncio.Future
_get_running_loop = asyncio.events._get_running_loop
# The plain (not TLS) socket transports of asyncio's selector loop and of uvloop: while one's
# write buffer is empty, a request goes out through sendmsg() on its socket, which is what its
# write() would try first, minus the method's frames (asyncio's are Python; uvloop's write path
# was about 2,700 instructions a call) and, on asyncio's, the join.
_SELECTOR_TRANSPORT = getattr(_import_module("asyncio.selector_events"), "_SelectorSocketTransport", None)
_UVLOOP_TRANSPORTS = ("TCPTransport", "UnixTransport")  # (in uvloop.loop; never imported here)
cdef dict _direct_types = {}  # transport type -> whether requests go to its socket directly


cdef bint _writes_direct(type kind) except -1:
    known = _direct_types.get(kind)
    if known is None:
        known = kind is _SELECTOR_TRANSPORT or (
            kind.__module__ == "uvloop.loop" and kind.__name__ in _UVLOOP_TRANSPORTS)
        if len(_direct_types) < 64:  # (transport types are few; bounded all the same)
            _direct_types[kind] = known
    return known


# sendmsg() of a request's buffers. MSG_NOSIGNAL: a peer that reset must not raise SIGPIPE in a
# process that kept its default handler; the socket is nonblocking, so this never waits. Returns
# the bytes taken (0 when the kernel had no room), or -1 (an error, errno set; -2 where the
# platform has no sendmsg): then the transport writes it all and meets the error itself.
cdef extern from *:
    """
    #if defined(_WIN32)
    struct iovec { void *iov_base; size_t iov_len; };
    static Py_ssize_t kf_sendv(int fd, struct iovec *iov, int n) { return -2; }
    #else
    #include <errno.h>
    #include <string.h>
    #include <sys/socket.h>
    #include <sys/uio.h>
    #ifndef MSG_NOSIGNAL
    #define MSG_NOSIGNAL 0
    #endif
    static Py_ssize_t kf_sendv(int fd, struct iovec *iov, int n) {
        struct msghdr msg;
        ssize_t sent;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov;
        msg.msg_iovlen = n;
        do {
            sent = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        } while (sent < 0 && errno == EINTR);
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return (Py_ssize_t)sent;
    }
    #endif
    """
    struct iovec:
        void* iov_base
        size_t iov_len
    Py_ssize_t kf_sendv(int fd, iovec* iov, int n)

cdef enum:
    _MAX_IOV = 8  # buffers of one direct send: a request is a few of them (more: joined)


cdef object _seq_id_of(object frame):
    cdef object seq = frame.seq_id
    cdef object payload
    cdef int32_t value
    if seq is not None:
        return seq
    payload = frame.payload
    try:
        if _codec_api != NULL and PyBytes_CheckExact(payload):
            # The codec's own header parse (bounds and strictness checked there), a C call.
            _codec_api.message_seq_id(<const unsigned char*>PyBytes_AS_STRING(payload),
                                      PyBytes_GET_SIZE(payload), &value)
            return value
        return _parse_message(payload).seq_id
    except ProtocolError as exc:
        raise ProtocolError(
            "reply is not a strict-binary Thrift message (first bytes %s)"
            % bytes(payload[:16]).hex(" ")
        ) from exc


def seq_id_of(frame):
    """seq_id_of(frame) -> int

    The seq id a reply frame answers: the TTHeader SEQ ID when there is one (what Kitex's mux
    client matches on, kitex pkg/remote/trans/netpollmux/mux_conn.go), else the message's own.
    """
    return int(_seq_id_of(frame))


cdef inline bint _is_exception(object frame):
    cdef object payload = frame.payload
    return PyBytes_CheckExact(payload) and PyBytes_GET_SIZE(payload) >= 4 and \
        (<const unsigned char*>PyBytes_AS_STRING(payload))[3] == 3


def pick(list conns, Py_ssize_t limit):
    """pick(conns, limit) -> Protocol or None

    The least-loaded connection that can take a new call now (open, not retiring, not paused,
    fewer than ``limit`` calls in flight), or None.
    """
    cdef ProtocolCore proto
    cdef object best = None
    cdef Py_ssize_t load, best_load = limit
    for item in conns:
        proto = <ProtocolCore?>item
        if proto._usable:
            load = len(proto._pending)
            if load < best_load:
                best = proto
                best_load = load
                if load == 0:
                    break
    return best


cdef bytes _unsent(iovec* iov, int n, Py_ssize_t sent, Py_ssize_t total):
    """The bytes of ``iov[0:n]`` after its first ``sent`` (of ``total``), in one bytes object."""
    cdef bytes rest = PyBytes_FromStringAndSize(NULL, total - sent)
    cdef char* out = PyBytes_AS_STRING(rest)
    cdef size_t skip = <size_t>sent
    cdef size_t take
    cdef int i
    for i in range(n):
        if skip >= iov[i].iov_len:
            skip -= iov[i].iov_len
            continue
        take = iov[i].iov_len - skip
        memcpy(out, <char*>iov[i].iov_base + skip, take)
        out += take
        skip = 0
    return rest


cdef class ProtocolCore:
    """The state and the hot path of :class:`Protocol` (which adds ``asyncio.BufferedProtocol``
    as a base, so that both asyncio and uvloop take the zero-copy receive path)."""

    cdef object _loop
    cdef object _transport
    cdef object _decoder
    cdef object _get_buffer
    cdef object _buffer_updated
    cdef object _peer
    cdef object _waiters
    cdef list _conns  # the owner's connections that take new calls
    cdef dict _pending  # seq id -> future, oldest first
    cdef int32_t _seq
    cdef bint _usable  # open, not retiring, not paused: may take new calls
    cdef bint _paused
    cdef bint _retiring
    cdef bint _closed
    cdef list _out  # requests waiting for the end-of-iteration flush, or None
    cdef Py_ssize_t _out_bytes
    cdef object _lost
    cdef object _create_future
    cdef object _flush_cb
    cdef object _pause_check
    cdef Py_ssize_t _abandoned  # entries whose call gave up, reply still owed
    cdef bint _join_writes  # the transport's writelines() is write(b"".join(...)): call that
    cdef int _fd  # a plain socket transport's socket, which requests go to directly; else -1
    cdef bint _direct  # ... while that transport's write buffer is known to be empty
    # Set by the owning pool. ``mux``: the server answers in any order (a Kitex mux server), so
    # a call that gives up does not hold up the others and the connection stays. ``idle_since``
    # (loop time) and ``endpoint_index`` are the pool's bookkeeping for idle connections.
    cdef public bint mux
    cdef public double idle_since
    cdef public Py_ssize_t endpoint_index

    def __init__(self, loop, decoder, peer, waiters, list conns):
        self._loop = loop
        self._transport = None
        self._decoder = decoder
        self._get_buffer = decoder.get_buffer
        self._buffer_updated = decoder.buffer_updated
        self._peer = peer
        self._waiters = waiters
        self._conns = conns
        self._pending = {}
        self._seq = 0
        self._usable = False
        self._paused = False
        self._retiring = False
        self._closed = False
        self._out = None
        self._out_bytes = 0
        self._lost = loop.create_future()
        if getattr(type(loop), "create_future", None) is _BASE_CREATE_FUTURE:
            self._create_future = _FutureFactory(loop)  # (what that method does, minus its frame)
        else:
            self._create_future = loop.create_future
        self._flush_cb = self._flush
        self._pause_check = None
        self._abandoned = 0
        self._join_writes = False
        self._fd = -1
        self._direct = False
        self.mux = False
        self.idle_since = 0.0
        self.endpoint_index = 0

    # -- attributes

    @property
    def peer(self):
        return self._peer

    @property
    def transport(self):
        """The asyncio transport, or None before connect and after close."""
        return self._transport

    @property
    def load(self):
        """Calls in flight, including abandoned ones whose reply is still owed."""
        return len(self._pending)

    @property
    def usable(self):
        return self._usable

    @property
    def closed(self):
        return self._closed

    @property
    def paused(self):
        return self._paused

    def __repr__(self):
        state = "closed" if self._closed else "retiring" if self._retiring else "open"
        return "<Protocol to %s %s, %d in flight>" % (self._peer, state, len(self._pending))

    # -- asyncio callbacks

    def connection_made(self, transport):
        self._transport = transport
        peername = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if peername is not None and sock is not None:
            self._peer = texts.format_address(sock.family, peername)  # as the sync driver says it
        if _WRITELINES_MAY_NOT_PAUSE:
            # CPython 3.12.0-3.12.8 and 3.13.0-3.13.1: the selector transport's writelines()
            # never calls pause_writing (python/cpython gh-127655), so check after each write
            # (a no-op where it is fixed; uvloop's transports have no such method).
            self._pause_check = getattr(transport, "_maybe_pause_protocol", None)
        # CPython < 3.12's selector transport writes a list as write(b"".join(list)) in a Python
        # method of its base class; joining here saves that frame on every call. (uvloop's, and
        # 3.12's, write the list without joining it: left to them.)
        self._join_writes = (_JOINING_WRITELINES is not None
                             and getattr(type(transport), "writelines", None) is _JOINING_WRITELINES)
        if sock is not None and _writes_direct(type(transport)):
            self._fd = sock.fileno()
            self._direct = True
        if not self._closed:
            self._usable = True

    def get_buffer(self, sizehint):
        return self._get_buffer(-1)

    def buffer_updated(self, nbytes):
        cdef list frames
        cdef dict pending = self._pending
        cdef Py_ssize_t freed = 0
        cdef object fut
        cdef object seq
        try:
            frames = self._buffer_updated(nbytes)
        except KitexError as exc:  # the decoder's ProtocolError: the stream is unusable
            self._abort(exc)
            return
        for frame in frames:
            try:
                seq = _seq_id_of(frame)
            except ProtocolError as exc:
                self._abort(exc)
                return
            if PyDict_GetItem(pending, seq) == NULL:
                if not self._unmatched(frame, seq):
                    return
                continue
            fut = pending.pop(seq)
            freed += 1
            if not fut.done():
                fut.set_result(frame)
            elif self._abandoned:  # a cancelled or timed-out call's reply is dropped here
                self._abandoned -= 1
        if freed:
            if self._retiring:
                self.retire()  # closes once no live call is left
            elif self._waiters:
                self._wake(freed)

    cdef bint _unmatched(self, object frame, object seq) except -1:
        """A reply whose seq id has no call. True when it was harmless (the connection stays)."""
        if seq == 0:
            headers = frame.str_headers
            if headers and headers.get(_CONN_RESET) == "1" and not _is_exception(frame):
                # A mux server's shutdown control frame (kitex netpollmux/control_frame.go): it
                # will close this connection; let the calls on it finish, start none.
                self.retire()
                return True
            if _is_exception(frame) and self._pending:
                # Kitex may build an EXCEPTION with seq id 0 (kitex pkg/remote/codec/util.go
                # SetOrCheckSeqID exempts them); on an in-order connection it answers the oldest.
                oldest = next(iter(self._pending))
                fut = self._pending.pop(oldest)
                if not fut.done():
                    fut.set_result(frame)
                if self._retiring:
                    self.retire()
                return True
        self._abort(
            ResponseMismatchError(
                "reply from %s has seq id %d, which no call on this connection is waiting for"
                % (self._peer, seq)
            )
        )
        return False

    def eof_received(self):
        return False  # the transport closes itself; connection_lost fails what is left

    def connection_lost(self, exc):
        self._leave()
        self._closed = True
        self._transport = None
        self._fd = -1  # (the transport closes the socket after this)
        self._out = None
        if self._pending:
            pending_bytes = self._decoder.pending
            code = getattr(exc, "errno", None)
            for fut in self._pending.values():
                if not fut.done():
                    if code:
                        fut.set_exception(texts.recv_failed(self._peer, code, pending_bytes))
                    else:
                        fut.set_exception(texts.recv_eof(self._peer, pending_bytes))
            self._pending.clear()
        if not self._lost.done():
            self._lost.set_result(None)
        if self._waiters:
            self._wake(len(self._waiters))

    def pause_writing(self):
        # The peer is not reading fast enough: take no new calls until the buffer drains, so a
        # peer that stops reading never makes us buffer requests without bound.
        self._paused = True
        self._usable = False

    def resume_writing(self):
        self._paused = False
        if not (self._closed or self._retiring):
            self._usable = True
            if self._waiters:
                self._wake(len(self._waiters))

    # -- calls

    def next_seq_id(self):
        """1, 2, ... 2**31-1, then 1 again; never 0 (reserved for mux control frames) and never
        one still owed a reply."""
        return self._next_seq()

    cdef object _next_seq(self):
        cdef int32_t seq = self._seq
        while True:
            seq = seq + 1 if seq < _MAX_SEQ_ID else 1
            if PyDict_GetItem(self._pending, seq) == NULL:
                self._seq = seq
                return seq

    def send(self, buffers, seq_id):
        """Register a call under ``seq_id``, write its request, return the future of its reply."""
        return self._send(buffers, seq_id)

    cdef object _send(self, object buffers, object seq_id):
        if not self._usable:
            raise self._refusal()
        fut = self._create_future()
        if not self._pending and self._out is None:
            # Alone on the connection: write now (latency). With calls in flight, requests made
            # in the same loop iteration go out together in one write (one syscall for many).
            if self._write(buffers) and self._transport.is_closing():
                # The write failed on the spot (the peer had reset the connection): the kernel
                # took none of it, so the caller may send it elsewhere (sent=False).
                self._leave()
                raise texts.closed_error(self._peer, False)
        else:
            if self._out is None:
                self._out = []
                self._out_bytes = 0
                self._loop.call_soon(self._flush_cb)
            for b in buffers:
                self._out.append(b)
                self._out_bytes += len(b)
            if self._out_bytes >= _CORK_LIMIT:
                # Big requests go out now, so that pause_writing can stop the next ones.
                self._flush()
        self._pending[seq_id] = fut
        return fut

    def _flush(self):
        out = self._out
        self._out = None
        if out and self._transport is not None:
            self._write(out)

    cdef bint _write(self, object buffers) except -1:
        """Write ``buffers``: False when the socket took them all directly, True when the
        transport has them (its write may have failed on the spot and closed it)."""
        cdef object rest
        transport = self._transport
        if self._fd >= 0:
            if not self._direct:  # the transport held bytes of an earlier write: sent yet?
                self._direct = transport.get_write_buffer_size() == 0
            if self._direct:
                rest = self._send_direct(buffers)
                if rest is None:
                    return False
                # What the kernel had no room for (or all of it, after an error, which the
                # transport's own send then meets and handles as it would have): the transport
                # buffers it and writes it once the socket is writable.
                self._direct = False
                transport.write(rest)
                return True
        if self._join_writes:
            transport.write(b"".join(buffers))
        else:
            transport.writelines(buffers)
        if self._pause_check is not None:
            self._pause_check()
        return True

    cdef object _send_direct(self, object buffers):
        """sendmsg() ``buffers`` on the socket: None when it took them all, else the bytes it
        did not take, for the transport."""
        cdef iovec iov[_MAX_IOV]
        cdef Py_buffer views[_MAX_IOV]
        cdef int n = 0
        cdef int i
        cdef Py_ssize_t sent
        cdef Py_ssize_t total = 0
        if len(buffers) > _MAX_IOV:
            return b"".join(buffers)
        try:
            for b in buffers:
                PyObject_GetBuffer(b, &views[n], PyBUF_SIMPLE)
                n += 1
                iov[n - 1].iov_base = views[n - 1].buf
                iov[n - 1].iov_len = <size_t>views[n - 1].len
                total += views[n - 1].len
            sent = kf_sendv(self._fd, iov, n)
            if sent == total:
                return None
            return _unsent(iov, n, sent if sent > 0 else 0, total)
        finally:
            for i in range(n):
                PyBuffer_Release(&views[i])

    cdef object _refusal(self):
        if self._closed:
            return texts.closed_error(self._peer, False)
        return TransportError(
            "connection to %s takes no new calls (%s); pick another"
            % (self._peer, "retiring" if self._retiring else "write buffer full"),
            sent=False,
        )

    def expire(self, fut, budget):
        """Timer callback: the call behind ``fut`` ran out of time. Its entry stays, so a late
        reply is consumed and dropped (the byte stream never desyncs)."""
        if fut.done():
            return
        fut.set_exception(texts.recv_timeout(self._peer, budget, self._decoder.pending))
        self._gave_up()

    def abandoned(self):
        """A call on this connection was cancelled: its entry stays, so the late reply is read
        and dropped."""
        self._gave_up()

    cdef _gave_up(self):
        # On an in-order server every request behind a stalled one waits for it, so the
        # connection takes no new calls and closes once no live call is left. A mux server
        # answers each call on its own: the connection stays, unless replies nobody waits for
        # come to outnumber the live calls (a server that stopped answering).
        self._abandoned += 1
        if not self.mux or self._abandoned * 2 > len(self._pending):
            self.retire()

    def retire(self):
        """Take no new calls; close once no live call waits on this connection."""
        self._retiring = True
        self._leave()
        for fut in self._pending.values():
            if not fut.done():
                return
        self._shut()

    cdef _shut(self):
        transport = self._transport
        self._leave()
        if transport is not None and not self._closed:
            self._closed = True
            self._flush()
            transport.close()

    cdef _abort(self, exc):
        """The stream cannot be trusted: fail every waiting call with ``exc`` and close."""
        self._leave()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(_copy_error(exc))
        self._pending.clear()
        self._out = None
        transport = self._transport
        self._closed = True
        if transport is not None:
            transport.abort()

    def close(self, exc=None):
        """Fail every waiting call (with ``exc``, or a ConnectionClosedError) and close now."""
        if exc is None:
            exc = ConnectionClosedError("connection to %s was closed by the client" % self._peer, sent=True)
        self._abort(exc)

    def wait_closed(self):
        """An awaitable that completes once the transport is gone (``connection_lost``)."""
        return self._lost

    cdef _leave(self):
        """Stop taking new calls for good."""
        self._usable = False
        try:
            self._conns.remove(self)
        except ValueError:
            pass

    cdef _wake(self, Py_ssize_t n):
        waiters = self._waiters
        while n > 0 and waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1


class Protocol(ProtocolCore, asyncio.BufferedProtocol):
    """``Protocol(loop, decoder, peer, waiters, conns)``: one client connection.

    ``waiters`` is the owner's queue of futures waiting for room on some connection: a freed slot,
    a resumed writer or a closed connection wakes the oldest. ``conns`` is the owner's list of
    connections that take new calls: the protocol leaves it when it stops taking them.
    """

    __slots__ = ()


# -- rpc timeouts ------------------------------------------------------------------------------

@cython.freelist(64)
cdef class _Deadline:
    """One call's place in :class:`Deadlines`; ``cancel()`` when the call is over."""

    cdef double when
    cdef object proto  # None once the call is over (cancelled or expired)
    cdef object fut
    cdef object budget
    cdef Deadlines owner

    def cancel(self):
        self.proto = None
        self.fut = None
        self.owner._prune()


cdef class Deadlines:
    """``Deadlines(loop, limit=4096)``: the rpc timeouts of one pool's calls on one loop timer.

    A timer per call (``loop.call_at`` and ``cancel``) was about a fifth of a call's instructions
    on uvloop (9,500 of 41,700, callgrind, 64 in flight), and on asyncio's loop each one also goes
    through a heap ordered by Python comparisons. Calls of one pool mostly share one timeout, so
    their deadlines arrive in order: they queue here, oldest first, under a single timer armed for
    the oldest that is still running; a call that ends leaves the queue from the front as soon as
    every older call has ended too. A deadline earlier than the newest queued one (a shorter
    per-call timeout, daprd's deadline), or one past ``limit`` queued calls (older calls that
    neither end nor expire yet), gets a timer of its own, as before: order and memory hold.

    ``call_at(when, proto, fut, budget)`` returns something with ``cancel()``; at ``when``, unless
    cancelled, it calls ``proto.expire(fut, budget)``.
    """

    cdef object _loop
    cdef object _queue  # deque of _Deadline, ``when`` non-decreasing
    cdef object _timer  # the loop's handle armed for the oldest queued deadline, or None
    cdef double _timer_at  # when it fires: never after the oldest queued deadline
    cdef Py_ssize_t _limit

    def __init__(self, loop, Py_ssize_t limit=4096):
        self._loop = loop
        self._queue = deque()
        self._timer = None
        self._timer_at = 0.0
        self._limit = limit

    def __len__(self):
        return len(self._queue)

    def call_at(self, double when, proto, fut, budget):
        return self._call_at(when, proto, fut, budget)

    cdef object _call_at(self, double when, object proto, object fut, object budget):
        cdef object queue = self._queue
        cdef Py_ssize_t n = len(queue)
        cdef _Deadline entry
        if n >= self._limit or (n and when < (<_Deadline>queue[-1]).when):
            return self._loop.call_at(when, proto.expire, fut, budget)
        entry = _Deadline.__new__(_Deadline)
        entry.when = when
        entry.proto = proto
        entry.fut = fut
        entry.budget = budget
        entry.owner = self
        queue.append(entry)
        if self._timer is None or when < self._timer_at:  # (an emptied queue's timer may be later)
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(when, self._fire)
            self._timer_at = when
        return entry

    cdef _prune(self):
        cdef object queue = self._queue
        while queue and (<_Deadline>queue[0]).proto is None:
            queue.popleft()

    def _fire(self):
        """The timer: expire every queued call whose deadline has come, re-arm for the next."""
        cdef object queue = self._queue
        cdef _Deadline entry
        cdef double now = self._loop.time()
        self._timer = None
        while queue:
            entry = <_Deadline>queue[0]
            if entry.proto is None:
                queue.popleft()
                continue
            if entry.when > now:
                self._timer = self._loop.call_at(entry.when, self._fire)
                self._timer_at = entry.when
                return
            queue.popleft()
            proto, fut = entry.proto, entry.fut
            entry.proto = None
            entry.fut = None
            try:
                proto.expire(fut, entry.budget)
            except Exception as exc:  # one call's failure never keeps the others from expiring
                self._loop.call_exception_handler(
                    {"message": "kitex_fast.aio: expiring a call failed", "exception": exc})

    def close(self):
        """Cancel the timer and forget every queued call (the pool fails them as it closes)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()


@cython.final
cdef class _FutureFactory:
    """``asyncio.Future(loop=loop)``: BaseEventLoop.create_future without its Python frame."""
    cdef dict _kwargs

    def __init__(self, loop):
        self._kwargs = {"loop": loop}

    def __call__(self):
        # (the one keyword dict, passed as is: `**` would copy it on every call; Future's
        # constructor only reads it)
        return PyObject_Call(_Future, (), self._kwargs)


cdef class PingPongCore:
    """The idle connections of a one-call-per-connection pool and its two per-call rules, ``take``
    and ``release`` (``kitex_fast.aio.pool.PingPongPool`` is built on it, with the compiled
    :class:`CallPath` calling both in C). The pool's other attributes (``loop``, ``waiters``,
    ``_closed``, ``_sweep_handle``) live here too, so these rules read them without a lookup;
    ``wake`` and ``_arm_sweep`` are the pool's."""

    cdef public list idle  # per endpoint slot: idle connections, the most recently released last
    cdef public object loop
    cdef public object waiters
    cdef public bint _closed
    cdef public object _sweep_handle
    cdef public Py_ssize_t max_idle
    cdef public double max_idle_time
    cdef public Py_ssize_t _next  # round robin over the endpoint slots
    cdef public Py_ssize_t _picked  # the slot take() picked for the call that now acquires
    cdef object _clock_loop  # the loop whose clock _now() last read, and whether it is ...
    cdef bint _clock_monotonic  # ... time.monotonic() (asyncio's own loops)

    def take(self):
        """An idle connection to this call's endpoint, or None (then the pool's ``acquire``).
        No await: the common case. As in Kitex, the balancer picks the endpoint first (round
        robin over the slots, which a registry weights) and the pool gives a connection to that
        endpoint: an idle connection of another one is not taken, or the weights would not
        hold."""
        return self._take()

    def release(self, proto):
        """A call on ``proto`` is done and the connection is clean: hand it to the oldest waiting
        call, or keep it idle (or close it when the pool keeps no more)."""
        self._release(proto)

    cdef object _take(self):
        cdef list idle = self.idle
        cdef list conns
        cdef Py_ssize_t n = len(idle)
        cdef Py_ssize_t slot
        if n == 1:
            self._picked = 0
            conns = <list>idle[0]
        elif n == 0:  # a registry with no instance (yet)
            return None
        else:
            slot = self._next % n
            self._next = slot + 1
            self._picked = slot
            conns = <list>idle[slot]
        return conns.pop() if conns else None

    cdef object _release(self, object proto):
        cdef list idle
        cdef double now
        cdef ProtocolCore core = proto if isinstance(proto, ProtocolCore) else None
        if not (core._usable if core is not None else proto.usable):  # retiring, paused or closed
            proto.retire()  # closes it, since no call is left on it
            return
        if self.waiters and self.wake(1, proto):  # handed straight to the oldest waiting call
            return
        idle = <list>self.idle[core.endpoint_index if core is not None else proto.endpoint_index]
        if self._closed or len(idle) >= self.max_idle or self.max_idle_time <= 0.0:
            proto.retire()
            return
        now = self._now()
        if core is not None:
            core.idle_since = now
        else:
            proto.idle_since = now
        idle.append(proto)
        if self._sweep_handle is None:  # (every call releases: no method call when one is armed)
            self._arm_sweep(now + self.max_idle_time)

    cdef double _now(self) except? -1.0:
        """``self.loop.time()``."""
        loop = self.loop
        if loop is not self._clock_loop:
            self._clock_loop = loop
            self._clock_monotonic = getattr(type(loop), "time", None) is _BASE_TIME
        if self._clock_monotonic:
            return _monotonic()
        return loop.time()


cdef object _copy_error(exc):
    """A fresh exception with the same type and text for each failed call (one instance raised
    in many tasks would collect all their tracebacks)."""
    if isinstance(exc, TransportError):
        return type(exc)(str(exc), sent=exc.sent)
    try:
        return type(exc)(str(exc))
    except TypeError:
        return exc


# -- the common path of a call -----------------------------------------------------------------

cdef double _MAX_DURATION = _import_module("..limits", __package__).MAX_DURATION


@cython.auto_pickle(False)
@cython.final
cdef class CallPath:
    """The common path of one asyncio Client's calls, the twin of the sync transport's
    ``CallPath``: ``CallPath(pool, encoders, rpc_timeout, unset, headers_type, settle)``.
    ``pool`` is the client's connection pool, ``encoders`` its request-encoder cache (shared: the
    client fills it, keyed by method or ``(method, headers)``), ``unset`` its "no per-call timeout
    given" marker, ``headers_type`` the type of the per-call headers it takes, ``settle(proto,
    frame, method, seq_id)`` the client's end of a call whose reply is not a plain REPLY.

    It decides nothing. :meth:`start` carries out a call when the cached state applies (a known
    encoder, a timeout of the validated shape, the pool's loop running, an idle connection) and
    otherwise answers "not handled": None (nothing was done) or False (the pool had no idle
    connection for the endpoint it picked: the client's full path acquires one there).
    :meth:`begin` sends on a connection the full path acquired. Both give an :class:`Exchange`,
    whose await is the call's ``(reply frame, seq id, endpoint text)``."""

    cdef object _pool
    cdef PingPongCore _core      # the pool, when it is a PingPongCore: take/release in C
    cdef object _take            # else the pool's take and release (bound once)
    cdef object _release
    cdef dict _encoders
    cdef object _timeout         # the client's rpc timeout: None or float seconds
    cdef object _unset
    cdef type _headers_type
    cdef object _settle
    cdef public bint closed      # set by Client.close(): calls take the full path, which refuses
    cdef public bint retired     # set by Client.retire(): each connection closes after its call

    def __init__(self, pool, dict encoders, rpc_timeout, unset, type headers_type, settle):
        self._pool = pool
        self._core = pool if isinstance(pool, PingPongCore) else None
        self._take = pool.take
        self._release = pool.release
        self._encoders = encoders
        self._timeout = rpc_timeout
        self._unset = unset
        self._headers_type = headers_type
        self._settle = settle

    def start(self, method, message, rpc_timeout, headers):
        """The call's :class:`Exchange`, or "not handled" (see the class)."""
        cdef object timeout
        cdef object key
        cdef object encoder
        cdef type mtype = type(message)
        if self.closed or type(method) is not str:
            return None
        # bytes or bytearray (a memoryview: the full path checks that it is contiguous)
        if mtype is not bytes and mtype is not bytearray:
            return None
        if rpc_timeout is self._unset:
            timeout = self._timeout
        elif rpc_timeout is None or (
                type(rpc_timeout) is float and 0.0 < <double>rpc_timeout <= _MAX_DURATION):
            timeout = rpc_timeout  # the binding's already-validated value
        else:
            return None
        if headers is None:
            key = method
        elif type(headers) is self._headers_type:
            key = (method, headers)
        else:
            return None
        try:
            encoder = self._encoders.get(key)
        except TypeError:  # unhashable headers
            return None
        if encoder is None:  # a method (or headers) seen for the first time
            return None
        pool = self._pool
        loop = pool.loop
        # The first call binds the pool to its loop; a call from another loop (or none) takes
        # the full path, which says what is wrong.
        if loop is None or _get_running_loop() is not loop:
            return None
        core = self._core
        proto = core._take() if core is not None else self._take()
        if proto is None:
            return False
        try:
            return self._begin(<ProtocolCore?>proto, encoder, message, method,
                               self._deadline(loop, timeout) if timeout else None, timeout)
        except TransportError as exc:
            if exc.sent:
                raise
            # The connection died before it took a byte (the sync driver's rule): nothing
            # reached the server; the full path sends the call on another connection.
            return None

    cdef object _deadline(self, object loop, object timeout):
        if self._core is not None:
            return self._core._now() + <double>timeout
        return loop.time() + <double>timeout

    cdef _give_back(self, object proto):
        """The pool's release of ``proto``."""
        if self._core is not None:
            self._core._release(proto)
        else:
            self._release(proto)

    def begin(self, proto, encoder, message, method, deadline, timeout):
        """Send ``message`` on ``proto`` (the full path's connection from the pool): the call's
        :class:`Exchange`. The encoder's errors before any byte is written give the connection
        back; a TransportError with ``sent`` False: nothing reached the server."""
        return self._begin(<ProtocolCore?>proto, encoder, message, method, deadline, timeout)

    cdef Exchange _begin(self, ProtocolCore proto, object encoder, object message, object method,
                         object deadline, object timeout):
        cdef Exchange call
        seq = proto._next_seq()
        try:
            # Validates the message (strict CALL, one complete struct) before any byte is written.
            buffers = encoder.encode(message, seq)
        except BaseException:
            self._give_back(proto)  # nothing was written: the connection is as clean as it was
            raise
        fut = proto._send(buffers, seq)
        if self.retired:
            proto.retire()  # an evicted client: this connection closes after its calls
        call = Exchange.__new__(Exchange)
        call.path = self
        call.proto = proto
        call.fut = fut
        call.encoder = encoder
        call.method = method
        call.seq = seq
        if deadline is not None:
            deadlines = self._pool.deadlines
            if type(deadlines) is Deadlines:
                call.timer = (<Deadlines>deadlines)._call_at(deadline, proto, fut, timeout)
            else:
                call.timer = deadlines.call_at(deadline, proto, fut, timeout)
        return call


@cython.auto_pickle(False)
@cython.final
@cython.freelist(64)
cdef class Exchange:
    """One call in flight (from :class:`CallPath`): awaitable once, for ``(reply frame, seq id,
    endpoint text)``. It waits on the reply's future itself, as that future's own ``__await__``
    would (no coroutine frame of its own), then gives a clean connection back to the pool or
    has the client settle an unusual reply. Cancelled while waiting: the connection's entry
    stays, so the late reply is read and dropped."""

    cdef CallPath path
    cdef ProtocolCore proto
    cdef object fut              # None once the call is over
    cdef object timer
    cdef object encoder
    cdef object method
    cdef object seq

    def __await__(self):
        return self

    def __next__(self):
        return self._step()

    def send(self, value):
        return self._step()  # (what a task sends: None)

    def throw(self, typ, val=None, tb=None):
        """The awaiting task throws in the reply future's error, or its cancellation."""
        cdef object exc
        self._drop()
        if val is None:
            exc = typ if isinstance(typ, BaseException) else typ()
        elif isinstance(val, BaseException):
            exc = val
        else:
            exc = typ(val)
        if tb is not None:
            exc = exc.with_traceback(tb)
        raise exc

    def close(self):
        self._drop()

    cdef object _step(self):
        cdef bint finished = False
        value = self._advance(&finished)
        if finished:
            raise StopIteration(value)
        return value

    cdef object _advance(self, bint* finished):
        """The future to wait on, or (``finished`` set) the call's answer."""
        fut = self.fut
        if fut is None:
            raise RuntimeError("cannot reuse an already awaited call")
        if not fut.done():
            fut._asyncio_future_blocking = True  # as the future's own __await__ yields it
            return fut
        self.fut = None
        self._disarm()
        frame = fut.result()  # the call's error raises here (a task throws it in instead)
        proto = self.proto
        finished[0] = True
        if self.encoder.is_plain_reply(frame, self.seq):
            self.path._give_back(proto)  # the common case: a C check, no header object
            return (frame, self.seq, proto._peer)
        return self.path._settle(proto, frame, self.method, self.seq)

    cdef _disarm(self):
        timer = self.timer
        if timer is not None:
            self.timer = None
            if type(timer) is _Deadline:
                (<_Deadline>timer).proto = None
                (<_Deadline>timer).fut = None
                (<_Deadline>timer).owner._prune()
            else:
                timer.cancel()

    cdef _drop(self):
        """The awaiting task gave up on the call, or takes the reply future's error."""
        fut = self.fut
        if fut is None:
            return
        self.fut = None
        self._disarm()
        proto = self.proto
        if not fut.done() or fut.cancelled():
            proto._gave_up()  # its entry stays: the late reply is read and dropped
        elif fut.exception() is None:
            # Cancelled just as the reply came: the connection is clean, or (an unusual reply)
            # done with after its calls.
            if self.encoder.is_plain_reply(fut.result(), self.seq):
                self.path._give_back(proto)
            else:
                proto.retire()


# `await exchange` from a coroutine goes through the awaitable's am_send slot when it has one
# (PyIter_Send, CPython >= 3.10): the answer comes back as a return value. Through __next__ it
# would travel in a StopIteration, whose raise, traceback and catch were a sixth of a call's
# instructions on uvloop (callgrind). Cython has no spelling for the slot: it is set here.
cdef extern from *:
    """
    #if PY_VERSION_HEX >= 0x030A0000
    static PyObject *(*kf_exchange_advance)(PyObject *, int *) = NULL;
    static PySendResult kf_exchange_am_send(PyObject *self, PyObject *arg, PyObject **result) {
        int finished = 0;
        PyObject *value = kf_exchange_advance(self, &finished);
        *result = value;
        if (value == NULL) return PYGEN_ERROR;
        return finished ? PYGEN_RETURN : PYGEN_NEXT;
    }
    static int kf_install_am_send(PyTypeObject *type, PyObject *(*advance)(PyObject *, int *)) {
        if (type->tp_as_async == NULL) return 0;
        kf_exchange_advance = advance;
        type->tp_as_async->am_send = kf_exchange_am_send;
        return 1;
    }
    #else
    static int kf_install_am_send(PyTypeObject *type, PyObject *(*advance)(PyObject *, int *)) {
        return 0;
    }
    #endif
    """
    int kf_install_am_send(PyTypeObject* type, PyObject* (*advance)(PyObject*, int*) except NULL)


cdef PyObject* _exchange_advance(PyObject* self, int* finished) except NULL:
    cdef bint done = False
    value = (<Exchange>self)._advance(&done)
    finished[0] = done
    Py_INCREF(value)
    return <PyObject*>value


_AM_SEND = bool(kf_install_am_send(<PyTypeObject*>Exchange, _exchange_advance))
