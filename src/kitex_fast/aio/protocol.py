"""Picks the compiled asyncio protocol or its pure-Python twin (the same switch as the codec:
``KITEX_FAST_NO_EXTENSIONS``). Only this module imports ``_protocol`` / ``_protocol_py``."""

from typing import TYPE_CHECKING
from .._dispatch import dispatch

PUBLIC_API, USING_EXTENSION, implementation, __all__ = dispatch(globals(), "aio._protocol", "asyncio protocol")
if TYPE_CHECKING:  # type checkers read the twin's source; a star import takes exactly its __all__
    from ._protocol_py import *  # noqa: F401,F403
