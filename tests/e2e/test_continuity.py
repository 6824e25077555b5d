"""Streams that outlast a pause or need a result now: keepalive and finalize, end to end."""

from __future__ import annotations

import asyncio
import time

from streamer.client import StreamerClient
from streamer.protocol import (
    ActivityEvent,
    AudioAckedEvent,
    AudioFormat,
    ErrorEvent,
    FinalizedEvent,
    SegmentEvent,
    ServerEvent,
    StartedEvent,
    StoppedEvent,
)
from tests.signals import bursts, pcm16, with_background

SIMPLE, SEGMENTED = "/api/v1/simple", "/api/v1/segmented"



async def next_event(client: StreamerClient, within: float = 10.0) -> ServerEvent:
    async with asyncio.timeout(within):
        event = await client.receive()
    assert event is not None, f"socket closed: {client.close_code} {client.close_reason}"
    return event


async def events_until(client: StreamerClient, kind: type, within: float = 10.0) -> list:
    """Events up to and including the first of ``kind``."""
    got: list[ServerEvent] = []
    while not got or not isinstance(got[-1], kind):
        got.append(await next_event(client, within))
    return got


def results(events: list) -> list:
    """Without the stream's bookkeeping events (started, audio_acked)."""
    return [e for e in events if not isinstance(e, StartedEvent | AudioAckedEvent)]


async def test_keepalive_keeps_a_silent_stream_open_past_the_idle_timeout(gateway):
    idle = 0.6
    server = await gateway(workers=1, session__idle_timeout=idle)
    url = str(server.make_url(SIMPLE))
    async with await StreamerClient.connect(url) as client:
        await client.start(AudioFormat())
        await client.send_audio(b"\x00\x00" * 8000)
        silent_from = time.monotonic()
        while time.monotonic() - silent_from < 4 * idle:  # a muted microphone, kept alive
            await client.keepalive()
            await asyncio.sleep(idle / 3)  # the client's pace, not a wait for the server
        await client.send_audio(b"\x00\x00" * 8000)
        await client.stop()
        events = await events_until(client, StoppedEvent)
    assert [e.output["count"] for e in events if isinstance(e, SegmentEvent)] == [8000, 8000]
    assert not [e for e in events if isinstance(e, ErrorEvent)]
    # the same silence without keepalive ends the stream after idle_timeout
    async with await StreamerClient.connect(url) as client:
        await client.start(AudioFormat())
        await client.send_audio(b"\x00\x00" * 8000)
        events = await events_until(client, ErrorEvent, within=5 * idle)
        assert "no audio or control message" in events[-1].message
        assert await client.receive() is None and client.close_code == 1008


async def test_finalize_on_simple_sends_the_partial_chunk_now_and_the_stream_goes_on(gateway):
    server = await gateway(workers=1)
    async with await StreamerClient.connect(str(server.make_url(SIMPLE))) as client:
        await client.start(AudioFormat())
        await client.send_audio(b"\x01\x00" * 4800)  # 0.3 s: less than a 0.5 s chunk
        await client.finalize()
        first = await events_until(client, FinalizedEvent)
        await client.send_audio(b"\x01\x00" * 8000)
        await client.stop()
        rest = await events_until(client, StoppedEvent)
    seg, done = results(first)
    assert isinstance(seg, SegmentEvent) and seg.from_finalize
    assert (seg.start_time, seg.end_time, seg.output["count"]) == (0.0, 0.3, 4800)
    assert isinstance(done, FinalizedEvent) and done.time == 0.3
    segs = [e for e in rest if isinstance(e, SegmentEvent)]
    assert [(s.start_time, s.end_time) for s in segs] == [(0.3, 0.8)]
    assert not any(s.from_finalize for s in segs)


async def test_finalize_mid_speech_gives_the_final_at_once_and_the_stream_continues(gateway):
    server = await gateway(workers=2)
    audio = with_background(bursts([(0.5, 2.0), (3.0, 3.8)], 4.5))
    cut = int(1.2 * 16000)  # inside the first speech
    async with await StreamerClient.connect(str(server.make_url(SEGMENTED))) as client:
        await client.start(AudioFormat(), interim_results=True)
        for i in range(0, cut, 1600):
            await client.send_audio(pcm16(audio[i:min(i + 1600, cut)]))
        await client.finalize()  # the speech goes on in audio not sent yet: only finalize ends it
        first = await events_until(client, FinalizedEvent)
        for i in range(cut, len(audio), 1600):
            await client.send_audio(pcm16(audio[i:i + 1600]))
        await client.stop()
        rest = await events_until(client, StoppedEvent)
    finals = [e for e in first if isinstance(e, SegmentEvent) and e.is_final]
    assert len(finals) == 1 and finals[0].from_finalize, first
    assert 0.2 <= finals[0].start_time <= 0.55 and abs(finals[0].end_time - 1.2) <= 0.05
    assert results(first)[-2] is finals[0]
    assert [e.type for e in first if isinstance(e, ActivityEvent)] == ["active", "inactive"]
    # the stream went on with the same timeline: the rest of the speech, then the next one
    rest_finals = [e for e in rest if isinstance(e, SegmentEvent) and e.is_final]
    assert not any(getattr(e, "from_finalize", False) for e in rest)
    assert len(rest_finals) == 2, rest
    assert rest_finals[0].start_time >= finals[0].end_time
    assert abs(rest_finals[0].end_time - 2.0) <= 0.1
    assert abs(rest_finals[1].start_time - 3.0) <= 0.3 and abs(rest_finals[1].end_time - 3.8) <= 0.1
    assert all(e.start_time >= finals[0].end_time for e in rest if isinstance(e, SegmentEvent))
    assert not [e for e in first + rest if isinstance(e, ErrorEvent)]
