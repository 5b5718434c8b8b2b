"""Picks the compiled asyncio protocol or its pure-Python twin (the same switch as the codec:
``KITEX_FAST_NO_EXTENSIONS``). Only this module imports ``_protocol`` / ``_protocol_py``."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Optional, Tuple

from .._dispatch import choose, load_compiled
from . import _protocol_py

# The names both implementations export: the twin's __all__ is the source list (the compiled
# protocol and _protocol.pyi repeat it, held to it by tests/unit/test_codec_exports.py and stubtest).
PUBLIC_API: Tuple[str, ...] = tuple(_protocol_py.__all__)

_compiled: Optional[ModuleType] = load_compiled("aio._protocol")

USING_EXTENSION = _compiled is not None

if TYPE_CHECKING:
    # Type checkers read the twin's real source; a star import re-exports exactly its __all__.
    from ._protocol_py import *  # noqa: F401,F403
else:
    _active = _compiled if _compiled is not None else _protocol_py
    globals().update({name: getattr(_active, name) for name in PUBLIC_API})


def implementation(name: Optional[str] = None) -> ModuleType:
    """The protocol module for ``name``: ``"c"`` (compiled), ``"py"`` (twin) or None (the live one)."""
    return choose(name, _compiled, _protocol_py, "asyncio protocol")


__all__ = list(PUBLIC_API) + ["USING_EXTENSION", "PUBLIC_API", "implementation"]
