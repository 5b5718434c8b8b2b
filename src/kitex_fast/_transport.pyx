"""The socket driver, compiled: nonblocking syscalls on the raw fd.

Twin of ``_transport_py.py`` (same names, results and error texts). The hot path makes no Python
call except the decoder's ``get_buffer``/``buffer_updated``:

- send: one ``sendmsg`` of an iovec array filled from the buffers' ``Py_buffer`` views (8 on the
  stack, heap only beyond that); partial writes advance the iovecs in place.
- receive: ``recv(2)`` straight into the memory ``decoder.get_buffer()`` exposes.
- the socket itself is blocking; every attempt that must not block passes ``MSG_DONTWAIT`` and
  runs with the GIL held (it never blocks, as in uvloop's ``_try_write``). Sends that find the
  buffer full ``poll(2)`` for room, with the GIL released, for the time left to the deadline.
- waiting for a reply is a blocking ``recv(2)`` with the GIL released, bounded by ``SO_RCVTIMEO``
  (never longer than the time left): the kernel wakes the thread straight into the read: one
  user/kernel round trip less than ``poll`` then ``recv``, as a C client blocked in ``read``.
- EINTR (from poll, rarely from send/recv): ``PyErr_CheckSignals()`` runs the Python handlers,
  an exception they raise propagates, otherwise the wait resumes with a recomputed timeout
  (CPython's ``sock_call_ex`` does the same).

Signals: SIGPIPE cannot kill us: ``sendmsg`` gets ``MSG_NOSIGNAL`` where it exists (Linux), and
CPython ignores SIGPIPE at startup anyway (macOS, which lacks the flag). A dead peer shows as
EPIPE/ECONNRESET.

The codec is reached through the C entry points its capsule exports (declared in
``_codec_api.pxd``: declarations only, so the cimport adds no import at run time); everything
else of the decoder is its Python-level API.
A connection is not thread-safe: one call at a time.
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_CheckBuffer,
    PyObject_GetBuffer,
)
from cpython.exc cimport PyErr_CheckSignals
from cpython.dict cimport PyDict_GetItem, PyDict_Next
from cpython.pycapsule cimport PyCapsule_GetPointer

from ._codec_api cimport CODEC_API_NAME, CodecAPI
from cpython.ref cimport Py_INCREF, PyObject
from cpython.unicode cimport PyUnicode_CheckExact, PyUnicode_Compare
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport EAGAIN, EINTR, errno
from libc.limits cimport INT_MAX

import errno as _errno
import os
import socket
import time

# Package modules come through importlib, not `from .x import`: Cython >= 3.2 resolves a relative
# import to the build-time name (kitex_fast.x) and takes it from sys.modules when present
# (cython/cython#7035), which in a vendored copy is another installed kitex_fast's module.
from importlib import import_module as _import_module
texts = _import_module("._transport_errors", __package__)
_errors = _import_module(".errors", __package__)
ConnectError = _errors.ConnectError
ConnectTimeoutError = _errors.ConnectTimeoutError
TransportError = _errors.TransportError

# The compiled codec's C entry points (see _codec_api.pxd), from this package's own codec
# dispatcher: the call path encodes the request head onto its stack and checks the reply with a
# C call each. Without them (a codec built apart from this module) it calls the encoder's methods.
cdef CodecAPI* _codec_api = NULL
cdef type _RequestEncoder = None
cdef type _FrameDecoder = None
_codec = _import_module(".codec", __package__)
_limits = _import_module(".limits", __package__)
# Seq ids are positive i32s: 1 .. MAX_I32, then 1 again.
cdef long long _MAX_SEQ_ID = _limits.MAX_I32
try:
    _compiled_codec = _codec.implementation("c")
    _codec_api = <CodecAPI*>PyCapsule_GetPointer(_compiled_codec._C_API, CODEC_API_NAME)
    if _codec_api.version < 1:  # (entries are only appended: version 1 has all we use)
        _codec_api = NULL
    else:
        _RequestEncoder = _compiled_codec.RequestEncoder
        _FrameDecoder = _compiled_codec.FrameDecoder
except (ImportError, AttributeError, ValueError):
    _codec_api = NULL

# Room on the stack for a request head: framing + TTHeader block + message header. Bigger heads
# (a large TTHeader block) take the encoder's bytes instead.
DEF _HEAD_ROOM = 512
cdef double _MAX_DURATION = _limits.MAX_DURATION

__all__ = ["Connection", "open_connection", "IdlePool"]


cdef extern from *:
    """
    #include <errno.h>
    #include <limits.h>
    #include <string.h>
    #include <poll.h>
    #include <time.h>
    #include <sys/types.h>
    #include <sys/socket.h>
    #include <sys/uio.h>
    #ifndef MSG_NOSIGNAL
    #define MSG_NOSIGNAL 0  /* macOS: CPython's SIG_IGN for SIGPIPE covers us */
    #endif
    #ifndef IOV_MAX
    #define IOV_MAX 1024
    #endif
    #ifndef EWOULDBLOCK
    #define EWOULDBLOCK EAGAIN
    #endif

    /* writev(2) that never blocks nor raises SIGPIPE: sendmsg on an iovec array. */
    static Py_ssize_t kf_sendv(int fd, struct iovec *iov, int count) {
        struct msghdr msg;
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = iov;
        msg.msg_iovlen = count;
        return (Py_ssize_t)sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    }

    /* SO_RCVTIMEO in seconds (0: wait forever); -1 with errno on failure. */
    static int kf_set_rcvtimeo(int fd, double seconds) {
        struct timeval tv;
        tv.tv_sec = (time_t)seconds;
        tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
        return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }

    /* time.monotonic()'s clock on Linux; checked against it at import. */
    static double kf_monotonic(void) {
        struct timespec ts;
        if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return -1.0;
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
    """
    struct iovec:
        void* iov_base
        size_t iov_len

    struct pollfd:
        int fd
        short events
        short revents

    ctypedef unsigned long nfds_t

    int poll(pollfd* fds, nfds_t nfds, int timeout) nogil
    Py_ssize_t recv(int fd, void* buf, size_t n, int flags) nogil
    Py_ssize_t kf_sendv(int fd, iovec* iov, int count)
    int kf_set_rcvtimeo(int fd, double seconds)
    double kf_monotonic()

    const int MSG_DONTWAIT

    const short POLLIN
    const short POLLOUT
    const int IOV_MAX
    const int EWOULDBLOCK


# Deadlines are time.monotonic() values; read the same clock without a Python call when the C
# clock provably is it (Linux), else ask time.monotonic().
cdef bint _c_clock = abs(kf_monotonic() - time.monotonic()) < 0.25

cdef double _INF = float("inf")
# The longest SO_RCVTIMEO we set: a day. A longer wait re-arms when it runs out (EAGAIN), so the
# deadline still holds; a timeval near time_t's range would fail with EDOM after the send.
cdef double _MAX_RCVTIMEO = 86400.0


cdef inline double _now() except? -1.0:
    if _c_clock:
        return kf_monotonic()
    return time.monotonic()


# -- waiting -------------------------------------------------------------------------------------


cdef int _wait_fd(int fd, short events, double deadline, bint has_deadline, str peer,
                  bint sent) except -1:
    """1 when ``fd`` is ready for ``events`` (or in error: the next syscall reports it), 0 when
    the deadline passed. The only place the GIL is released."""
    cdef pollfd pfd
    cdef int ms
    cdef int r
    cdef int err
    cdef double left
    while True:
        if has_deadline:
            left = (deadline - _now()) * 1000.0
            if not left > 0.0:  # (NaN included: never a wait without end)
                return 0
            if left >= <double>INT_MAX:  # poll() takes an int of milliseconds
                ms = INT_MAX
            else:
                # Round up: a wait that ends early would only spin once more.
                ms = <int>left
                if ms < left:
                    ms += 1
        else:
            ms = -1
        pfd.fd = fd
        pfd.events = events
        pfd.revents = 0
        with nogil:
            r = poll(&pfd, 1, ms)
            err = errno  # read before anything else can touch errno
        if r > 0:
            return 1
        if r < 0:
            if err == EINTR:
                # Run the Python signal handlers now; one that raises ends the call.
                PyErr_CheckSignals()
                continue
            raise texts.poll_failed(peer, err, sent)
        # r == 0: timed out; loop to re-check the clock (poll may return a hair early)


cdef bint _check_deadline(double deadline) except -1:
    """Whether ``deadline`` bounds anything (+inf does not); NaN is refused before any I/O (it
    compares false with everything, so it would silently mean "no limit")."""
    if deadline != deadline:
        raise ValueError("deadline must be a time.monotonic() value or None, not nan")
    return deadline != _INF


# -- connection ----------------------------------------------------------------------------------


@cython.auto_pickle(False)
@cython.final
cdef class Connection:
    """One connected socket plus the frame decoder that parses what it receives.

    ``Connection(sock, decoder, peer=None)`` takes ownership of a connected socket (its fd is made
    blocking: every call that must not wait passes ``MSG_DONTWAIT``); :func:`open_connection` is the usual way to get one. Any exception out of
    :meth:`send`, :meth:`receive` or :meth:`call` (timeouts, resets, protocol errors, even an
    exception raised by a signal handler) closes the connection: it is never left half-used.
    """

    cdef object _sock            # the socket object owns the fd (close semantics, finalizer)
    cdef int _fd                 # its fd, -1 once closed
    cdef object _decoder
    cdef str _peer
    cdef object _get_buffer      # bound methods, looked up once
    cdef object _buffer_updated
    cdef object _ready           # frames from one read not handed out yet, or None
    cdef Py_ssize_t _ready_pos
    cdef long long _seq
    cdef double _t0              # when the last send started: the budget in timeout texts
    cdef double _rcvtimeo        # the SO_RCVTIMEO in force, seconds (0: none)
    cdef double _idle_since      # when it went back to its IdlePool (monotonic seconds)
    cdef bint _c_decoder         # the compiled FrameDecoder: read through the codec's C API

    def __cinit__(self):
        self._fd = -1

    def __init__(self, sock, decoder, peer=None):
        if peer is None:
            peer = texts.format_address(sock.family, sock.getpeername())
        # Blocking fd: nonblocking attempts pass MSG_DONTWAIT, the reply wait blocks in recv(2).
        sock.setblocking(True)
        self._sock = sock
        self._fd = sock.fileno()
        self._decoder = decoder
        self._peer = str(peer)
        self._get_buffer = decoder.get_buffer
        self._buffer_updated = decoder.buffer_updated
        self._c_decoder = _codec_api != NULL and type(decoder) is _FrameDecoder
        self._ready = None
        self._ready_pos = 0
        self._seq = 0
        self._t0 = 0.0
        self._rcvtimeo = 0.0

    # -- attributes

    @property
    def decoder(self):
        return self._decoder

    @property
    def peer(self):
        return self._peer

    @property
    def closed(self):
        return self._sock is None

    def fileno(self):
        """The socket's fd, or -1 once closed."""
        return self._fd

    def __repr__(self):
        if self._sock is None:
            return "<Connection to %s closed>" % self._peer
        return "<Connection to %s fd=%d>" % (self._peer, self._fd)

    # -- lifecycle

    def close(self):
        """Close the socket and drop any frames not yet received. Idempotent."""
        sock = self._sock
        if sock is None:
            return
        self._sock = None
        self._fd = -1
        self._ready = None
        sock.close()

    def is_reusable(self):
        """Whether the idle connection can carry a new request: a zero-timeout poll finds nothing
        (no EOF, no reset, no bytes nobody asked for) and no reply bytes are left over. A
        connection found unusable is closed."""
        return self._reusable()

    cdef bint _reusable(self) except -1:
        cdef pollfd pfd
        cdef int r
        if self._sock is None:
            return False
        if self._ready is None and not self._decoder.pending:
            while True:
                pfd.fd = self._fd
                pfd.events = POLLIN
                pfd.revents = 0
                r = poll(&pfd, 1, 0)  # zero timeout never blocks: the GIL stays held
                if r == 0:
                    return True
                if r < 0 and errno == EINTR:
                    PyErr_CheckSignals()
                    continue
                break  # readable, hung up, in error, or poll failed
        self.close()
        return False

    def next_seq_id(self):
        """Per-connection seq ids: 1, 2, ... 2**31-1, then 1 again; never 0."""
        return self._next_seq()

    cdef inline long long _next_seq(self) noexcept:
        self._seq += 1
        if self._seq > _MAX_SEQ_ID:
            self._seq = 1
        return self._seq

    @property
    def _last_seq_id(self):
        """The last seq id handed out (0 before the first); settable for tests."""
        return self._seq

    @_last_seq_id.setter
    def _last_seq_id(self, value):
        if not 0 <= value <= _MAX_SEQ_ID:
            raise ValueError("seq id must be in 0..2**31-1, not %r" % (value,))
        self._seq = value

    # -- I/O

    def call(self, buffers, deadline=None):
        """``send(buffers, deadline)`` then ``receive(deadline)``: one request, one reply frame."""
        self.send(buffers, deadline)
        return self._next_frame(deadline, True)

    def send(self, buffers, deadline=None):
        """Write all ``buffers`` (a bytes-like or a list/tuple of them) with one ``sendmsg``,
        continuing partial writes; wait for POLLOUT only when the socket buffer is full.
        ``deadline`` is an absolute ``time.monotonic()`` value or None (no limit)."""
        cdef double dl = 0.0
        cdef bint has_dl = deadline is not None
        self._t0 = _now()
        if self._sock is None:
            raise texts.closed_error(self._peer, False)
        try:
            if has_dl:
                dl = deadline
                has_dl = _check_deadline(dl)
            self._send(buffers, dl, has_dl)
        except BaseException:
            self.close()
            raise

    cdef int _send_iov(self, iovec* iov, Py_ssize_t niov, size_t total, double now,
                       double deadline, bint has_deadline) except -1:
        """send() of an iovec array the call path filled (the head on its stack, the body in
        the caller's buffer)."""
        self._t0 = now
        if self._sock is None:
            raise texts.closed_error(self._peer, False)
        try:
            self._sendv(iov, niov, total, deadline, has_deadline)
        except BaseException:
            self.close()
            raise
        return 0

    cdef object _receive_reply(self, double deadline, bint has_deadline):
        """receive() right after a send, for the call path."""
        if self._ready is not None:
            return self._next_frame(None, True)  # frames left from an earlier read
        if self._sock is None:
            raise texts.closed_error(self._peer, True)
        try:
            return self._receive(deadline, has_deadline, True)
        except BaseException:
            self.close()
            raise

    cdef object _roundtrip(self, object buffers, double now, double deadline, bint has_deadline):
        """call() for the call path: the deadline already checked, the clock already read."""
        self._t0 = now
        if self._sock is None:
            raise texts.closed_error(self._peer, False)
        try:
            self._send(buffers, deadline, has_deadline)
            if self._ready is not None:
                return self._next_frame(None, True)  # frames left from an earlier read
            return self._receive(deadline, has_deadline, True)
        except BaseException:
            self.close()
            raise

    def receive(self, deadline=None):
        """The next reply frame: ``recv`` into the decoder's own buffer until it yields a frame;
        extra frames from the same read are kept for the next ``receive``."""
        return self._next_frame(deadline, False)

    cdef object _next_frame(self, object deadline, bint just_sent):
        cdef double dl = 0.0
        cdef bint has_dl = deadline is not None
        cdef object ready = self._ready
        if ready is not None:
            frame = ready[self._ready_pos]
            self._ready_pos += 1
            if self._ready_pos == len(ready):
                self._ready = None
            return frame
        if self._sock is None:
            raise texts.closed_error(self._peer, True)
        try:
            if has_dl:
                dl = deadline
                has_dl = _check_deadline(dl)
            return self._receive(dl, has_dl, just_sent)
        except BaseException:
            self.close()
            raise

    cdef int _send(self, object buffers, double deadline, bint has_deadline) except -1:
        cdef iovec small_iov[8]
        cdef Py_buffer small_views[8]
        cdef iovec* iov = small_iov
        cdef Py_buffer* views = small_views
        cdef Py_ssize_t nbuf
        cdef Py_ssize_t nviews = 0
        cdef Py_ssize_t niov = 0
        cdef Py_ssize_t i
        cdef size_t total = 0
        cdef object seq
        if PyObject_CheckBuffer(buffers):
            seq = (buffers,)
        elif type(buffers) is list or type(buffers) is tuple:
            seq = buffers
        else:
            seq = list(buffers)
        nbuf = len(seq)
        if nbuf > 8:
            # Rare (the encoder yields 2 buffers): heap arrays for long lists.
            iov = <iovec*>PyMem_Malloc(nbuf * sizeof(iovec))
            views = <Py_buffer*>PyMem_Malloc(nbuf * sizeof(Py_buffer))
            if iov == NULL or views == NULL:
                PyMem_Free(iov)
                PyMem_Free(views)
                raise MemoryError()
        try:
            for i in range(nbuf):
                # Borrow each buffer's memory: the caller's payload is never copied.
                PyObject_GetBuffer(seq[i], &views[i], PyBUF_SIMPLE)
                nviews += 1
                if views[i].len > 0:
                    iov[niov].iov_base = views[i].buf
                    iov[niov].iov_len = <size_t>views[i].len
                    niov += 1
                    total += <size_t>views[i].len
            if niov > 0:
                self._sendv(iov, niov, total, deadline, has_deadline)
        finally:
            for i in range(nviews):
                PyBuffer_Release(&views[i])
            if iov != small_iov:
                PyMem_Free(iov)
                PyMem_Free(views)
        return 0

    cdef int _sendv(self, iovec* iov, Py_ssize_t niov, size_t total, double deadline,
                    bint has_deadline) except -1:
        cdef Py_ssize_t idx = 0
        cdef Py_ssize_t batch
        cdef Py_ssize_t n
        cdef size_t written = 0
        cdef size_t left
        cdef int err
        cdef bint capped
        while True:
            batch = niov - idx
            capped = batch > IOV_MAX
            if capped:
                batch = IOV_MAX  # more would be EMSGSIZE: send in IOV_MAX slices
            n = kf_sendv(self._fd, iov + idx, <int>batch)
            if n > 0:
                written += <size_t>n
                if written >= total:
                    return 0
                # Partial write: skip the iovecs sent whole, trim the one sent in part
                # (none has length 0, so this stops inside the array).
                left = <size_t>n
                while left >= iov[idx].iov_len:
                    left -= iov[idx].iov_len
                    idx += 1
                iov[idx].iov_base = <char*>iov[idx].iov_base + left
                iov[idx].iov_len -= left
                if capped:
                    continue  # cut at IOV_MAX, not short: the socket may take more now
                # else: a short write means the socket buffer is full; wait for room
            elif n < 0:
                err = errno
                if err == EINTR:
                    PyErr_CheckSignals()
                    continue
                if err != EAGAIN and err != EWOULDBLOCK:
                    raise texts.send_failed(self._peer, err, written, total)
            if not _wait_fd(self._fd, POLLOUT, deadline, has_deadline, self._peer, True):
                raise texts.send_timeout(self._peer, deadline - self._t0, written, total)

    cdef int _arm_timeout(self, double deadline, bint has_deadline) except -1:
        """Bound the next blocking recv by the time left: 0 when the deadline has passed."""
        cdef double left
        cdef double cur = self._rcvtimeo
        cdef double want
        if not has_deadline:
            want = 0.0
            if cur == 0.0:
                return 1
        else:
            left = deadline - _now()
            if left <= 0.0:
                return 0
            # Keep the timeout in force while it is at most the time left and within 2 ms of it
            # (a client with a fixed rpc timeout then sets it once, not per call); else set it
            # 1 ms under the time left, so the next calls can keep it. Never past the deadline.
            if cur > 0.0 and cur <= left and (cur >= left - 0.002 or cur == _MAX_RCVTIMEO):
                return 1
            want = left - 0.001 if left > 0.002 else left
            if want < 1e-6:
                want = 1e-6  # 0 would mean "forever"
            elif want > _MAX_RCVTIMEO:
                want = _MAX_RCVTIMEO
        if kf_set_rcvtimeo(self._fd, want) != 0:
            raise texts.recv_failed(self._peer, errno, self._decoder.pending)
        self._rcvtimeo = want
        return 1

    cdef object _receive(self, double deadline, bint has_deadline, bint just_sent):
        cdef Py_buffer view
        cdef Py_ssize_t n
        cdef Py_ssize_t size
        cdef int err
        cdef object buf
        cdef object frames
        cdef char* space
        # Right after a send the reply cannot be there yet (a server needs a round trip): go
        # straight to the blocking wait instead of a recv that would only return EAGAIN.
        cdef bint wait = just_sent
        while True:
            if wait and not self._arm_timeout(deadline, has_deadline):
                raise texts.recv_timeout(self._peer, deadline - self._t0, self._decoder.pending)
            # recv(2) straight into the decoder's buffer: no intermediate bytes object. The
            # compiled decoder lends its bytearray through the codec's C API (no view, no int
            # objects); any other decoder through get_buffer's view.
            if self._c_decoder:
                size = _codec_api.recv_space(self._decoder, &space)
            else:
                buf = self._get_buffer(-1)
                PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
                size = view.len
                space = <char*>view.buf
                if size <= 0:
                    PyBuffer_Release(&view)
                    raise texts.empty_buffer_error()
            if wait:
                # The only blocking receive: the GIL is released, SO_RCVTIMEO bounds it.
                with nogil:
                    n = recv(self._fd, space, <size_t>size, 0)
                    err = errno
            else:
                n = recv(self._fd, space, <size_t>size, MSG_DONTWAIT)
                err = errno
            if not self._c_decoder:
                PyBuffer_Release(&view)
                buf = None  # drop our export before the decoder moves or grows its buffer
            if n > 0:
                if self._c_decoder:
                    frames = _codec_api.data_received(self._decoder, n)
                else:
                    frames = self._buffer_updated(n)
                if frames:
                    if len(frames) > 1:
                        self._ready = frames
                        self._ready_pos = 1
                    return frames[0]
                # Filled the whole buffer: more is likely queued, read on without waiting.
                # A short read drained the socket: the next read waits.
                wait = n < size
            elif n == 0:
                raise texts.recv_eof(self._peer, self._decoder.pending)
            elif err == EINTR:
                PyErr_CheckSignals()  # a handler that raises ends the call
            elif err == EAGAIN or err == EWOULDBLOCK:
                wait = True  # nothing yet, or SO_RCVTIMEO ran out: re-arm (or time out) and wait
            else:
                raise texts.recv_failed(self._peer, err, self._decoder.pending)


# -- connect -------------------------------------------------------------------------------------


def open_connection(family, sockaddr, *, timeout, decoder):
    """Connect a nonblocking TCP (or Unix) socket to ``sockaddr`` (as ``socket.getaddrinfo``
    returns it) within ``timeout`` seconds (None = no limit), with ``TCP_NODELAY`` set, and wrap
    it in a :class:`Connection` that feeds ``decoder``."""
    cdef double dl = 0.0
    cdef bint has_dl = timeout is not None
    address = texts.format_address(family, sockaddr)
    if has_dl:
        if timeout != timeout:
            raise ValueError("connect timeout must be a number of seconds or None, not nan")
        dl = time.monotonic() + timeout
        has_dl = dl != _INF
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectError(
            "connect to %s failed: %s" % (address, texts.errno_text(exc.errno or 0))
        ) from None
    try:
        sock.setblocking(False)
        if family in (socket.AF_INET, getattr(socket, "AF_INET6", -1)):
            # Small requests must not wait for Nagle's algorithm (a flat 40 ms otherwise).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            err = sock.connect_ex(sockaddr)
        except socket.gaierror as exc:  # a host name that does not resolve
            raise ConnectError("connect to %s failed: %s" % (address, exc)) from None
        if err in (_errno.EINPROGRESS, _errno.EWOULDBLOCK, _errno.EAGAIN, _errno.EINTR):
            if not _wait_fd(sock.fileno(), POLLOUT, dl, has_dl, address, False):
                raise ConnectTimeoutError(
                    "connect to %s timed out after %s ms" % (address, texts.format_ms(timeout or 0.0))
                )
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise ConnectError("connect to %s failed: %s" % (address, texts.errno_text(err)))
        return Connection(sock, decoder, address)
    except BaseException:
        sock.close()
        raise


# -- pooling and the call path -------------------------------------------------------------------
#
# The common path of a call is one call into this module: CallPath.exchange (a Client) or
# BindingPath.invoke (a KitexOutputBinding) runs route -> idle connection -> seq id -> encode ->
# sendmsg -> wait -> decode -> reply check -> release without running Python code. Whatever is not
# the common case (a first sight of a method or metadata shape, no idle connection, a connect, a
# reply that is not a plain REPLY) is answered "not handled", and the owner runs its full rules,
# the only place those rules live: the fast path only ever skips work, never decides, and never
# calls back into the client or the binding (errors propagate as they are).


@cython.auto_pickle(False)
@cython.final
cdef class IdlePool:
    """Idle connections to one endpoint, most recently used first, at most ``max_idle`` kept, each
    for ``max_idle_time``: a release closes the connections idle longer than that (the oldest are
    at the bottom of the stack, which calls reach last), so after a burst the pool shrinks back to
    what the calls since then used. A pool no call touches keeps its connections until the next.

    Its methods run with the GIL held from start to end (no Python code in between), so the hot
    path takes no lock; ``close()`` re-drains after a racing ``give_back``, so nothing is left idle
    in a closed pool.
    """

    cdef readonly object endpoint
    cdef readonly Py_ssize_t max_idle
    cdef readonly double max_idle_time
    cdef list _idle              # Connections, the most recently used last
    cdef bint _closed

    def __init__(self, endpoint, max_idle, max_idle_time):
        self.endpoint = endpoint
        self.max_idle = max_idle
        self.max_idle_time = max_idle_time
        self._idle = []
        self._closed = False

    def take_idle(self):
        """An idle connection that still looks healthy, or None. Dead ones are closed here, before
        anything is written to them, so using what this returns never loses a request."""
        return self._take(_now())

    cdef Connection _take(self, double now):
        cdef Connection conn
        cdef list idle = self._idle
        while idle:
            conn = <Connection>idle.pop()
            if now - conn._idle_since <= self.max_idle_time and conn._reusable():
                return conn
            conn.close()
        return None

    def give_back(self, conn):
        """Return a clean connection after a completed call (or close it if there is no room)."""
        self._give_back(<Connection?>conn)

    cdef int _give_back(self, Connection conn) except -1:
        cdef double now
        cdef list idle = self._idle
        cdef list expired = None
        if self._closed or len(idle) >= self.max_idle or conn._sock is None:
            conn.close()
            return 0
        now = _now()
        conn._idle_since = now
        idle.append(conn)
        # The bottom of the stack is the oldest release: one comparison in the common case.
        # Unlinked first, closed after, so that no other thread sees a half-closed one here.
        while now - (<Connection>idle[0])._idle_since > self.max_idle_time:
            if expired is None:
                expired = []
            expired.append(idle.pop(0))
        if expired is not None:
            for conn in expired:
                conn.close()
        if self._closed:
            self._drain()
        return 0

    def close(self):
        """Close the idle connections and pool no more (connections in use close when released)."""
        self._closed = True
        self._drain()

    cdef _drain(self):
        cdef list idle = self._idle
        while idle:
            (<Connection>idle.pop(0)).close()

    @property
    def idle_count(self):
        """How many idle connections wait in the pool."""
        return len(self._idle)


@cython.auto_pickle(False)
@cython.final
cdef class Unsettled:
    """``Unsettled(conn, pool, frame, seq_id)``: a call that was sent and answered, but whose reply
    is not a plain REPLY (an exception, a biz status, a connection reset request, a mismatch): the
    client settles it (checks the reply, keeps or drops ``conn``, raises the answer's error).
    Read-only."""

    cdef readonly Connection conn
    cdef readonly IdlePool pool
    cdef readonly object frame
    cdef readonly long long seq_id

    def __init__(self, Connection conn, IdlePool pool, frame, long long seq_id):
        self.conn = conn
        self.pool = pool
        self.frame = frame
        self.seq_id = seq_id

    def __repr__(self):
        return "Unsettled(conn=%r, seq_id=%r)" % (self.conn, self.seq_id)


@cython.auto_pickle(False)
@cython.final
cdef class CallPath:
    """The common path of one Client's calls. ``CallPath(pools, encoders, rpc_timeout, unset,
    headers_type, connect_fresh)``: ``pools`` are the client's IdlePools (one per endpoint, in
    round-robin order), ``encoders`` its request-encoder cache (shared: the client fills it, keyed
    by method or ``(method, headers)``), ``unset`` its "no per-call timeout given" marker,
    ``headers_type`` the type of the per-call headers it takes (hashed and compared in C),
    ``connect_fresh(pool, deadline)`` the endpoint pool's new connection to ``pool``'s endpoint.

    It decides nothing: it carries out a call when the cached state applies (a known encoder, a
    timeout of the validated shape, an idle connection, a plain REPLY) and otherwise answers
    "not handled", for the client's full rules: None (nothing was done), an endpoint index (no
    idle connection there: the full path connects, starting from it), or an :class:`Unsettled`
    (the reply came but is not a plain REPLY). It never calls back into the client."""

    cdef list _pools
    cdef Py_ssize_t _npools
    cdef size_t _next            # round robin over the endpoints
    cdef dict _encoders
    cdef object _timeout         # the client's rpc timeout: None or float seconds
    cdef object _unset
    cdef type _headers_type
    cdef object _connect_fresh   # EndpointPool.connect_fresh
    cdef public bint closed      # set by Client.close(): calls take the full path, which refuses
    cdef public bint retired     # set by Client.retire()

    def __init__(self, pools, dict encoders, rpc_timeout, unset, type headers_type, connect_fresh):
        self.set_pools(pools)
        self._next = 0
        self._encoders = encoders
        self._timeout = rpc_timeout
        self._unset = unset
        self._headers_type = headers_type
        self._connect_fresh = connect_fresh

    def exchange(self, method, message, rpc_timeout, headers):
        """``(reply frame, seq id, endpoint text)``, or "not handled" (see the class)."""
        return self._exchange(method, message, rpc_timeout, headers)

    def call(self, method, message, rpc_timeout, headers):
        """``Client.call``: the REPLY message (bytes), or "not handled" (see the class)."""
        cdef object answer = self._exchange(method, message, rpc_timeout, headers)
        if type(answer) is tuple:
            return (<object>(<tuple>answer)[0]).payload
        return answer

    def send(self, Connection conn, IdlePool pool, buffers, deadline, long long seq_id, encoder,
             bint reused):
        """Carry out an encoded call on ``conn`` (from ``pool``; ``reused``: an idle one): the
        full path's round trip, with the same retry and reply rules as the common one.
        ``(reply frame, seq id, endpoint text)`` for a plain REPLY, else an :class:`Unsettled`."""
        cdef double dl = 0.0
        cdef bint has_dl = deadline is not None
        if has_dl:
            dl = deadline
        return self._finish(conn, pool, self._send_buffers(conn, pool, buffers, _now(), dl, has_dl,
                                                           reused),
                            encoder, seq_id, False)

    def set_pools(self, pools):
        """Swap in a new round-robin cycle (a registry update); empty: every call takes the full
        path. Both fields change with the GIL held and no Python code between them, so a
        concurrent call sees the old cycle or the new one."""
        cdef list new = list(pools)
        for pool in new:
            if type(pool) is not IdlePool:
                raise TypeError("pools must be IdlePool objects, not %s" % type(pool).__name__)
        self._pools = new
        self._npools = len(new)

    def next_endpoint(self):
        """The index of the endpoint the next call starts at (round robin; advances it): the
        full path asks here too, so both paths share one rotation."""
        cdef Py_ssize_t start = 0
        if self._npools == 0:
            return start
        start = <Py_ssize_t>(self._next % <size_t>self._npools)
        self._next += 1
        return start

    cdef object _exchange(self, object method, object message, object rpc_timeout, object headers):
        cdef object timeout
        cdef object key
        cdef object encoder
        cdef object buffers
        cdef object sent
        cdef IdlePool pool
        cdef Connection conn
        cdef Py_ssize_t start = 0
        cdef long long seq
        cdef double now, deadline = 0.0
        cdef bint has_deadline, direct
        cdef type mtype = type(message)
        if self.closed or type(method) is not str:
            return None
        # the request: bytes, bytearray or a contiguous memoryview (else the full path says why)
        if mtype is not bytes and mtype is not bytearray and not (
                mtype is memoryview and message.c_contiguous):
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
        if self._npools > 1:
            start = <Py_ssize_t>(self._next % <size_t>self._npools)
            self._next += 1
        elif self._npools == 0:  # a registry with no instance (yet): the full path resolves
            return None
        pool = <IdlePool>self._pools[start]
        now = _now()
        conn = pool._take(now)
        if conn is None:  # connect (with failover) is the full path's job, from this endpoint
            return start
        has_deadline = timeout is not None and <double>timeout > 0.0
        if has_deadline:
            deadline = now + <double>timeout
        seq = conn._next_seq()
        direct = _codec_api != NULL and type(encoder) is _RequestEncoder
        if direct:
            sent = self._direct(conn, pool, <object>encoder, message, seq, now, deadline,
                                has_deadline)
        else:  # an encoder without the C entry points: its own buffers
            try:
                # Validates the message (strict CALL, one complete struct) before any byte is
                # written.
                buffers = encoder.encode(message, seq)
            except BaseException:
                pool._give_back(conn)
                raise
            sent = self._send_buffers(conn, pool, buffers, now, deadline, has_deadline, True)
        return self._finish(conn, pool, sent, encoder, seq, direct)

    cdef object _finish(self, Connection conn, IdlePool pool, object sent, object encoder,
                        long long seq, bint direct):
        """``sent``: the reply frame on ``conn``, or ``(connection, frame)`` when the call moved
        to a fresh connection. A plain REPLY goes back to the pool; anything else is Unsettled."""
        cdef object frame = sent
        if type(sent) is tuple:  # answered on a fresh connection
            conn = <Connection>(<tuple>sent)[0]
            frame = (<tuple>sent)[1]
        if (_codec_api.is_plain_reply(encoder, frame, seq) if direct
                else encoder.is_plain_reply(frame, seq)):
            pool._give_back(conn)
            return (frame, seq, conn._peer)
        return Unsettled(conn, pool, frame, seq)

    cdef object _direct(self, Connection conn, IdlePool pool, object encoder, object message,
                        long long seq, double now, double deadline, bint has_deadline):
        """Encode the head onto the stack and send it with the caller's body in one sendmsg:
        no head bytes, no list, no view objects. The reply frame, or ``(fresh connection,
        frame)`` when the call had to move to a fresh connection."""
        cdef unsigned char head[_HEAD_ROOM]
        cdef iovec iov[2]
        cdef Py_buffer view
        cdef Py_ssize_t hlen, body_at = 0
        cdef Py_ssize_t niov = 1
        PyObject_GetBuffer(message, &view, PyBUF_SIMPLE)
        try:
            try:
                # Validates the message (strict CALL, one complete struct) before any byte is
                # written; the same errors as RequestEncoder.encode.
                hlen = _codec_api.encode_head(encoder, <const unsigned char*>view.buf, view.len,
                                              seq, head, _HEAD_ROOM, &body_at)
            except BaseException:
                pool._give_back(conn)
                raise
            if hlen > _HEAD_ROOM:  # a large TTHeader block: the encoder's own buffers
                return self._send_buffers(conn, pool, encoder.encode(message, seq), now,
                                          deadline, has_deadline, True)
            iov[0].iov_base = head
            iov[0].iov_len = <size_t>hlen
            if body_at < view.len:
                iov[1].iov_base = <char*>view.buf + body_at
                iov[1].iov_len = <size_t>(view.len - body_at)
                niov = 2
            try:
                conn._send_iov(iov, niov, <size_t>(hlen + view.len - body_at), now, deadline,
                               has_deadline)
            except TransportError as exc:
                if exc.sent:
                    raise
                return self._fresh(pool, encoder.encode(message, seq), deadline, has_deadline)
        finally:
            # Released once sent: the caller's buffer is never held while we wait.
            PyBuffer_Release(&view)
        return conn._receive_reply(deadline, has_deadline)

    cdef object _send_buffers(self, Connection conn, IdlePool pool, object buffers, double now,
                              double deadline, bint has_deadline, bint reused):
        try:
            return conn._roundtrip(buffers, now, deadline, has_deadline)
        except TransportError as exc:
            # (the connection closed itself) A pooled connection that died between its health
            # check and our write, with no byte taken by the kernel: nothing reached the server,
            # so a fresh connection is safe.
            if exc.sent or not reused:
                raise
            return self._fresh(pool, buffers, deadline, has_deadline)

    cdef tuple _fresh(self, IdlePool pool, object buffers, double deadline, bint has_deadline):
        """``(fresh connection, reply frame)``: ``buffers`` sent again on a new connection to
        ``pool``'s endpoint."""
        cdef Connection conn = <Connection?>self._connect_fresh(
            pool, deadline if has_deadline else None)
        try:
            return (conn, conn._roundtrip(buffers, _now(), deadline, has_deadline))
        except BaseException:
            conn.close()
            raise


cdef inline bint _same_text(object a, object b) except -1:
    """Equal strings that are not the same object (fresh from a parser, as daprd's are); only
    exact str, so no Python __eq__ runs here."""
    return PyUnicode_CheckExact(a) and PyUnicode_CheckExact(b) and PyUnicode_Compare(a, b) == 0


@cython.auto_pickle(False)
cdef class Shape:
    """``Shape(id, getter, names, positions)``: what the binding learned about one metadata shape
    (declared in ``_transport.pxd``). Read-only."""

    def __init__(self, id, getter, tuple names, tuple positions):
        self.id = id
        self.getter = getter
        self.names = names
        self.positions = positions

    def __repr__(self):
        return "Shape(id=%r, names=%r, positions=%r)" % (self.id, self.names, self.positions)


@cython.auto_pickle(False)
cdef class Route:
    """``Route(options, client, client_key, path, method, rpc_timeout, headers)``: where one
    distinct metadata goes, as the binding validated it (declared in ``_transport.pxd``).
    Read-only."""

    def __init__(self, options, client, client_key, path, method, rpc_timeout, headers):
        self.options = options
        self.client = client
        self.client_key = client_key
        self.path = path
        self.method = method
        self.rpc_timeout = rpc_timeout
        self.headers = headers

    def __repr__(self):
        return "Route(method=%r, client=%r, rpc_timeout=%r, headers=%r)" % (
            self.method, self.client, self.rpc_timeout, self.headers)


@cython.auto_pickle(False)
@cython.final
cdef class BindingPath:
    """The common path of a binding's invokes: ``BindingPath(request_type, operations, respond,
    shapes, routes, clients)`` shares the binding's caches (it only reads them): ``shapes`` maps
    metadata key names to a :class:`Shape`, ``routes`` maps ``(shape id, relevant values)`` to a
    :class:`Route`, ``clients`` is the LRU client cache (an OrderedDict keyed by
    ``Route.client_key``). A request whose ``operation`` is one of ``operations`` and whose
    metadata has a cached route to a live client is one call here, answered with
    ``respond(reply, route.options)`` (``reply``: the call path's ``(frame, seq id,
    endpoint)``). Anything else is "not handled", for the binding's full rules (validation, the
    caches' fill, the client cache): None when no call was started, ``(route, answer)`` when
    the route's call path answered "not handled" (:class:`CallPath`). A failed call propagates.
    The binding calls :meth:`forget_tail` whenever it reorders its client cache itself."""

    cdef type _request_type
    cdef tuple _operations       # the request operations this path may take
    cdef object _respond
    cdef dict _shapes            # metadata key names -> Shape
    cdef object _routes          # OrderedDict: (shape id, relevant values) -> Route
    cdef object _touch           # clients.move_to_end: the LRU touch
    # The last shape seen and what the binding learned about it: callers build their metadata
    # the same way every time, so one pass over the dict, comparing key objects, replaces
    # building a key tuple, hashing it and looking each relevant value up.
    cdef tuple _last_shape
    cdef Shape _last_known
    cdef object _tail            # the client key this path last moved to the LRU end, or None
    # The last route taken, by its key: a caller that repeats a request skips the cache lookup.
    # It can never outlive its validity: every change that makes a route wrong (new defaults,
    # close, eviction) closes or retires its client, which sends the call to the full path.
    cdef tuple _last_key
    cdef Route _last_route

    def __init__(self, type request_type, operations, respond, dict shapes, routes, clients):
        self._request_type = request_type
        self._operations = tuple(operations)
        for operation in self._operations:
            if type(operation) is not str:
                raise TypeError("operations must be strings, not %s" % type(operation).__name__)
        self._respond = respond
        self._shapes = shapes
        self._routes = routes
        self._touch = clients.move_to_end
        self._last_shape = None
        self._last_known = None
        self._tail = None
        self._last_key = None
        self._last_route = None

    def forget_tail(self):
        """The client cache was reordered elsewhere: touch it again on the next call."""
        self._tail = None

    cdef Route _route_of(self, dict metadata):
        """The cached route for ``metadata``, or None (a new shape or new values: the full path
        validates and learns them). One pass over the dict compares its keys with the last
        shape's and its relevant values with the last route's; only a difference costs a key
        tuple and a cache lookup."""
        cdef tuple shape = self._last_shape
        cdef Shape known = self._last_known
        cdef tuple last_key = self._last_key
        cdef Route last_route = self._last_route
        cdef tuple last_values = None
        cdef tuple positions
        cdef tuple values = None
        cdef tuple key
        cdef Py_ssize_t n = len(metadata)
        cdef Py_ssize_t pos = 0, i = 0, j = 0, c, npos, want
        cdef PyObject* k
        cdef PyObject* v
        cdef object key2
        cdef object old
        cdef object found
        if shape is not None and len(shape) == n:
            positions = known.positions
            npos = len(positions)
            if last_key is not None and last_key[0] is known.id:
                last_values = <tuple>last_key[1]
            want = <Py_ssize_t>positions[0] if npos else -1
            while PyDict_Next(metadata, &pos, &k, &v):
                key2 = shape[i]
                if k != <PyObject*>key2 and not _same_text(<object>k, key2):
                    break  # another shape
                if i == want:
                    if last_values is not None:
                        old = last_values[j]
                        if v != <PyObject*>old and not _same_text(<object>v, old):
                            # New values: copy the equal ones so far, collect the rest.
                            values = PyTuple_New(npos)
                            for c in range(j):
                                Py_INCREF(last_values[c])
                                PyTuple_SET_ITEM(values, c, last_values[c])
                            last_values = None
                    if last_values is None:
                        if values is None:
                            values = PyTuple_New(npos)
                        Py_INCREF(<object>v)
                        PyTuple_SET_ITEM(values, j, <object>v)
                    j += 1
                    want = <Py_ssize_t>positions[j] if j < npos else -1
                i += 1
            else:
                if last_values is not None:
                    return last_route  # the same request as last time
                if values is None:
                    values = ()
                key = (known.id, values)
                return self._lookup(key)
        shape = tuple(metadata)
        found = self._shapes.get(shape)
        if found is None:
            return None
        known = <Shape?>found
        self._last_shape = shape
        self._last_known = known
        names = known.names
        npos = len(names)
        values = PyTuple_New(npos)
        for j in range(npos):
            value = metadata[names[j]]
            Py_INCREF(value)
            PyTuple_SET_ITEM(values, j, value)
        return self._lookup((known.id, values))

    cdef Route _lookup(self, tuple key):
        # (an unhashable value makes PyDict_GetItem find nothing: the full path names it)
        cdef PyObject* found = PyDict_GetItem(self._routes, key)
        cdef Route route
        if found == NULL:
            return None
        route = <Route?><object>found
        self._last_route = route
        self._last_key = key
        return route

    cdef bint _serves(self, object operation) except -1:
        for served in self._operations:
            if operation is served or _same_text(operation, served):
                return True
        return False

    def invoke(self, request):
        """``respond(reply, route.options)``, or "not handled" (see the class)."""
        cdef object metadata
        cdef Route route
        cdef object answer
        cdef CallPath path
        if type(request) is not self._request_type:
            return None
        metadata = request.metadata
        if type(metadata) is not dict or not self._serves(request.operation):
            return None
        try:
            route = self._route_of(<dict>metadata)
        except (TypeError, KeyError):  # the full path's validation names what is wrong
            return None
        if route is None or route.path is None:
            return None
        path = <CallPath?>route.path
        if path.retired:
            return None
        if route.client_key is not self._tail:
            try:
                self._touch(route.client_key)  # LRU touch (skipped while this client is the last)
                self._tail = route.client_key
            except KeyError:
                pass  # evicted meanwhile: retired, handled on the next call
        answer = path._exchange(route.method, request.data, route.rpc_timeout, route.headers)
        if type(answer) is not tuple:
            return (route, answer)
        return self._respond(answer, route.options)
