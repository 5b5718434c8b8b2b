"""The checked-in descriptor matches output_binding.proto, and the contract matches what daprd calls.

``descriptor.py`` is protoc's serialized FileDescriptorProto of the .proto, checked in so that
installing ``kitex_fast[dapr]`` needs no code generator; ``contract.py`` builds the classes from it.
This test compiles the installed .proto afresh with grpcio-tools and compares, so an edit to either
side without the other fails here.
"""

from __future__ import annotations

import importlib.resources
import subprocess
import sys

import pytest

pytest.importorskip("grpc_tools", reason="grpcio-tools compiles the .proto for the comparison")

from kitex_fast.dapr.proto import contract, descriptor, generate  # noqa: E402


def test_checked_in_descriptor_matches_the_proto() -> None:
    source = importlib.resources.files("kitex_fast.dapr.proto").joinpath("output_binding.proto").read_bytes()
    fresh = generate.compile_descriptor(source)
    assert descriptor.SERIALIZED == fresh
    # ...and the file on disk is exactly what the generator writes.
    text = importlib.resources.files("kitex_fast.dapr.proto").joinpath("descriptor.py").read_text()
    assert text == generate.render(fresh)


def test_contract_is_daprs_output_binding() -> None:
    # Names and field numbers daprd uses (dapr/proto/components/v1/bindings.proto, common.proto).
    service = contract.DESCRIPTOR.services_by_name["OutputBinding"]
    assert service.full_name == "dapr.proto.components.v1.OutputBinding" == contract.SERVICE_NAME
    declared = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    assert declared == {
        "Init": ("OutputBindingInitRequest", "OutputBindingInitResponse"),
        "Invoke": ("InvokeRequest", "InvokeResponse"),
        "ListOperations": ("ListOperationsRequest", "ListOperationsResponse"),
        "Ping": ("PingRequest", "PingResponse"),
    }
    # The hand-written glue serves exactly the declared methods with the declared types.
    assert {name: (req.DESCRIPTOR.name, resp.DESCRIPTOR.name) for name, (req, resp) in contract.METHODS.items()} == declared

    def fields(message):
        return {f.name: (f.number, f.type) for f in contract.DESCRIPTOR.message_types_by_name[message].fields}

    BYTES, STRING, MESSAGE = 12, 9, 11
    assert fields("InvokeRequest") == {"data": (1, BYTES), "metadata": (2, MESSAGE), "operation": (3, STRING)}
    assert fields("InvokeResponse") == {"data": (1, BYTES), "metadata": (2, MESSAGE), "content_type": (3, STRING)}
    assert fields("OutputBindingInitRequest") == {"metadata": (1, MESSAGE)}
    assert fields("MetadataRequest") == {"properties": (1, MESSAGE)}
    assert fields("ListOperationsResponse") == {"operations": (1, STRING)}
    assert contract.DESCRIPTOR.package == "dapr.proto.components.v1"


def test_base_package_and_dapr_package_do_not_import_grpc() -> None:
    # grpcio & co. are the optional "dapr" extra: only serving the component may load them.
    code = ("import sys, kitex_fast, kitex_fast.dapr; "
            "from kitex_fast.dapr import error_from_text; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google', 'grpc_reflection')); "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
