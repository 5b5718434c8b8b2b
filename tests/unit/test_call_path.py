"""The call path (issue 11): the common case of a call is one call into the transport's CallPath
or BindingPath, on both implementations. These tests prove it is taken when it should be, that it
hands everything unusual to the full Python rules, and that what it returns (and skips) changes
nothing a caller can see. The error texts themselves are covered where they always were
(test_client, test_binding, test_hardening): those tests now run through the call path."""

from __future__ import annotations

import random
import threading

import pytest

from kitex_fast import Client, InvokeRequest, InvokeResponse, KitexOutputBinding
from kitex_fast.testing import KitexTestServer, echo_handler, echo_request, read_echo_reply


@pytest.fixture
def server(impl):
    with KitexTestServer({"echo": echo_handler}, service="echo", implementation=impl.name) as srv:
        yield srv


def meta(address: str, **extra: str) -> dict:
    out = {"hostPorts": address, "destService": "echo", "methodName": "echo", "version": "v1"}
    out.update(extra)
    return out


def count_calls(obj, name: str) -> list:
    """Wrap ``obj.name`` so each call is counted; returns the counter (a one-item list)."""
    counter = [0]
    original = getattr(obj, name)

    def counted(*args, **kwargs):
        counter[0] += 1
        return original(*args, **kwargs)

    setattr(obj, name, counted)
    return counter


# -- RequestEncoder.is_plain_reply -------------------------------------------------------------


def _reply(impl, mtype: int = 2, name: str = "echo", seq_id: int = 7, body: bytes = b"\x00") -> bytes:
    return impl.codec.build_message(mtype, name, seq_id, body)


def test_is_plain_reply_accepts_only_the_plain_answer(impl) -> None:
    enc = impl.codec.RequestEncoder("framed", name="echo")
    frame = impl.codec.Frame
    assert enc.is_plain_reply(frame(_reply(impl), "framed"), 7) is True
    # Everything else goes to the full check, which names what is wrong.
    assert enc.is_plain_reply(frame(_reply(impl), "framed"), 8) is False  # another seq id
    assert enc.is_plain_reply(frame(_reply(impl, name="ech0"), "framed"), 7) is False
    assert enc.is_plain_reply(frame(_reply(impl, name="echo2"), "framed"), 7) is False
    assert enc.is_plain_reply(frame(_reply(impl, mtype=3), "framed"), 7) is False  # EXCEPTION
    assert enc.is_plain_reply(frame(_reply(impl, mtype=1), "framed"), 7) is False  # a CALL
    with_headers = frame(_reply(impl), "ttheader", str_headers={"biz-status": "0"})
    assert enc.is_plain_reply(with_headers, 7) is False
    ints_only = frame(_reply(impl), "ttheader", int_headers={8: "v"})
    assert enc.is_plain_reply(ints_only, 7) is True  # int headers carry no status
    assert enc.is_plain_reply(_reply(impl), 7) is False  # not a Frame
    assert enc.is_plain_reply(frame(_reply(impl), "framed"), 2**40) is False
    assert enc.is_plain_reply(frame(_reply(impl), "framed"), "7") is False
    unnamed = impl.codec.RequestEncoder("framed")
    assert unnamed.is_plain_reply(frame(_reply(impl), "framed"), 7) is False


def test_is_plain_reply_never_raises_on_malformed_replies(impl) -> None:
    enc = impl.codec.RequestEncoder("framed", name="echo")
    good = _reply(impl)
    rng = random.Random(11)
    for n in range(len(good) + 1):
        # (the header decides: the body is the caller's to decode, as with the full check)
        assert enc.is_plain_reply(impl.codec.Frame(good[:n], "framed"), 7) is (n >= 16)
    for _ in range(2000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        mutated = bytes(data)
        result = enc.is_plain_reply(impl.codec.Frame(mutated, "framed"), 7)
        assert result is (mutated[:16] == good[:16])  # header, name and seq id intact


def test_both_implementations_agree_on_is_plain_reply() -> None:
    from kitex_fast import codec

    try:
        c = codec.implementation("c")
    except ImportError:
        pytest.skip("the compiled core is not installed")
    py = codec.implementation("py")
    rng = random.Random(5)
    good = py.build_message(2, "echo", 7, b"\x00")
    for _ in range(2000):
        data = bytearray(good[: rng.randint(0, len(good))])
        if data and rng.random() < 0.7:
            data[rng.randrange(len(data))] = rng.randrange(256)
        seq = rng.choice([7, 8, -1, 0])
        answers = {
            m.__name__: m.RequestEncoder("framed", name="echo").is_plain_reply(m.Frame(bytes(data), "framed"), seq)
            for m in (c, py)
        }
        assert len(set(answers.values())) == 1, (bytes(data), seq, answers)


# -- Client: the full path only on first sight -------------------------------------------------


def test_client_runs_python_only_on_first_sight(impl, server) -> None:
    with Client("echo", server.address, implementation=impl.name, connect_timeout=5) as client:
        full = count_calls(client, "_exchange")
        for i in range(50):
            assert read_echo_reply(client.call("echo", echo_request("m%d" % i))) == "m%d,hi Kitex" % i
        assert full[0] == 1  # the first call: a new method and a connect
        reply = client.invoke("echo", echo_request("again"))
        again = client.invoke("echo", echo_request("once more"), rpc_timeout=2.0)
        assert full[0] == 1
        assert reply.seq_id + 1 == again.seq_id and again.endpoint == server.address == reply.endpoint
        # Unusual requests go to the full rules, which raise as always.
        with pytest.raises(Exception, match="non-contiguous memoryview"):
            client.call("echo", memoryview(echo_request("x") * 2)[::2])
        assert full[0] == 2


def test_client_full_path_when_no_connection_is_idle(impl, server) -> None:
    with Client("echo", server.address, implementation=impl.name, connect_timeout=5) as client:
        full = count_calls(client, "_exchange")
        client.call("echo", echo_request("a"))
        client._pool._pools[0].take_idle().close()  # nothing idle: the next call connects
        assert read_echo_reply(client.call("echo", echo_request("b"))) == "b,hi Kitex"
        assert read_echo_reply(client.call("echo", echo_request("c"))) == "c,hi Kitex"
        assert full[0] == 2


def test_round_robin_over_endpoints_is_kept(impl) -> None:
    with KitexTestServer({"echo": echo_handler}, service="echo", implementation=impl.name) as a, \
            KitexTestServer({"echo": echo_handler}, service="echo", implementation=impl.name) as b:
        with Client("echo", [a.address, b.address], implementation=impl.name, connect_timeout=5) as client:
            seen = [client.invoke("echo", echo_request("x")).endpoint for _ in range(8)]
        assert seen == [a.address, b.address] * 4


# -- the binding -------------------------------------------------------------------------------


def test_binding_runs_python_only_on_first_sight(impl, server) -> None:
    with KitexOutputBinding(implementation=impl.name) as binding:
        full = count_calls(binding, "_invoke")
        first, second = meta(server.address), meta(server.address, version="v2")
        for i in range(20):
            for metadata in (first, second):
                response = binding.invoke(InvokeRequest("get", echo_request("r%d" % i), metadata))
                assert read_echo_reply(response.data) == "r%d,hi Kitex" % i
        assert full[0] == 2  # one per distinct metadata
        # Values the binding ignores (trace context) change per request without a full path;
        # a new key name is a new shape: learned once.
        for i in range(5):
            traced = dict(first, traceparent="00-%032x-%016x-01" % (i, i))
            binding.invoke(InvokeRequest("get", echo_request("t"), traced))
        assert full[0] == 3
        # Equal metadata built anew each time (fresh dicts and strings, as daprd sends) takes it too.
        for i in range(5):
            fresh = {"".join(k): "".join(v) for k, v in first.items()}
            binding.invoke(InvokeRequest("get", echo_request("f"), fresh))
        assert full[0] == 3
        # Anything unusual goes to the full rules.
        with pytest.raises(Exception, match="unsupported operation"):
            binding.invoke(InvokeRequest("delete", echo_request("x"), first))
        assert full[0] == 4


def test_lazy_response_metadata_is_built_on_first_read(impl, server) -> None:
    with KitexOutputBinding(implementation=impl.name) as binding:
        request = InvokeRequest("get", echo_request("lazy"), meta(server.address, transport="ttheader"))
        binding.invoke(request)  # the full path once
        response = binding.invoke(request)
        assert "metadata" not in vars(response)  # nothing built yet
        metadata = response.metadata
        assert response.metadata is metadata and vars(response)["metadata"] is metadata  # once
        assert metadata["seqId"] == str(impl.codec.parse_message(response.data).seq_id)
        assert metadata["messageType"] == "reply" and metadata["methodName"] == "echo"
        assert metadata["transport"] == "ttheader" and metadata["endpoint"] == server.address
        assert response.content_type == "application/vnd.apache.thrift.binary"
        assert isinstance(metadata, dict)


def test_invoke_response_is_a_plain_value() -> None:
    made = InvokeResponse(b"x", {"a": "1"})
    assert made == InvokeResponse(b"x", {"a": "1"})
    assert made != InvokeResponse(b"x", {"a": "2"})
    assert made.metadata == {"a": "1"} and InvokeResponse(b"y").metadata == {}
    made.metadata = {"b": "2"}
    assert made.metadata == {"b": "2"}
    assert repr(InvokeResponse(b"z", content_type="t")) == "InvokeResponse(data=b'z', metadata={}, content_type='t')"


def test_lru_order_is_kept_by_the_call_path(impl, server) -> None:
    with KitexOutputBinding(max_clients=2, implementation=impl.name) as binding:
        a, b, c = (meta(server.address, connectTimeout="%ds" % n) for n in (1, 2, 3))

        binding.invoke(InvokeRequest("get", echo_request("a"), a))
        binding.invoke(InvokeRequest("get", echo_request("b"), b))
        for _ in range(3):
            binding.invoke(InvokeRequest("get", echo_request("a"), a))  # a is the most recent
        dropped, kept = binding._clients.values()  # least recently used first
        binding.invoke(InvokeRequest("get", echo_request("c"), c))  # evicts b, not a
        assert dropped.retired and not kept.retired and binding.client_count == 2
        for _ in range(3):  # a still served (a route whose client was evicted is not used)
            assert read_echo_reply(binding.invoke(InvokeRequest("get", echo_request("a"), a)).data) == "a,hi Kitex"
        assert not kept.retired


def test_new_defaults_are_not_bypassed_by_the_last_route(impl, server) -> None:
    with KitexOutputBinding(implementation=impl.name) as binding:
        request = InvokeRequest("get", echo_request("d"), {"methodName": "echo"})
        binding.init(meta(server.address))
        first = binding.invoke(request)
        binding.invoke(request)
        binding.init(meta(server.address, transport="ttheader"))
        assert binding.invoke(request).metadata["transport"] == "ttheader"
        assert first.metadata["transport"] == "framed"


def test_a_head_too_big_for_the_stack_takes_the_encoders_buffers(impl, server) -> None:
    with KitexOutputBinding(implementation=impl.name) as binding:
        request = InvokeRequest(
            "get", echo_request("big"), meta(server.address, transport="ttheader", **{"header.note": "n" * 2000})
        )
        for _ in range(3):
            assert read_echo_reply(binding.invoke(request).data) == "big,hi Kitex"


def test_threads_share_one_client_and_each_gets_its_reply(impl, server) -> None:
    errors: list = []
    with Client("echo", server.address, implementation=impl.name, connect_timeout=5) as client:

        def worker(n: int) -> None:
            try:
                for i in range(300):
                    text = "%d:%d" % (n, i)
                    assert read_echo_reply(client.call("echo", echo_request(text))) == text + ",hi Kitex"
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not errors, errors[:3]


def test_bad_metadata_values_always_reach_validation(impl, server) -> None:
    from kitex_fast import MetadataError

    with KitexOutputBinding(implementation=impl.name) as binding:
        good = meta(server.address)
        for _ in range(2):  # learned, then served from the last route
            binding.invoke(InvokeRequest("get", echo_request("a"), good))
        for bad in (dict(good, version=2), dict(good, version=["v1"]), dict(good, hostPorts="nohost")):
            for _ in range(2):  # never cached: the full path refuses it every time
                with pytest.raises(MetadataError):
                    binding.invoke(InvokeRequest("get", echo_request("a"), bad))
        assert read_echo_reply(binding.invoke(InvokeRequest("get", echo_request("b"), good)).data) == "b,hi Kitex"


# -- the call path decides nothing and never calls up (issue 25) -------------------------------


def test_call_path_answers_not_handled_instead_of_calling_the_client(impl) -> None:
    """The call path carries out a call only when the cached state applies; otherwise it says
    so ("not handled": None, the endpoint it picked, or an Unsettled reply) and the client runs
    its rules. It holds no reference to the client."""
    from kitex_fast.errors import ApplicationError

    def fail(request):
        raise ApplicationError(6, "handler says no")

    with KitexTestServer({"echo": echo_handler, "fail": fail}, service="echo",
                         implementation=impl.name) as srv, \
            Client("echo", srv.address, implementation=impl.name, connect_timeout=5) as client:
        path = client._path
        request = echo_request("x")
        assert path.exchange("echo", request, 2.0, None) is None  # a method not seen yet
        assert read_echo_reply(client.call("echo", request)) == "x,hi Kitex"  # (learns it)
        client._pool._pools[0].take_idle().close()
        assert path.exchange("echo", request, 2.0, None) == 0  # nothing idle at endpoint 0
        assert path.exchange("echo", memoryview(request * 2)[::2], 2.0, None) is None
        assert path.exchange("echo", request, float("nan"), None) is None  # the full path says why
        assert read_echo_reply(client.call("echo", request)) == "x,hi Kitex"  # (connects again)
        frame, seq_id, endpoint = path.exchange("echo", request, 2.0, None)  # the common case
        assert read_echo_reply(frame.payload) == "x,hi Kitex" and endpoint == srv.address
        with pytest.raises(ApplicationError, match="handler says no"):
            client.call("fail", request)  # learns the method (the full path settles it)
        answer = path.exchange("fail", request, 2.0, None)
        assert type(answer).__name__ == "Unsettled" and answer.seq_id > 0 and answer.conn.peer == srv.address
        with pytest.raises(ApplicationError, match="handler says no"):
            client._complete(answer, "fail", request, 2.0, None)
        assert client._pool._pools[0].idle_count == 1  # a handler error keeps the connection
        client.close()
        assert path.exchange("echo", request, 2.0, None) is None
    assert not any(slot == "_client" for slot in getattr(type(path), "__slots__", ()))


def test_the_transports_take_their_limits_from_below() -> None:
    """_transport (both twins) reads MAX_DURATION from kitex_fast.limits, not the binding's
    metadata module (which imports the resolver)."""
    import pathlib

    import kitex_fast

    root = pathlib.Path(kitex_fast.__file__).parent
    twin = (root / "_transport_py.py").read_text()
    assert "from .limits import" in twin and "from .metadata" not in twin
    compiled = root / "_transport.pyx"
    if compiled.exists():  # (an installed wheel may ship the .so alone)
        text = compiled.read_text()
        assert '".limits"' in text and '".metadata"' not in text
        assert "_client" not in text and "_binding" not in text
