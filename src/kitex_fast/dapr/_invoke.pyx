"""The compiled Invoke path of the component server: a Kitex call with no coroutine, task or
protobuf object, for the common Invoke.

The HTTP/2 connection (``_h2server.pyx``) hands it one decoded Invoke (instance name, operation,
data, metadata, daprd's deadline) through the C entry points of ``_invoke.pxd``. On a route that
the rules (``h2server.App``, which holds the component's rules) have vetted once, it takes an idle
connection of the route's client, sends, and answers from the reply future's done callback through
the connection's ``InvokeDone``. Anything else (a new route, no idle connection, a failure before
sending) is "not handled": the connection gives the call to the app's general path. The path
decides nothing itself: what a key means, which route a metadata takes, the deadline's timeout and
headers, how a failure or an unusual reply is answered are the rules' answers (``InvokeRules`` in
``_server_api.py``), asked once per key name or route and cached in ``InstanceRoutes``.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_Next
from cpython.object cimport PyObject
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_New
from libc.stdint cimport uint8_t

from ._protobuf cimport PROTOBUF_API_NAME, ProtobufAPI

# Package modules through importlib, not `from .x import` (see _codec.pyx: Cython >= 3.2 resolves
# a relative import to the build-time name, which in a vendored copy is another copy's).
from importlib import import_module as _import_module

cdef ProtobufAPI* _pb = <ProtobufAPI*>PyCapsule_GetPointer(
    _import_module("._protobuf", __package__)._C_API, PROTOBUF_API_NAME)
if _pb.version < 1:  # (entries are only appended: version 1 has all we use)
    raise ImportError("kitex_fast.dapr._protobuf is older than this _invoke (C API version %d)" % _pb.version)

__all__ = ["FastRoute", "InstanceRoutes", "InvokePath"]


cdef class FastRoute:
    """What the compiled Invoke path needs of one route (an instance and the values of the
    metadata keys its binding reads), built once by the rules (``h2server.App``), which decide
    that a call on it may skip the general path: the client's pool and encoder, the call's
    timeout, and the response fields that do not change from call to call."""

    cdef public object client          # retired (evicted from its binding's cache): route dropped
    cdef public object pool
    cdef public object encoder
    cdef public object loop
    cdef public double timeout         # seconds; 0: none
    cdef public tuple operations       # the operations the binding serves
    cdef public object instance        # core._Instance: in_flight, evicted
    cdef public object touch           # LRU touches: (callable, argument) pairs, per call
    cdef public bytes entries          # the constant response metadata entries (messageType, methodName);
                                       # None: the route's responses carry no metadata (responseMetadata)
    cdef public bytes content_type     # InvokeResponse.content_type
    cdef public object options         # CallOptions, for the general response metadata
    cdef public bint forwards_trace    # TTHeader: a call's trace context goes out as its own headers
    cdef public object trace           # core.trace_headers: metadata -> those headers, or None

    def __cinit__(self):
        self.timeout = 0.0
        self.operations = ()
        self.touch = ()
        self.entries = b""
        self.content_type = b""


cdef class InstanceRoutes:
    """The compiled path's cache for one component instance: what each metadata key name means,
    and the routes by the set of (key, value) pairs that choose them (daprd sends a map's keys in
    any order, and keys such as traceparent that do not choose the route). Routes whose calls
    go out alike (their metadata differs in nothing sent, e.g. ``version``) share one FastRoute."""

    cdef public dict kinds             # key name -> the rules' key kind (InvokePath's key_*)
    cdef public dict routes            # frozenset of route (key, value) pairs -> FastRoute, or None
    cdef public dict shared            # what makes routes alike (the rules' key) -> their one FastRoute
    cdef public str untraced           # the traceparent of an untraced call: not a trace context
    cdef public Py_ssize_t limit

    def __init__(self, str untraced, Py_ssize_t limit=1024):
        self.kinds = {}
        self.routes = {}
        self.shared = {}
        self.untraced = untraced
        self.limit = limit


cdef class InvokePath:
    """The compiled Invoke path of one server: its rules, its route cache, and what the package
    above it defines, passed in so that this module imports nothing of the package but the
    protobuf codec.

    How the path treats a metadata key (``InstanceRoutes.kinds``, the rules' ``fast_key``):
    ``key_route``: the binding reads it, its value is part of the route; ``key_general``: a call
    with it needs the general path (base64 data); ``key_trace``: trace context, forwarded on a
    TTHeader route as the call's own headers (``FastRoute.trace``); any other kind is ignored.
    ``response_metadata(frame, seq_id, endpoint, options)``: the metadata of a reply that carries
    TTHeader headers (``binding.response_metadata``); ``transport_error``: the error class of a
    connection that died before taking a byte (the general path then retries the call)."""

    cdef readonly object rules
    cdef readonly dict routes           # instance name -> InstanceRoutes (cleared by the rules)
    cdef readonly int key_route
    cdef readonly int key_general
    cdef readonly int key_trace
    cdef readonly object response_metadata
    cdef readonly object transport_error

    def __init__(self, rules, dict routes, int key_route, int key_general, int key_trace,
                 response_metadata, transport_error):
        self.rules = rules
        self.routes = routes
        self.key_route = key_route
        self.key_general = key_general
        self.key_trace = key_trace
        self.response_metadata = response_metadata
        self.transport_error = transport_error


cdef class _Call:
    """One Invoke on the compiled path: the Kitex call's future, its connection and seq id, the
    route, the timer, and the request metadata (for errors and logs). The done callback of the
    future."""

    cdef InvokePath path
    cdef object sink
    cdef InvokeDone done
    cdef str instance
    cdef FastRoute route
    cdef object proto
    cdef object fut
    cdef object handle
    cdef object seq
    cdef dict metadata

    def __call__(self, fut):
        """The Kitex reply (or error) of this call."""
        if self.fut is not fut or fut.cancelled():
            return  # (abandoned)
        sink = self.sink
        self.sink = None
        try:
            reply, status, text = self._outcome()
        except Exception as exc:  # per-call code: the connection ends this stream with its status
            reply, status, text = None, -1, exc
        self.done(sink, reply, status, text)

    cdef _end(self):
        """The call is over (answered or abandoned): drop its references."""
        route = self.route
        if self.handle is not None:
            self.handle.cancel()
        self.route = None
        self.proto = None
        self.fut = None
        self.handle = None
        inst = route.instance
        inst.in_flight -= 1
        if inst.evicted and inst.in_flight == 0:
            self.path.rules.instance_idle(inst)

    cdef tuple _outcome(self):
        fut = self.fut
        route = self.route
        proto = self.proto
        seq = self.seq
        rules = self.path.rules
        self._end()
        reply = None
        try:
            try:
                frame = fut.result()  # (one call where exception() then result() were two)
            except BaseException as exc:  # the call's error, whatever it is, as exception() gave it
                # (a cancelled future never gets here: __call__ returns first)
                outcome = rules.fast_failed(self.instance, self.metadata, exc)
            else:
                if route.encoder.is_plain_reply(frame, seq):
                    route.pool.release(proto)
                    outcome = None
                else:
                    outcome = rules.fast_settle(self.instance, self.metadata, route, proto, frame, seq)
                if outcome is None:
                    reply = _plain_response(self.path, route, frame, seq, proto.peer)
        except Exception as exc:
            # (a done callback: raising here would leave the stream unanswered) this call fails
            # with the rules' status and log line; the connection goes on.
            outcome = rules.fast_failed(self.instance, self.metadata, exc)
        if outcome is None:
            return reply, 0, None
        return None, outcome[0], outcome[1]


cdef inline int _decimal(unsigned long long u, char* buf) noexcept:
    """``u`` in decimal, written right-aligned into ``buf[0:24]``; returns where it starts."""
    cdef int i = 24
    while True:
        i -= 1
        buf[i] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            return i


cdef bytearray _plain_response(InvokePath path, FastRoute route, object frame, object seq, object endpoint):
    """The framed InvokeResponse of a plain reply, byte for byte what the protobuf module's
    encode_invoke_response writes for the general path's response (map entries in key order)."""
    cdef bytearray out
    cdef const uint8_t[::1] view
    cdef bytes b
    cdef char digits[24]
    cdef int n
    cdef bint metadata = route.entries is not None
    if metadata and (frame.str_headers or frame.int_headers):  # TTHeader headers: the general metadata
        return _pb.encode_invoke_response(
            frame.payload, path.response_metadata(frame, seq, endpoint, route.options), route.content_type, True)
    out = bytearray()
    _pb.grpc_prefix(out)
    payload = frame.payload
    if type(payload) is bytes:  # what the decoder gives: no memoryview made
        if PyBytes_GET_SIZE(payload):
            _pb.put_bytes_field(out, 1, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))
    else:
        view = payload
        if view.shape[0]:
            _pb.put_bytes_field(out, 1, <const char*>&view[0], view.shape[0])
    if metadata:  # keys in order: endpoint, messageType + methodName (route.entries), seqId, transport
        b = endpoint if type(endpoint) is bytes else (<str>endpoint).encode("utf-8")
        _pb.put_entry(out, "endpoint", 8, PyBytes_AS_STRING(b), len(b))
        out += route.entries
        n = _decimal(<unsigned long long>seq, digits)  # (seq ids are 1..MAX_I32; bytes % cost ~760 instructions)
        _pb.put_entry(out, "seqId", 5, &digits[n], 24 - n)
        b = frame.transport if type(frame.transport) is bytes else (<str>frame.transport).encode("utf-8")
        _pb.put_entry(out, "transport", 9, PyBytes_AS_STRING(b), len(b))
    if route.content_type:
        _pb.put_bytes_field(out, 3, PyBytes_AS_STRING(route.content_type), len(route.content_type))
    _pb.patch_length(out)
    return out


cdef object _take(InvokePath path, object sink, InvokeDone done, str instance, str operation,
                  bytes data, dict metadata, double timeout):
    cdef PyObject* found
    cdef PyObject* key
    cdef PyObject* value
    cdef Py_ssize_t pos = 0
    cdef InstanceRoutes table
    cdef FastRoute route
    cdef list pairs = []
    cdef bint traced = False
    cdef double budget
    cdef _Call call
    rules = path.rules
    found = PyDict_GetItem(path.routes, instance)
    table = <InstanceRoutes>(<object>found if found != NULL else rules.fast_instance(instance))
    kinds = table.kinds
    while PyDict_Next(metadata, &pos, &key, &value):
        found = PyDict_GetItem(kinds, <object>key)
        kind = <object>found if found != NULL else rules.fast_key(instance, <object>key)
        if kind == path.key_route:
            pairs.append((<object>key, <object>value))
        elif kind == path.key_trace:
            if <object>value and not (<object>key == "traceparent" and <object>value == table.untraced):
                traced = True
        elif kind == path.key_general:
            return None
    route_key = frozenset(pairs)
    found = PyDict_GetItem(table.routes, route_key)
    route_obj = <object>found if found != NULL else rules.fast_route(instance, metadata, route_key)
    if route_obj is None:
        return None
    route = <FastRoute>route_obj
    if route.client.retired:  # evicted from the binding's client cache: build it anew
        table.routes.pop(route_key, None)
        return None
    if operation not in route.operations:
        return None  # the general path answers with the binding's error
    budget = route.timeout
    str_headers = None
    int_headers = None
    if traced and route.forwards_trace:
        # daprd's trace context, fresh per call, goes out as this call's own TTHeader headers
        # after the route's (the component's rule: core.trace_headers); the route stays cached.
        str_headers = route.trace(metadata)
    if timeout >= 0 and (budget <= 0 or budget > timeout):
        # daprd's deadline is the shorter: it is the call's timeout, a number of seconds, and on
        # TTHeader the RPCTimeout the Kitex server gets, as this call's own header (the rules'
        # answer, the general path's rule).
        budget, int_headers = rules.fast_deadline(route, timeout)
    pool = route.pool
    proto = pool.take()
    if proto is None:
        return None  # no idle connection: the general path opens one or waits
    try:
        seq = proto.next_seq_id()
        buffers = route.encoder.encode(data, seq, str_headers, int_headers)
    except BaseException:
        pool.release(proto)  # nothing was written; the general path reports the error
        return None
    try:
        fut = proto.send(buffers, seq)
    except path.transport_error:
        return None  # the connection died before taking a byte: the general path retries
    for touch, item in route.touch:
        try:
            touch(item)  # the LRU order of instances and clients, as the general path keeps it
        except KeyError:
            pass
    route.instance.in_flight += 1
    call = _Call.__new__(_Call)
    call.path = path
    call.sink = sink
    call.done = done
    call.instance = instance
    call.route = route
    call.proto = proto
    call.fut = fut
    call.seq = seq
    call.metadata = metadata
    if budget > 0:
        call.handle = pool.deadlines.call_at(route.loop.time() + budget, proto, fut, budget)
    fut.add_done_callback(call)
    return call


cdef object _start(object path, object sink, InvokeDone done, str instance, str operation,
                   bytes data, dict metadata, double timeout):
    try:
        return _take(<InvokePath?>path, sink, done, instance, operation, data, metadata, timeout)
    except Exception:
        return None  # (raised before sending) the general path gives this call its status


cdef int _abandon(object call_obj) except -1:
    """daprd reset the stream (its deadline, or it went away) while the call runs: the Kitex
    connection's entry stays, so the late reply is read and dropped. 1: let go here (``done``
    will not be called); 0: already over, or its answer is on its way (``done`` follows)."""
    cdef _Call call = <_Call?>call_obj
    fut = call.fut
    if fut is None or fut.done():
        return 0
    proto = call.proto
    metadata = call.metadata
    call._end()
    call.sink = None
    fut.cancel()
    proto.abandoned()
    call.path.rules.fast_abandoned(call.instance, metadata)
    return 1


# The C entry points for _h2server (see _invoke.pxd).
cdef InvokeAPI _api
_api.version = 1
_api.start = _start
_api.abandon = _abandon
_C_API = PyCapsule_New(<void*>&_api, INVOKE_API_NAME, NULL)
