"""One exception hierarchy for the whole package.

Every error says what was expected, what was found and, where it helps, what to do. Both codec
implementations and both transport drivers raise these same classes with the same texts.

Which class where:

- Arguments of the public entry points (``Client``, ``KitexOutputBinding``, metadata): a bad one is
  a :class:`MetadataError` naming it, raised before any I/O; request bytes that are not a
  contiguous strict-binary CALL are a :class:`ProtocolError`, a request over ``max_frame_size`` a
  :class:`FrameTooLargeError` (nothing sent).
- Anything from a peer raises only subclasses of :class:`KitexError`: :class:`ProtocolError` for
  bytes, :class:`TransportError` for the connection, :class:`RemoteError` for error answers.
- The low-level codec functions raise :class:`ProtocolError` for wire bytes and plain
  ``TypeError``/``ValueError``/``BufferError`` for wrong Python arguments (programming errors).
"""

from __future__ import annotations

from typing import Dict, Optional

# The hierarchy, which the package's face (kitex_fast/__init__.py) re-exports as it is: the one
# list of the public error classes. The helpers below (quoted, QUOTE_LIMIT,
# APPLICATION_EXCEPTION_NAMES) serve the package's own modules, which import them by name.
__all__ = [
    "KitexError",
    "ProtocolError",
    "FrameTooLargeError",
    "ResponseMismatchError",
    "MetadataError",
    "UnsupportedOperationError",
    "TransportError",
    "ConnectError",
    "ConnectTimeoutError",
    "ResolveError",
    "NoInstanceError",
    "ConnectionClosedError",
    "RPCTimeoutError",
    "ConnectionLimitError",
    "RemoteError",
    "ApplicationError",
    "BizStatusError",
]

# How many characters of a caller's value an error text or a log line quotes: enough to recognise
# it, never enough to fill a log or a gRPC status (a value may be megabytes long).
QUOTE_LIMIT = 64


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``value`` as an error text or a log line may quote it: ``repr`` of at most ``limit``
    characters (so control characters, newlines and NULs are escaped, and no value can forge a
    log line), followed by how long the whole value was when it was cut."""
    if isinstance(value, (str, bytes, bytearray)) and len(value) > limit:
        return "%r... (%d %s)" % (
            value[:limit], len(value), "characters" if isinstance(value, str) else "bytes"
        )
    text = repr(value)
    return text if len(text) <= 4 * limit else text[: 4 * limit] + "..."


class KitexError(Exception):
    """Base of every error kitex_fast raises on purpose."""


class ProtocolError(KitexError, ValueError):
    """Bytes that are not what the Kitex wire protocol allows (from the peer or from the caller)."""


class FrameTooLargeError(ProtocolError):
    """A length field announces more bytes than the configured maximum frame size."""


class ResponseMismatchError(ProtocolError):
    """A well-formed reply that does not answer the request: wrong seq id, method name or type."""


class MetadataError(KitexError, ValueError):
    """Binding or client configuration that is missing or malformed; raised before any I/O."""


class UnsupportedOperationError(MetadataError):
    """A Dapr binding operation other than the ones the binding lists."""


class TransportError(KitexError):
    """The connection failed. ``sent`` tells whether any request byte may have reached the peer:
    a request with ``sent == False`` can be retried safely, one with ``sent == True`` cannot."""

    sent: bool = False

    def __init__(self, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


class ConnectError(TransportError):
    """No connection could be made to an endpoint (refused, unreachable, resolution failed)."""


class ConnectTimeoutError(ConnectError, TimeoutError):
    """The connect did not finish within the connect timeout."""


class ResolveError(ConnectError):
    """A service name could not be turned into instances: the registry did not answer in time
    (nothing was sent to any server)."""


class NoInstanceError(ResolveError):
    """The registry answered, and no live instance of the service is registered (the text names
    the service, the registry and its key prefix)."""


class ConnectionClosedError(TransportError):
    """The peer closed (or reset) the connection before the whole reply arrived."""


class RPCTimeoutError(TransportError, TimeoutError):
    """The reply did not arrive within the rpc timeout."""


class ConnectionLimitError(RPCTimeoutError):
    """The call's deadline passed while it waited for a connection: every connection the client
    may open to its endpoints (``max_connections`` each) carried a call. Nothing was sent."""


class RemoteError(KitexError):
    """The server answered with an error."""


# Thrift TApplicationException type codes, plus Kitex's own 20 and 21
# (cloudwego/gopkg protocol/thrift/exception.go; kitex pkg/remote/trans_errors.go).
APPLICATION_EXCEPTION_NAMES: Dict[int, str] = {
    0: "UNKNOWN",
    1: "UNKNOWN_METHOD",
    2: "INVALID_MESSAGE_TYPE",
    3: "WRONG_METHOD_NAME",
    4: "BAD_SEQUENCE_ID",
    5: "MISSING_RESULT",
    6: "INTERNAL_ERROR",
    7: "PROTOCOL_ERROR",
    8: "INVALID_TRANSFORM",
    9: "INVALID_PROTOCOL",
    10: "UNSUPPORTED_CLIENT_TYPE",
    20: "UNKNOWN_SERVICE",
    21: "NO_SERVICE_NAME",
}


class ApplicationError(RemoteError):
    """The server replied with a Thrift EXCEPTION message (a TApplicationException)."""

    def __init__(self, type_code: int, message: str, *, method: str = "") -> None:
        self.type_code = type_code
        self.message = message
        self.method = method
        self.type_name = APPLICATION_EXCEPTION_NAMES.get(type_code, "UNKNOWN(%d)" % type_code)
        where = " from method %r" % method if method else ""
        super().__init__(
            "remote application exception%s: type %d (%s): %s"
            % (where, type_code, self.type_name, message)
        )


class BizStatusError(RemoteError):
    """The handler returned a Kitex business status (TTHeader ``biz-status`` != 0)."""

    def __init__(
        self, status_code: int, message: str, extra: Optional[Dict[str, str]] = None
    ) -> None:
        self.status_code = status_code
        self.message = message
        self.extra: Dict[str, str] = dict(extra or {})
        text = "biz status %d: %s" % (status_code, message)
        if self.extra:
            text += " (extra: %s)" % ", ".join("%s=%s" % kv for kv in sorted(self.extra.items()))
        super().__init__(text)
