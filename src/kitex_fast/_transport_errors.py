"""Error texts of the socket drivers, shared by ``_transport.pyx`` and ``_transport_py.py``.

Both drivers must raise the same errors with the same words; keeping the builders in one module
makes that true by construction. Only failure paths call these, so the compiled driver loses
nothing by calling Python here.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from .errors import ConnectionClosedError, RPCTimeoutError, TransportError

# errnos that mean "the peer is gone" on a send or a receive.
PEER_GONE = frozenset(
    code
    for code in (
        getattr(errno, "EPIPE", None),
        getattr(errno, "ECONNRESET", None),
        getattr(errno, "ECONNABORTED", None),
        getattr(errno, "ENOTCONN", None),
        getattr(errno, "ESHUTDOWN", None),
    )
    if code is not None
)


def errno_text(code: int) -> str:
    return "[Errno %d] %s" % (code, os.strerror(code))


def format_address(family: int, sockaddr: Any) -> str:
    """``host:port``, ``[v6host]:port``, or the path of a Unix socket."""
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        host = sockaddr[0]
        if family == getattr(socket, "AF_INET6", -1) or ":" in str(host):
            return "[%s]:%s" % (host, sockaddr[1])
        return "%s:%s" % (host, sockaddr[1])
    if isinstance(sockaddr, bytes):
        return sockaddr.decode("utf-8", "backslashreplace")
    return str(sockaddr)


def format_ms(seconds: float) -> str:
    ms = seconds * 1000.0
    if ms <= 0.0:
        return "0"
    if ms >= 1.0:
        return "%d" % int(ms + 0.5)
    return "%.3g" % ms


def reply_progress(pending: int) -> str:
    if pending > 0:
        return "after %d of the reply's bytes" % pending
    return "before any reply byte"


def closed_error(peer: str, sent: bool) -> ConnectionClosedError:
    return ConnectionClosedError("connection to %s is closed; open a new one" % peer, sent=sent)


def send_failed(peer: str, code: int, written: int, total: int) -> TransportError:
    progress = "(%d of %d bytes written)" % (written, total)
    if code in PEER_GONE:
        return ConnectionClosedError(
            "connection to %s closed by the peer while sending the request %s: %s"
            % (peer, progress, errno_text(code)),
            sent=written > 0,
        )
    return TransportError(
        "sending the request to %s failed %s: %s" % (peer, progress, errno_text(code)),
        sent=written > 0,
    )


def send_timeout(peer: str, budget: float, written: int, total: int) -> RPCTimeoutError:
    return RPCTimeoutError(
        "no reply from %s within %s ms: timed out while sending the request (%d of %d bytes "
        "written)" % (peer, format_ms(budget), written, total),
        sent=written > 0,
    )


def recv_failed(peer: str, code: int, pending: int) -> TransportError:
    if code in PEER_GONE:
        return ConnectionClosedError(
            "connection to %s reset by the peer %s: %s"
            % (peer, reply_progress(pending), errno_text(code)),
            sent=True,
        )
    return TransportError(
        "receiving the reply from %s failed %s: %s"
        % (peer, reply_progress(pending), errno_text(code)),
        sent=True,
    )


def recv_eof(peer: str, pending: int) -> ConnectionClosedError:
    return ConnectionClosedError(
        "connection to %s closed by the peer %s" % (peer, reply_progress(pending)), sent=True
    )


def recv_timeout(peer: str, budget: float, pending: int) -> RPCTimeoutError:
    if pending > 0:
        got = "%d of the reply's bytes arrived" % pending
    else:
        got = "no reply byte arrived"
    return RPCTimeoutError(
        "no reply from %s within %s ms: the request was sent, %s" % (peer, format_ms(budget), got),
        sent=True,
    )


def poll_failed(peer: str, code: int, sent: bool) -> TransportError:
    return TransportError(
        "waiting on the connection to %s failed: %s" % (peer, errno_text(code)), sent=sent
    )


def empty_buffer_error() -> RuntimeError:
    return RuntimeError("decoder.get_buffer() returned an empty buffer; nothing can be received")
