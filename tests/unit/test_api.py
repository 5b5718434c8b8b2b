"""The public way to call (issue 20): ``call`` (bytes) and ``invoke`` (a typed Reply), each with a
per-call ``rpc_timeout`` and typed ``headers``, the same on the sync and asyncio clients. The
never-released aliases ``exchange`` (untyped tuple, nested-tuple headers) and
``aio.AsyncKitexOutputBinding`` are gone (issue 25)."""

from __future__ import annotations

import asyncio
import copy
import pickle

import pytest

import kitex_fast
from kitex_fast import Client, Headers, MetadataError, Reply, aio
from kitex_fast.testing import KitexTestServer, echo_handler, echo_request, read_echo_reply


@pytest.fixture
def server(impl):
    seen = []

    def echo(request):
        seen.append(dict(request.str_headers))
        return echo_handler(request)

    with KitexTestServer({"echo": echo}, service="echo", implementation=impl.name) as srv:
        srv.seen = seen
        yield srv


def test_headers_are_an_immutable_hashable_value() -> None:
    h = Headers({"b": "2", "a": "1"}, {6: "svc"})
    assert h == Headers({"a": "1", "b": "2"}, {6: "svc"}) and hash(h) == hash(Headers({"a": "1", "b": "2"}, {6: "svc"}))
    assert dict(h.str_headers) == {"a": "1", "b": "2"} and dict(h.int_headers) == {6: "svc"}
    assert Headers() == Headers(None, None) and not Headers().str_headers
    assert repr(h) == "Headers(str_headers={'a': '1', 'b': '2'}, int_headers={6: 'svc'})"
    assert copy.copy(h) == h == pickle.loads(pickle.dumps(h))
    with pytest.raises(TypeError):
        h.str_headers["c"] = "3"  # type: ignore[index]
    with pytest.raises(MetadataError, match="str_headers must be a mapping, not list"):
        Headers([("a", "1")])  # type: ignore[arg-type]
    assert kitex_fast.Headers is aio.Headers is Headers


def test_call_and_invoke_take_a_timeout_and_headers_per_call(impl, server) -> None:
    h = Headers({"RPC_TRANSIT_tenant": "acme"})
    with Client("echo", server.address, transport="ttheader", implementation=impl.name, connect_timeout=5) as client:
        assert read_echo_reply(client.call("echo", echo_request("a"), headers=h, rpc_timeout=5.0)) == "a,hi Kitex"
        reply = client.invoke("echo", echo_request("b"), headers=h)
        assert isinstance(reply, Reply) and read_echo_reply(reply.data) == "b,hi Kitex"
        assert reply.method == "echo" and reply.transport == "ttheader" and reply.endpoint == server.address
        assert read_echo_reply(client.call("echo", echo_request("c"))) == "c,hi Kitex"
        assert [s.get("RPC_TRANSIT_tenant") for s in server.seen] == ["acme", "acme", None]
        assert b"RPC_TRANSIT_tenant" in client.request_bytes("echo", echo_request("d"), headers=h)
        # Headers must be Headers: the nested tuples of old are refused (before any I/O) ...
        for bad in ((("RPC_TRANSIT_tenant", "acme"),), ()), {"k": "v"}:
            with pytest.raises(MetadataError, match="headers must be a kitex_fast.Headers"):
                client.call("echo", echo_request("e"), headers=bad)  # type: ignore[arg-type]
        with pytest.raises(MetadataError, match="rpc_timeout"):
            client.invoke("echo", echo_request("f"), rpc_timeout=-1.0)
        with pytest.raises(MetadataError, match="headers must be a kitex_fast.Headers"):
            client.invoke("echo", echo_request("g"), headers=((("RPC_TRANSIT_tenant", "old"),), ()))  # type: ignore[arg-type]
        reply = client.invoke("echo", echo_request("h"), rpc_timeout=5.0, headers=Headers({"RPC_TRANSIT_tenant": "new"}))
        assert read_echo_reply(reply.data) == "h,hi Kitex" and reply.endpoint == server.address
        assert server.seen[-1]["RPC_TRANSIT_tenant"] == "new"


def test_the_asyncio_client_has_the_same_faces(impl, server) -> None:
    h = Headers({"RPC_TRANSIT_tenant": "acme"})

    async def main() -> None:
        async with aio.Client("echo", server.address, transport="ttheader", implementation=impl.name,
                              connect_timeout=5) as client:
            assert read_echo_reply(await client.call("echo", echo_request("a"), headers=h, rpc_timeout=5.0)) == "a,hi Kitex"
            reply = await client.invoke("echo", echo_request("b"), headers=h)
            assert isinstance(reply, Reply) and read_echo_reply(reply.data) == "b,hi Kitex"
            with pytest.raises(MetadataError, match="headers must be a kitex_fast.Headers"):
                await client.call("echo", echo_request("c"), headers=((), ()))  # type: ignore[arg-type]
            with pytest.raises(MetadataError, match="headers must be a kitex_fast.Headers"):
                await client.invoke("echo", echo_request("c"), headers=((), ()))  # type: ignore[arg-type]
            reply = await client.invoke("echo", echo_request("d"), headers=Headers({"RPC_TRANSIT_tenant": "new"}))
            assert read_echo_reply(reply.data) == "d,hi Kitex" and reply.seq_id > 0

    asyncio.run(main())
    assert [s.get("RPC_TRANSIT_tenant") for s in server.seen] == ["acme", "acme", "new"]


def test_the_asyncio_binding_has_the_sync_name_and_no_alias() -> None:
    assert aio.KitexOutputBinding.__name__ == "KitexOutputBinding"
    assert "KitexOutputBinding" in aio.__all__
    # The names kept "until 0.2" were never released: gone (issue 25).
    assert not hasattr(aio, "AsyncKitexOutputBinding") and "AsyncKitexOutputBinding" not in aio.__all__
    assert not hasattr(Client, "exchange") and not hasattr(aio.Client, "exchange")


def test_the_encoder_cache_is_bounded_in_header_text(impl) -> None:
    """Per-call headers come from callers: the client's encoder cache holds at most 4 Mi
    characters of them, and none over 16 Ki (such headers do not repeat). Issue 24 item 5."""
    from kitex_fast import limits

    with Client("echo", "127.0.0.1:1", transport="ttheader", implementation=impl.name) as client:
        for i in range(50):  # large: never cached
            client.request_bytes("echo", echo_request("x"), headers=Headers({"k": "%d" % i + "v" * 20000}))
        assert client._encoders == {} and client._encoder_chars == 0
        for i in range(1000):  # medium: cached until the budget, then the cache starts again
            client.request_bytes("echo", echo_request("x"), headers=Headers({"k": "%d" % i + "v" * 10000}))
            assert client._encoder_chars <= limits.MAX_ENCODER_CACHE_CHARS
        assert 0 < len(client._encoders) < 1000
        # a repeated small one is served from the cache
        small = Headers({"tenant": "acme"})
        client.request_bytes("echo", echo_request("x"), headers=small)
        assert ("echo", small) in client._encoders
