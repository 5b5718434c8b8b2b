"""Every input the fuzzers ever crashed on (``tests/fuzz/crashes/``), and the seeds they start
from, replayed through the differential targets: compiled core and twin must agree, and every
rule in ``targets.py`` must hold. In the twin-only pass (no compiled core) the rules are checked on
the twin alone.

``issue10-defect1-auto-unbounded-buffering`` was found by ``run.py --engine random`` against the
code before the fix for issue 10 defect 1: the decoder held more than max_frame_size for one
message.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from . import targets

CRASHES = sorted((Path(__file__).parent / "crashes").glob("*"))


@pytest.mark.parametrize("path", CRASHES, ids=[p.name for p in CRASHES])
def test_saved_crash_input_holds_now(path: Path) -> None:
    targets.check(path.read_bytes(), targets.implementations())


def test_every_seed_holds() -> None:
    impls = targets.implementations()
    seeds = targets.seeds()
    assert len(seeds) > 100
    for seed in seeds:
        targets.check(seed, impls)


def test_the_harness_catches_a_disagreement() -> None:
    """The differential check is not vacuous: a fake twin that answers differently fails it."""
    impls = targets.implementations()

    class Liar:
        __name__ = "liar"

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(impls[0], name)

        @staticmethod
        def parse_message(data: bytes):  # type: ignore[no-untyped-def]
            raise KeyError("not a ProtocolError")

    seed = bytes([targets.selector("parse_message"), 0]) + bytes.fromhex(
        "80010002000000046563686f0000000100"
    )
    with pytest.raises(targets.FuzzFailure):
        targets.check(seed, [impls[0], Liar()])  # type: ignore[list-item]
