"""The README's and the docs' links lead somewhere, inside this repository.

`mkdocs build --strict` (tests/run.sh) checks the docs site's own links and anchors; it does not
read README.md, and it needs the docs extra. These checks need neither: every relative link of
README.md and of docs/ names a file of this checkout (and, into a Markdown page, one of its
headings), no page points outside the repository, and mkdocs.yml's nav lists every page once.
External (http) links are not fetched.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md"] + sorted(DOCS.rglob("*.md"))
_LINK = re.compile(r"(?<!\!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ID = re.compile(r"""<a\s+(?:id|name)=["']([^"']+)["']""")


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _prose(text: str) -> Iterator[Tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def _slug(heading: str) -> str:
    """Python-Markdown's toc slugify (what MkDocs and Material use) over the heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> Set[str]:
    found: Set[str] = set()
    for _, line in _prose(page.read_text(encoding="utf-8")):
        heading = _HEADING.match(line)
        if heading:
            found.add(_slug(heading.group(2)))
        found.update(_ID.findall(line))
    return found


def links(page: Path) -> List[Tuple[int, str]]:
    return [(number, target) for number, line in _prose(page.read_text(encoding="utf-8"))
            for target in _LINK.findall(line.replace("``", ""))]


def test_the_slugs_are_markdowns() -> None:
    assert _slug("Compared with Dapr's Go binding") == "compared-with-daprs-go-binding"
    assert _slug("The registry facts kitex_fast relies on") == "the-registry-facts-kitex_fast-relies-on"
    assert _slug("Building `data` from an IDL") == "building-data-from-an-idl"
    assert _slug("§1.1 Buffered") == "11-buffered"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_relative_link_names_a_file_here(page: Path) -> None:
    broken = []
    for number, target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:: not fetched
            continue
        where = "%s line %d: %s" % (_name(page), number, target)
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if ROOT not in destination.parents and destination != ROOT:
            broken.append(where + " (outside the repository)")
        elif not destination.exists():
            broken.append(where + " (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(where + " (no such heading)")
        elif page.parent == DOCS and DOCS not in destination.parents:
            broken.append(where + " (the docs site holds only docs/: name the file in `code` instead)")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_no_page_points_outside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert "../shared" not in text and "kitex-wire.md" not in text, _name(page)


def test_the_nav_lists_every_page_once() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w./-]+\.md)\s*$", config, re.M)
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages
    assert re.search(r"^strict:\s*true\s*$", config, re.M)
