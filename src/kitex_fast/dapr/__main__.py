"""``python -m kitex_fast.dapr``: the same as ``kitex-fast component``."""

from . import main

raise SystemExit(main())
