"""Defaults and limits of a call, each once, with where it comes from.

Below every other module: the transports, the clients and the metadata parser all read these
values, and this module imports nothing of the package. ``metadata.DEFAULTS`` (the binding's
metadata syntax) and ``ClientCore``'s keyword defaults are both derived from it.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "MAX_DURATION",
    "MAX_I32",
    "MAX_FRAME_FIELD",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_TRANSPORT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_RPC_TIMEOUT",
    "DEFAULT_MAX_IDLE_TIME",
    "MAX_POOL_SIZE",
    "DEFAULT_MAX_CONNECTIONS",
    "MAX_CONNECTIONS_LIMIT",
    "MAX_HEADER_KEY",
    "MAX_HEADER_BYTES",
    "MAX_CACHED_ENCODER_CHARS",
    "MAX_ENCODER_CACHE_CHARS",
    "MAX_ENCODER_CACHE_ENTRIES",
    "mux_rule",
]

# -- wire --------------------------------------------------------------------------------------

# The longest timeout anything here accepts: Go's time.Duration is int64 nanoseconds, so Kitex and
# Dapr cannot express more (time.ParseDuration fails with "invalid duration"), and the drivers'
# socket timeouts and poll() arithmetic stay far from overflow.
MAX_DURATION = (2**63 - 1) / 1e9  # seconds, about 292 years

# Thrift's i32: seq ids and frame lengths are signed 32-bit fields every peer reads as positive
# (Apache Thrift TFramedTransport, Kitex pkg/remote/codec).
MAX_I32 = 0x7FFFFFFF
MAX_FRAME_FIELD = MAX_I32  # the largest frame a length field can announce
# The largest frame sent or accepted by default; the codec's own default, pinned equal by a test
# (tests/unit/test_metadata.py): 64 MiB, far above any Thrift message Kitex sends by default.
DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024

# TTHeader: integer header keys are u16, and every header name and value carries a u16 length
# (docs/protocol.md §3.2).
MAX_HEADER_KEY = 65535
MAX_HEADER_BYTES = 65535

# -- a client's defaults -----------------------------------------------------------------------

DEFAULT_TRANSPORT = "framed"  # what Dapr's Go binding sends (components-contrib bindings/kitex)
# Kitex's own default connect timeout (pkg/rpcinfo/rpcconfig.go: 50 ms).
DEFAULT_CONNECT_TIMEOUT = 0.05
# Kitex and the Go binding have no rpc timeout at all; every call is bounded by default, so that a
# stalled server gives an error instead of a hang (0 or None: no limit).
DEFAULT_RPC_TIMEOUT = 30.0
# Kitex's MaxIdleTimeout (pkg/connpool/config.go: 1 minute).
DEFAULT_MAX_IDLE_TIME = 60.0

# -- pools -------------------------------------------------------------------------------------

# Idle connections kept per endpoint, at most (pool_size / poolSize). Kitex keeps 10
# (MaxIdlePerAddress, internal/client/option.go); by default we follow the concurrency instead
# (docs/binding.md), so this only bounds an explicit setting.
MAX_POOL_SIZE = 10000
# Open connections per endpoint (asyncio driver). Kitex's long-connection pool has no cap on
# active connections (pkg/connpool: only idle ones are bounded); we keep one, so that a stalled
# server or a burst of callers cannot exhaust the process's file descriptors (1024 is a common
# soft RLIMIT_NOFILE): a call past it waits for a connection within its own deadline.
DEFAULT_MAX_CONNECTIONS = 512
MAX_CONNECTIONS_LIMIT = 65535  # the largest maxConnections / max_connections

# -- the request-encoder cache (ClientCore) ----------------------------------------------------

# Method names and per-call headers come from callers, so the cache is bounded in entries and in
# the header text it holds (a TTHeader block may be 256 KiB); headers over the per-entry bound
# are not cached at all: such headers do not repeat.
MAX_CACHED_ENCODER_CHARS = 16 * 1024
MAX_ENCODER_CACHE_CHARS = 4 * 1024 * 1024
MAX_ENCODER_CACHE_ENTRIES = 4096


# -- cross-field rules -------------------------------------------------------------------------


def mux_rule(transport: str, mux: bool, pipelining: bool, mux_name: str, both_names: str) -> Optional[str]:
    """The connection-sharing rules, for the client's options and the binding's metadata alike:
    what is wrong, as an error text naming the fields as the caller calls them (``mux_name``,
    ``both_names``), or None."""
    if mux and not transport.startswith("ttheader"):
        return (
            "%s needs transport ttheader or ttheader-framed (a Kitex mux server speaks only "
            "TTHeader; transport is %s)" % (mux_name, transport)
        )
    if mux and pipelining:
        return (
            "%s exclude each other: a mux connection already carries many calls, answered in "
            "any order" % both_names
        )
    return None
