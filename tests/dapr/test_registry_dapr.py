"""daprd -> the component -> a Kitex service found by name in etcd: ``registry`` as a component
YAML default (the example in docs/registry.md), real etcd, real Kitex servers registered by registry-etcd."""

from __future__ import annotations

import base64
import os

import pytest

import peers
import stack
from kitex_fast.testing import echo_request, read_echo_reply


def test_call_by_name_through_daprd_with_registry_in_the_yaml(impl, daprd_binary) -> None:
    try:
        peers.etcd_binary()
    except peers.EtcdUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    etcd = peers.EtcdServer().start()
    servers = []
    try:
        servers = [peers.EtcdKitexServer(etcd.address).start() for _ in range(2)]
        etcd.wait_keys("kitex/registry-etcd/echo/", 2)
        component = {"registry": etcd.url, "destService": "echo", "methodName": "echo", "version": "v1"}
        with stack.DaprStack(daprd_binary, {"kitex-echo": component}, implementation=impl.name) as dapr:
            seen = set()
            for i in range(6):
                status, _, body = dapr.daprd.http_invoke("kitex-echo", {
                    "operation": "get", "data": base64.b64encode(echo_request("d%d" % i)).decode(),
                    "metadata": {"dataEncoding": "base64"}})
                assert status == 200, body
                text = read_echo_reply(body)
                assert text.startswith("d%d,hi Kitex@" % i)
                seen.add(peers.served_by(text))
            # weighted round robin over two instances of equal weight: both serve
            assert seen == {s.address for s in servers}
    finally:
        for server in servers:
            server.stop()
        etcd.close()
