"""kitex_fast: call CloudWeGo Kitex Thrift services from Python, fast and strictly.

The public face: re-exports only. The wire codec lives in :mod:`kitex_fast.codec`, the Python test
server in :mod:`kitex_fast.testing`.
"""

from . import errors
from .binding import CONTENT_TYPE, OPERATIONS, InvokeRequest, InvokeResponse, KitexOutputBinding
from .client import Client, Headers, Reply
from .codec import USING_EXTENSION
from .errors import *  # noqa: F401,F403 - the exception hierarchy: exactly errors.__all__

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
    "__version__",
]
__all__ += errors.__all__
