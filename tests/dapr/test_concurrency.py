"""Concurrency through Dapr: Dapr Python SDK -> real daprd -> `kitex-fast component` -> a real Kitex
server that counts the requests its handlers hold at once (``kitexserver -stats``).

A default (non-mux) Kitex server answers a connection's requests one after the other; daprd's
concurrent calls must therefore reach it on connections of their own, or each would wait for the
ones ahead of it. Counts, never timings."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import thriftpy2
from thriftpy2.utils import deserialize, serialize

import peers
from kitex_fast import codec

RICH = thriftpy2.load(str(Path(peers.GO_DIR) / "idl" / "rich.thrift"), module_name="rich_dapr_concurrency_thrift")
CALLERS = 64


def sleep_call(millis: int) -> bytes:
    return codec.build_message(codec.CALL, "sleep", 0, serialize(RICH.Rich.sleep_args(millis=millis)))


def sleep_result(reply: bytes) -> str:
    header = codec.parse_message(reply)
    return deserialize(RICH.Rich.sleep_result(), reply[header.body_offset:]).success


@pytest.fixture(scope="module")
def counting_servers(daprd_binary):
    servers = {
        "default": peers.KitexServer("default", "rich", "-stats", "127.0.0.1:0").start(),
        "mux": peers.KitexServer("mux", "rich", "-stats", "127.0.0.1:0").start(),
    }
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.mark.parametrize("mode", ["default", "mux"])
def test_64_concurrent_sdk_calls_each_get_their_own_reply_and_run_at_once(sdk, counting_servers, mode):
    server = counting_servers[mode]
    server.stats(reset=True)
    meta = {"hostPorts": server.address, "destService": "rich", "methodName": "sleep", "version": "v1",
            "rpcTimeout": "20s"}
    if mode == "mux":
        meta.update(transport="ttheader", muxConnection="true")
    barrier = threading.Barrier(CALLERS)

    def one(i):
        barrier.wait(30)
        millis = 1500 + i  # each reply names its own request; long enough for all to arrive
        response = sdk.invoke_binding("kitex", "get", data=sleep_call(millis), binding_metadata=meta)
        return millis, sleep_result(response.data)

    with ThreadPoolExecutor(CALLERS) as pool:
        results = list(pool.map(one, range(CALLERS)))
    assert [r for _, r in results] == ["slept %d" % m for m, _ in results]
    stats = server.stats()
    assert stats["handled"] == CALLERS, stats
    assert stats["max_in_flight"] == CALLERS, stats  # all of them in the handler at once
    if mode == "mux":
        assert stats["peers"] <= 2, stats  # on a few mux connections
    else:
        assert stats["peers"] == CALLERS, stats  # each on a connection of its own
