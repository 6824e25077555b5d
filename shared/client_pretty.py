"""``streamer-client --pretty``: events as a timeline a person reads.

One line per speech start, silence, final result and error, with the audio time it refers to.
On a terminal the latest interim result of each channel stays on the last line and is replaced
as newer ones come, and finally by the final result; written to a file, only finals appear.
Model outputs show as ``name value`` pairs (a ``text`` field first, quoted), numbers to four
significant digits, long lists and nested objects summarised.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any, TextIO

from streamer.client_events import Reconnected, StreamEvent
from streamer.protocol import (
    ActivityEvent,
    AudioAckedEvent,
    ErrorEvent,
    FinalizedEvent,
    ResumedEvent,
    SegmentEvent,
    StoppedEvent,
)

TIME_WIDTH = 16


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value if len(value) <= 60 else value[:57] + "..."
    if isinstance(value, list | tuple):
        if len(value) <= 6 and all(not isinstance(v, list | tuple | dict) for v in value):
            return "[" + ", ".join(format_value(v) for v in value) + "]"
        return f"[{len(value)} items]"
    if isinstance(value, dict):
        return f"{{{len(value)} fields}}"
    return str(value)


def format_output(output: dict[str, Any]) -> str:
    """A model's fields, readable: ``"the text"  name value  name value``."""
    parts = []
    text = output.get("text")
    if isinstance(text, str):
        parts.append(f'"{text.strip()}"')
    parts += [f"{key} {format_value(value)}" for key, value in output.items()
              if not (key == "text" and isinstance(text, str))]
    return "  ".join(parts) if parts else "(no output)"


def _point(t: float) -> str:
    return f"{t:.2f} s".rjust(TIME_WIDTH)


def _span(start: float, end: float) -> str:
    return f"{start:.2f}-{end:.2f} s".rjust(TIME_WIDTH)


class Timeline:
    """Call it with each event (an ``on_event`` callback); :meth:`close` at the end."""

    def __init__(self, out: TextIO, channels: int = 1, live: bool = False,
                 width: Callable[[], int] | None = None) -> None:
        self.out = out
        self.channels = channels
        self.live = live  # a terminal: interim results are shown, then replaced
        self._width = width or (lambda: shutil.get_terminal_size().columns)
        self._interim: dict[int, str] = {}
        self._status_shown = False

    def __call__(self, event: StreamEvent) -> None:
        line = self.describe(event)
        if isinstance(event, SegmentEvent) and event.is_final is False:
            if self.live:
                self._interim[event.channel] = line
                self._show_status()
            return
        if isinstance(event, SegmentEvent | ErrorEvent | StoppedEvent):
            self._interim.pop(event.channel, None)
        self._clear_status()
        self.out.write(line + "\n")
        self._show_status()
        self.out.flush()

    def describe(self, event: StreamEvent) -> str:
        ch = f"ch{event.channel}  " if self.channels > 1 else ""
        if isinstance(event, SegmentEvent):
            mark = "... " if event.is_final is False else ""
            return f"{_span(event.start_time, event.end_time)}  {ch}{mark}" \
                   f"{format_output(event.output)}"
        if isinstance(event, ActivityEvent):
            what = "speech" if event.type == "active" else "silence"
            return f"{_point(event.time)}  {ch}{what}"
        if isinstance(event, ErrorEvent):
            when = (_span(event.start_time, event.end_time)
                    if event.start_time is not None and event.end_time is not None
                    else " " * TIME_WIDTH)
            return f"{when}  {ch}error: {event.message}"
        if isinstance(event, StoppedEvent):
            return f"{_point(event.time)}  {ch}end of stream"
        if isinstance(event, FinalizedEvent):
            return f"{_point(event.time)}  {ch}finalized"
        if isinstance(event, AudioAckedEvent):
            return f"{' ' * TIME_WIDTH}  {event.bytes} bytes of audio acknowledged"
        if isinstance(event, Reconnected):
            return (f"{' ' * TIME_WIDTH}  connection lost; resumed after {event.offline:.1f} s "
                    f"({event.resent_bytes} bytes of audio sent again)")
        if isinstance(event, ResumedEvent):
            return f"{' ' * TIME_WIDTH}  resumed from byte {event.audio_bytes}"
        return f"{' ' * TIME_WIDTH}  stream {event.stream_id} started"

    def close(self) -> None:
        self._interim.clear()
        self._clear_status()
        self.out.flush()

    def _show_status(self) -> None:
        if not self.live or not self._interim:
            return
        width = max(20, self._width() - 1)
        lines = [self._interim[c] for c in sorted(self._interim)]
        line = lines[0] if len(lines) == 1 else " | ".join(x.strip() for x in lines)
        if len(line) > width:
            line = line[:width - 3] + "..."
        self.out.write("\r\x1b[K" + line)
        self._status_shown = True
        self.out.flush()

    def _clear_status(self) -> None:
        if self._status_shown:
            self.out.write("\r\x1b[K")
            self._status_shown = False
