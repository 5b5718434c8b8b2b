"""The socket driver: picks the compiled nonblocking driver or its pure-Python twin.

Selected by the same switch as the codec (``KITEX_FAST_NO_EXTENSIONS``). Only this module imports
``_transport`` / ``_transport_py``.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Optional

from . import _transport_py

PUBLIC_API = ("Connection", "open_connection")

NO_EXTENSIONS = bool(os.environ.get("KITEX_FAST_NO_EXTENSIONS")) or (
    sys.implementation.name != "cpython"
)

_compiled: Optional[ModuleType] = None
if not NO_EXTENSIONS:
    try:
        from . import _transport as _compiled  # type: ignore
    except ImportError:  # pragma: no cover - depends on the install
        _compiled = None

USING_EXTENSION = _compiled is not None

if TYPE_CHECKING:
    from ._transport_py import Connection as Connection, open_connection as open_connection
else:
    _active = _compiled if _compiled is not None else _transport_py
    globals().update({name: getattr(_active, name) for name in PUBLIC_API})


def implementation(name: Optional[str] = None) -> ModuleType:
    """The transport module for ``name``: ``"c"``, ``"py"`` or None (the live one)."""
    if name is None:
        return _compiled if _compiled is not None else _transport_py
    if name == "py":
        return _transport_py
    if name == "c":
        if _compiled is None:
            raise ImportError(
                "the compiled kitex_fast transport is not available; reinstall with a C compiler "
                "and Cython, or use implementation='py'"
            )
        return _compiled
    raise ValueError("implementation must be 'c', 'py' or None, not %r" % (name,))


__all__ = list(PUBLIC_API) + ["USING_EXTENSION", "PUBLIC_API", "implementation"]
