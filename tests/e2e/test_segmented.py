"""/api/v1/segmented end to end: voice activity, interim and final results, stateful models."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from streamer.client import StreamerClient, stream_audio
from streamer.protocol import ActivityEvent, AudioFormat, ErrorEvent, SegmentEvent, StoppedEvent
from tests.audio_gen import split
from tests.signals import DATA, bursts, pcm16, read_wav, with_background

SEGMENTED = "/api/v1/segmented"
SPANS = [(0.5, 1.5), (2.5, 3.2), (4.0, 5.6)]



def channel_events(events, channel: int) -> list:
    return [e for e in events if getattr(e, "channel", None) == channel]


def finals(events, channel: int = 0) -> list[SegmentEvent]:
    return [e for e in channel_events(events, channel)
            if isinstance(e, SegmentEvent) and e.is_final]


def check_speech_structure(events, channel: int, spans) -> None:
    """active, [interim...], inactive, final per span; times within 100 ms (pre-roll allowed)."""
    evs = [e for e in channel_events(events, channel) if not isinstance(e, StoppedEvent)]
    kinds = []
    for e in evs:
        if isinstance(e, ActivityEvent):
            kinds.append(e.type)
        elif isinstance(e, SegmentEvent):
            kinds.append("final" if e.is_final else "interim")
        else:
            kinds.append("error")
    compact = [k for k in kinds if k != "interim"]
    assert compact == ["active", "inactive", "final"] * len(spans), kinds
    fin = finals(events, channel)
    for seg, (a, b) in zip(fin, spans, strict=True):
        assert a - 0.3 <= seg.start_time <= a + 0.1, (seg, a)  # pre-roll starts it early
        assert abs(seg.end_time - b) <= 0.1, (seg, b)
        assert seg.output["count"] == round((seg.end_time - seg.start_time) * 16000)
    actives = [e for e in evs if isinstance(e, ActivityEvent) and e.type == "active"]
    inactives = [e for e in evs if isinstance(e, ActivityEvent) and e.type == "inactive"]
    assert [round(e.time, 4) for e in actives] == [round(s.start_time, 4) for s in fin]
    assert [round(e.time, 4) for e in inactives] == [round(s.end_time, 4) for s in fin]


@pytest.mark.parametrize("rate", [16000, 48000])
async def test_speech_spans_become_segments(gateway, rate):
    server = await gateway(workers=2)
    audio = with_background(bursts(SPANS, 6.5))
    fmt = AudioFormat(1, rate, 16, False)
    if rate != 16000:
        import soxr
        audio = soxr.resample(audio, 16000, rate).astype(np.float32)
    report = await stream_audio(str(server.make_url(SEGMENTED)), fmt, pcm16(audio),
                                chunk_size=1234)
    assert report.close_code == 1000
    check_speech_structure(report.events, 0, SPANS)
    assert not [e for e in report.events if isinstance(e, ErrorEvent)]


async def test_interim_results_come_every_half_second_and_never_after_the_final(gateway):
    server = await gateway(workers=2, model__delay=0.02, model__mode="sleep")
    spans = [(0.5, 2.6)]
    report = await stream_audio(str(server.make_url(SEGMENTED)), AudioFormat(),
                                pcm16(with_background(bursts(spans, 3.5))),
                                chunk_size=640, interim_results=True)
    evs = channel_events(report.events, 0)
    interims = [e for e in evs if isinstance(e, SegmentEvent) and e.is_final is False]
    final = finals(report.events)[0]
    assert len(interims) >= 3
    assert all(evs.index(i) < evs.index(final) for i in interims)
    assert all(i.start_time == final.start_time for i in interims)
    ends = [i.end_time for i in interims]
    assert ends == sorted(ends)
    assert all(abs((b - a) - 0.5) < 0.021 for a, b in zip(ends, ends[1:], strict=False))
    check_speech_structure(report.events, 0, spans)


async def test_without_interim_results_none_are_sent(gateway):
    server = await gateway(workers=1)
    report = await stream_audio(str(server.make_url(SEGMENTED)), AudioFormat(),
                                pcm16(with_background(bursts([(0.2, 2.5)], 3.0))))
    assert all(e.is_final for e in report.events if isinstance(e, SegmentEvent))


async def test_long_speech_is_cut_at_max_segment_and_open_speech_closed_at_stop(gateway):
    server = await gateway(workers=2, vad__max_segment=2.0)
    audio = with_background(bursts([(0.5, 5.5)], 5.5))  # still speaking when the stream ends
    report = await stream_audio(str(server.make_url(SEGMENTED)), AudioFormat(), pcm16(audio))
    fin = finals(report.events)
    assert [round(s.end_time - s.start_time, 2) for s in fin[:2]] == [2.0, 2.0]
    assert [s.start_time for s in fin[1:]] == [s.end_time for s in fin[:-1]]  # cut, no gap
    assert fin[-1].end_time == pytest.approx(5.5, abs=0.02)  # closed at the stream's end
    inactive = [e for e in channel_events(report.events, 0)
                if isinstance(e, ActivityEvent) and e.type == "inactive"]
    assert inactive[-1].time == pytest.approx(5.5, abs=0.02)


@pytest.mark.sends_invalid
async def test_vad_settings_in_the_start_message(gateway):
    server = await gateway(workers=1)
    audio = with_background(bursts([(0.5, 1.0), (1.3, 1.8)], 2.5))  # a 0.3 s pause
    url = str(server.make_url(SEGMENTED))
    merged = await stream_audio(url, AudioFormat(), pcm16(audio), vad={"min_silence": 0.5})
    apart = await stream_audio(url, AudioFormat(), pcm16(audio), vad={"min_silence": 0.2})
    assert len(finals(merged.events)) == 1 and len(finals(apart.events)) == 2
    bad = await stream_audio(url, AudioFormat(), pcm16(audio), vad={"min_silence": "long"})
    assert bad.close_code == 1007
    assert "'vad.min_silence' must be a number" in bad.events[0].message


async def test_stereo_channels_are_segmented_independently(gateway):
    server = await gateway(workers=2)
    left_spans, right_spans = [(0.5, 1.5), (3.0, 3.8)], [(1.0, 2.6)]
    fmt = AudioFormat(2, 16000, 16, False)
    data = pcm16(with_background(bursts(left_spans, 4.5)),
                 with_background(bursts(right_spans, 4.5), seed=7))
    report = await stream_audio(str(server.make_url(SEGMENTED)), fmt, data, chunk_size=4000)
    check_speech_structure(report.events, 0, left_spans)
    check_speech_structure(report.events, 1, right_spans)


async def test_synthesized_speech_is_split_into_its_sentences(gateway):
    server = await gateway(workers=2, model__name="features")
    speech = read_wav(DATA / "speech_3_sentences.wav")
    report = await stream_audio(str(server.make_url(SEGMENTED)), AudioFormat(),
                                pcm16(speech), chunk_size=3200)
    fin = finals(report.events)
    assert len(fin) == 3
    assert all(s.output["voiced_ratio"] > 0.2 for s in fin)


async def test_stateful_model_keeps_order_and_state_per_stream(gateway):
    server = await gateway(workers=2, model__name="smoothed_features")
    url = str(server.make_url(SEGMENTED))
    spans = [(0.3, 0.9), (1.4, 2.0), (2.5, 3.1), (3.6, 4.2)]
    loud = pcm16(with_background(bursts(spans, 4.6, level_db=-10)))
    quiet = pcm16(with_background(bursts(spans, 4.6, level_db=-30)))
    a, b = await asyncio.gather(stream_audio(url, AudioFormat(), loud, chunk_size=2000),
                                stream_audio(url, AudioFormat(), quiet, chunk_size=2000))
    for report, level in ((a, -10), (b, -30)):
        fin = finals(report.events)
        assert [s.output["segments_seen"] for s in fin] == [1, 2, 3, 4]  # in order, one state
        for s in fin:  # no leak between the concurrent sessions
            assert abs(s.output["smoothed_rms_dbfs"] - level) < 3
    # a second stream on the same socket starts from fresh state: the old state was released
    async with await StreamerClient.connect(url) as client:
        for _ in range(2):
            await client.start(AudioFormat())
            for part in split(loud, 4000):
                await client.send_audio(part)
            await client.stop()
            events = [e async for e in client.events()]
            assert [s.output["segments_seen"] for s in finals(events)] == [1, 2, 3, 4]
            # only this stream's state is held on its worker: earlier streams were released
            assert all(s.output["streams_held"] == 1 for s in finals(events))
