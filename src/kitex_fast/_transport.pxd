# The records a binding hands the compiled call path (BindingPath in _transport.pyx), declared
# once, with typed fields; _transport_py.py has the twin classes with the same names and fields.
# The binding (binding.py BindingCore) fills them and decides what they say; the call path only
# reads them and never learns what the fields mean to Dapr.

cimport cython


@cython.final
cdef class Shape:
    # What the binding learned about one metadata shape (its key names, in order).
    cdef readonly object id          # the shape's id: never reused, part of each route's key
    cdef readonly object getter      # the binding's own: metadata -> the values that matter
    cdef readonly tuple names        # the keys whose values matter (for the route's key) ...
    cdef readonly tuple positions    # ... and their positions in the shape


@cython.final
cdef class Route:
    # Where one distinct metadata goes, and how: what BindingPath needs for a call with no
    # Python in between. ``options`` and ``client`` are the binding's; the call path hands
    # ``options`` back (to the binding's response factory and failure hook) without reading it.
    cdef readonly object options
    cdef readonly object client
    cdef readonly object client_key  # the client's key in the binding's LRU client cache
    cdef readonly object path        # the client's CallPath, or None (the full path then)
    cdef readonly object method
    cdef readonly object rpc_timeout
    cdef readonly object headers
