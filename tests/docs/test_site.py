"""The documentation holds together: the MkDocs site builds in strict mode (a broken link, a
missing anchor or a page left out of the navigation fails), README's links resolve, and every
repository path the docs name in code spans exists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.markdown import ROOT, anchors, code_spans, links

MKDOCS = Path(sys.executable).parent / "mkdocs"
DOCS = sorted((ROOT / "doc").rglob("*.md"))
OUTSIDE_DOCS = [ROOT / "README.md", ROOT / "deploy" / "README.md"]
REPO_PATH = re.compile(r"^(?:doc|gateway|workers|shared|scripts|tests|deploy)/[\w./-]*$")


def mkdocs() -> str:
    found = str(MKDOCS) if MKDOCS.exists() else shutil.which("mkdocs")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed (the 'docs' extra); CI must build the site")
        pytest.skip("mkdocs is not installed: pip install -e '.[docs]' (scripts/test does)")
    return found


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # no upgrade banner in the output
    proc = subprocess.run([mkdocs(), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = {p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("*")}
    assert "index.html" in built and "09_testing/index.html" in built
    assert "decisions/index.html" in built


def check_links(source: Path, text: str | None = None) -> list[str]:
    """Relative links of ``source`` that lead nowhere: a missing file, a file outside the
    repository, or an anchor that no heading of the target has."""
    bad = []
    for target in links(source.read_text() if text is None else text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # a URL with a scheme: not checked offline
        path_part, _, anchor = target.partition("#")
        dest = (source.parent / path_part).resolve() if path_part else source
        if not dest.is_relative_to(ROOT):
            bad.append(f"{target}: outside the repository")
        elif not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with that anchor")
    return bad


@pytest.mark.parametrize("page", OUTSIDE_DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_outside_the_site_resolve(page: Path) -> None:
    """README.md and the other Markdown files MkDocs does not build: their links into doc/
    (and within themselves) must hold too."""
    assert links(page.read_text()), f"{page.name} has no links to check"
    assert check_links(page) == []


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_doc_links_resolve(page: Path) -> None:
    """The same check as the site build, readable without MkDocs (and on GitHub)."""
    assert check_links(page) == []


@pytest.mark.parametrize("page", [*OUTSIDE_DOCS, *DOCS],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_named_repository_paths_exist(page: Path) -> None:
    """`gateway/session.py`, `tests/e2e/test_chaos.py` and the like, named in prose, exist."""
    missing = [span for span in code_spans(page.read_text())
               if REPO_PATH.match(span) and not (ROOT / span.rstrip("/")).exists()]
    assert missing == []


def test_the_link_checker_catches_what_it_should() -> None:
    page = ROOT / "doc" / "index.md"
    good = links(page.read_text())
    assert "01_protocol.md" in good and "decisions/index.md" in good
    assert anchors(ROOT / "doc" / "06_reliability.md") >= {"admission-control"}
    text = ("[a](01_protocol.md#no-such-heading) [b](nope.md) [c](../../x.md)\n"
            "[d](https://example.org) [e](01_protocol.md#time) `[f](gone.md)`\n")
    assert [b.split(":")[0] for b in check_links(ROOT / "doc" / "probe.md", text)] == [
        "01_protocol.md#no-such-heading", "nope.md", "../../x.md"]
