"""The public home of the wire codec: picks the compiled core or its pure-Python twin.

``KITEX_FAST_NO_EXTENSIONS=1`` (or a non-CPython interpreter) selects the twin.
``USING_EXTENSION`` tells which one is live. Nothing else in the package imports ``_codec`` or
``_codec_py`` directly; code that needs a specific implementation (tests, benchmarks, a client
built with ``implementation="py"``) asks :func:`implementation`.
"""

from typing import TYPE_CHECKING
from ._dispatch import dispatch

PUBLIC_API, USING_EXTENSION, implementation, __all__ = dispatch(globals(), "_codec", "codec")
if TYPE_CHECKING:  # type checkers read the twin's source; a star import takes exactly its __all__
    from ._codec_py import *  # noqa: F401,F403
