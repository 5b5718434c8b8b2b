"""Fixtures for the Dapr end-to-end tests: daprd (built once, cached), real Kitex servers, and one
component + daprd stack per implementation for the whole session."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, Iterator, Tuple

import pytest

HERE = Path(__file__).resolve().parent
INTEROP = HERE.parent / "interop"
for path in (HERE, INTEROP):  # --import-mode=importlib: make `import stack` / `import peers` work
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import peers  # noqa: E402
import stack  # noqa: E402
from kitex_fast.dapr import h2server  # noqa: E402


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


SERVERS = ["compiled", "grpcio"]


@pytest.fixture(params=[(i, s) for i in ("c", "py") for s in SERVERS], ids="-".join)
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
         load_impl: Callable[[str], SimpleNamespace]) -> SimpleNamespace:
    """The root conftest's ``impl`` (c / py, loaded by its loader) times the component's gRPC
    server: ids ``c-compiled``, ``c-grpcio``, ...; ``impl.server`` names the server, and every
    component a test starts runs on it."""
    name, server = request.param
    loaded = load_impl(name)
    loaded.server = server
    if server == "compiled":
        why_not = h2server.unavailable()
        if why_not:
            if os.environ.get("KITEX_FAST_EXPECT_EXTENSION") == "1":
                pytest.fail("the compiled component server was expected: %s" % why_not, pytrace=False)
            pytest.skip(why_not)
    monkeypatch.setattr(stack, "SERVER", server)
    return loaded


@pytest.fixture(scope="session")
def daprd_binary() -> str:
    try:
        import dapr.clients  # noqa: F401
        import grpc  # noqa: F401
    except ImportError as exc:
        _unavailable('the Dapr tests need "kitex_fast[dapr]" and the Dapr Python SDK (pip install '
                     '".[test]"): %s' % exc)
    try:
        return stack.build_daprd()
    except stack.DaprdUnavailable as exc:
        _unavailable(str(exc))
        raise


@pytest.fixture(scope="session")
def kitex_servers(daprd_binary: str) -> Iterator[Dict[str, peers.KitexServer]]:
    """The Kitex server variants the tests call, started once (real Kitex, Go)."""
    try:
        peers.build_peers()
    except peers.PeersUnavailable as exc:
        _unavailable(str(exc))
    servers: Dict[str, peers.KitexServer] = {}
    try:
        for key, (mode, service) in {
            "default": ("default", "echo"),
            "meta": ("meta", "echo"),
            "mux": ("mux", "echo"),
            "generic-v1": ("generic-v1", "echo"),
            "rich": ("meta", "rich"),
        }.items():
            servers[key] = peers.KitexServer(mode, service).start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def yaml_components(servers: Dict[str, peers.KitexServer]) -> Dict[str, Dict[str, str]]:
    """The component instances every session stack serves, all on one socket."""
    return {
        # As the Go binding's certification test: no metadata at all.
        "kitex": {},
        # Two instances with different defaults: the mux server answers TTHeader only, and rpcTimeout
        # differs, so a call that succeeds on one and times out on the other shows each kept its own.
        "kitex-mux": {
            "hostPorts": servers["mux"].address, "destService": "echo", "methodName": "echo",
            "version": "v1", "transport": "ttheader", "rpcTimeout": "5s",
            # (response metadata is opt-in in the component: the tests read the reply's transport)
            "responseMetadata": "true",
        },
        # (framed for the short timeout: over TTHeader the rpcTimeout also travels to this "meta"
        # server, whose handler then gives up first with a type-6 "context deadline exceeded")
        "kitex-rich-fast": {
            "hostPorts": servers["rich"].address, "destService": "rich", "version": "v1",
            "transport": "framed", "rpcTimeout": "200ms", "responseMetadata": "true",
        },
        "kitex-rich-patient": {
            "hostPorts": servers["rich"].address, "destService": "rich", "version": "v1",
            "transport": "ttheader", "rpcTimeout": "5s", "responseMetadata": "true",
        },
    }


@pytest.fixture(scope="session")
def dapr_stacks(daprd_binary: str, kitex_servers: Dict[str, peers.KitexServer]
                ) -> Iterator[Callable[[str, str], stack.DaprStack]]:
    """``dapr_stacks(impl_name, server)``: the session's component (on that implementation and
    gRPC server) + daprd."""
    started: Dict[Tuple[str, str], stack.DaprStack] = {}

    def factory(impl_name: str, server: str) -> stack.DaprStack:
        s = started.get((impl_name, server))
        if s is None:
            s = stack.DaprStack(daprd_binary, yaml_components(kitex_servers),
                                implementation=impl_name, server=server).start()
            started[(impl_name, server)] = s
        return s

    try:
        yield factory
    finally:
        for s in started.values():
            s.stop()


@pytest.fixture
def dapr(impl, dapr_stacks) -> stack.DaprStack:
    return dapr_stacks(impl.name, impl.server)


@pytest.fixture
def sdk(dapr: stack.DaprStack):
    with dapr.daprd.client() as client:
        yield client
