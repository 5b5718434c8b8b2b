# The protobuf codec's C entry points for the other compiled modules of the component server
# (_h2server.pyx decodes requests with them, _invoke.pyx encodes replies): declarations only, so
# a cimport of this file adds no import at run time (a cimported cdef function or class would make
# Cython import its module by the build-time name, kitex_fast.dapr._protobuf, which in a vendored
# copy is another copy's: cython/cython#7035). The table travels as the capsule
# ``_protobuf._C_API``, as the codec's does (_codec_api.pxd). Entries are only ever appended.

from libc.stdint cimport uint8_t, uint32_t

cdef extern from *:
    """
    #define KF_PROTOBUF_API_NAME "kitex_fast.dapr._protobuf._C_API"
    """
    const char* PROTOBUF_API_NAME "KF_PROTOBUF_API_NAME"

ctypedef struct ProtobufAPI:
    int version
    # InvokeRequest at p[0:n] -> (data: bytes, metadata: dict, operation: str); ProtobufError.
    tuple (*decode_invoke_request)(const uint8_t* p, Py_ssize_t n)
    # OutputBindingInitRequest at p[0:n] -> its metadata.properties.
    dict (*decode_init_request)(const uint8_t* p, Py_ssize_t n)
    # A message of which no field is read (the empty requests): only well-formed fields.
    int (*check_message)(const uint8_t* p, Py_ssize_t n) except -1
    # InvokeResponse / a repeated-string message, gRPC-framed when ``framed``; the bytearray is
    # the caller's (no bytes() copy of it).
    bytearray (*encode_invoke_response)(object data, object metadata, object content_type, bint framed)
    bytearray (*encode_strings)(object strings, uint32_t field, bint framed)
    # Appends to ``out``: a length-delimited field; one map<string, string> entry of field 2
    # (InvokeResponse.metadata); the gRPC prefix (length patched by patch_length).
    int (*put_bytes_field)(bytearray out, uint32_t field, const char* p, Py_ssize_t n) except -1
    int (*put_entry)(bytearray out, const char* key, Py_ssize_t klen, const char* value, Py_ssize_t vlen) except -1
    int (*grpc_prefix)(bytearray out) except -1
    int (*patch_length)(bytearray out) except -1
