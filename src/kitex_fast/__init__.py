"""kitex_fast: call CloudWeGo Kitex Thrift services from Python, fast and strictly.

The public face: re-exports only. The wire codec lives in :mod:`kitex_fast.codec`, the Python test
server in :mod:`kitex_fast.testing`.
"""

from .binding import CONTENT_TYPE, OPERATIONS, InvokeRequest, InvokeResponse, KitexOutputBinding
from .client import Client, Headers, Reply
from .codec import USING_EXTENSION
from .errors import (
    ApplicationError,
    BizStatusError,
    ConnectError,
    ConnectionClosedError,
    ConnectionLimitError,
    ConnectTimeoutError,
    FrameTooLargeError,
    KitexError,
    MetadataError,
    NoInstanceError,
    ProtocolError,
    RemoteError,
    ResolveError,
    ResponseMismatchError,
    RPCTimeoutError,
    TransportError,
    UnsupportedOperationError,
)

__version__ = "0.1.0"

__all__ = [
    "KitexOutputBinding",
    "InvokeRequest",
    "InvokeResponse",
    "OPERATIONS",
    "CONTENT_TYPE",
    "Client",
    "Reply",
    "Headers",
    "USING_EXTENSION",
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
    "__version__",
]
