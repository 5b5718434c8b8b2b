"""The async output binding the component runs on: the one place that chooses it.

The component is written for :class:`kitex_fast.aio.AsyncKitexOutputBinding` (the asyncio driver):
``await init(metadata)``, ``operations()``, ``await invoke(InvokeRequest)``, ``await close()``. When
``kitex_fast.aio`` is importable it is used. Until then the component runs on
:class:`ThreadedAsyncBinding`: the sync :class:`~kitex_fast.binding.KitexOutputBinding` behind a
bounded thread pool, with exactly that async interface and the same errors. The compiled driver
waits in ``poll()`` with the GIL released, so calls in flight on different threads do not block
one another.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, List, Mapping, Optional

from ..binding import InvokeRequest, InvokeResponse, KitexOutputBinding

__all__ = ["AsyncBinding", "ThreadedAsyncBinding", "DRIVER", "shutdown_threads"]

DEFAULT_THREADS = 64


class ThreadedAsyncBinding:
    """:class:`KitexOutputBinding` with the asyncio driver's interface, on a shared thread pool.

    Every instance shares one pool of ``threads`` workers (the first instance sizes it), so the
    number of threads stays bounded however many component instances daprd initialises.
    """

    _pool: Optional[ThreadPoolExecutor] = None
    _pool_lock = threading.Lock()

    def __init__(
        self, *, max_clients: int = 64, implementation: Optional[str] = None,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        self._binding = KitexOutputBinding(max_clients=max_clients, implementation=implementation)
        with ThreadedAsyncBinding._pool_lock:
            if ThreadedAsyncBinding._pool is None:
                ThreadedAsyncBinding._pool = ThreadPoolExecutor(
                    max_workers=max(1, threads), thread_name_prefix="kitex-call"
                )
            self._executor = ThreadedAsyncBinding._pool

    async def init(self, metadata: Optional[Mapping[str, str]] = None) -> None:
        # No I/O besides closing old clients; validation errors come straight back.
        self._binding.init(metadata)

    def operations(self) -> List[str]:
        return self._binding.operations()

    async def invoke(self, request: InvokeRequest) -> InvokeResponse:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._binding.invoke, request)

    async def close(self) -> None:
        self._binding.close()


def shutdown_threads() -> None:
    """Stop the shared pool (after every binding is closed)."""
    with ThreadedAsyncBinding._pool_lock:
        pool, ThreadedAsyncBinding._pool = ThreadedAsyncBinding._pool, None
    if pool is not None:
        pool.shutdown(wait=False)


AsyncBinding: Any
try:
    from ..aio import AsyncKitexOutputBinding as AsyncBinding  # type: ignore[import-not-found,no-redef]

    DRIVER = "asyncio (kitex_fast.aio)"
except ModuleNotFoundError as exc:  # only "the module is not there": a broken aio must fail loudly
    if exc.name != __package__.rpartition(".")[0] + ".aio":
        raise
    AsyncBinding = ThreadedAsyncBinding
    DRIVER = "threads (sync binding on a bounded pool; kitex_fast.aio not installed)"
