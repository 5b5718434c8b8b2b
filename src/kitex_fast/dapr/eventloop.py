"""The component process's event loop, loaded without Python's ``ssl`` module.

Nothing the component does speaks TLS: daprd reaches it on a Unix socket, and Kitex, etcd and the
optional TCP listener are plain TCP. Yet ``import ssl`` maps OpenSSL's libcrypto and builds its
tables, about 4 MiB of a component that idles at 20-odd (docs/benchmarks.md, "Memory"), and both
loops import it on load:

- asyncio does so under ``try: import ssl / except ImportError: ssl = None`` (asyncio/sslproto.py
  and base_events.py), the state it keeps on a Python built without OpenSSL, where everything but
  TLS works. :func:`import_asyncio` imports it with ``ssl`` made unimportable for that moment.
- uvloop (``uvloop/includes/stdlib.pxi``, 0.17-0.23) imports ``ssl`` unconditionally and keeps ten
  of its names as module constants, used only when a caller passes ``ssl=`` to a loop method.
  :func:`import_uvloop` hands it :data:`STAND_IN`, a module with those names whose context and
  constructors raise :class:`TLSUnavailableError`, for the length of the import.

Both restore ``sys.modules`` afterwards, so a later ``import ssl`` anywhere in the process gets
the real module; only the two loops' own TLS is off. A process that has loaded ``ssl`` already
(an embedding application) keeps it: these functions change nothing then.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable, Optional

__all__ = ["TLSUnavailableError", "STAND_IN", "import_asyncio", "import_uvloop"]


class TLSUnavailableError(RuntimeError):
    """A TLS feature was asked of an event loop the component loaded without ``ssl``."""


def _refuse(*_args: Any, **_kwargs: Any) -> Any:
    raise TLSUnavailableError(
        "kitex_fast.dapr: this process loaded its event loop without the ssl module "
        "(kitex_fast.dapr.eventloop): the component has no TLS feature"
    )


def _stand_in() -> types.ModuleType:
    module = types.ModuleType("ssl", "kitex_fast.dapr.eventloop's stand-in: the names uvloop keeps, no TLS.")

    class SSLContext:
        __new__ = _refuse  # type: ignore[assignment]

    class MemoryBIO:
        __new__ = _refuse  # type: ignore[assignment]

    class SSLError(OSError):
        pass

    class SSLWantReadError(SSLError):
        pass

    class SSLWantWriteError(SSLError):
        pass

    class SSLSyscallError(SSLError):
        pass

    class SSLZeroReturnError(SSLError):
        pass

    class CertificateError(ValueError):
        pass

    for cls in (SSLContext, MemoryBIO, SSLError, SSLWantReadError, SSLWantWriteError, SSLSyscallError,
                SSLZeroReturnError, CertificateError):
        cls.__module__ = "ssl"
        setattr(module, cls.__name__, cls)
    module.create_default_context = _refuse  # type: ignore[attr-defined]
    # OpenSSL's SSL_get_error codes (openssl/ssl.h), the values the real module exports.
    module.SSL_ERROR_WANT_READ = 2  # type: ignore[attr-defined]
    module.SSL_ERROR_WANT_WRITE = 3  # type: ignore[attr-defined]
    module.SSL_ERROR_SYSCALL = 5  # type: ignore[attr-defined]
    return module


STAND_IN = _stand_in()


def _import_with_ssl_as(stand_in: Optional[types.ModuleType], name: str) -> Any:
    """``import name`` while ``sys.modules["ssl"]`` is ``stand_in`` (None: unimportable)."""
    if "ssl" in sys.modules or name in sys.modules:
        return __import__(name)
    sys.modules["ssl"] = stand_in  # type: ignore[assignment]
    try:
        return __import__(name)
    finally:
        if sys.modules.get("ssl") is stand_in:
            del sys.modules["ssl"]


def import_asyncio() -> None:
    """Import asyncio without ``ssl`` (its TLS off, the rest as usual)."""
    _import_with_ssl_as(None, "asyncio")


def import_uvloop() -> Callable[[], Any]:
    """``uvloop.new_event_loop``, uvloop imported with :data:`STAND_IN` as its ``ssl``. Raises
    ImportError when uvloop is not installed."""
    import_asyncio()  # uvloop imports asyncio first; keep that one free of ssl too
    try:
        new_event_loop: Callable[[], Any] = _import_with_ssl_as(STAND_IN, "uvloop").new_event_loop
        return new_event_loop
    except ImportError as exc:
        if exc.name == "uvloop":
            raise ImportError('uvloop is not installed (pip install "kitex_fast[uvloop]")', name="uvloop") from None
        raise
    except AttributeError as exc:  # a uvloop newer than 0.23 keeping a name STAND_IN lacks
        raise ImportError("uvloop %s wants more of ssl than kitex_fast.dapr.eventloop.STAND_IN has (%s)"
                          % (_version("uvloop"), exc), name="ssl") from None


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(unknown version)"
