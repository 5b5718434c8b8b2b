# The compiled Invoke path's C entry points, for the HTTP/2 connection (_h2server.pyx), and the
# one interface its answers reach the connection through. Declarations only, so a cimport of this
# file adds no import at run time (a cimported cdef class would make Cython import this module by
# its build-time name, which in a vendored copy is another copy's: cython/cython#7035); the table
# travels as the capsule ``_invoke._C_API``, as the codec's does (_codec_api.pxd). Entries are
# only ever appended.

cdef extern from *:
    """
    #define KF_INVOKE_API_NAME "kitex_fast.dapr._invoke._C_API"
    """
    const char* INVOKE_API_NAME "KF_INVOKE_API_NAME"

# How a call taken by the Invoke path ends, implemented by the connection: ``sink`` is the object
# the connection passed to ``start`` (its stream). Exactly one of: ``reply`` is the framed
# InvokeResponse (a bytearray the connection may keep) and ``status`` is 0; ``reply`` is None and
# (``status``, ``text``) is the gRPC status to answer with; ``status`` is -1 and ``text`` is the
# exception that per-call code raised (the connection gives that stream its crash status).
# Not called for a call the connection abandoned.
ctypedef int (*InvokeDone)(object sink, object reply, int status, object text) except -1

ctypedef struct InvokeAPI:
    int version
    # One decoded Invoke: ``path`` is the InvokePath the app gave the connection; ``timeout`` is
    # daprd's deadline in seconds, or < 0 for none. Returns the running call (a handle for
    # ``abandon``), or None: not handled, and nothing was sent (the caller takes the general
    # path, where the component's rules answer it).
    object (*start)(object path, object sink, InvokeDone done, str instance, str operation,
                    bytes data, dict metadata, double timeout)
    # The connection no longer wants the answer of ``call`` (daprd reset the stream, or the
    # connection is gone): the Kitex call is let go, and ``done`` is not called.
    int (*abandon)(object call) except -1
