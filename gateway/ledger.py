"""Every planned output of a stream, settled exactly once, released in stream order.

An output is *planned* when the stream knows it will send it (a segment handed to the pool, an
activity event, the final ``stopped``): it takes the channel's next sequence number then. It is
*settled* exactly once: with the event to send, with nothing (its job was withdrawn), or by the
stream's end (:meth:`Ledger.close`). :meth:`Ledger.settle_by` settles even when building the
event raises, so no slot can stay open and hold back the events behind it. Released events leave
through one callable, the single place where a later layer can number or buffer them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from streamer.errors import StreamerError
from streamer.gateway.reorder import Reorderer

log = logging.getLogger(__name__)


class LedgerError(StreamerError):
    """An output settled twice or never planned: the stream's bookkeeping is broken."""


@dataclass(frozen=True, slots=True)
class Slot:
    """One planned output: its channel and its sequence number on that channel."""

    channel: int
    seq: int


@dataclass(slots=True)
class Outgoing:
    """One text frame ready to send, with what the metrics need once it is sent."""

    text: str
    segment_seconds: float | None = None  # set for a segment's answer (frees a session slot)
    ok: bool = True
    kind: str = "final"                   # or "interim"
    audio_ready_at: float | None = None   # when the audio at the answer's end arrived
    audio_started_at: float | None = None  # when the audio at its start arrived
    first_audio_at: float | None = None   # the stream's first audio frame
    stream: int = 0                       # the stream's number in its session
    notice: str | None = None             # an error event sent just before, in the same slot


class Ledger:
    def __init__(self, emit: Callable[[Outgoing], None]) -> None:
        self._emit = emit
        self._reorder: Reorderer[Outgoing | None] = Reorderer(self._release)
        self._open: dict[Slot, float] = {}  # planned, not settled -> seconds of audio it covers
        self._closed = False

    def plan(self, channel: int, seconds: float = 0.0) -> Slot:
        if self._closed:
            raise LedgerError("output planned after the stream was closed")
        slot = Slot(channel, self._reorder.reserve(channel))
        self._open[slot] = seconds
        return slot

    def settle(self, slot: Slot, out: Outgoing | None) -> None:
        """Fill ``slot`` with ``out`` (None: nothing to send). After :meth:`close` this is a
        no-op: the stream's end already settled everything."""
        if self._closed:
            return
        if self._open.pop(slot, None) is None:
            raise LedgerError(f"channel {slot.channel} output {slot.seq} settled twice or "
                              "never planned")
        self._reorder.put(slot.channel, slot.seq, out)

    def settle_by(self, slot: Slot, build: Callable[[], Outgoing | None],
                  fallback: Callable[[Exception], Outgoing]) -> None:
        """Settle ``slot`` with what ``build`` returns; if it raises, with ``fallback(exc)``;
        if that raises too (or the task is cancelled), with nothing. Never left open."""
        out: Outgoing | None = None
        try:
            try:
                out = build()
            except Exception as exc:
                log.exception("handling the output of channel %d seq %d failed", slot.channel,
                              slot.seq)
                out = fallback(exc)
        finally:
            self.settle(slot, out)

    def add(self, channel: int, out: Outgoing) -> None:
        """Plan and settle at once: an event known now (activity, stopped, errors)."""
        self.settle(self.plan(channel), out)

    def close(self) -> int:
        """The stream is over: every open output is settled with nothing. Returns how many."""
        dropped = len(self._open)
        self._open.clear()
        self._closed = True
        return dropped

    @property
    def open(self) -> int:
        """Outputs planned and not settled."""
        return len(self._open)

    @property
    def waiting(self) -> int:
        """Outputs planned and not yet released (settled ones may wait behind open ones)."""
        return 0 if self._closed else self._reorder.waiting

    @property
    def backlog_seconds(self) -> float:
        return sum(self._open.values())

    def _release(self, channel: int, out: Outgoing | None) -> None:
        if out is not None and not self._closed:
            self._emit(out)
