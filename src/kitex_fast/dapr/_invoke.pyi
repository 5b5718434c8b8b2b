"""Types of the compiled Invoke path (``_invoke.pyx``)."""

from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Type

from typing_extensions import disjoint_base

from ._server_api import InvokeRules

__all__ = ["FastRoute", "InstanceRoutes", "InvokePath"]

@disjoint_base
class FastRoute:
    client: Any
    pool: Any
    encoder: Any
    loop: Any
    timeout: float
    operations: Tuple[str, ...]
    instance: Any
    touch: Tuple[Tuple[Any, Any], ...]
    entries: Optional[bytes]
    content_type: bytes
    options: Any
    forwards_trace: bool
    trace: Callable[[Mapping[str, str]], Optional[Dict[str, str]]]

@disjoint_base
class InstanceRoutes:
    kinds: Dict[str, int]
    routes: Dict[Any, Optional[FastRoute]]
    shared: Dict[Any, FastRoute]
    untraced: str
    limit: int
    def __init__(self, untraced: str, limit: int = ...) -> None: ...

@disjoint_base
class InvokePath:
    @property
    def rules(self) -> InvokeRules: ...
    @property
    def routes(self) -> Dict[str, InstanceRoutes]: ...
    @property
    def key_route(self) -> int: ...
    @property
    def key_general(self) -> int: ...
    @property
    def key_trace(self) -> int: ...
    @property
    def response_metadata(self) -> Callable[[Any, int, str, Any], Dict[str, str]]: ...
    @property
    def transport_error(self) -> Type[BaseException]: ...
    def __init__(
        self, rules: InvokeRules, routes: Dict[str, InstanceRoutes], key_route: int, key_general: int,
        key_trace: int, response_metadata: Callable[[Any, int, str, Any], Dict[str, str]],
        transport_error: Type[BaseException],
    ) -> None: ...
