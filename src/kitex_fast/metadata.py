"""Dapr binding metadata: the keys, their validation, and the options they turn into.

Everything is validated before any I/O. Errors name the field and the bad value. Required keys are
checked in the Go binding's order (destService, hostPorts, methodName) followed by version, with the
Go binding's text ``missing metadata field <name>`` (dapr/components-contrib bindings/kitex/context.go).
"""

from __future__ import annotations

import math
import re
from types import MappingProxyType
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

from .codec import (
    INT_KEY_FROM_SERVICE,
    INT_KEY_LOG_ID,
    INT_KEY_RPC_TIMEOUT,
    STR_KEY_IDL_SERVICE,
    TRANSPORTS,
)
from .errors import MetadataError, quoted
from .limits import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_IDLE_TIME,
    DEFAULT_RPC_TIMEOUT,
    DEFAULT_TRANSPORT,
    MAX_CONNECTIONS_LIMIT,
    MAX_DURATION,
    MAX_HEADER_BYTES,
    MAX_HEADER_KEY,
    MAX_I32,
    MAX_POOL_SIZE,
    mux_rule,
)
from .pool import MAX_DIGITS, Endpoint, ascii_int, parse_host_ports, parse_int
from .resolver import RegistrySpec, parse_registry

__all__ = [
    "Headers",
    "CallOptions",
    "REQUIRED_KEYS",
    "OPTIONAL_KEYS",
    "parse_duration",
    "parse_size",
    "parse_options",
    "validate_defaults",
    "DEFAULTS",
    "MAX_DURATION",
    "check_seconds",
    "check_text",
]

PREFIX = "dapr binding kitex: "

# Checked in this order when missing (the Go binding checks the first three in this order).
REQUIRED_KEYS = ("destService", "hostPorts", "methodName", "version")

OPTIONAL_KEYS = (
    # Service discovery instead of hostPorts: exactly one of the two (see parse_options).
    "registry",
    "registryPrefix",
    "transport",
    "connectTimeout",
    "rpcTimeout",
    "maxFrameSize",
    "idlService",
    "fromService",
    "logID",
    "poolSize",
    "maxIdleTime",
    "maxConnections",
    "muxConnection",
    "pipelining",
    "responseMetadata",
)
STR_HEADER_PREFIX = "header."
INT_HEADER_PREFIX = "intHeader."
KNOWN_KEYS = REQUIRED_KEYS + OPTIONAL_KEYS
_KNOWN_LOWER = {k.lower(): k for k in KNOWN_KEYS}



def _duration_text(seconds: float) -> str:
    """A default duration in metadata syntax: whole seconds as ``30s``, else milliseconds."""
    millis = int(round(seconds * 1000))
    return "%ds" % (millis // 1000) if millis % 1000 == 0 else "%dms" % millis


# The defaults of kitex_fast.limits (the client's keyword defaults too), in metadata syntax; each
# value's "why" is there. rpcTimeout=0 restores "no limit".
DEFAULTS: Dict[str, str] = {
    "transport": DEFAULT_TRANSPORT,
    "connectTimeout": _duration_text(DEFAULT_CONNECT_TIMEOUT),
    "rpcTimeout": _duration_text(DEFAULT_RPC_TIMEOUT),
    "maxFrameSize": str(DEFAULT_MAX_FRAME_SIZE),
    # poolSize: none by default (kitex_fast.Client's pool_size=None): idle connections follow the
    # concurrency, up to maxConnections, each closed after maxIdleTime (limits.MAX_POOL_SIZE).
    "maxIdleTime": _duration_text(DEFAULT_MAX_IDLE_TIME),
    "maxConnections": str(DEFAULT_MAX_CONNECTIONS),  # per endpoint
    "muxConnection": "false",
    "pipelining": "false",
    # The Dapr component's own default is "false" (kitex_fast.dapr.core.COMPONENT_DEFAULTS): daprd
    # turns every entry into a gRPC response header, which costs it more than the call.
    "responseMetadata": "true",
}

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# ASCII digits only ([0-9], not \d, which matches any Unicode digit: "٣s" is not Go's 3s).
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
# The longest duration text read at all: "2562047h47m16s854ms775us807ns" (Go's longest) is 29.
_MAX_DURATION_TEXT = 64
_SIZE = re.compile(r"([0-9]{1,%d})(?: *(b|kb|kib|mb|mib|gb|gib))?" % MAX_DIGITS, re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}


def check_seconds(name: str, value: object) -> Optional[float]:
    """A timeout argument in seconds: None or 0 (no limit, returned as None) or a finite number in
    (0, MAX_DURATION]. Anything else (NaN, inf, negative, a string, a bool) is a MetadataError
    that names the argument, raised before any I/O."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MetadataError(
            "%s must be a number of seconds or None (no limit), not %s" % (name, quoted(value))
        )
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float
        seconds = math.inf
    if not 0.0 <= seconds <= MAX_DURATION:  # also false for NaN
        raise MetadataError(
            "%s must be between 0 and %d seconds (Go's longest time.Duration; None or 0 means "
            "no limit), not %s" % (name, MAX_DURATION, quoted(value))
        )
    return seconds if seconds > 0.0 else None


def check_text(name: str, value: str) -> int:
    """The UTF-8 size of ``value``, which goes on the wire; a lone surrogate (which no UTF-8
    encoding can carry, not even with surrogateescape) is a MetadataError that names ``name``."""
    try:
        return len(value.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError as exc:
        raise MetadataError(
            "%s %s cannot be sent: %s at index %d is not encodable as UTF-8"
            % (name, quoted(value), ascii(value[exc.start]), exc.start)
        ) from None


def parse_duration(field: str, value: str) -> Optional[float]:
    """Seconds from a Go-style duration (``500ms``, ``1.5s``, ``1m30s``) or plain milliseconds.
    0 means no limit (None). Longer than Go's longest Duration (about 292 years) is an error.

    As Go's time.ParseDuration and strconv.Atoi read them: ASCII digits only, no white space or
    sign. A text over 64 characters is refused before it is read (Go's longest duration is 29)."""
    if not isinstance(value, str):
        raise MetadataError("%smetadata field %s: value %s is not a string" % (PREFIX, field, quoted(value)))
    text = value
    millis = ascii_int(text)
    if millis is not None:
        seconds = millis / 1000.0
    elif text.isascii() and text.isdigit():  # more than 19 digits: longer than any Duration
        seconds = math.inf
    else:
        pos, seconds = 0, 0.0
        if len(text) <= _MAX_DURATION_TEXT:
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
                pos = match.end()
        if pos != len(text) or not text:
            raise MetadataError(
                "%smetadata field %s: %s is not a duration (use e.g. 500ms, 2s, 1m30s, or plain "
                "milliseconds)" % (PREFIX, field, quoted(value))
            )
    if not seconds <= MAX_DURATION:  # inf (20 digits or more) or merely huge
        raise MetadataError(
            "%smetadata field %s: %s is longer than Go's longest duration (about 292 years)"
            % (PREFIX, field, quoted(value))
        )
    return seconds if seconds > 0 else None


def parse_size(field: str, value: str) -> int:
    """A size in bytes from ``1048576``, ``64KiB``, ``16MiB``, ... (1KiB to 2GiB); ``field`` names it in errors."""
    match = _SIZE.fullmatch(value) if isinstance(value, str) and value.isascii() else None
    if not match:
        raise MetadataError(
            "%smetadata field %s: %s is not a size in bytes (use e.g. 1048576, 64KiB, 16MiB)"
            % (PREFIX, field, quoted(value))
        )
    size = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]
    if not 1024 <= size <= 0x80000000:
        raise MetadataError(
            "%smetadata field %s: %s is outside 1KiB-2GiB" % (PREFIX, field, quoted(value))
        )
    # A frame length is a signed 32-bit field: no frame exceeds 2GiB-1, so a 2GiB limit (the
    # natural way to write "the largest") means exactly that.
    return min(size, MAX_I32)


# The spellings Go's strconv.ParseBool accepts, as Dapr's own components read flags.
_BOOLS = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}


def _parse_bool(field: str, value: str) -> bool:
    flag = _BOOLS.get(value.strip().lower())
    if flag is None:
        raise MetadataError("%smetadata field %s: %s is not true or false" % (PREFIX, field, quoted(value)))
    return flag


def _parse_int(field: str, value: str, low: int, high: int) -> int:
    try:
        return parse_int(field, value, low, high)
    except MetadataError as exc:
        raise MetadataError(PREFIX + str(exc)) from None


def _shown(name: str) -> str:
    """A metadata key (a caller's text) as an error text names it: as it is when it is short and
    printable, else quoted (escaped and cut), so that no key can forge a log line."""
    return name if len(name) <= 64 and name.isprintable() else quoted(name)


def _pairs(headers: Mapping[Any, str]) -> Tuple[Tuple[Any, str], ...]:
    try:
        return tuple(sorted(headers.items()))
    except TypeError:  # keys of mixed types: the codec names what is wrong when it encodes them
        return tuple(headers.items())


class Headers(Tuple[Tuple[Tuple[str, str], ...], Tuple[Tuple[int, str], ...]]):
    """Per-call TTHeader headers: ``Headers(str_headers=None, int_headers=None)``, added to the
    client's own headers for one call (``client.call(method, message, headers=...)``).

    ``str_headers`` maps names to values, ``int_headers`` Kitex's integer keys (0-65535) to
    values (the keys: ``kitex_fast.codec.INT_KEY_*``). Immutable and hashable: a client encodes a
    method's TTHeader block once per distinct ``Headers``, so make one and reuse it. The codec
    checks the keys and values when the first call encodes them (MetadataError).

    (A tuple of its sorted ``(str pairs, int pairs)`` underneath, so that hashing and comparing
    it, once per call, run in C.)"""

    __slots__ = ()

    def __new__(
        cls, str_headers: Optional[Mapping[str, str]] = None, int_headers: Optional[Mapping[int, str]] = None
    ) -> "Headers":
        for name, given in (("str_headers", str_headers), ("int_headers", int_headers)):
            if given is not None and not isinstance(given, Mapping):
                raise MetadataError("%s must be a mapping, not %s" % (name, type(given).__name__))
        return tuple.__new__(cls, (_pairs(str_headers or {}), _pairs(int_headers or {})))

    @classmethod
    def _of(cls, str_pairs: Tuple[Tuple[str, str], ...], int_pairs: Tuple[Tuple[int, str], ...]) -> "Headers":
        """From validated, sorted pairs (the metadata parser's)."""
        return tuple.__new__(cls, (str_pairs, int_pairs))

    @property
    def str_headers(self) -> Mapping[str, str]:
        """The string headers (read-only)."""
        return MappingProxyType(dict(self[0]))

    @property
    def int_headers(self) -> Mapping[int, str]:
        """The integer-key headers (read-only)."""
        return MappingProxyType(dict(self[1]))

    def __getnewargs__(self) -> Tuple[Dict[str, str], Dict[int, str]]:  # type: ignore[override]
        return dict(self[0]), dict(self[1])  # (copy and pickle call __new__ with these)

    def __repr__(self) -> str:
        return "Headers(str_headers=%r, int_headers=%r)" % (dict(self[0]), dict(self[1]))


def header_chars(headers: Headers) -> int:
    """What a cache holding ``headers`` holds, in characters (an int key counts 8)."""
    return sum(len(name) + len(value) for name, value in headers[0]) + sum(
        8 + len(value) for _, value in headers[1])


class CallOptions(NamedTuple):
    """Validated options of one call. ``client_key`` is the part that needs its own client and
    connections (destination, transport, connect options); methods, versions, rpc timeouts and
    headers are per call and share them."""

    dest_service: str
    endpoints: Tuple[Endpoint, ...]
    method_name: str
    version: str
    transport: str
    connect_timeout: Optional[float]
    rpc_timeout: Optional[float]
    max_frame_size: int
    pool_size: Optional[int]  # None: not set (the client's default)
    max_idle_time: float
    max_connections: int
    mux_connection: bool
    pipelining: bool
    str_headers: Tuple[Tuple[str, str], ...]
    int_headers: Tuple[Tuple[int, str], ...]
    # metadata registry (+ registryPrefix): resolve dest_service there; endpoints is then ()
    registry: Optional[RegistrySpec] = None
    # str_headers + int_headers as the client takes them per call (None: neither has any)
    headers: Optional[Headers] = None
    # metadata responseMetadata: a reply's response carries its metadata (seqId, ... and the
    # reply's TTHeader headers); per call, like the method name
    response_metadata: bool = True

    @property
    def client_key(self) -> Tuple[object, ...]:
        """What needs its own client and connections: the destination and how to connect.
        rpcTimeout and headers are per call and share them."""
        return (
            self.dest_service,
            self.endpoints,
            self.transport,
            self.connect_timeout,
            self.max_frame_size,
            self.pool_size,
            self.max_idle_time,
            self.max_connections,
            self.mux_connection,
            self.pipelining,
            self.registry,
        )


def _check_unknown_keys(metadata: Mapping[str, str]) -> None:
    for key in metadata:
        if not isinstance(key, str):
            raise MetadataError("%smetadata key %s is not a string" % (PREFIX, quoted(key)))
        if key in _KNOWN_LOWER.values() or key.startswith((STR_HEADER_PREFIX, INT_HEADER_PREFIX)):
            continue
        # Other keys are ignored on purpose (daprd adds traceparent, baggage, gRPC headers), but a
        # known key in the wrong case is a typo worth failing on.
        known = _KNOWN_LOWER.get(key.lower())
        if known is not None:
            raise MetadataError(
                "%sunknown metadata field %s: did you mean %r?" % (PREFIX, quoted(key), known)
            )


def _lookup(request: Mapping[str, str], defaults: Mapping[str, str], key: str) -> Optional[str]:
    value = request.get(key)
    if value is None:
        value = defaults.get(key)
    if value is not None and not isinstance(value, str):
        raise MetadataError(
            "%smetadata field %s: value %s is not a string" % (PREFIX, key, quoted(value))
        )
    return value


def validate_defaults(defaults: Mapping[str, str]) -> Dict[str, str]:
    """Check component-level (``init``) metadata: every value present must be valid; none is
    required. Returns a plain copy."""
    if not isinstance(defaults, Mapping):
        raise MetadataError("%smetadata must be a mapping of strings, not %r" % (PREFIX, type(defaults).__name__))
    merged = dict(defaults)
    _check_unknown_keys(merged)
    filled = {k: "placeholder" for k in ("destService", "methodName", "version")}
    if "registry" not in merged:
        filled["hostPorts"] = "127.0.0.1:1"
    filled.update(merged)
    parse_options(filled, {})
    return merged


def parse_options(request: Mapping[str, str], defaults: Mapping[str, str]) -> CallOptions:
    """Validate request metadata over component defaults and return the call's options."""
    _check_unknown_keys(request)
    # hostPorts or registry, exactly one: both in one place (the request, or the defaults) is an
    # error; a request's choice overrides a component default of the other kind.
    registry_url: Optional[str] = None
    for source, where in ((request, "the request"), (defaults, "the component metadata")):
        has_hp, has_reg = source.get("hostPorts") is not None, source.get("registry") is not None
        if has_hp and has_reg:
            raise MetadataError(
                "%sgive exactly one of metadata fields hostPorts and registry, not both (in %s)"
                % (PREFIX, where)
            )
        if has_hp:
            break
        if has_reg:
            registry_url = _lookup(source, {}, "registry")
            break
    required = []
    for key in REQUIRED_KEYS:
        if key == "hostPorts" and registry_url is not None:
            required.append("")
            continue
        value = _lookup(request, defaults, key)
        if value is None:  # (the Go binding's exact text; registry is its alternative)
            raise MetadataError("%smissing metadata field %s" % (PREFIX, key))
        if not value.strip():
            raise MetadataError("%smetadata field %s is empty" % (PREFIX, key))
        if value != value.strip():
            raise MetadataError(
                "%smetadata field %s: %s has leading or trailing white space" % (PREFIX, key, quoted(value))
            )
        required.append(value)
    dest_service, host_ports, method_name, version = required
    registry: Optional[RegistrySpec] = None
    endpoints: Tuple[Endpoint, ...] = ()
    try:
        if registry_url is not None:
            registry = parse_registry(registry_url, _lookup(request, defaults, "registryPrefix"))
        else:
            endpoints = parse_host_ports(host_ports)
    except MetadataError as exc:
        raise MetadataError(PREFIX + str(exc)) from None
    check_text(PREFIX + "metadata field destService", dest_service)
    if check_text(PREFIX + "metadata field methodName", method_name) > MAX_HEADER_BYTES:
        raise MetadataError("%smetadata field methodName is longer than 65535 bytes" % PREFIX)

    def opt(key: str) -> str:
        value = _lookup(request, defaults, key)
        return DEFAULTS.get(key, "") if value is None else value

    transport = opt("transport").strip().lower()
    if transport not in TRANSPORTS:
        raise MetadataError(
            "%smetadata field transport: %s is not one of %s"
            % (PREFIX, quoted(opt("transport")), ", ".join(TRANSPORTS))
        )
    ttheader = transport.startswith("ttheader")
    connect_timeout = parse_duration("connectTimeout", opt("connectTimeout"))
    rpc_timeout = parse_duration("rpcTimeout", opt("rpcTimeout"))
    max_frame_size = parse_size("maxFrameSize", opt("maxFrameSize"))
    pool_size = (None if _lookup(request, defaults, "poolSize") is None  # unset: the client's default
                 else _parse_int("poolSize", opt("poolSize"), 0, MAX_POOL_SIZE))
    max_idle_time = parse_duration("maxIdleTime", opt("maxIdleTime"))
    max_connections = _parse_int("maxConnections", opt("maxConnections"), 1, MAX_CONNECTIONS_LIMIT)
    mux_connection = _parse_bool("muxConnection", opt("muxConnection"))
    pipelining = _parse_bool("pipelining", opt("pipelining"))
    response_metadata = _parse_bool("responseMetadata", opt("responseMetadata"))
    broken = mux_rule(transport, mux_connection, pipelining, "metadata field muxConnection",
                      "metadata fields muxConnection and pipelining")
    if broken is not None:
        raise MetadataError(PREFIX + broken)

    str_headers: Dict[str, str] = {}
    int_headers: Dict[int, str] = {}
    for key, label in (("idlService", STR_KEY_IDL_SERVICE), ("fromService", None), ("logID", None)):
        value = _lookup(request, defaults, key)
        if value is None:
            continue
        if not ttheader:
            raise MetadataError(
                "%smetadata field %s needs transport ttheader or ttheader-framed (transport is %s)"
                % (PREFIX, key, transport)
            )
        if not value:
            raise MetadataError("%smetadata field %s is empty" % (PREFIX, key))
        if label:
            str_headers[label] = value
        else:
            int_headers[INT_KEY_FROM_SERVICE if key == "fromService" else INT_KEY_LOG_ID] = value
    for source in (defaults, request):
        for key, value in source.items():
            if key.startswith(STR_HEADER_PREFIX):
                name = key[len(STR_HEADER_PREFIX):]
                if not ttheader:
                    raise MetadataError(
                        "%smetadata field %s needs transport ttheader or ttheader-framed"
                        % (PREFIX, _shown(key))
                    )
                if not name:
                    raise MetadataError("%smetadata field %s names no header" % (PREFIX, quoted(key)))
                str_headers[name] = value
            elif key.startswith(INT_HEADER_PREFIX):
                if not ttheader:
                    raise MetadataError(
                        "%smetadata field %s needs transport ttheader or ttheader-framed"
                        % (PREFIX, _shown(key))
                    )
                int_headers[_parse_int(_shown(key), key[len(INT_HEADER_PREFIX):], 0, MAX_HEADER_KEY)] = value
    explicit_rpc_timeout = _lookup(request, defaults, "rpcTimeout") is not None
    if ttheader and explicit_rpc_timeout and rpc_timeout is not None:
        # Kitex's ClientTTHeaderHandler sends RPCTimeout (ms) only when it was set explicitly.
        int_headers.setdefault(INT_KEY_RPC_TIMEOUT, str(max(1, int(round(rpc_timeout * 1000)))))
    for name, value in list(str_headers.items()) + [(str(k), v) for k, v in int_headers.items()]:
        if not isinstance(value, str):
            raise MetadataError("%sheader %s: value %s is not a string" % (PREFIX, _shown(name), quoted(value)))
        if (check_text(PREFIX + "header " + _shown(name), value) > MAX_HEADER_BYTES
                or check_text(PREFIX + "header name", name) > MAX_HEADER_BYTES):
            raise MetadataError("%sheader %s is longer than %d bytes" % (PREFIX, _shown(name), MAX_HEADER_BYTES))
    str_pairs, int_pairs = tuple(sorted(str_headers.items())), tuple(sorted(int_headers.items()))
    return CallOptions(
        dest_service=dest_service,
        endpoints=endpoints,
        method_name=method_name,
        version=version,
        transport=transport,
        connect_timeout=connect_timeout,
        rpc_timeout=rpc_timeout,
        max_frame_size=max_frame_size,
        pool_size=pool_size,
        max_idle_time=max_idle_time or 0.0,
        max_connections=max_connections,
        mux_connection=mux_connection,
        pipelining=pipelining,
        str_headers=str_pairs,
        int_headers=int_pairs,
        registry=registry,
        headers=Headers._of(str_pairs, int_pairs) if str_pairs or int_pairs else None,
        response_metadata=response_metadata,
    )
