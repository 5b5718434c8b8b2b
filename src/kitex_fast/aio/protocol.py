"""Picks the compiled asyncio protocol or its pure-Python twin (the same switch as the codec:
``KITEX_FAST_NO_EXTENSIONS``). Only this module imports ``_protocol`` / ``_protocol_py``."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Optional, Tuple

from .._dispatch import choose, load_compiled

_compiled: Optional[ModuleType] = load_compiled("aio._protocol")


def _twin() -> ModuleType:
    """The pure-Python twin, imported when first asked for (or when the compiled one is absent):
    a process on the compiled core does not pay the twin's memory."""
    from . import _protocol_py

    return _protocol_py


# The names both implementations export, with the same behaviour and error texts: the twin's
# __all__ is the source list; the compiled module repeats it (and so does its .pyi), held to it
# by tests/unit/test_codec_exports.py and stubtest, so the live module's list is the same list.
PUBLIC_API: Tuple[str, ...] = tuple((_compiled if _compiled is not None else _twin()).__all__)

USING_EXTENSION = _compiled is not None

if TYPE_CHECKING:
    # Type checkers read the twin's real source; a star import re-exports exactly its __all__.
    from ._protocol_py import *  # noqa: F401,F403
else:
    _active = _compiled if _compiled is not None else _twin()
    globals().update({name: getattr(_active, name) for name in PUBLIC_API})


def implementation(name: Optional[str] = None) -> ModuleType:
    """The protocol module for ``name``: ``"c"`` (compiled), ``"py"`` (twin) or None (the live one)."""
    return choose(name, _compiled, _twin, "asyncio protocol")


__all__ = list(PUBLIC_API) + ["USING_EXTENSION", "PUBLIC_API", "implementation"]
