"""The Dapr Kitex output binding for asyncio: the sync binding's metadata rules, route cache and
bounded client cache (:class:`kitex_fast.binding.BindingCore`) on :class:`kitex_fast.aio.Client`."""

from __future__ import annotations

import logging
from typing import Mapping, Optional

from ..binding import BindingCore, InvokeRequest, InvokeResponse
from ..errors import KitexError, quoted
from .client import Client

__all__ = ["KitexOutputBinding"]

log = logging.getLogger(__name__)  # follows the package wherever it is vendored


class KitexOutputBinding(BindingCore):
    """Dapr's ``bindings.kitex`` output binding on asyncio (the sync
    :class:`kitex_fast.KitexOutputBinding`'s name and API, with coroutines). Safe to use from many tasks at once
    on one event loop; use as an async context manager. Options: :class:`BindingCore`."""

    client_class = Client

    async def init(self, metadata: Optional[Mapping[str, str]] = None) -> None:
        """Component-level metadata: defaults for every request; all optional, all validated.
        Clients made under the previous defaults are closed."""
        for client in self._set_defaults(metadata):
            await client.close()

    async def invoke(self, request: InvokeRequest, deadline: Optional[float] = None) -> InvokeResponse:
        """Call the Kitex service that ``request.metadata`` names with ``request.data`` (a complete
        strict-binary Thrift CALL message); the response's data is the REPLY message.

        ``deadline``: seconds the caller still waits (daprd's gRPC deadline), which bounds the
        call when it is shorter than ``rpcTimeout`` (:meth:`BindingCore.deadline_call`)."""
        options, client = self._prepare(request)
        timeout, headers, fresh = self.deadline_call(options, deadline)
        try:
            result = await client._begin(
                options.method_name, request.data, timeout, headers, not fresh
            )
        except KitexError as exc:
            if log.isEnabledFor(logging.DEBUG):  # (caller values: escaped and bounded, errors.quoted)
                log.debug("kitex call %s.%s failed: %s", quoted(options.dest_service),
                          quoted(options.method_name), quoted(str(exc), 1024))
            raise
        return InvokeResponse.from_reply(result, options)

    async def close(self) -> None:
        """Refuse new calls, then close every client (calls in flight on them fail)."""
        for client in self._shut():
            await client.close()

    async def __aenter__(self) -> "KitexOutputBinding":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

