"""The README's asyncio example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.skipif(not README.exists(), reason="needs the source tree")
def test_readme_asyncio_example_runs_as_written() -> None:
    text = README.read_text()
    section = text[text.index("\n## asyncio\n"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = subprocess.run([sys.executable, "-W", "error", "-c", code],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("hi,hi Kitex 127.0.0.1:"), out.stdout
