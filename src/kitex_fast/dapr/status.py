"""How kitex_fast errors cross daprd, and how an SDK caller gets them back.

daprd wraps whatever status the component returns: the app sees gRPC ``INTERNAL`` (HTTP 500) with
``error invoking output binding NAME: rpc error: code = <our code> desc = <our text>`` (measured with
daprd 1.18, docs/dapr.md "Errors"). So the code is chosen to fit the failure, and the text
starts with the error class and its key numbers in a fixed form::

    <ErrorClass>[ type=<n>][ status=<n>]: <the error's own message>

:func:`error_from_text` turns such a message (whole daprd wrapper or just ``desc``) back into the
typed :mod:`kitex_fast.errors` exception. This module needs no grpc: the codes are names of
``grpc.StatusCode`` members.
"""

from __future__ import annotations

import re
from typing import Dict, Optional, Tuple, Type

from .. import errors
from ..errors import (
    ApplicationError,
    BizStatusError,
    ConnectError,
    ConnectionClosedError,
    KitexError,
    MetadataError,
    ProtocolError,
    RPCTimeoutError,
    TransportError,
)
from ..pool import ascii_int

__all__ = ["status_of", "error_from_text", "STATUS_BY_ERROR"]

# Application exception types that mean "no such method/service here" (Thrift: UNKNOWN_METHOD;
# Kitex: UNKNOWN_SERVICE, NO_SERVICE_NAME; kitex pkg/remote/trans_errors.go).
_UNIMPLEMENTED_TYPES = frozenset((1, 20, 21))

# Error class -> gRPC status code name. Most specific class first: the first isinstance match wins.
STATUS_BY_ERROR: Tuple[Tuple[Type[KitexError], str], ...] = (
    (MetadataError, "INVALID_ARGUMENT"),  # bad metadata or operation: fix the request
    (RPCTimeoutError, "DEADLINE_EXCEEDED"),
    (ConnectError, "UNAVAILABLE"),  # refused, unreachable, connect timeout: nothing was sent
    (ConnectionClosedError, "UNAVAILABLE"),
    (TransportError, "UNAVAILABLE"),
    (ApplicationError, "UNKNOWN"),  # the server raised; UNIMPLEMENTED for unknown method/service
    (BizStatusError, "FAILED_PRECONDITION"),  # the handler refused on business grounds
    (ProtocolError, "INTERNAL"),  # bytes that are not Kitex (caller's data or the peer's reply)
)


def status_of(exc: BaseException) -> Tuple[str, str]:
    """The gRPC status code name and the description for ``exc``."""
    if not isinstance(exc, KitexError):
        return "INTERNAL", "%s: %s" % (type(exc).__name__, exc)
    code = "UNKNOWN"
    for cls, name in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            code = name
            break
    fields = ""
    if isinstance(exc, ApplicationError):
        if exc.type_code in _UNIMPLEMENTED_TYPES:
            code = "UNIMPLEMENTED"
        fields = " type=%d" % exc.type_code
    elif isinstance(exc, BizStatusError):
        fields = " status=%d" % exc.status_code
    return code, "%s%s: %s" % (type(exc).__name__, fields, exc)


# [0-9], not \d: \d also matches other scripts' digits ("٣", "３"), which int() reads as numbers
# but this component never writes.
_DESC = re.compile(r"(?:^|desc = )([A-Z][A-Za-z]*Error)((?: [a-z]+=-?[0-9]+)*): (.*)\Z", re.S)
_APP_TEXT = re.compile(r"remote application exception(?: from method '(.*?)')?: type -?[0-9]+ \([^)]*\)*: (.*)\Z", re.S)
_BIZ_TEXT = re.compile(r"biz status -?[0-9]+: (.*?)(?: \(extra: (.*)\))?\Z", re.S)


def error_from_text(text: str) -> Optional[KitexError]:
    """The typed error that a component status text (or daprd's message around it) describes,
    or None when ``text`` does not come from this component."""
    match = _DESC.search(text)
    if match is None:
        return None
    name, raw_fields, message = match.groups()
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, KitexError)):
        return None
    fields: Dict[str, int] = {}
    for item in raw_fields.split():
        key, _, value = item.partition("=")
        number = ascii_int(value, negative=True)
        if number is None:  # more digits than any code this component writes (int() would raise)
            return None
        fields[key] = number
    if cls is ApplicationError:
        app = _APP_TEXT.match(message)
        method, plain = (app.group(1) or "", app.group(2)) if app else ("", message)
        return ApplicationError(fields.get("type", 0), plain, method=method)
    if cls is BizStatusError:
        biz = _BIZ_TEXT.match(message)
        extra: Dict[str, str] = {}
        plain = message
        if biz:
            plain = biz.group(1)
            for pair in (biz.group(2) or "").split(", "):
                k, sep, v = pair.partition("=")
                if sep:
                    extra[k] = v
        return BizStatusError(fields.get("status", 0), plain, extra)
    return cls(message)
