"""Telephony audio end to end: 8 kHz mu-law and A-law streams through the real gateway on
/simple, compared with the same audio sent as 16-bit PCM."""

from __future__ import annotations

import dataclasses
import json

import aiohttp
import numpy as np
import pytest

from streamer.client import stream_audio
from streamer.protocol import AudioFormat, ErrorEvent, SegmentEvent, StoppedEvent
from tests.g711_ref import ENCODERS

SIMPLE = "/api/v1/simple"


def tone(seconds: float, channels: int, rate: int = 8000) -> np.ndarray:
    """int16 frames: a 200 Hz tone per channel (louder on channel 0), interleaved."""
    t = np.arange(int(seconds * rate)) / rate
    chans = [(0.5 / (c + 1)) * np.sin(2 * np.pi * (200 + 100 * c) * t) for c in range(channels)]
    return np.round(np.stack(chans, axis=1) * 32767).astype(np.int16)


def segments(events: list, channel: int) -> list[SegmentEvent]:
    return [e for e in events if isinstance(e, SegmentEvent) and e.channel == channel]


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
@pytest.mark.parametrize("channels", [1, 2])
async def test_g711_at_8k_gives_the_samples_and_times_of_its_duration(gateway, encoding,
                                                                      channels):
    server = await gateway(workers=2)
    seconds = 1.7
    fmt = AudioFormat(channels, 8000, 8, False, encoding)
    data = ENCODERS[encoding](tone(seconds, channels)).tobytes()
    assert len(data) == seconds * 8000 * channels
    report = await stream_audio(str(server.make_url(SIMPLE)), fmt, data, chunk_size=160 * channels)
    assert report.close_code == 1000
    assert not [e for e in report.events if isinstance(e, ErrorEvent)]
    for channel in range(channels):
        segs = segments(report.events, channel)
        assert [s.output["count"] for s in segs] == [8000, 8000, 8000, 3200]  # 16 kHz samples
        assert [(s.start_time, s.end_time) for s in segs] == [
            (0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 1.7)]
        stopped = [e for e in report.events if isinstance(e, StoppedEvent) and e.channel == channel]
        assert len(stopped) == 1 and stopped[0].time == seconds


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
async def test_g711_reaches_the_model_as_the_pcm_it_was_made_from(gateway, encoding):
    """The features model measures what it got: loudness and pitch match the 16-bit original."""
    server = await gateway(workers=2, model__name="features")
    url = str(server.make_url(SIMPLE))
    pcm = tone(1.0, 2)
    g711 = AudioFormat(2, 8000, 8, False, encoding)
    linear = dataclasses.replace(g711, encoding="pcm", bit_depth=16)
    got = await stream_audio(url, g711, ENCODERS[encoding](pcm).tobytes())
    want = await stream_audio(url, linear, pcm.astype("<i2").tobytes())
    for channel, pitch in ((0, 200), (1, 300)):
        a, b = segments(got.events, channel), segments(want.events, channel)
        assert len(a) == len(b) == 2
        for x, y in zip(a, b, strict=True):
            assert abs(x.output["rms_dbfs"] - y.output["rms_dbfs"]) < 0.2
            assert abs(x.output["median_pitch_hz"] - pitch) < 3
            assert abs(x.output["median_pitch_hz"] - y.output["median_pitch_hz"]) < 1


@pytest.mark.sends_invalid
async def test_a_g711_format_with_the_wrong_sample_size_is_refused(gateway):
    server = await gateway(workers=1)
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url(SIMPLE)) as ws:
        await ws.send_str(json.dumps({"request": "start",
                                      "format": {"encoding": "alaw", "bit_depth": 16}}))
        event = await ws.receive_json()
        assert event["type"] == "error"
        assert "encoding alaw has 8-bit integer samples" in event["message"]
        assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1003
