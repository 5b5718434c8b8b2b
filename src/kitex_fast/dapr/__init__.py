"""kitex_fast as a Dapr pluggable component: ``bindings.kitex`` for a real daprd.

``kitex-fast component`` (or ``python -m kitex_fast.dapr``) serves the component; see
:mod:`.component`. :func:`error_from_text` gives an SDK caller the typed error back out of daprd's
``error invoking output binding ...`` message. Needs ``pip install "kitex_fast[dapr]"`` (grpcio,
grpcio-reflection, protobuf) only to serve; importing this package does not load grpc.
"""

from __future__ import annotations

from typing import Optional, Sequence

from .status import error_from_text, status_of

__all__ = ["main", "error_from_text", "status_of"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``kitex-fast component`` command line."""
    from . import eventloop

    eventloop.import_asyncio()  # before anything imports it: no ssl in the component (eventloop.py)
    from .component import main as component_main

    return component_main(argv)
