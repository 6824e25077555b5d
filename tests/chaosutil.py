"""What the chaos tests share, for embedded workers (``e2e/test_chaos.py``) and NATS workers
(``e2e/test_nats.py``) alike: sessions under load, a killer driven by results arriving (not by
timers), and the checks that every segment got exactly one answer."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Callable
from typing import Any

from streamer.client import StreamReport, stream_audio
from streamer.protocol import AudioFormat, ErrorEvent, SegmentEvent, ServerEvent
from tests.audio_gen import make_pcm
from tests.e2e.test_simple import SIMPLE, check_channel

FMT = AudioFormat(1, 16000)
CHUNK = 0.25  # seconds per segment


def assert_each_segment_answered_once(events: list[ServerEvent], seconds: float) -> list[str]:
    """Each chunk of the stream has exactly one result or one error; returns the errors."""
    answers = [e for e in events if isinstance(e, SegmentEvent | ErrorEvent)]
    spans = [(round(e.start_time, 6), round(e.end_time, 6)) for e in answers]
    n = round(seconds / CHUNK)
    assert sorted(spans) == [(round(i * CHUNK, 6), round((i + 1) * CHUNK, 6)) for i in range(n)]
    assert spans == sorted(spans)  # and in stream order
    for e in answers:
        if isinstance(e, SegmentEvent):
            assert e.output["count"] == round(CHUNK * 16000)
    errors = [e.message for e in answers if isinstance(e, ErrorEvent)]
    assert all("crashed" in m or "disconnected" in m for m in errors), errors
    return errors


async def load(server: Any, sessions: int, seconds: float,
               on_event: Callable[[ServerEvent], None] | None = None, seed: int = 0
               ) -> list[str]:
    """``sessions`` streams at once, as fast as the gateway takes them; each closes normally
    with every segment answered once. Returns the error answers."""
    reports = await asyncio.gather(*(
        stream_audio(str(server.make_url(SIMPLE)), FMT, make_pcm(FMT, seconds, seed=seed + i),
                     chunk_size=4000, on_event=on_event) for i in range(sessions)))
    errors: list[str] = []
    for report in reports:
        assert report.close_code == 1000
        errors += assert_each_segment_answered_once(report.events, seconds)
    return errors


def assert_fresh_state_after_one_loss(report: StreamReport, seconds: float
                                      ) -> tuple[ErrorEvent, list[SegmentEvent], int]:
    """A ``stateful_counter`` stream whose worker died once, after its fourth result: one
    state-loss notice, every segment answered in order, the running total counting from zero
    again at the notice's segment. Returns the notice, the results and the index of the first
    result from fresh state."""
    lost = [e for e in report.events if isinstance(e, ErrorEvent)]
    assert len(lost) == 1 and "state for this stream was lost" in lost[0].message
    segs = [e for e in report.events if isinstance(e, SegmentEvent)]
    check_channel(report.events, 0, round(seconds * FMT.sample_rate), chunk=4000)
    totals = [e.output["total"] for e in segs]
    restart = next(i for i, e in enumerate(segs) if e.start_time == lost[0].start_time)
    assert restart >= 4
    assert totals[:restart] == [4000 * (i + 1) for i in range(restart)]
    assert totals[restart:] == [4000 * (i + 1) for i in range(len(segs) - restart)]
    return lost[0], segs, restart


class Killer:
    """SIGKILLs a ready worker's process every ``every`` results the clients receive."""

    def __init__(self, pids: Callable[[], list[int]], every: int) -> None:
        self._pids, self._every = pids, every
        self._seen = 0
        self.kills = 0
        self._rng = random.Random(4)

    def __call__(self, event: ServerEvent) -> None:
        if not isinstance(event, SegmentEvent):
            return
        self._seen += 1
        if self._seen % self._every:
            return
        pids = self._pids()
        if pids:
            try:
                os.kill(self._rng.choice(pids), signal.SIGKILL)
                self.kills += 1
            except ProcessLookupError:
                pass
