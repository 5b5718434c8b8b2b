"""The public home of the wire codec: picks the compiled core or its pure-Python twin.

``KITEX_FAST_NO_EXTENSIONS=1`` (or a non-CPython interpreter) selects the twin.
``USING_EXTENSION`` tells which one is live. Nothing else in the package imports ``_codec`` or
``_codec_py`` directly; code that needs a specific implementation (tests, benchmarks, a client
built with ``implementation="py"``) asks :func:`implementation`.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Optional

from . import _codec_py
from ._dispatch import choose, load_compiled

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

_compiled: Optional[ModuleType] = load_compiled("_codec")

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
    return choose(name, _compiled, _codec_py, "codec")


__all__ = list(PUBLIC_API) + ["USING_EXTENSION", "PUBLIC_API", "implementation"]
