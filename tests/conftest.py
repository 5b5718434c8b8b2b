"""Shared fixtures: every behavioural test runs on both implementations (ids ``c`` / ``py``)."""

from __future__ import annotations

import os
from types import SimpleNamespace

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
