"""Each accelerated module pair's public names have one source: the twin's ``__all__``.

``kitex_fast.codec.PUBLIC_API`` (and ``transport``'s, ``aio.protocol``'s) is derived from it. The
compiled module (which imports nothing of the package but ``errors``, so cannot import the list)
and the ``.pyi`` (a stub needs a literal) repeat it, so these tests hold both to the twin's list;
stubtest, run by tests/run.sh, also holds the ``.pyi`` to the compiled module.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import ModuleType
from typing import List

import pytest

from kitex_fast import codec, transport
from kitex_fast.aio import protocol

TWIN = codec.implementation("py")

# dispatcher -> the stub next to it
PAIRS = {"codec": (codec, "_codec.pyi"), "transport": (transport, "_transport.pyi"),
         "aio.protocol": (protocol, "_protocol.pyi")}


@pytest.fixture(params=sorted(PAIRS))
def pair(request: pytest.FixtureRequest) -> tuple:
    return PAIRS[request.param]


def _stub_tree(dispatcher: ModuleType = codec, stub: str = "_codec.pyi") -> ast.Module:
    # The .pyi ships in the wheel (pyproject package-data), next to the dispatcher.
    path = Path(dispatcher.__file__ or "").with_name(stub)
    return ast.parse(path.read_text(encoding="utf-8"))


def _stub_all(tree: ast.Module) -> List[str]:
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "__all__"):
            value = ast.literal_eval(node.value)
            assert isinstance(value, list)
            return value
    raise AssertionError("the stub has no literal __all__")


def _compiled(dispatcher: ModuleType) -> ModuleType:
    try:
        return dispatcher.implementation("c")
    except ImportError as exc:
        pytest.skip(str(exc))


def test_the_twin_list_is_the_source(pair) -> None:
    dispatcher, _ = pair
    names = dispatcher.implementation("py").__all__
    assert isinstance(names, list) and names
    assert all(isinstance(name, str) and not name.startswith("_") for name in names)
    assert len(set(names)) == len(names), "a name is listed twice"
    assert dispatcher.PUBLIC_API == tuple(names)
    assert [name for name in dispatcher.__all__ if name in names] == names


def test_each_implementation_exports_the_list(impl) -> None:
    assert list(impl.codec.__all__) == TWIN.__all__
    missing = [name for name in TWIN.__all__ if not hasattr(impl.codec, name)]
    assert not missing


def test_the_compiled_module_exports_the_twin_list(pair) -> None:
    dispatcher, _ = pair
    twin, compiled = dispatcher.implementation("py"), _compiled(dispatcher)
    assert list(compiled.__all__) == twin.__all__
    assert [name for name in twin.__all__ if not hasattr(compiled, name)] == []


def test_the_dispatcher_exposes_every_name(pair) -> None:
    dispatcher, _ = pair
    live = dispatcher.implementation()
    for name in dispatcher.PUBLIC_API:
        assert getattr(dispatcher, name) is getattr(live, name), name


def test_the_stub_repeats_the_list_and_declares_each_name(pair) -> None:
    dispatcher, stub = pair
    twin = dispatcher.implementation("py")
    tree = _stub_tree(dispatcher, stub)
    assert _stub_all(tree) == twin.__all__
    declared = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            declared.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared.add(node.target.id)
    assert [name for name in twin.__all__ if name not in declared] == []


def test_the_drivers_internals_are_in_both_transports_but_not_exported() -> None:
    internals = ("CallPath", "BindingPath", "Shape", "Route")
    for module in (transport.implementation("py"), _compiled(transport)):
        assert [name for name in internals if not hasattr(module, name)] == [], module.__name__
        assert [name for name in internals if name in module.__all__] == []
    assert [name for name in internals if hasattr(transport, name)] == []


def test_constants_are_equal_on_both(impl) -> None:
    for name in TWIN.__all__:
        value = getattr(TWIN, name)
        if inspect.isclass(value) or callable(value):
            continue
        assert getattr(impl.codec, name) == value, name
        assert type(getattr(impl.codec, name)) is type(value), name


def test_max_i32_is_the_i32_maximum_and_bounds_seq_ids(impl) -> None:
    c = impl.codec
    assert c.MAX_I32 == 2**31 - 1 == 0x7FFFFFFF
    message = c.build_message(c.CALL, "echo", c.MAX_I32, b"\x00")
    assert c.parse_message(message).seq_id == c.MAX_I32
    frame = c.encode_frame("ttheader", message, seq_id=c.MAX_I32)
    assert c.FrameDecoder("ttheader").feed(b"".join(bytes(p) for p in frame))[0].seq_id == c.MAX_I32
    for bad in (c.MAX_I32 + 1, -c.MAX_I32 - 2):
        try:
            c.encode_frame("framed", message, seq_id=bad)
        except ValueError as exc:
            assert str(exc) == "seq_id must fit in a signed 32-bit integer, got %d" % bad
        else:
            raise AssertionError("seq_id %d was accepted" % bad)
