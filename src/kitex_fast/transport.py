"""The socket driver: picks the compiled nonblocking driver or its pure-Python twin.

Selected by the same switch as the codec (``KITEX_FAST_NO_EXTENSIONS``). Only this module imports
``_transport`` / ``_transport_py``.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Optional

from . import _transport_py
from ._dispatch import choose, load_compiled

PUBLIC_API = ("Connection", "open_connection", "IdlePool", "CallPath", "BindingPath")

_compiled: Optional[ModuleType] = load_compiled("_transport")

USING_EXTENSION = _compiled is not None

if TYPE_CHECKING:
    from ._transport_py import BindingPath as BindingPath, CallPath as CallPath
    from ._transport_py import Connection as Connection, IdlePool as IdlePool
    from ._transport_py import open_connection as open_connection
else:
    _active = _compiled if _compiled is not None else _transport_py
    globals().update({name: getattr(_active, name) for name in PUBLIC_API})


def implementation(name: Optional[str] = None) -> ModuleType:
    """The transport module for ``name``: ``"c"`` (compiled), ``"py"`` (twin) or None (the live one)."""
    return choose(name, _compiled, _transport_py, "transport")


__all__ = list(PUBLIC_API) + ["USING_EXTENSION", "PUBLIC_API", "implementation"]
