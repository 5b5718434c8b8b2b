"""The asyncio connection protocol, pure-Python twin of ``_protocol.pyx``.

One :class:`Protocol` per TCP connection. Requests go out as soon as they are encoded (several in
flight, each under its own seq id); replies are received straight into the frame decoder's buffer
(``asyncio.BufferedProtocol``), cut into frames, matched to their call by seq id and handed to the
future the call awaits. Nothing else runs per reply.

A call that is cancelled or times out leaves its entry in the table: its late reply is consumed and
dropped, so the byte stream never desyncs. A connection whose state cannot be trusted any more (a
protocol error, a reply nobody asked for, the peer closing) is closed and every call still waiting
on it fails with a typed error.

Same names, same results and the same error texts as the compiled protocol.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence

from .. import _transport_errors as texts
from .. import codec as _codec
from ..codec import MAX_I32
from ..limits import MAX_DURATION
from ..errors import ConnectionClosedError, KitexError, ProtocolError, ResponseMismatchError, TransportError

__all__ = ["CallPath", "Deadlines", "Exchange", "PingPongCore", "Protocol", "pick", "seq_id_of"]

# The codec twin's message-header parse (the compiled protocol calls the compiled codec's).
_parse_message = _codec.implementation("py").parse_message
_MAX_SEQ_ID = MAX_I32  # seq ids: 1 .. MAX_I32, then 1 again
_CONN_RESET = _codec.STR_KEY_CONN_RESET  # crrst: the server closes this connection
# Requests made in one loop iteration are written together up to this many bytes.
_CORK_LIMIT = 65536
_WRITELINES_MAY_NOT_PAUSE = sys.version_info >= (3, 12)


def seq_id_of(frame: Any) -> int:
    """The seq id a reply frame answers: the TTHeader SEQ ID when there is one (what Kitex's mux
    client matches on, kitex pkg/remote/trans/netpollmux/mux_conn.go), else the message's own."""
    seq = frame.seq_id
    if seq is not None:
        return int(seq)
    try:
        return int(_parse_message(frame.payload).seq_id)
    except ProtocolError as exc:
        raise ProtocolError(
            "reply is not a strict-binary Thrift message (first bytes %s)" % frame.payload[:16].hex(" ")
        ) from exc


def _is_exception(frame: Any) -> bool:
    p = frame.payload
    return len(p) >= 4 and p[3] == 3


def pick(conns: Sequence["Protocol"], limit: int) -> Optional["Protocol"]:
    """The least-loaded connection that can take a new call now (open, not retiring, not paused,
    fewer than ``limit`` calls in flight), or None."""
    best = None
    best_load = limit
    for proto in conns:
        if proto._usable:
            load = len(proto._pending)
            if load < best_load:
                best = proto
                best_load = load
                if load == 0:
                    break
    return best


class Protocol(asyncio.BufferedProtocol):
    """``Protocol(loop, decoder, peer, waiters, conns)``: one client connection.

    ``waiters`` is the owner's queue of futures waiting for room on some connection: a freed slot,
    a resumed writer or a closed connection wakes the oldest. ``conns`` is the owner's list of
    connections that take new calls: the protocol leaves it when it stops taking them.
    """

    __slots__ = (
        "_loop",
        "_transport",
        "_decoder",
        "_get_buffer",
        "_buffer_updated",
        "_peer",
        "_waiters",
        "_conns",
        "_pending",
        "_seq",
        "_usable",
        "_paused",
        "_retiring",
        "_closed",
        "_out",
        "_out_bytes",
        "_lost",
        "_create_future",
        "_pause_check",
        "_abandoned",
        "mux",
        "idle_since",
        "endpoint_index",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, decoder: Any, peer: str, waiters: Deque[Any], conns: List[Any]
    ) -> None:
        self._loop = loop
        self._transport: Any = None
        self._decoder = decoder
        self._get_buffer = decoder.get_buffer
        self._buffer_updated = decoder.buffer_updated
        self._peer = peer
        self._waiters = waiters
        self._conns = conns
        self._pending: Dict[int, Any] = {}  # seq id -> future, oldest first
        self._seq = 0
        self._usable = False  # open, not retiring, not paused: may take new calls
        self._paused = False
        self._retiring = False
        self._closed = False
        self._out: Optional[List[Any]] = None  # requests waiting for the end-of-iteration flush
        self._out_bytes = 0
        self._lost = loop.create_future()
        self._create_future = loop.create_future
        self._pause_check: Any = None
        self._abandoned = 0  # entries whose call gave up, reply still owed
        # Set by the owning pool. ``mux``: the server answers in any order (a Kitex mux server),
        # so a call that gives up does not hold up the others and the connection stays.
        # ``idle_since`` (loop time) and ``endpoint_index`` are the pool's bookkeeping for idle
        # connections.
        self.mux = False
        self.idle_since = 0.0
        self.endpoint_index = 0

    # -- attributes

    @property
    def peer(self) -> str:
        return self._peer

    @property
    def transport(self) -> Any:
        """The asyncio transport, or None before connect and after close."""
        return self._transport

    @property
    def load(self) -> int:
        """Calls in flight, including abandoned ones whose reply is still owed."""
        return len(self._pending)

    @property
    def usable(self) -> bool:
        return self._usable

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def paused(self) -> bool:
        return self._paused

    def __repr__(self) -> str:
        state = "closed" if self._closed else "retiring" if self._retiring else "open"
        return "<Protocol to %s %s, %d in flight>" % (self._peer, state, len(self._pending))

    # -- asyncio callbacks

    def connection_made(self, transport: Any) -> None:
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
        if not self._closed:
            self._usable = True

    def get_buffer(self, sizehint: int) -> Any:
        return self._get_buffer(-1)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            frames = self._buffer_updated(nbytes)
        except KitexError as exc:  # the decoder's ProtocolError: the stream is unusable
            self._abort(exc)
            return
        pending = self._pending
        freed = 0
        for frame in frames:
            try:
                seq = seq_id_of(frame)
            except ProtocolError as exc:
                self._abort(exc)
                return
            fut = pending.pop(seq, None)
            if fut is None:
                if not self._unmatched(frame, seq):
                    return
                continue
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

    def _unmatched(self, frame: Any, seq: int) -> bool:
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

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost fails what is left

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._leave()
        self._closed = True
        self._transport = None
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

    def pause_writing(self) -> None:
        # The peer is not reading fast enough: take no new calls until the buffer drains, so a
        # peer that stops reading never makes us buffer requests without bound.
        self._paused = True
        self._usable = False

    def resume_writing(self) -> None:
        self._paused = False
        if not (self._closed or self._retiring):
            self._usable = True
            if self._waiters:
                self._wake(len(self._waiters))

    # -- calls

    def next_seq_id(self) -> int:
        """1, 2, ... 2**31-1, then 1 again; never 0 (reserved for mux control frames) and never
        one still owed a reply."""
        seq = self._seq
        while True:
            seq = seq + 1 if seq < _MAX_SEQ_ID else 1
            if seq not in self._pending:
                self._seq = seq
                return seq

    def send(self, buffers: List[Any], seq_id: int) -> Any:
        """Register a call under ``seq_id``, write its request, return the future of its reply."""
        if not self._usable:
            raise self._refusal()
        fut = self._create_future()
        pending = self._pending
        if not pending and self._out is None:
            # Alone on the connection: write now (latency). With calls in flight, requests made
            # in the same loop iteration go out together in one write (one syscall for many).
            transport = self._transport
            transport.writelines(buffers)
            if self._pause_check is not None:
                self._pause_check()
            if transport.is_closing():
                # The write failed on the spot (the peer had reset the connection): the kernel
                # took none of it, so the caller may send it elsewhere (sent=False).
                self._leave()
                raise texts.closed_error(self._peer, False)
        else:
            out = self._out
            if out is None:
                self._out = out = []
                self._out_bytes = 0
                self._loop.call_soon(self._flush)
            out.extend(buffers)
            for b in buffers:
                self._out_bytes += len(b)
            if self._out_bytes >= _CORK_LIMIT:
                # Big requests go out now, so that pause_writing can stop the next ones.
                self._flush()
        pending[seq_id] = fut
        return fut

    def _flush(self) -> None:
        out = self._out
        self._out = None
        if out and self._transport is not None:
            self._transport.writelines(out)
            if self._pause_check is not None:
                self._pause_check()

    def _refusal(self) -> TransportError:
        if self._closed:
            return texts.closed_error(self._peer, False)
        return TransportError(
            "connection to %s takes no new calls (%s); pick another"
            % (self._peer, "retiring" if self._retiring else "write buffer full"),
            sent=False,
        )

    def expire(self, fut: Any, budget: float) -> None:
        """Timer callback: the call behind ``fut`` ran out of time. Its entry stays, so a late
        reply is consumed and dropped (the byte stream never desyncs)."""
        if fut.done():
            return
        fut.set_exception(texts.recv_timeout(self._peer, budget, self._decoder.pending))
        self._gave_up()

    def abandoned(self) -> None:
        """A call on this connection was cancelled: its entry stays, so the late reply is read
        and dropped."""
        self._gave_up()

    def _gave_up(self) -> None:
        # On an in-order server every request behind a stalled one waits for it, so the
        # connection takes no new calls and closes once no live call is left. A mux server
        # answers each call on its own: the connection stays, unless replies nobody waits for
        # come to outnumber the live calls (a server that stopped answering).
        self._abandoned += 1
        if not self.mux or self._abandoned * 2 > len(self._pending):
            self.retire()

    def retire(self) -> None:
        """Take no new calls; close once no live call waits on this connection."""
        self._retiring = True
        self._leave()
        for fut in self._pending.values():
            if not fut.done():
                return
        self._shut()

    def _shut(self) -> None:
        transport = self._transport
        self._leave()
        if transport is not None and not self._closed:
            self._closed = True
            self._flush()
            transport.close()

    def _abort(self, exc: KitexError) -> None:
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

    def close(self, exc: Optional[KitexError] = None) -> None:
        """Fail every waiting call (with ``exc``, or a ConnectionClosedError) and close now."""
        if exc is None:
            exc = ConnectionClosedError("connection to %s was closed by the client" % self._peer, sent=True)
        self._abort(exc)

    def wait_closed(self) -> Any:
        """An awaitable that completes once the transport is gone (``connection_lost``)."""
        return self._lost

    def _leave(self) -> None:
        """Stop taking new calls for good."""
        self._usable = False
        try:
            self._conns.remove(self)
        except ValueError:
            pass

    def _wake(self, n: int) -> None:
        waiters = self._waiters
        while n > 0 and waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1


# -- rpc timeouts ------------------------------------------------------------------------------

class _Deadline:
    """One call's place in :class:`Deadlines`; ``cancel()`` when the call is over."""

    __slots__ = ("when", "proto", "fut", "budget", "owner")

    def __init__(self, when: float, proto: Any, fut: Any, budget: Any, owner: "Deadlines") -> None:
        self.when = when
        self.proto: Any = proto  # None once the call is over (cancelled or expired)
        self.fut: Any = fut
        self.budget = budget
        self.owner = owner

    def cancel(self) -> None:
        self.proto = None
        self.fut = None
        self.owner._prune()


class Deadlines:
    """``Deadlines(loop, limit=4096)``: the rpc timeouts of one pool's calls on one loop timer
    (the compiled twin's docstring has the why). Calls of one pool mostly share one timeout, so
    their deadlines arrive in order: they queue oldest first under a single timer armed for the
    oldest still running. A deadline earlier than the newest queued one, or one past ``limit``
    queued calls, gets a timer of its own. ``call_at(when, proto, fut, budget)`` returns something
    with ``cancel()``; at ``when``, unless cancelled, it calls ``proto.expire(fut, budget)``."""

    def __init__(self, loop: Any, limit: int = 4096) -> None:
        self._loop = loop
        self._queue: Deque[_Deadline] = deque()
        self._timer: Any = None  # the loop's handle armed for the oldest queued deadline
        self._timer_at = 0.0  # when it fires: never after the oldest queued deadline
        self._limit = limit

    def __len__(self) -> int:
        return len(self._queue)

    def call_at(self, when: float, proto: Any, fut: Any, budget: Any) -> Any:
        queue = self._queue
        if len(queue) >= self._limit or (queue and when < queue[-1].when):
            return self._loop.call_at(when, proto.expire, fut, budget)
        entry = _Deadline(when, proto, fut, budget, self)
        queue.append(entry)
        if self._timer is None or when < self._timer_at:  # (an emptied queue's timer may be later)
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(when, self._fire)
            self._timer_at = when
        return entry

    def _prune(self) -> None:
        queue = self._queue
        while queue and queue[0].proto is None:
            queue.popleft()

    def _fire(self) -> None:
        """The timer: expire every queued call whose deadline has come, re-arm for the next."""
        queue = self._queue
        now = self._loop.time()
        self._timer = None
        while queue:
            entry = queue[0]
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

    def close(self) -> None:
        """Cancel the timer and forget every queued call (the pool fails them as it closes)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()


class PingPongCore:
    """The idle connections of a one-call-per-connection pool and its two per-call rules, ``take``
    and ``release`` (``kitex_fast.aio.pool.PingPongPool`` is built on it; see the compiled twin).
    ``wake`` and ``_arm_sweep`` are the pool's."""

    idle: List[List[Any]]  # per endpoint slot: idle connections, the most recently released last
    loop: Any
    waiters: Deque[Any]
    _closed: bool
    _sweep_handle: Any
    max_idle: int
    max_idle_time: float
    _next: int  # round robin over the endpoint slots
    _picked: int  # the slot take() picked for the call that now acquires

    def take(self) -> Any:
        """An idle connection to this call's endpoint, or None (then the pool's ``acquire``).
        No await: the common case. As in Kitex, the balancer picks the endpoint first (round
        robin over the slots, which a registry weights) and the pool gives a connection to that
        endpoint: an idle connection of another one is not taken, or the weights would not
        hold."""
        idle = self.idle
        n = len(idle)
        if n == 1:
            self._picked = 0
            conns = idle[0]
            return conns.pop() if conns else None
        if not n:  # a registry with no instance (yet)
            return None
        slot = self._next % n
        self._next = slot + 1
        self._picked = slot
        conns = idle[slot]
        return conns.pop() if conns else None

    def release(self, proto: Any) -> None:
        """A call on ``proto`` is done and the connection is clean: hand it to the oldest waiting
        call, or keep it idle (or close it when the pool keeps no more)."""
        if not proto.usable:  # retiring, paused or closed
            proto.retire()  # closes it, since no call is left on it
            return
        if self.waiters and self.wake(1, proto):  # handed straight to the oldest waiting call
            return
        idle = self.idle[proto.endpoint_index]
        if self._closed or len(idle) >= self.max_idle or self.max_idle_time <= 0.0:
            proto.retire()
            return
        now = self.loop.time()
        proto.idle_since = now
        idle.append(proto)
        if self._sweep_handle is None:  # (every call releases: no method call when one is armed)
            self._arm_sweep(now + self.max_idle_time)

    def wake(self, n: int, handed: Any = None) -> int:  # (the pool's)
        raise NotImplementedError

    def _arm_sweep(self, due: float) -> None:  # (the pool's)
        raise NotImplementedError


def _copy_error(exc: KitexError) -> KitexError:
    """A fresh exception with the same type and text for each failed call (one instance raised
    in many tasks would collect all their tracebacks)."""
    if isinstance(exc, TransportError):
        return type(exc)(str(exc), sent=exc.sent)
    try:
        return type(exc)(str(exc))
    except TypeError:  # pragma: no cover - an error type with another signature
        return exc


# -- the common path of a call -----------------------------------------------------------------

class CallPath:
    """The common path of one asyncio Client's calls (see the compiled twin for the contract):
    :meth:`start` gives an :class:`Exchange`, or "not handled" (None: nothing was done; False:
    no idle connection where the pool picked); :meth:`begin` sends on the full path's
    connection."""

    __slots__ = ("_pool", "_take", "_release", "_encoders", "_timeout", "_unset", "_headers_type",
                 "_settle", "closed", "retired")

    def __init__(self, pool: Any, encoders: Dict[Any, Any], rpc_timeout: Optional[float],
                 unset: object, headers_type: type, settle: Any) -> None:
        if type(encoders) is not dict:
            raise TypeError("encoders must be a dict, not %s" % type(encoders).__name__)
        if type(headers_type) is not type:
            raise TypeError("Argument 'headers_type' has incorrect type (expected type, got %s)"
                            % type(headers_type).__name__)
        self._pool = pool
        self._take = pool.take  # the pool's take and release (bound once)
        self._release = pool.release
        self._encoders = encoders
        self._timeout = rpc_timeout
        self._unset = unset
        self._headers_type = headers_type
        self._settle = settle
        self.closed = False
        self.retired = False

    def start(self, method: str, message: Any, rpc_timeout: Any, headers: Any) -> Any:
        """The call's :class:`Exchange`, or "not handled" (see the class)."""
        if self.closed or type(method) is not str:
            return None
        if type(message) is not bytes and type(message) is not bytearray:
            return None  # (a memoryview: the full path checks that it is contiguous)
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
        pool = self._pool
        # The first call binds the pool to its loop; a call from another loop (or none) takes
        # the full path, which says what is wrong.
        loop = asyncio.events._get_running_loop()
        if loop is None or loop is not pool.loop:
            return None
        proto = self._take()
        if proto is None:
            return False
        try:
            return self.begin(proto, encoder, message, method,
                              loop.time() + timeout if timeout else None, timeout)
        except TransportError as exc:
            if exc.sent:
                raise
            return None  # the connection died before taking a byte: the full path sends it

    def begin(self, proto: Any, encoder: Any, message: Any, method: str, deadline: Optional[float],
              timeout: Any) -> "Exchange":
        """Send ``message`` on ``proto``: the call's :class:`Exchange` (see the compiled twin)."""
        seq = proto.next_seq_id()
        try:
            # Validates the message (strict CALL, one complete struct) before any byte is written.
            buffers = encoder.encode(message, seq)
        except BaseException:
            self._release(proto)  # nothing was written: the connection is as clean as it was
            raise
        fut = proto.send(buffers, seq)
        if self.retired:
            proto.retire()  # an evicted client: this connection closes after its calls
        timer = self._pool.deadlines.call_at(deadline, proto, fut, timeout) if deadline is not None else None
        return Exchange(self, proto, fut, timer, encoder, method, seq)


class Exchange:
    """One call in flight: awaitable once, for ``(reply frame, seq id, endpoint text)`` (see the
    compiled twin)."""

    __slots__ = ("_path", "_proto", "_fut", "_timer", "_encoder", "_method", "_seq")

    def __init__(self, path: CallPath, proto: Any, fut: Any, timer: Any, encoder: Any, method: str,
                 seq: int) -> None:
        self._path = path
        self._proto = proto
        self._fut: Any = fut  # None once the call is over
        self._timer = timer
        self._encoder = encoder
        self._method = method
        self._seq = seq

    def __await__(self) -> "Exchange":
        return self

    def __next__(self) -> Any:
        return self._step()

    def send(self, value: Any) -> Any:
        return self._step()  # (what a task sends: None)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        """The awaiting task throws in the reply future's error, or its cancellation."""
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

    def close(self) -> None:
        self._drop()

    def _step(self) -> Any:
        fut = self._fut
        if fut is None:
            raise RuntimeError("cannot reuse an already awaited call")
        if not fut.done():
            fut._asyncio_future_blocking = True  # as the future's own __await__ yields it
            return fut
        self._fut = None
        self._disarm()
        frame = fut.result()  # the call's error raises here (a task throws it in instead)
        proto = self._proto
        if self._encoder.is_plain_reply(frame, self._seq):
            self._path._release(proto)
            raise StopIteration((frame, self._seq, proto.peer))
        raise StopIteration(self._path._settle(proto, frame, self._method, self._seq))

    def _disarm(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()

    def _drop(self) -> None:
        """The awaiting task gave up on the call, or takes the reply future's error."""
        fut = self._fut
        if fut is None:
            return
        self._fut = None
        self._disarm()
        proto = self._proto
        if not fut.done() or fut.cancelled():
            proto.abandoned()  # its entry stays: the late reply is read and dropped
        elif fut.exception() is None:
            # Cancelled just as the reply came: the connection is clean, or (an unusual reply)
            # done with after its calls.
            if self._encoder.is_plain_reply(fut.result(), self._seq):
                self._path._release(proto)
            else:
                proto.retire()
