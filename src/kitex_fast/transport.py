"""The socket driver: picks the compiled nonblocking driver or its pure-Python twin.

Selected by the same switch as the codec (``KITEX_FAST_NO_EXTENSIONS``). Only this module imports
``_transport`` / ``_transport_py``.

Exported: the connection (``Connection``, ``open_connection``) and its idle pool (``IdlePool``).
The drivers' internals (``CallPath``, ``BindingPath`` and the ``Shape``/``Route`` records the
binding hands them) live in both implementations too, reached through :func:`implementation`.
"""

from typing import TYPE_CHECKING
from ._dispatch import dispatch

PUBLIC_API, USING_EXTENSION, implementation, __all__ = dispatch(globals(), "_transport", "transport")
if TYPE_CHECKING:  # type checkers read the twin's source; a star import takes exactly its __all__
    from ._transport_py import *  # noqa: F401,F403
