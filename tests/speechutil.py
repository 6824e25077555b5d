"""One sentence streamed to a speech model with interim results, checked the way every speech
model's interims must behave; and the segments a report holds."""

from __future__ import annotations

import numpy as np

from streamer.client import StreamReport, stream_audio
from streamer.protocol import AudioFormat, SegmentEvent
from tests.signals import pcm16


def segments(report: StreamReport, final: bool | None) -> list[SegmentEvent]:
    return [e for e in report.events if isinstance(e, SegmentEvent) and e.is_final is final]


async def sentence_with_interims(url: str, audio: np.ndarray
                                 ) -> tuple[SegmentEvent, list[SegmentEvent]]:
    """The final result and the interims before it: at least three, text only, the last one
    not empty, and none after the final."""
    report = await stream_audio(url, AudioFormat(), pcm16(audio), chunk_size=3200,
                                interim_results=True, vad={"interim_interval": 0.3})
    assert report.close_code == 1000
    (final,) = segments(report, True)
    interims = segments(report, False)
    assert len(interims) >= 3
    assert all(set(i.output) == {"text"} for i in interims)
    assert interims[-1].output["text"]
    assert report.events.index(final) > report.events.index(interims[-1])
    return final, interims
