"""A sidecar using its vendored kitex_fast, run by the vendoring tests in a fresh interpreter.

    python vendored_app.py ROOT PACKAGE IMPL OTHER [KITEX_ADDRESS]

ROOT is put on sys.path and PACKAGE (e.g. ``sidecar._vendor.kitex_fast``) imported from it. IMPL is
``c`` or ``py``. OTHER says whether another kitex_fast is importable in this process and when it is
imported: ``installed-first`` (before the vendored copy, so that any absolute ``kitex_fast.`` import
left in the copy would silently pick it up), ``installed-later`` (after the copy has loaded its
compiled core: that core must not be handed to the other copy) or ``none`` (the caller starts
this interpreter with ``-I -S``). With
KITEX_ADDRESS, the calls also go to that real Kitex echo server. Prints one JSON object of facts;
the test asserts on them. Exits non-zero (with a traceback) only when something is unexpectedly
raised.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import socket
import sys
from typing import Any, Dict


def main() -> None:
    root, package_name, impl, other_mode = sys.argv[1:5]
    kitex_address = sys.argv[5] if len(sys.argv) > 5 else None
    facts: Dict[str, Any] = {}

    other = None
    spec = importlib.util.find_spec("kitex_fast")
    facts["other_origin"] = spec.origin if spec is not None else None
    if other_mode == "installed-first":
        import kitex_fast as other  # noqa: F811 - the other copy, imported before the vendored one

    sys.path.insert(0, root)
    vendored = importlib.import_module(package_name)
    errors = importlib.import_module(package_name + ".errors")
    testing = importlib.import_module(package_name + ".testing")
    codec = vendored.codec.implementation(impl)
    transport = vendored.transport.implementation(impl)

    facts["vendored_file"] = vendored.__file__
    facts["using_extension"] = [vendored.codec.USING_EXTENSION, vendored.transport.USING_EXTENSION]
    facts["impl_files"] = [codec.__file__, transport.__file__]
    facts["impl_names"] = [codec.__name__, transport.__name__]
    facts["other_is_distinct"] = other is not None and other.errors.KitexError is not errors.KitexError

    def caught(call: Any) -> Dict[str, Any]:
        """What ``call`` raised, caught through the vendored name only."""
        try:
            call()
        except errors.KitexError as exc:  # the vendored hierarchy: what a sidecar writes
            return {
                "type": type(exc).__name__,
                "module": type(exc).__module__,
                "message": str(exc),
                "is_other": other is not None and isinstance(exc, other.errors.KitexError),
            }
        return {"type": None}

    # Raised inside the codec (the compiled one for impl=c): the .so's own `from .errors import`.
    facts["codec_error"] = caught(lambda: codec.parse_message(b"\x80\x01\x00"))
    # Raised inside the socket driver: connect to a port nothing listens on.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = "127.0.0.1:%d" % s.getsockname()[1]
    port = int(closed.rsplit(":", 1)[1])
    facts["connect_error"] = caught(lambda: transport.open_connection(
        socket.AF_INET, ("127.0.0.1", port), timeout=1.0, decoder=codec.FrameDecoder("framed")))

    def call(address: str, **extra: str) -> Any:
        # connectTimeout: Kitex's 50 ms default can lapse on a loaded CI machine; not the point here.
        meta = {"hostPorts": address, "destService": "echo", "methodName": "echo", "version": "v1",
                "connectTimeout": "10s"}
        meta.update(extra)
        with vendored.KitexOutputBinding(implementation=impl) as binding:
            response = binding.invoke(vendored.InvokeRequest("get", testing.echo_request("vendored"), meta))
        return testing.read_echo_reply(response.data)

    with testing.KitexTestServer({"echo": testing.echo_handler}, service="echo", implementation=impl) as server:
        facts["embedded_reply"] = [call(server.address, transport=t) for t in ("framed", "ttheader")]
    facts["metadata_error"] = caught(lambda: call("nope"))
    if kitex_address is not None:
        facts["kitex_reply"] = [call(kitex_address, transport=t) for t in ("framed", "ttheader")]
        facts["kitex_error"] = caught(lambda: call(kitex_address, methodName="nope"))

    if other_mode == "installed-later":
        import kitex_fast as other  # noqa: F811

        other_codec = other.codec.implementation(impl)
        facts["other_impl_file"] = other_codec.__file__
        facts["other_codec_error"] = "none"
        try:
            other_codec.parse_message(b"\x80\x01\x00")
        except other.errors.KitexError as exc:  # the other copy's own hierarchy
            facts["other_codec_error"] = "%s.%s" % (type(exc).__module__, type(exc).__name__)
        facts["other_is_distinct"] = other.errors.KitexError is not errors.KitexError

    loaded = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())
              if n == package_name or n.startswith(package_name + ".")}
    facts["vendored_modules"] = loaded
    facts["foreign_modules"] = sorted(n for n in sys.modules if n == "kitex_fast" or n.startswith("kitex_fast."))
    print(json.dumps(facts))


if __name__ == "__main__":
    main()
