"""``kitex_fast.aio``: the asyncio driver. The same options, metadata rules, errors and replies as
the sync :class:`kitex_fast.Client` and :class:`kitex_fast.KitexOutputBinding`; many calls in
flight per connection, matched by seq id. Runs on asyncio's default loop and on uvloop.

    from kitex_fast.aio import Client
    async with Client("echo", "127.0.0.1:8888") as client:
        reply = await client.call("echo", request_bytes)

The names are the sync package's: ``Client``, ``KitexOutputBinding``, ``Reply``, ``Headers``,
``InvokeRequest``, ``InvokeResponse``.
"""

from __future__ import annotations

from ..binding import InvokeRequest, InvokeResponse
from ..client import Headers, Reply
from .binding import KitexOutputBinding
from .client import Client

__all__ = [
    "Client",
    "KitexOutputBinding",
    "InvokeRequest",
    "InvokeResponse",
    "Reply",
    "Headers",
]
