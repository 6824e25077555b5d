"""The load tester's live progress on stderr.

On a terminal, one line rewritten in place and cut to the terminal's width (the most useful parts
first: elapsed/total time, sessions, finalization latency, results, errors), cleared at the end.
Anywhere else (a CI log, a file) a plain line every few seconds, so a long run still shows it is
alive without filling the log with carriage returns.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from streamer.loadtest_report import Percentiles, ms


@dataclass(slots=True)
class LiveCounters:
    """Running totals of one run, updated by its sessions."""

    started: float = field(default_factory=time.perf_counter)
    active: int = 0
    ok: int = 0
    failed: int = 0
    refused: int = 0
    results: int = 0
    errors: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=2000))

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def parts(self, total: float | None = None) -> list[str]:
        """The progress line's parts, most useful first."""
        elapsed = self.elapsed
        p = Percentiles.of(list(self.recent))
        clock = f"{elapsed:.0f}/{total:.0f} s" if total else f"{elapsed:.0f} s"
        return [clock,
                f"{self.active} active, {self.ok} ok, {self.failed} failed, "
                f"{self.refused} refused",
                f"finalization p50 {ms(p.p50)} ms, p99 {ms(p.p99)} ms",
                f"{self.results} results ({self.results / max(elapsed, 1e-9):.1f}/s)",
                f"{self.errors} errors"]

    def line(self, total: float | None = None) -> str:
        return " | ".join(self.parts(total))


def fit(parts: list[str], width: int) -> str:
    """As many leading parts as fit in ``width`` columns (the first one cut if it must)."""
    line = parts[0] if parts else ""
    for part in parts[1:]:
        if len(line) + 3 + len(part) > width:
            break
        line += " | " + part
    return line if len(line) <= width else line[:max(0, width - 3)] + "..."


class Progress:
    """Call it with the counters (every half second); :meth:`finish` when the run ends."""

    def __init__(self, out: TextIO, live: bool, every: float = 5.0,
                 width: Callable[[], int] | None = None) -> None:
        self.out = out
        self.live = live
        self.every = every  # seconds between plain lines when not live
        self._width = width or (lambda: shutil.get_terminal_size().columns)
        self.label = ""
        self.total: float | None = None
        self._last_plain = 0.0
        self._shown = False

    def begin(self, total: float | None, label: str = "") -> None:
        """A new run: its expected length in seconds (None if unknown) and a prefix."""
        self.total = total
        self.label = label
        self._last_plain = time.perf_counter()

    def __call__(self, live: LiveCounters) -> None:
        parts = ([self.label] if self.label else []) + live.parts(self.total)
        if self.live:
            self.out.write("\r" + fit(parts, max(20, self._width() - 1)) + "\x1b[K")
            self._shown = True
        else:
            now = time.perf_counter()
            if now - self._last_plain < self.every:
                return
            self._last_plain = now
            self.out.write(" | ".join(parts) + "\n")
        self.out.flush()

    def finish(self) -> None:
        """Clear the in-place line: what follows (a probe's verdict, the report) replaces it."""
        if self._shown:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self._shown = False
