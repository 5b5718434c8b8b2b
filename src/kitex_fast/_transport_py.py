"""The socket driver, pure-Python twin of ``_transport.pyx``.

Same names, same results, same error texts as the compiled driver. One nonblocking socket per
:class:`Connection`; ``sendmsg`` out (one syscall for all buffers, no concatenation), ``recv_into``
straight into the frame decoder's own buffer, ``select.poll`` against an absolute
``time.monotonic()`` deadline only when the socket would block.

Signals: PEP 475 makes ``sock.sendmsg``, ``sock.recv_into`` and ``poll.poll`` retry EINTR
themselves, after running the Python signal handlers and recomputing the poll timeout; an exception
raised by a handler propagates out of them (and closes the connection, like every exception here).

SIGPIPE: CPython sets SIGPIPE to SIG_IGN at startup, so writing to a socket the peer closed returns
EPIPE instead of killing the process; on Linux ``MSG_NOSIGNAL`` is passed as well, so an embedding
application that restored SIG_DFL is safe too.

A connection is not thread-safe: one call at a time (the pool hands it to one caller).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple, Union

from . import _transport_errors as texts
from .errors import ConnectError, ConnectTimeoutError, TransportError
from .limits import MAX_DURATION, MAX_I32

__all__ = ["Connection", "open_connection", "IdlePool"]

_HAS_SENDMSG = hasattr(socket.socket, "sendmsg")
_HAS_POLL = hasattr(select, "poll")
_MSG_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
try:
    _IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16
except (OSError, ValueError):  # pragma: no cover - exotic platforms
    _IOV_MAX = 16
if _IOV_MAX <= 0:  # pragma: no cover - "no limit" / unknown
    _IOV_MAX = 1024

_INF = float("inf")
_POLLIN = getattr(select, "POLLIN", 1)
_POLLOUT = getattr(select, "POLLOUT", 4)

_BUFFERS = Union[bytes, bytearray, memoryview, Sequence[Union[bytes, bytearray, memoryview]]]



# -- waiting -------------------------------------------------------------------------------------


def _check_deadline(deadline: Optional[float]) -> Optional[float]:
    """``deadline`` itself, None for no limit (None or +inf); NaN is refused before any I/O
    (it compares false with everything, so it would silently mean "no limit")."""
    if deadline is None:
        return None
    if deadline != deadline:
        raise ValueError("deadline must be a time.monotonic() value or None, not nan")
    if deadline == _INF:
        return None
    return deadline


def _poll_ms(deadline: Optional[float]) -> Optional[int]:
    """Milliseconds left until ``deadline`` (rounded up, so a wait never ends early), None = no
    limit, or -1 when it has passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if not left > 0.0:  # (NaN included: never a wait without end)
        return -1
    ms = int(left * 1000.0)
    if ms < left * 1000.0:
        ms += 1
    return ms if ms < MAX_I32 else MAX_I32  # poll() takes a C int (32 bits) of milliseconds


class _Waiter:
    """Waits for one fd to become readable or writable; select.poll, or select.select without it."""

    __slots__ = ("_fd", "_in", "_out", "_peer", "_sent")

    def __init__(self, fd: int, peer: str, sent: bool) -> None:
        self._fd = fd
        self._peer = peer
        self._sent = sent  # what a failing poll() reports as TransportError.sent
        if _HAS_POLL:
            # Two registered poll objects: no register/modify call per wait.
            self._in: Any = select.poll()
            self._in.register(fd, _POLLIN)
            self._out: Any = select.poll()
            self._out.register(fd, _POLLOUT)
        else:  # pragma: no cover - Windows
            self._in = self._out = None

    def wait(self, writable: bool, deadline: Optional[float]) -> bool:
        """True when ready (or in error: the next syscall reports it), False when the deadline
        passed. PEP 475: poll() itself retries EINTR with the remaining time."""
        while True:
            ms = _poll_ms(deadline)
            if ms == -1:
                return False
            try:
                if self._in is not None:
                    if (self._out if writable else self._in).poll(ms):
                        return True
                else:  # pragma: no cover - Windows
                    fds = [self._fd]
                    timeout = None if ms is None else ms / 1000.0
                    r, w, x = select.select(
                        [] if writable else fds, fds if writable else [], fds, timeout
                    )
                    if r or w or x:
                        return True
            except OSError as exc:  # not EINTR (PEP 475 retries it): EINVAL, ENOMEM
                raise texts.poll_failed(self._peer, exc.errno or 0, self._sent) from None
            # poll() timed out: loop to re-check the clock (it may return a hair early).

    def idle(self) -> bool:
        """True when nothing at all is pending on the fd (zero-timeout poll)."""
        if self._in is not None:
            return not self._in.poll(0)
        r, _, x = select.select([self._fd], [], [self._fd], 0)  # pragma: no cover - Windows
        return not (r or x)  # pragma: no cover


# -- connection ----------------------------------------------------------------------------------


class Connection:
    """One connected nonblocking socket plus the frame decoder that parses what it receives.

    ``Connection(sock, decoder, peer=None)`` takes ownership of a connected socket (it is made
    nonblocking); :func:`open_connection` is the usual way to get one. Any exception out of
    :meth:`send`, :meth:`receive` or :meth:`call` (timeouts, resets, protocol errors, even an
    exception raised by a signal handler) closes the connection: it is never left half-used.
    """

    __slots__ = (
        "_sock",
        "_fd",
        "_decoder",
        "_peer",
        "_get_buffer",
        "_buffer_updated",
        "_recv_into",
        "_sendmsg",
        "_waiter",
        "_ready",
        "_ready_pos",
        "_seq",
        "_t0",
        "_idle_since",
    )

    def __init__(self, sock: socket.socket, decoder: Any, peer: Optional[str] = None) -> None:
        if peer is None:
            peer = texts.format_address(sock.family, sock.getpeername())
        sock.setblocking(False)
        self._sock: Optional[socket.socket] = sock
        self._fd = sock.fileno()
        self._decoder = decoder
        self._peer = peer
        # Bound methods cached once: the hot loop makes no attribute lookups on other objects.
        self._get_buffer = decoder.get_buffer
        self._buffer_updated = decoder.buffer_updated
        self._recv_into = sock.recv_into
        self._sendmsg = sock.sendmsg if _HAS_SENDMSG else None
        self._waiter = _Waiter(self._fd, peer, True)
        self._ready: Optional[List[Any]] = None
        self._ready_pos = 0
        self._seq = 0
        self._t0 = 0.0
        self._idle_since = 0.0

    # -- attributes

    @property
    def decoder(self) -> Any:
        return self._decoder

    @property
    def peer(self) -> str:
        return self._peer

    @property
    def closed(self) -> bool:
        return self._sock is None

    def fileno(self) -> int:
        """The socket's fd, or -1 once closed."""
        return self._fd

    def __repr__(self) -> str:
        if self._sock is None:
            return "<Connection to %s closed>" % self._peer
        return "<Connection to %s fd=%d>" % (self._peer, self._fd)

    # -- lifecycle

    def close(self) -> None:
        """Close the socket and drop any frames not yet received. Idempotent."""
        sock = self._sock
        if sock is None:
            return
        self._sock = None
        self._fd = -1
        self._ready = None
        self._recv_into = self._sendmsg = None  # type: ignore[assignment]
        sock.close()

    def is_reusable(self) -> bool:
        """Whether the idle connection can carry a new request: a zero-timeout poll finds nothing
        (no EOF, no reset, no bytes nobody asked for) and no reply bytes are left over. A
        connection found unusable is closed."""
        if self._sock is None:
            return False
        if self._ready is None and not self._decoder.pending and self._waiter.idle():
            return True
        self.close()
        return False

    def next_seq_id(self) -> int:
        """Per-connection seq ids: 1, 2, ... 2**31-1, then 1 again; never 0."""
        seq = self._seq + 1
        if seq > MAX_I32:
            seq = 1
        self._seq = seq
        return seq

    @property
    def _last_seq_id(self) -> int:
        """The last seq id handed out (0 before the first); settable for tests."""
        return self._seq

    @_last_seq_id.setter
    def _last_seq_id(self, value: int) -> None:
        if not 0 <= value <= MAX_I32:
            raise ValueError("seq id must be in 0..2**31-1, not %r" % (value,))
        self._seq = value

    # -- I/O

    def call(self, buffers: _BUFFERS, deadline: Optional[float] = None) -> Any:
        """``send(buffers, deadline)`` then ``receive(deadline)``: one request, one reply frame."""
        self.send(buffers, deadline)
        return self._next_frame(deadline, True)

    def send(self, buffers: _BUFFERS, deadline: Optional[float] = None) -> None:
        """Write all ``buffers`` (a bytes-like or a list/tuple of them) with one ``sendmsg``,
        continuing partial writes; wait for POLLOUT only when the socket buffer is full.
        ``deadline`` is an absolute ``time.monotonic()`` value or None (no limit)."""
        self._t0 = time.monotonic()
        if self._sock is None:
            raise texts.closed_error(self._peer, False)
        try:
            self._send(buffers, _check_deadline(deadline))
        except BaseException:
            self.close()
            raise

    def _send(self, buffers: _BUFFERS, deadline: Optional[float]) -> None:
        if isinstance(buffers, (bytes, bytearray, memoryview)):
            bufs: List[Any] = [buffers]
        else:
            bufs = buffers if type(buffers) is list else list(buffers)
        total = 0
        for b in bufs:
            total += b.nbytes if type(b) is memoryview else len(b)
        if total == 0:
            return
        sendmsg = self._sendmsg
        if sendmsg is None:  # pragma: no cover - no sendmsg (Windows): one copy, one send
            bufs = [b"".join(bufs)]
        written = 0
        while True:
            capped = len(bufs) > _IOV_MAX
            batch = bufs[:_IOV_MAX] if capped else bufs
            try:
                if sendmsg is not None:
                    n = sendmsg(batch, (), _MSG_NOSIGNAL)
                else:  # pragma: no cover - Windows
                    n = self._sock.send(batch[0])  # type: ignore[union-attr]
            except BlockingIOError:
                n = -1
            except OSError as exc:
                raise texts.send_failed(self._peer, exc.errno or 0, written, total) from None
            if n > 0:
                written += n
                if written >= total:
                    return
                bufs = _advance(bufs, n)
                if capped:
                    continue  # the batch was cut at IOV_MAX, so not short: write on
            # EAGAIN or a short write (the socket buffer is full): wait for room.
            if not self._waiter.wait(True, deadline):
                raise texts.send_timeout(
                    self._peer, (deadline or 0.0) - self._t0, written, total
                )

    def receive(self, deadline: Optional[float] = None) -> Any:
        """The next reply frame: ``recv_into`` the decoder's own buffer until it yields a frame;
        extra frames from the same read are kept for the next ``receive``."""
        return self._next_frame(deadline, False)

    def _next_frame(self, deadline: Optional[float], just_sent: bool) -> Any:
        ready = self._ready
        if ready is not None:
            frame = ready[self._ready_pos]
            self._ready_pos += 1
            if self._ready_pos == len(ready):
                self._ready = None
            return frame
        if self._sock is None:
            raise texts.closed_error(self._peer, True)
        try:
            return self._receive(_check_deadline(deadline), just_sent)
        except BaseException:
            self.close()
            raise

    def _receive(self, deadline: Optional[float], just_sent: bool) -> Any:
        get_buffer = self._get_buffer
        buffer_updated = self._buffer_updated
        recv_into = self._recv_into
        # Right after a send the reply cannot be there yet: poll first instead of a recv that
        # would only fail with EAGAIN (one syscall and one exception less per call).
        if just_sent and not self._waiter.wait(False, deadline):
            raise texts.recv_timeout(self._peer, (deadline or 0.0) - self._t0, self._decoder.pending)
        while True:
            buf = get_buffer(-1)
            size = buf.nbytes
            if size <= 0:
                raise texts.empty_buffer_error()  # a 0-byte recv would look like EOF
            try:
                n = recv_into(buf)
            except BlockingIOError:
                n = -1
            except OSError as exc:
                del buf
                raise texts.recv_failed(self._peer, exc.errno or 0, self._decoder.pending) from None
            del buf  # drop our export before the decoder moves or grows its buffer
            if n > 0:
                frames = buffer_updated(n)
                if frames:
                    if len(frames) > 1:
                        self._ready = frames
                        self._ready_pos = 1
                    return frames[0]
                if n == size:
                    continue  # filled the whole buffer: more is likely queued, read on
            elif n == 0:
                raise texts.recv_eof(self._peer, self._decoder.pending)
            # EAGAIN or a short read (the socket is drained): wait for more.
            if not self._waiter.wait(False, deadline):
                raise texts.recv_timeout(
                    self._peer, (deadline or 0.0) - self._t0, self._decoder.pending
                )


def _advance(bufs: List[Any], n: int) -> List[Any]:
    """The buffers left after ``n`` bytes of them were written (slices, no copies)."""
    i = 0
    while True:
        b = bufs[i]
        size = b.nbytes if type(b) is memoryview else len(b)
        if n < size:
            rest = [memoryview(b).cast("B")[n:]]
            rest.extend(bufs[i + 1 :])
            return rest
        n -= size
        i += 1


# -- connect -------------------------------------------------------------------------------------


def open_connection(
    family: int, sockaddr: Any, *, timeout: Optional[float], decoder: Any
) -> Connection:
    """Connect a nonblocking TCP (or Unix) socket to ``sockaddr`` (as ``socket.getaddrinfo``
    returns it) within ``timeout`` seconds (None = no limit), with ``TCP_NODELAY`` set, and wrap
    it in a :class:`Connection` that feeds ``decoder``."""
    address = texts.format_address(family, sockaddr)
    if timeout is not None and timeout != timeout:
        raise ValueError("connect timeout must be a number of seconds or None, not nan")
    deadline = None if timeout is None else _check_deadline(time.monotonic() + timeout)
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
        if err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR):
            if not _Waiter(sock.fileno(), address, False).wait(True, deadline):
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
# The twin of the compiled call path, in the same structure so the two stay comparable: the common
# path of a call is one method (CallPath.exchange for a Client, BindingPath.invoke for a binding);
# whatever is not the common case is answered "not handled" (see the compiled twin), and the owner
# runs its full rules. Nothing here calls back into the client or the binding.


class IdlePool:
    """Idle connections to one endpoint, most recently used first, at most ``max_idle`` kept, each
    for ``max_idle_time``: a release closes the connections idle longer than that (see the
    compiled one)."""

    __slots__ = ("endpoint", "max_idle", "max_idle_time", "_idle", "_closed")

    def __init__(self, endpoint: Any, max_idle: int, max_idle_time: float) -> None:
        self.endpoint = endpoint
        self.max_idle = max_idle
        self.max_idle_time = max_idle_time
        self._idle: Deque[Connection] = deque()
        self._closed = False

    # deque.append and deque.pop are atomic in CPython, so the hot path takes no lock; close()
    # re-drains after a racing give_back, so nothing is left idle in a closed pool.

    def take_idle(self) -> Optional[Connection]:
        """An idle connection that still looks healthy, or None. Dead ones are closed here, before
        anything is written to them, so using what this returns never loses a request."""
        return self._take(time.monotonic())

    def _take(self, now: float) -> Optional[Connection]:
        idle = self._idle
        while idle:
            try:
                conn = idle.pop()
            except IndexError:  # another thread took the last one
                return None
            if now - conn._idle_since <= self.max_idle_time and conn.is_reusable():
                return conn
            conn.close()
        return None

    def give_back(self, conn: Connection) -> None:
        """Return a clean connection after a completed call (or close it if there is no room)."""
        if self._closed or len(self._idle) >= self.max_idle or conn._sock is None:
            conn.close()
            return
        now = conn._idle_since = time.monotonic()
        idle = self._idle
        idle.append(conn)
        # The oldest release is at the left: one comparison in the common case. popleft and
        # appendleft are atomic; a racing take may reorder two connections, which only delays a
        # close until the next release.
        while True:
            try:
                oldest = idle.popleft()
            except IndexError:  # other threads took them all
                break
            if now - oldest._idle_since <= self.max_idle_time:
                idle.appendleft(oldest)
                break
            oldest.close()
        if self._closed:
            self._drain()

    def close(self) -> None:
        """Close the idle connections and pool no more (connections in use close when released)."""
        self._closed = True
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                conn = self._idle.popleft()
            except IndexError:
                return
            conn.close()

    @property
    def idle_count(self) -> int:
        """How many idle connections wait in the pool."""
        return len(self._idle)


class Unsettled:
    """``Unsettled(conn, pool, frame, seq_id)``: a call whose reply came but is not a plain REPLY
    (an exception, biz status, a reset request, a mismatch): the client settles it (see the
    compiled twin). Read-only."""

    __slots__ = ("conn", "pool", "frame", "seq_id")
    conn: "Connection"
    pool: IdlePool
    frame: Any
    seq_id: int

    def __init__(self, conn: "Connection", pool: IdlePool, frame: Any, seq_id: int) -> None:
        _init_record(self, Unsettled, (conn, pool, frame, seq_id))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Unsettled is read-only")

    def __repr__(self) -> str:
        return "Unsettled(conn=%r, seq_id=%r)" % (self.conn, self.seq_id)


class CallPath:
    """The common path of one Client's calls (see the compiled twin for the contract)."""

    __slots__ = ("_pools", "_next", "_encoders", "_timeout", "_unset", "_headers_type",
                 "_connect_fresh", "closed", "retired")

    def __init__(self, pools: Sequence[IdlePool], encoders: Dict[Any, Any],
                 rpc_timeout: Optional[float], unset: object, headers_type: type,
                 connect_fresh: Any) -> None:
        self._pools: List[IdlePool] = []
        self.set_pools(pools)
        self._next = 0
        if type(encoders) is not dict:
            raise TypeError("encoders must be a dict, not %s" % type(encoders).__name__)
        self._encoders = encoders
        self._timeout = rpc_timeout
        self._unset = unset
        if type(headers_type) is not type:
            raise TypeError("Argument 'headers_type' has incorrect type (expected type, got %s)"
                            % type(headers_type).__name__)
        self._headers_type = headers_type
        self._connect_fresh = connect_fresh
        self.closed = False
        self.retired = False

    def call(self, method: str, message: Any, rpc_timeout: Any, headers: Any) -> Any:
        """``Client.call``: the REPLY message (bytes), or :meth:`exchange`'s "not handled"."""
        answer = self.exchange(method, message, rpc_timeout, headers)
        return answer[0].payload if type(answer) is tuple else answer

    def set_pools(self, pools: Sequence[IdlePool]) -> None:
        """Swap in a new round-robin cycle (a registry update); empty: every call takes the full
        path. (One attribute: a concurrent call sees the old list or the new one.)"""
        pools = list(pools)
        for pool in pools:
            if type(pool) is not IdlePool:
                raise TypeError("pools must be IdlePool objects, not %s" % type(pool).__name__)
        self._pools = pools

    def next_endpoint(self) -> int:
        """The index of the endpoint the next call starts at (round robin; advances it): the
        full path asks here too, so both paths share one rotation."""
        n = len(self._pools)
        if not n:
            return 0
        start = self._next % n
        self._next += 1
        return start

    def exchange(self, method: str, message: Any, rpc_timeout: Any, headers: Any) -> Any:
        """``(reply frame, seq id, endpoint text)``, or "not handled": None, an endpoint index or
        an :class:`Unsettled` (see the compiled twin)."""
        mtype = type(message)
        if self.closed or type(method) is not str or not (
            mtype is bytes or mtype is bytearray or (mtype is memoryview and message.c_contiguous)
        ):
            return None
        if rpc_timeout is self._unset:
            timeout = self._timeout
        elif rpc_timeout is None or (type(rpc_timeout) is float and 0.0 < rpc_timeout <= MAX_DURATION):
            timeout = rpc_timeout  # the binding's already-validated value
        else:
            return None
        if headers is None:
            key: Any = method
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
        start = 0
        pools = self._pools
        npools = len(pools)
        if npools > 1:
            start = self._next % npools
            self._next += 1
        elif not npools:  # a registry with no instance (yet): the full path resolves or says why
            return None
        pool = pools[start]
        now = time.monotonic()
        conn = pool._take(now)
        if conn is None:  # connect (with failover) is the full path's job, from this endpoint
            return start
        deadline = now + timeout if timeout else None
        seq = conn.next_seq_id()
        try:
            # Validates the message (strict CALL, one complete struct) before any byte is written.
            buffers = encoder.encode(message, seq)
        except BaseException:
            pool.give_back(conn)
            raise
        return self.send(conn, pool, buffers, deadline, seq, encoder, True)

    def send(self, conn: Connection, pool: IdlePool, buffers: Any, deadline: Optional[float],
             seq_id: int, encoder: Any, reused: bool) -> Any:
        """Carry out an encoded call on ``conn`` (from ``pool``; ``reused``: an idle one):
        ``(reply frame, seq id, endpoint text)`` for a plain REPLY, else an :class:`Unsettled`."""
        try:
            frame = conn.call(buffers, deadline)
        except TransportError as exc:
            # (the connection closed itself) A pooled connection that died between its health
            # check and our write, with no byte taken by the kernel: nothing reached the server,
            # so a fresh connection is safe.
            if exc.sent or not reused:
                raise
            conn = self._connect_fresh(pool, deadline)
            try:
                frame = conn.call(buffers, deadline)
            except BaseException:
                conn.close()
                raise
        if encoder.is_plain_reply(frame, seq_id):
            pool.give_back(conn)
            return frame, seq_id, conn._peer
        return Unsettled(conn, pool, frame, seq_id)


class Shape:
    """``Shape(id, getter, names, positions)``: what the binding learned about one metadata shape
    (the compiled twin declares it in ``_transport.pxd``). Read-only."""

    __slots__ = ("id", "getter", "names", "positions")
    id: Any
    getter: Any
    names: Tuple[str, ...]
    positions: Tuple[int, ...]

    def __init__(self, id: Any, getter: Any, names: Tuple[str, ...], positions: Tuple[int, ...]) -> None:
        _init_record(self, Shape, (id, getter, _check_tuple("names", names), _check_tuple("positions", positions)))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Shape is read-only")

    def __repr__(self) -> str:
        return "Shape(id=%r, names=%r, positions=%r)" % (self.id, self.names, self.positions)


class Route:
    """``Route(options, client, client_key, path, method, rpc_timeout, headers)``: where one
    distinct metadata goes, as the binding validated it (the compiled twin declares it in
    ``_transport.pxd``). Read-only."""

    __slots__ = ("options", "client", "client_key", "path", "method", "rpc_timeout", "headers")
    options: Any
    client: Any
    client_key: Any
    path: Optional["CallPath"]
    method: Any
    rpc_timeout: Any
    headers: Any

    def __init__(self, options: Any, client: Any, client_key: Any, path: Any, method: Any,
                 rpc_timeout: Any, headers: Any) -> None:
        _init_record(self, Route, (options, client, client_key, path, method, rpc_timeout, headers))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Route is read-only")

    def __repr__(self) -> str:
        return "Route(method=%r, client=%r, rpc_timeout=%r, headers=%r)" % (
            self.method, self.client, self.rpc_timeout, self.headers)


def _check_tuple(name: str, value: Any) -> Any:
    if type(value) is not tuple and value is not None:  # as the compiled class's typed field
        raise TypeError("Argument '%s' has incorrect type (expected tuple, got %s)" % (name, type(value).__name__))
    return value


def _init_record(record: Any, cls: type, values: Tuple[Any, ...]) -> None:
    for name, value in zip(cls.__slots__, values):  # type: ignore[attr-defined]
        object.__setattr__(record, name, value)


class BindingPath:
    """The common path of a binding's invokes (see the compiled twin for the contract)."""

    __slots__ = ("_request_type", "_operations", "_respond", "_shapes", "_routes",
                 "_touch", "_tail")

    def __init__(self, request_type: type, operations: Sequence[str], respond: Any,
                 shapes: Dict[Any, Any], routes: Any, clients: Any) -> None:
        self._request_type: Any = request_type  # (Any: mypy narrows on `type(x) is not T`)
        self._operations = tuple(operations)
        for operation in self._operations:
            if type(operation) is not str:
                raise TypeError("operations must be strings, not %s" % type(operation).__name__)
        self._respond = respond
        if type(shapes) is not dict:
            raise TypeError("shapes must be a dict, not %s" % type(shapes).__name__)
        self._shapes = shapes
        self._routes = routes
        self._touch = clients.move_to_end
        self._tail: Any = None  # the client key this path last moved to the LRU end

    def forget_tail(self) -> None:
        """The client cache was reordered elsewhere: touch it again on the next call."""
        self._tail = None

    def invoke(self, request: Any) -> Any:
        """``respond(reply, route.options)``, or "not handled": None, or ``(route, answer)`` when
        the call path did not finish the call (see the compiled twin)."""
        if type(request) is not self._request_type:
            return None
        metadata = request.metadata
        if type(metadata) is not dict or request.operation not in self._operations:
            return None
        try:
            known: Optional[Shape] = self._shapes.get(tuple(metadata))
            if known is None:
                return None
            route: Optional[Route] = self._routes.get((known.id, tuple([metadata[k] for k in known.names])))
        except (TypeError, KeyError):  # unhashable values: validation names them
            return None
        if route is None:
            return None
        path = route.path
        if path is None or path.retired:
            return None
        if route.client_key is not self._tail:
            try:
                self._touch(route.client_key)  # LRU touch (skipped while this client is the last)
                self._tail = route.client_key
            except KeyError:
                pass  # evicted meanwhile: retired, handled on the next call
        answer = path.exchange(route.method, request.data, route.rpc_timeout, route.headers)
        if type(answer) is not tuple:
            return route, answer
        return self._respond(answer, route.options)
