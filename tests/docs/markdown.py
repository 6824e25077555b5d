"""Just enough Markdown reading for the documentation checks: fenced code blocks, links, inline
code spans and heading anchors. Small on purpose, so what counts as a block or a link is plain."""

from __future__ import annotations

import re
import textwrap
import unicodedata
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<info>[^`\n]*)$")
NO_RUN = "<!-- no-run -->"
PYTHON = {"python", "py", "python3"}


@dataclass(frozen=True)
class CodeBlock:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    runnable: bool  # a Python block not opted out with a preceding <!-- no-run --> comment

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def code_blocks(path: Path, text: str | None = None) -> list[CodeBlock]:
    """Every fenced block of ``path``. A Python block is runnable unless the last non-blank
    line before its fence is ``<!-- no-run -->`` (for fragments that are not whole scripts)."""
    lines = (path.read_text() if text is None else text).splitlines()
    blocks: list[CodeBlock] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], m["indent"]
        lang = (m["info"].split() or [""])[0].strip("{}.").lower()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = [line[len(indent):] if line.startswith(indent) else line.lstrip()
                for line in lines[i + 1:end]]
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        blocks.append(CodeBlock(path, i + 1, lang, textwrap.dedent("\n".join(body)) + "\n",
                                lang in PYTHON and before != NO_RUN))
        i = end + 1
    return blocks


def prose(text: str) -> str:
    """``text`` with fenced code blocks blanked out (line numbers kept)."""
    out: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence = m["fence"]
            out.append("")
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def links(text: str) -> list[str]:
    """Targets of inline links and images outside code blocks and code spans."""
    return LINK.findall(CODE_SPAN.sub("", prose(text)))


def code_spans(text: str) -> list[str]:
    """Inline code spans outside fenced blocks."""
    return CODE_SPAN.findall(prose(text))


def slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) and GitHub give a simple heading: markup
    dropped, lower case, punctuation removed, spaces as hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    """The anchors of every heading in ``path`` (a repeated heading gets _1 on MkDocs,
    -1 on GitHub; both are accepted)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in prose(path.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m[1])
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}_{n}")
        out.add(base if n == 0 else f"{base}-{n}")
    return out
