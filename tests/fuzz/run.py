"""Fuzz the codec differentially (compiled core vs twin) for a bounded time.

    python tests/fuzz/run.py --seconds 40            # what tests/run.sh does
    python tests/fuzz/run.py --seconds 1800 --jobs 1  # a long run; figures go in the note

Engine: atheris (libFuzzer, coverage-guided through the twin's instrumented bytecode: the twin
mirrors the compiled core branch for branch, so its coverage steers both). Without atheris
(``pip install atheris`` finds no wheel for this Python, and building it needs clang with
libFuzzer), a plain mutation loop over the same seeds runs instead and says so.

Crashes (a disagreement, an untyped error, unbounded buffering) are written to
``tests/fuzz/crashes/`` (or ``--crashes``); commit them: ``test_fuzz_regressions.py`` replays every
file there on both implementations. The last line printed is a summary:
``fuzz: engine=atheris execs=N crashes=N seconds=S``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _atheris_child(seconds: int, corpus: Path, crashes: Path) -> None:
    """Runs inside the child process: libFuzzer takes over and exits when time is up."""
    import atheris

    with atheris.instrument_imports(include=["kitex_fast"]):
        import targets

    impls = targets.implementations()

    def one_input(data: bytes) -> None:
        targets.check(data, impls)

    crashes.mkdir(parents=True, exist_ok=True)
    atheris.Setup(
        [
            sys.argv[0],
            "-max_total_time=%d" % seconds,
            "-print_final_stats=1",
            "-max_len=4096",
            "-timeout=20",
            "-rss_limit_mb=1536",
            "-artifact_prefix=%s/" % crashes,
            str(corpus),
        ],
        one_input,
    )
    atheris.Fuzz()


def _run_atheris(seconds: int, crashes: Path) -> int:
    import targets

    with tempfile.TemporaryDirectory(prefix="kitex-fuzz-") as tmp:
        corpus = Path(tmp)
        for i, seed in enumerate(targets.seeds()):
            (corpus / ("seed-%04d" % i)).write_bytes(seed)
        env = dict(os.environ, PYTHONHASHSEED="0")
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", "--seconds", str(seconds), "--crashes", str(crashes), str(corpus)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=seconds + 300,
        )
        elapsed = time.monotonic() - start
    out = proc.stdout
    execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", out)
    crashed = proc.returncode != 0
    if crashed:
        sys.stdout.write(out[-6000:])
    else:
        tail = [line for line in out.splitlines() if line.startswith(("Done", "stat::", "#"))]
        sys.stdout.write("\n".join(tail[-6:]) + "\n")
    print(
        "fuzz: engine=atheris execs=%s crashes=%d seconds=%.0f"
        % (execs[-1] if execs else "?", 1 if crashed else 0, elapsed)
    )
    return 1 if crashed else 0


def _mutate(rng: random.Random, data: bytes, pool: List[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # an interesting value over 4 bytes (length fields)
            i = rng.randrange(len(buf))
            val = rng.choice([0, 1, 0x7F, 0x80, 0xFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x10000, 64, 65])
            buf[i : i + 4] = val.to_bytes(4, "big")
        elif op == 2 and len(buf) > 2:  # cut
            i = rng.randrange(2, len(buf))
            del buf[i : i + rng.randint(1, 16)]
        elif op == 3:  # insert random bytes
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = os.urandom(rng.randint(1, 8))
        elif op == 4 and pool:  # splice with another input
            other = rng.choice(pool)
            i = rng.randrange(len(buf) + 1)
            buf[i:] = other[rng.randrange(len(other) + 1):]
        elif buf:  # replace a byte
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    return bytes(buf[:4096])


def _run_random(seconds: int, crashes: Path, seed: int) -> int:
    import targets

    impls = targets.implementations()
    rng = random.Random(seed)
    pool = targets.seeds()
    deadline = time.monotonic() + seconds
    execs = 0
    while time.monotonic() < deadline:
        data = _mutate(rng, rng.choice(pool), pool)
        execs += 1
        try:
            targets.check(data, impls)
        except BaseException as exc:  # noqa: BLE001 - every failure is a crash to save
            crashes.mkdir(parents=True, exist_ok=True)
            path = crashes / ("crash-random-%d" % execs)
            path.write_bytes(data)
            print("%s: %s\n  input saved to %s" % (type(exc).__name__, exc, path))
            print("fuzz: engine=random execs=%d crashes=1 seconds=%d" % (execs, seconds))
            return 1
        if execs % 50 == 0 and len(pool) < 5000:
            pool.append(data)  # no coverage signal: keep a sample to splice from
    print("fuzz: engine=random execs=%d crashes=0 seconds=%d" % (execs, seconds))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--crashes", type=Path, default=HERE / "crashes")
    parser.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("corpus", nargs="?", type=Path)
    args = parser.parse_args()
    if args.child:
        _atheris_child(args.seconds, args.corpus, args.crashes)
        return 0
    import targets

    if len(targets.implementations()) < 2:
        print("fuzz: the compiled core is not installed; the run checks the twin's invariants only")
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
        except ImportError as exc:
            print("fuzz: atheris is not importable (%s); using the plain mutation engine" % exc)
            engine = "random"
        else:
            engine = "atheris"
    if engine == "atheris":
        return _run_atheris(args.seconds, args.crashes)
    return _run_random(args.seconds, args.crashes, args.seed)


if __name__ == "__main__":
    sys.exit(main())
