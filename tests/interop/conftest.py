"""Fixtures for the real-Kitex interop tests: build the Go peers once, share servers per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Dict, Iterator, Tuple

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # pytest runs with --import-mode=importlib: make `import peers` work
    sys.path.insert(0, str(HERE))

import peers  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    # Every test under tests/interop needs the Go peers: mark it so `-m "not interop"` skips them.
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.interop)


@pytest.fixture(scope="session")
def go_peers() -> Path:
    """Builds the Go peers (tests/interop/bin); skips (fails under CI=true) without Go."""
    try:
        return peers.build_peers()
    except peers.PeersUnavailable as exc:
        message = str(exc)  # names the Go version to install
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def kitex_server(go_peers: Path) -> Iterator[Callable[..., peers.KitexServer]]:
    """Factory ``kitex_server(mode="default", service="echo", *extra)`` -> a started server.

    One process per argument tuple for the whole session; all are stopped at session end.
    Tests that break a server on purpose must start their own ``peers.KitexServer``.
    """
    started: Dict[Tuple[str, ...], peers.KitexServer] = {}

    def factory(mode: str = "default", service: str = "echo", *extra: str) -> peers.KitexServer:
        key = (mode, service) + tuple(str(e) for e in extra)
        server = started.get(key)
        if server is None or not server.running:
            server = peers.KitexServer(mode, service, *extra).start()
            started[key] = server
        return server

    try:
        yield factory
    finally:
        for server in started.values():
            server.stop()
