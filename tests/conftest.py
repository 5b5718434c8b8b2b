"""Shared fixtures: every behavioural test runs on both implementations (ids ``c`` / ``py``)."""

from __future__ import annotations

import os
from types import ModuleType, SimpleNamespace
from typing import Callable, Tuple

import pytest

from kitex_fast import codec, transport

IMPLEMENTATIONS = ["c", "py"]


def _load(name: str) -> SimpleNamespace:
    try:
        return SimpleNamespace(
            name=name, codec=codec.implementation(name), transport=transport.implementation(name)
        )
    except ImportError as exc:
        if os.environ.get("KITEX_FAST_EXPECT_EXTENSION") == "1":
            pytest.fail("compiled extension expected but not loaded: %s" % exc)
        pytest.skip(str(exc))


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> SimpleNamespace:
    """``impl.codec`` / ``impl.transport`` modules and ``impl.name`` ("c" or "py")."""
    return _load(request.param)


@pytest.fixture(scope="session")
def load_impl() -> Callable[[str], SimpleNamespace]:
    """The loader behind ``impl``, for a conftest whose own ``impl`` adds a dimension
    (tests/dapr: the component's server)."""
    return _load


@pytest.fixture(scope="session")
def codecs() -> Tuple[ModuleType, ModuleType]:
    """The compiled codec and its twin, for tests that hold one against the other. Session
    scope: hypothesis refuses function-scoped fixtures under @given."""
    return _load("c").codec, _load("py").codec


# -- asyncio (kitex_fast.aio) ------------------------------------------------------------------

LOOPS = ["asyncio", "uvloop"]


class AioRunner:
    """Runs a coroutine function on a fresh event loop of one kind and fails the test if the loop
    reported anything on the way: an exception nobody retrieved, a task destroyed while pending,
    a callback that raised. ``debug=True`` turns on asyncio's debug mode."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __call__(self, fn, *args, debug: bool = False, **kwargs):
        import asyncio
        import gc

        if self.kind == "uvloop":
            uvloop = pytest.importorskip("uvloop")
            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        loop.set_debug(debug)
        reports = []
        loop.set_exception_handler(lambda _loop, context: reports.append(context))
        try:
            result = loop.run_until_complete(fn(*args, **kwargs))
            # Let close callbacks (connection_lost) run, then nothing may be left.
            loop.run_until_complete(asyncio.sleep(0.01))
            left = [t for t in asyncio.all_tasks(loop) if not t.done()]
            assert not left, "tasks still pending after the test: %r" % left
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            gc.collect()  # "Task was destroyed but it is pending" / "never retrieved" fire here
            loop.close()
        gc.collect()
        assert not reports, "the event loop reported: %r" % [r.get("message") for r in reports]
        return result


@pytest.fixture(params=LOOPS)
def aio_loop(request: pytest.FixtureRequest) -> AioRunner:
    """A runner on asyncio's default loop and on uvloop (skipped when uvloop is not installed)."""
    return AioRunner(request.param)


@pytest.fixture
def aio_default() -> AioRunner:
    """A runner on asyncio's default loop only (for tests whose point is not the loop)."""
    return AioRunner("asyncio")
