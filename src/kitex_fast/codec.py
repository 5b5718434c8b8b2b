"""The public home of the wire codec: picks the compiled core or its pure-Python twin.

``KITEX_FAST_NO_EXTENSIONS=1`` (or a non-CPython interpreter) selects the twin.
``USING_EXTENSION`` tells which one is live. Nothing else in the package imports ``_codec`` or
``_codec_py`` directly; code that needs a specific implementation (tests, benchmarks, a client
built with ``implementation="py"``) asks :func:`implementation`.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Optional, Tuple

from . import _codec_py
from ._dispatch import choose, load_compiled

# The names both implementations provide, with the same behaviour and error texts: the twin's
# __all__ is the source list (the compiled core and _codec.pyi repeat it, held to it by
# tests/unit/test_codec_exports.py and stubtest).
PUBLIC_API: Tuple[str, ...] = tuple(_codec_py.__all__)

_compiled: Optional[ModuleType] = load_compiled("_codec")

USING_EXTENSION = _compiled is not None

if TYPE_CHECKING:
    # Type checkers read the twin's real source; a star import re-exports exactly its __all__.
    from ._codec_py import *  # noqa: F401,F403
else:
    _active = _compiled if _compiled is not None else _codec_py
    globals().update({name: getattr(_active, name) for name in PUBLIC_API})


def implementation(name: Optional[str] = None) -> ModuleType:
    """The codec module for ``name``: ``"c"`` (compiled), ``"py"`` (twin) or None (the live one)."""
    return choose(name, _compiled, _codec_py, "codec")


__all__ = list(PUBLIC_API) + ["USING_EXTENSION", "PUBLIC_API", "implementation"]
