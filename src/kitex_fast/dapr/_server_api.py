"""What the compiled component server's C modules call on their Python side, as Protocols.

``_h2server.Connection`` calls a :class:`ServerApp`; ``_invoke.InvokePath`` calls
:class:`InvokeRules`. ``h2server.App`` is both, and the type checker holds it to them where it
builds the connections and the Invoke path (the ``.pyi`` stubs of the C modules name these
Protocols). A typing module only: it imports nothing of the package, so the stubs and
``h2server.py`` can both import it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from typing import Protocol

__all__ = ["ServerApp", "InvokeRules"]


class ServerApp(Protocol):
    """What an HTTP/2 connection (``_h2server.Connection``) asks of the app: calls to start (they
    answer later through the connection's ``reply_*`` / ``call_failed`` / ``call_cancelled``),
    answers given at once, and what happened to the connection."""

    def invoke(self, conn: Any, stream_id: int, name: str, operation: str, data: bytes,
               metadata: Dict[str, str], timeout: Optional[float]) -> Any:
        """Start an Invoke the compiled path did not take; returns its task (cancelled if the
        stream is reset)."""

    def init(self, conn: Any, stream_id: int, name: str, properties: Dict[str, str]) -> Any:
        """Start an Init; returns its task."""

    def operations(self, name: str) -> List[str]:
        """ListOperations of instance ``name``."""

    def reflect(self, request: bytes) -> bytes:
        """The framed reply to one reflection request."""

    def call_crashed(self, conn: Any, name: str, exc: BaseException) -> Tuple[int, str]:
        """Per-call code raised: the (gRPC status code, text) that call ends with."""

    def handshake_expired(self, conn: Any, seconds: float) -> None:
        """A connection sent no preface and SETTINGS in ``seconds``: it is being closed."""

    def idle_closed(self, conn: Any, seconds: float) -> None:
        """A connection had no stream for ``seconds``: GOAWAY, then closed."""

    def connection_error(self, conn: Any, exc: BaseException) -> None:
        """An internal error dropped a connection."""

    def protocol_error(self, conn: Any, text: str, first: bytes) -> None:
        """A client sent bytes that are not HTTP/2 (``first``: its first bytes)."""

    def connection_done(self, conn: Any) -> None:
        """The connection is gone."""


class InvokeRules(Protocol):
    """What the compiled Invoke path (``_invoke.InvokePath``) asks of the component's rules: once
    per instance, key name or route (the answers are cached in its ``InstanceRoutes``), and per
    call only for daprd's deadline, a failure, a reply the quick check did not pass, an abandoned
    call, and an evicted instance's last call."""

    def fast_instance(self, name: str) -> Any:
        """The ``InstanceRoutes`` of instance ``name`` (new, and kept when it fits the cache)."""

    def fast_key(self, name: str, key: str) -> int:
        """What metadata key ``key`` means to calls of ``name`` (the path's ``key_*``)."""

    def fast_route(self, name: str, metadata: Dict[str, str], key: Any) -> Any:
        """The ``FastRoute`` of this metadata's route, or None (the general path serves it)."""

    def fast_deadline(self, route: Any, seconds: float) -> Tuple[float, Optional[Dict[int, str]]]:
        """``(timeout, int headers)`` of a call whose daprd deadline is shorter than its route's."""

    def fast_failed(self, name: str, metadata: Dict[str, str], exc: BaseException) -> Tuple[int, str]:
        """A call failed: the (gRPC status code, text) to answer with (logged)."""

    def fast_settle(self, name: str, metadata: Dict[str, str], route: Any, proto: Any, frame: Any,
                    seq_id: int) -> Optional[Tuple[int, str]]:
        """A reply the quick check did not pass: None when it stands, else the status."""

    def fast_abandoned(self, name: str, metadata: Mapping[str, str]) -> None:
        """daprd gave up a call (its deadline, or it went away)."""

    def instance_idle(self, inst: Any) -> None:
        """The last call of an evicted instance ended: it may be closed."""
