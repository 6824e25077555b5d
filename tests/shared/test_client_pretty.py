"""streamer-client --pretty: a timeline a person reads, interim results replaced in place."""

from __future__ import annotations

import io

from streamer.client_pretty import Timeline, format_output
from streamer.protocol import ActivityEvent, ErrorEvent, SegmentEvent, StoppedEvent

EVENTS = [
    ActivityEvent("active", 0, 0.1),
    SegmentEvent(0, 0.1, 0.6, {"text": "hello"}, is_final=False),
    SegmentEvent(0, 0.1, 1.1, {"text": "hello wor"}, is_final=False),
    ActivityEvent("inactive", 0, 1.3),
    SegmentEvent(0, 0.1, 1.3, {"text": "hello world", "confidence": 0.91234}, is_final=True),
    ErrorEvent(0, "inference failed: boom", 1.5, 2.0),
    StoppedEvent(0, 2.0),
]


def test_a_file_gets_speech_silence_finals_and_errors_but_no_interim():
    out = io.StringIO()
    timeline = Timeline(out, channels=1, live=False)
    for event in EVENTS:
        timeline(event)
    timeline.close()
    assert out.getvalue().splitlines() == [
        "          0.10 s  speech",
        "          1.30 s  silence",
        "     0.10-1.30 s  \"hello world\"  confidence 0.9123",
        "     1.50-2.00 s  error: inference failed: boom",
        "          2.00 s  end of stream",
    ]


def test_on_a_terminal_interim_text_is_replaced_by_the_final():
    out = io.StringIO()
    timeline = Timeline(out, channels=1, live=True, width=lambda: 80)
    for event in EVENTS:
        timeline(event)
    timeline.close()
    screen = _render(out.getvalue())
    assert screen == [
        "          0.10 s  speech",
        "          1.30 s  silence",
        "     0.10-1.30 s  \"hello world\"  confidence 0.9123",
        "     1.50-2.00 s  error: inference failed: boom",
        "          2.00 s  end of stream",
    ]
    assert "... \"hello wor\"" in out.getvalue()  # it was shown while it was the latest


def test_interim_lines_fit_the_terminal_and_channels_are_named():
    out = io.StringIO()
    timeline = Timeline(out, channels=2, live=True, width=lambda: 40)
    timeline(SegmentEvent(1, 0.0, 0.5, {"text": "a long interim transcript " * 4},
                          is_final=False))
    status = out.getvalue().rsplit("\r\x1b[K", 1)[-1]
    assert len(status) <= 39 and status.endswith("...") and "ch1" in status


def test_model_fields_are_readable():
    assert format_output({"count": 8000}) == "count 8000"
    assert format_output({"rms_dbfs": -23.456789, "median_pitch_hz": None, "ok": True,
                          "bands": [1.0, 2.5], "words": list(range(20)), "meta": {"a": 1}}) == \
        "rms_dbfs -23.46  median_pitch_hz -  ok yes  bands [1, 2.5]  words [20 items]  " \
        "meta {1 fields}"
    assert format_output({}) == "(no output)"


def _render(written: str) -> list[str]:
    """What a terminal shows: '\\r' returns to the line start, ESC[K clears the rest of it."""
    lines = [""]
    for piece in written.replace("\x1b[K", "\x00").split("\n"):
        row = ""
        for i, part in enumerate(piece.split("\r")):
            if i:
                row = ""  # every \r here is followed by ESC[K: the line is rewritten
            row += part.replace("\x00", "")
        lines[-1] = row
        lines.append("")
    return [line for line in lines if line]
