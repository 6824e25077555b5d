"""The repository stands on its own: no file points at documents kept elsewhere, at paths on
somebody's machine, or at tracker numbers, which a reader who cloned it cannot follow.

The patterns are spelled so that this file does not match them itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.markdown import ROOT

# What a reader or contributor reads: docs, code (docstrings and comments included), scripts,
# tests, and the files that configure them.
CHECKED = ["README.md", "doc", "gateway", "workers", "shared", "scripts", "tests", "deploy",
           "Procfile", "pyproject.toml", "mkdocs.yml", ".ci", ".gitignore"]
SKIPPED_SUFFIXES = {".png", ".jpg", ".svg", ".wav", ".flac", ".ogg", ".ico", ".pyc"}

FORBIDDEN = {
    "a design document kept outside the repository": re.compile(r"\bDESIGN[.]md\b", re.I),
    "a path on a build machine": re.compile(r"(?<![\w.])/wor[k]\b"),
    "a folder beside the checkout": re.compile(r"\.\./shar[e]d\b"),
    "a home directory": re.compile(r"(?<![\w.])(?:/hom[e]/\w|/User[s]/\w|/roo[t]/|[~]/)"),
    "an issue number": re.compile(r"\b(?:issue|ticket|PR|pull request)s?\s*#?\s*\d+\b", re.I),
    "a tracker reference": re.compile(r"(?<![\w&#/.-])#\d+\b(?![\w-])"),
}
# Colours in stylesheets look like tracker references (a hash and digits); only prose files
# are checked for those.
HASH_NUMBER_SUFFIXES = {".md", ".py", ".toml", ".yml", ".yaml", ".txt", ""}


def checked_files() -> list[Path]:
    files: list[Path] = []
    for name in CHECKED:
        top = ROOT / name
        candidates = [top] if top.is_file() else sorted(top.rglob("*")) if top.is_dir() else []
        files += [p for p in candidates if p.is_file() and p.suffix not in SKIPPED_SUFFIXES
                  and "__pycache__" not in p.parts]
    return files


def offences(path: Path, text: str) -> list[str]:
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for what, pattern in FORBIDDEN.items():
            if what == "a tracker reference" and path.suffix not in HASH_NUMBER_SUFFIXES:
                continue
            for m in pattern.finditer(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {what}: {m[0]!r} in {line.strip()!r}")
    return found


def test_no_file_refers_outside_the_repository_or_to_its_tracker() -> None:
    files = checked_files()
    assert len(files) > 50  # the walk found the repository
    found = []
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += offences(path, text)
    assert not found, "write it into the repository instead:\n" + "\n".join(found)


@pytest.mark.parametrize("line", [
    "see DESIGN" + ".md section 3",
    "kept at /" + "work/shared",
    "beside the checkout in ../" + "shared/x",
    "in /" + "home/alice/notes",
    "from ~" + "/notes.txt",
    "as issue" + " 4 asks",
    "fixes #" + "12",
    "see issue #" + "7 for why",
])
def test_each_kind_is_caught(line: str) -> None:
    assert offences(ROOT / "doc" / "x.md", line)


@pytest.mark.parametrize("line", [
    "the gateway issues a request",
    "the main issue with an energy detector",
    "[Admission](06_reliability.md#admission-control)",
    "--worker-address /run/streamer/workers.sock",
    "`tests/e2e/test_chaos.py`, `doc/00_introduction.md#architecture`",
])
def test_ordinary_text_passes(line: str) -> None:
    assert not offences(ROOT / "doc" / "x.md", line)


def test_colours_in_stylesheets_are_not_tracker_references() -> None:
    assert not offences(ROOT / "gateway" / "page.css", "color: #" + "333; background: #1e1e1e")
