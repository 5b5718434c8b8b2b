"""kitex_fast.aio.KitexOutputBinding: the sync binding's metadata, errors and response metadata, on asyncio,
against the Python test server on both implementations. Against real Kitex:
tests/interop/test_aio.py."""

from __future__ import annotations

import asyncio

import pytest

from kitex_fast import (
    BizStatusError,
    InvokeRequest,
    KitexOutputBinding,
    MetadataError,
    RPCTimeoutError,
    UnsupportedOperationError,
    codec,
)
from kitex_fast import aio
from kitex_fast.testing import KitexTestServer, echo_handler, echo_request, read_echo_reply

from .test_aio_client import biz_handler, slow_handler

TRANSPORTS = list(codec.TRANSPORTS)


@pytest.fixture
def server(impl):
    handlers = {"echo": echo_handler, "biz": biz_handler, "slow": slow_handler}
    with KitexTestServer(handlers, service="echo", implementation=impl.name) as srv:
        yield srv


def meta(address, **extra):
    out = {"hostPorts": address, "destService": "echo", "methodName": "echo", "version": "v1",
           "connectTimeout": "2s"}
    out.update(extra)
    return out


def _without_seq(metadata):
    return {k: v for k, v in metadata.items() if k != "seqId"}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_same_response_and_metadata_as_the_sync_binding(impl, aio_loop, server, transport):
    request = InvokeRequest("get", echo_request("hello dapr"), meta(server.address, transport=transport, **{"header.k": "v"} if transport.startswith("ttheader") else {}))

    async def main():
        async with aio.KitexOutputBinding(implementation=impl.name) as b:
            assert b.operations() == ["get"]
            return await b.invoke(request)

    response = aio_loop(main)
    with KitexOutputBinding(implementation=impl.name) as sync:
        expected = sync.invoke(request)
    assert read_echo_reply(response.data) == read_echo_reply(expected.data) == "hello dapr,hi Kitex"
    assert _without_seq(response.metadata) == _without_seq(expected.metadata)
    assert response.content_type == expected.content_type
    assert int(response.metadata["seqId"]) > 0


def test_response_metadata_off_as_the_sync_binding(impl, aio_loop, server):
    # On TTHeader: the reply's headers go too.
    quiet = InvokeRequest("get", echo_request("q"), meta(server.address, transport="ttheader", responseMetadata="false"))

    async def main():
        async with aio.KitexOutputBinding(implementation=impl.name) as b:
            first = await b.invoke(quiet)
            again = await b.invoke(quiet)
        async with aio.KitexOutputBinding(implementation=impl.name, defaults={"responseMetadata": "false"}) as b:
            surface = await b.invoke(InvokeRequest("get", echo_request("q"), meta(server.address)))
            await b.init({"responseMetadata": "true"})
            opted = await b.invoke(InvokeRequest("get", echo_request("q"), meta(server.address)))
        return first, again, surface, opted

    first, again, surface, opted = aio_loop(main)
    assert first.metadata == again.metadata == surface.metadata == {}
    assert read_echo_reply(first.data) == read_echo_reply(surface.data) == "q,hi Kitex"
    assert opted.metadata["transport"] == "framed"


def test_same_errors_as_the_sync_binding(impl, aio_default, server):
    cases = [
        InvokeRequest("create", echo_request("x"), meta(server.address)),
        InvokeRequest("get", echo_request("x"), {"hostPorts": server.address}),
        InvokeRequest("get", echo_request("x"), meta(server.address, transport="udp")),
        InvokeRequest("get", b"\x80\x01\x00\x01trash", meta(server.address)),
        InvokeRequest("get", echo_request("ann", method="biz"), meta(server.address, methodName="biz", transport="ttheader")),
    ]
    sync_errors = []
    with KitexOutputBinding(implementation=impl.name) as sync:
        for request in cases:
            with pytest.raises(Exception) as exc:
                sync.invoke(request)
            sync_errors.append(exc.value)

    async def main():
        errors = []
        async with aio.KitexOutputBinding(implementation=impl.name) as b:
            for request in cases:
                with pytest.raises(Exception) as exc:
                    await b.invoke(request)
                errors.append(exc.value)
        return errors

    errors = aio_default(main)
    assert [type(e) for e in errors] == [type(e) for e in sync_errors]
    assert [str(e) for e in errors] == [str(e) for e in sync_errors]
    assert isinstance(errors[0], UnsupportedOperationError)
    assert isinstance(errors[1], MetadataError) and isinstance(errors[4], BizStatusError)


def test_init_defaults_close_old_clients_and_per_call_options_share_a_client(impl, aio_default, server):
    async def main():
        async with aio.KitexOutputBinding(implementation=impl.name) as b:
            await b.init({"hostPorts": server.address, "destService": "echo", "version": "v1", "transport": "ttheader",
                          "connectTimeout": "2s"})
            response = await b.invoke(InvokeRequest("get", echo_request("x"), {"methodName": "echo"}))
            assert response.metadata["transport"] == "ttheader"
            (old,) = b._clients.values()
            for i in range(20):
                extra = {"rpcTimeout": "%dms" % (1000 + i), "header.n": str(i)}
                await b.invoke(InvokeRequest("get", echo_request("x"), meta(server.address, transport="ttheader", **extra)))
            assert b.client_count == 1
            with pytest.raises(RPCTimeoutError):
                await b.invoke(InvokeRequest("get", echo_request("1.0", method="slow"), meta(server.address, methodName="slow", rpcTimeout="100ms")))
            await b.init({"transport": "framed"})
            assert old.closed and b.client_count == 0
            with pytest.raises(MetadataError, match="transport: 'udp'"):
                await b.init({"transport": "udp"})

    aio_default(main)


def test_lru_eviction_lets_calls_finish_and_keeps_no_connection(impl, aio_default, server):
    async def main():
        async with aio.KitexOutputBinding(max_clients=2, implementation=impl.name) as b:
            first = asyncio.ensure_future(
                b.invoke(InvokeRequest("get", echo_request("0.3", method="slow"), meta(server.address, methodName="slow", connectTimeout="1s")))
            )
            await asyncio.sleep(0.1)
            (evicted,) = b._clients.values()
            for timeout in ("2s", "3s"):  # evicts the first client while its call is in flight
                await b.invoke(InvokeRequest("get", echo_request("x"), meta(server.address, connectTimeout=timeout)))
            assert b.client_count == 2 and evicted.retired
            response = await first
            assert read_echo_reply(response.data) == "late"
            await asyncio.sleep(0.05)
            assert evicted._pool._all == set()  # its connection closed once the call was done

    aio_default(main)


def test_a_repeated_invoke_takes_the_clients_common_path(impl, aio_loop, server):
    # The binding's calls go through Client._begin: once the route's encoder is cached and a
    # connection is idle, no _exchange coroutine runs (the client's CallPath carries the call).
    request = InvokeRequest("get", echo_request("again"), meta(server.address))

    async def main():
        async with aio.KitexOutputBinding(implementation=impl.name) as b:
            first = await b.invoke(request)
            (client,) = b._clients.values()
            full = []
            exchange = client._exchange
            client._exchange = lambda *args: full.append(args) or exchange(*args)
            second = await b.invoke(request)
            return first, second, full

    first, second, full = aio_loop(main)
    assert read_echo_reply(first.data) == read_echo_reply(second.data) == "again,hi Kitex"
    assert full == []
