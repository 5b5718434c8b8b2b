# cython: language_level=3, embedsignature=True
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
  (never longer than the time left): the kernel wakes the thread straight into the read. That is
  one user/kernel round trip less than ``poll`` then ``recv``, about 2 us a call here, the
  difference between us and a C client blocked in ``read``.
- EINTR (from poll, rarely from send/recv): ``PyErr_CheckSignals()`` runs the Python handlers,
  an exception they raise propagates, otherwise the wait resumes with a recomputed timeout
  (CPython's ``sock_call_ex`` does the same).

Signals: SIGPIPE cannot kill us: ``sendmsg`` gets ``MSG_NOSIGNAL`` where it exists (Linux), and
CPython ignores SIGPIPE at startup anyway (macOS, which lacks the flag). A dead peer shows as
EPIPE/ECONNRESET.

Only the Python-level decoder API is used (no cimport), so this module compiles on its own.
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
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport EAGAIN, EINTR, errno

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

__all__ = ["Connection", "open_connection"]


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
            if left >= 2147483647.0:
                ms = 2147483647
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
        self._seq += 1
        if self._seq > 0x7FFFFFFF:
            self._seq = 1
        return self._seq

    @property
    def _last_seq_id(self):
        """The last seq id handed out (0 before the first); settable for tests."""
        return self._seq

    @_last_seq_id.setter
    def _last_seq_id(self, value):
        if not 0 <= value <= 0x7FFFFFFF:
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
        # Right after a send the reply cannot be there yet (a server needs a round trip): go
        # straight to the blocking wait instead of a recv that would only return EAGAIN.
        cdef bint wait = just_sent
        while True:
            if wait and not self._arm_timeout(deadline, has_deadline):
                raise texts.recv_timeout(self._peer, deadline - self._t0, self._decoder.pending)
            buf = self._get_buffer(-1)
            PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
            size = view.len
            if size <= 0:
                PyBuffer_Release(&view)
                raise texts.empty_buffer_error()
            # recv(2) straight into the decoder's buffer: no intermediate bytes object.
            if wait:
                # The only blocking receive: the GIL is released, SO_RCVTIMEO bounds it.
                with nogil:
                    n = recv(self._fd, view.buf, <size_t>size, 0)
                    err = errno
            else:
                n = recv(self._fd, view.buf, <size_t>size, MSG_DONTWAIT)
                err = errno
            PyBuffer_Release(&view)
            buf = None  # drop our export before the decoder moves or grows its buffer
            if n > 0:
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
