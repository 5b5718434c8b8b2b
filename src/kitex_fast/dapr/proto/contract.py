"""Dapr's OutputBinding contract as Python classes, and the gRPC glue for server and client.

The message classes are built at import from the descriptor protoc made of
``output_binding.proto`` (``descriptor.py``), with protobuf's own builder, exactly as protoc's
generated ``_pb2`` modules do. The service glue is four unary methods, so it is written here rather
than generated: it names each method by its path ``/dapr.proto.components.v1.OutputBinding/<Name>``.
"""

from __future__ import annotations

from typing import Any, Dict

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.internal import builder

from . import SERVICE_NAME
from .descriptor import SERIALIZED

__all__ = [
    "DESCRIPTOR",
    "SERVICE_NAME",
    "METHODS",
    "MetadataRequest",
    "OutputBindingInitRequest",
    "OutputBindingInitResponse",
    "ListOperationsRequest",
    "ListOperationsResponse",
    "InvokeRequest",
    "InvokeResponse",
    "PingRequest",
    "PingResponse",
    "add_output_binding_to_server",
    "OutputBindingStub",
]

DESCRIPTOR = descriptor_pool.Default().AddSerializedFile(SERIALIZED)
_messages: Dict[str, Any] = {}
builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, _messages)
builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, __name__, _messages)

MetadataRequest = _messages["MetadataRequest"]
OutputBindingInitRequest = _messages["OutputBindingInitRequest"]
OutputBindingInitResponse = _messages["OutputBindingInitResponse"]
ListOperationsRequest = _messages["ListOperationsRequest"]
ListOperationsResponse = _messages["ListOperationsResponse"]
InvokeRequest = _messages["InvokeRequest"]
InvokeResponse = _messages["InvokeResponse"]
PingRequest = _messages["PingRequest"]
PingResponse = _messages["PingResponse"]

# method name -> (request class, response class), as declared in the .proto
METHODS = {
    "Init": (OutputBindingInitRequest, OutputBindingInitResponse),
    "Invoke": (InvokeRequest, InvokeResponse),
    "ListOperations": (ListOperationsRequest, ListOperationsResponse),
    "Ping": (PingRequest, PingResponse),
}


def add_output_binding_to_server(servicer: Any, server: Any) -> None:
    """Serve ``servicer.Init/Invoke/ListOperations/Ping`` (sync or async methods) on ``server``."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
        for name, (request, response) in METHODS.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


class OutputBindingStub:
    """A client of the contract (what daprd is to the component); used by tests and benchmarks."""

    def __init__(self, channel: Any) -> None:
        for name, (request, response) in METHODS.items():
            setattr(self, name, channel.unary_unary(
                "/%s/%s" % (SERVICE_NAME, name),
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            ))
