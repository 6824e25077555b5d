"""The load tester's progress: fitted to the terminal, or plain lines every few seconds."""

from __future__ import annotations

import io

from streamer.loadtest_progress import LiveCounters, Progress, fit


def counters() -> LiveCounters:
    live = LiveCounters(active=12, ok=30, failed=1, refused=2, results=456, errors=3)
    live.recent.extend([0.2, 0.3, 0.9])
    return live


def test_the_line_keeps_the_leading_parts_that_fit():
    parts = ["12/30 s", "12 active, 30 ok, 1 failed, 2 refused", "p50 300 ms", "456 results"]
    assert fit(parts, 80) == " | ".join(parts)
    assert fit(parts, 50) == "12/30 s | 12 active, 30 ok, 1 failed, 2 refused"
    assert fit(parts, 10) == "12/30 s"
    assert fit(["a very long first part"], 10) == "a very ..."


def test_on_a_terminal_one_line_is_rewritten_within_the_width():
    for width in (40, 80, 200):
        out = io.StringIO()
        progress = Progress(out, live=True, width=lambda w=width: w)
        progress.begin(30.0, "probe 2 of about 9, 4 sessions")
        progress(counters())
        progress(counters())
        progress.finish()
        text = out.getvalue()
        assert "\n" not in text and text.endswith("\r\x1b[K")  # cleared for what follows
        for line in text.split("\r")[1:-1]:
            shown = line.replace("\x1b[K", "")
            assert 0 < len(shown) <= width - 1
            assert shown.startswith("probe 2 of about 9")
        if width >= 80:
            assert "/30 s" in text  # elapsed/total


def test_elsewhere_plain_lines_every_few_seconds():
    out = io.StringIO()
    progress = Progress(out, live=False, every=0.0)
    progress.begin(None)
    progress(counters())
    progress(counters())
    progress.finish()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert "12 active, 30 ok, 1 failed, 2 refused" in lines[0]
    assert "finalization p50 300.0 ms" in lines[0] and "456 results" in lines[0]
    quiet = io.StringIO()
    rare = Progress(quiet, live=False, every=3600.0)
    rare.begin(10.0)
    rare(counters())
    assert quiet.getvalue() == ""  # the next line is due only after `every` seconds
