"""The public home of the wire codec: picks the compiled core or its pure-Python twin.

``KITEX_FAST_NO_EXTENSIONS=1`` (or a non-CPython interpreter) selects the twin.
``USING_EXTENSION`` tells which one is live. Nothing else in the package imports ``_codec`` or
``_codec_py`` directly; code that needs a specific implementation (tests, benchmarks, a client
built with ``implementation="py"``) asks :func:`implementation`.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Optional

from . import _codec_py

# The names both implementations must provide, with the same behaviour and error texts.
PUBLIC_API = (
    "MessageHeader",
    "Frame",
    "FrameDecoder",
    "RequestEncoder",
    "parse_message",
    "rewrite_message",
    "encode_frame",
    "build_message",
    "find_struct_end",
    "decode_application_exception",
    "encode_application_exception",
    "CALL",
    "REPLY",
    "EXCEPTION",
    "ONEWAY",
    "TRANSPORTS",
    "DEFAULT_MAX_FRAME_SIZE",
)

NO_EXTENSIONS = bool(os.environ.get("KITEX_FAST_NO_EXTENSIONS")) or (
    sys.implementation.name != "cpython"
)

_compiled: Optional[ModuleType] = None
if not NO_EXTENSIONS:
    try:
        from . import _codec as _compiled  # type: ignore
    except ImportError:  # pragma: no cover - depends on the install
        _compiled = None

USING_EXTENSION = _compiled is not None

if TYPE_CHECKING:
    # Type checkers read the twin's real source.
    from ._codec_py import (
        CALL as CALL,
        DEFAULT_MAX_FRAME_SIZE as DEFAULT_MAX_FRAME_SIZE,
        EXCEPTION as EXCEPTION,
        ONEWAY as ONEWAY,
        REPLY as REPLY,
        TRANSPORTS as TRANSPORTS,
        Frame as Frame,
        FrameDecoder as FrameDecoder,
        MessageHeader as MessageHeader,
        RequestEncoder as RequestEncoder,
        build_message as build_message,
        decode_application_exception as decode_application_exception,
        encode_application_exception as encode_application_exception,
        encode_frame as encode_frame,
        find_struct_end as find_struct_end,
        parse_message as parse_message,
        rewrite_message as rewrite_message,
    )
else:
    _active = _compiled if _compiled is not None else _codec_py
    globals().update({name: getattr(_active, name) for name in PUBLIC_API})


def implementation(name: Optional[str] = None) -> ModuleType:
    """The codec module for ``name``: ``"c"`` (compiled), ``"py"`` (twin) or None (the live one)."""
    if name is None:
        return _compiled if _compiled is not None else _codec_py
    if name == "py":
        return _codec_py
    if name == "c":
        if _compiled is None:
            raise ImportError(
                "the compiled kitex_fast codec is not available%s; reinstall with a C compiler "
                "and Cython, or use implementation='py'"
                % (" (KITEX_FAST_NO_EXTENSIONS is set)" if NO_EXTENSIONS else "")
            )
        return _compiled
    raise ValueError("implementation must be 'c', 'py' or None, not %r" % (name,))


__all__ = list(PUBLIC_API) + ["USING_EXTENSION", "PUBLIC_API", "implementation"]
