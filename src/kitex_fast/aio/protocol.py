"""Picks the compiled asyncio protocol or its pure-Python twin (the same switch as the codec:
``KITEX_FAST_NO_EXTENSIONS``). Only this module imports ``_protocol`` / ``_protocol_py``."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Optional

from .._dispatch import choose, load_compiled
from . import _protocol_py

PUBLIC_API = ("Protocol", "pick", "seq_id_of")


_compiled: Optional[ModuleType] = load_compiled("aio._protocol")

USING_EXTENSION = _compiled is not None

if TYPE_CHECKING:
    from ._protocol_py import Protocol as Protocol, pick as pick, seq_id_of as seq_id_of
else:
    _active = _compiled if _compiled is not None else _protocol_py
    globals().update({name: getattr(_active, name) for name in PUBLIC_API})


def implementation(name: Optional[str] = None) -> ModuleType:
    """The protocol module for ``name``: ``"c"`` (compiled), ``"py"`` (twin) or None (the live one)."""
    return choose(name, _compiled, _protocol_py, "asyncio protocol")


__all__ = list(PUBLIC_API) + ["USING_EXTENSION", "PUBLIC_API", "implementation"]
