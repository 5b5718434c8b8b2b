"""``python -m kitex_fast``: the command line (see :mod:`kitex_fast.cli`)."""

from .cli import main

raise SystemExit(main())
