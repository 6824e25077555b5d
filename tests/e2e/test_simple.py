"""The whole path on a real gateway with real worker processes, over real websockets."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import numpy as np
import pytest

from streamer.client import StreamerClient, stream_audio
from streamer.gateway.audio import Decoder
from streamer.protocol import AudioFormat, ErrorEvent, SegmentEvent, StoppedEvent
from tests.audio_gen import make_pcm, split
from tests.conftest import wait_until

SIMPLE = "/api/v1/simple"


def resampled_length(fmt: AudioFormat, data: bytes) -> int:
    dec = Decoder(fmt)
    dec.feed(data)
    dec.flush()
    return dec.samples_out


def check_channel(events, channel: int, expected_samples: int, chunk: int = 8000) -> None:
    segs = [e for e in events if isinstance(e, SegmentEvent) and e.channel == channel]
    assert segs, f"no results on channel {channel}"
    assert sum(e.output["count"] for e in segs) == expected_samples
    assert segs[0].start_time == 0.0
    for a, b in zip(segs, segs[1:], strict=False):
        assert a.end_time == b.start_time  # contiguous and in order
        assert a.output["count"] == chunk
    assert segs[-1].end_time == pytest.approx(expected_samples / 16000, abs=1e-5)
    assert segs[-1].is_final is None  # absent on /simple
    stopped = [e for e in events if isinstance(e, StoppedEvent) and e.channel == channel]
    assert len(stopped) == 1 and events.index(stopped[0]) > events.index(segs[-1])


@pytest.mark.parametrize("fmt, frame_size", [
    (AudioFormat(1, 16000, 16, False), 1001),
    (AudioFormat(2, 16000, 16, False), 4097),
    (AudioFormat(1, 44100, 16, False), 333),
    (AudioFormat(2, 44100, 32, True), 7777),
    (AudioFormat(2, 48000, 16, False), 3),
    (AudioFormat(1, 48000, 32, True), 65537),
])
async def test_no_audio_is_lost_and_results_come_in_order(gateway, fmt, frame_size):
    server = await gateway(workers=2, model__jitter=0.01, model__mode="sleep")
    seconds = 2.3
    data = make_pcm(fmt, seconds)
    chunk_size = frame_size if len(data) // frame_size < 3000 else 997
    report = await stream_audio(str(server.make_url(SIMPLE)), fmt, data, chunk_size=chunk_size)
    assert report.close_code == 1000
    expected = resampled_length(fmt, data)
    assert abs(expected - seconds * 16000) <= 16  # within 1 ms of the duration
    for channel in range(fmt.channels):
        check_channel(report.events, channel, expected)
    assert not [e for e in report.events if isinstance(e, ErrorEvent)]


async def test_stop_without_disconnect_then_a_new_stream_on_the_same_socket(gateway):
    server = await gateway(workers=2)
    async with await StreamerClient.connect(str(server.make_url(SIMPLE))) as client:
        for fmt, seconds in ((AudioFormat(1, 16000), 1.2), (AudioFormat(2, 48000), 0.7)):
            await client.start(fmt)
            for part in split(make_pcm(fmt, seconds), 5000):
                await client.send_audio(part)
            await client.stop(disconnect=False)
            events = [e async for e in client.events()]
            for channel in range(fmt.channels):
                check_channel(events, channel, round(seconds * 16000))
        assert not client.ws.closed
        # a start while streaming ends the current stream the same way, then begins anew
        fmt = AudioFormat(1, 16000)
        await client.start(fmt)
        await client.send_audio(make_pcm(fmt, 0.75))
        await client.start(fmt)
        first = [e async for e in client.events()]
        check_channel(first, 0, 12000)
        await client.send_audio(make_pcm(fmt, 0.25))
        await client.stop(disconnect=True)
        second = [e async for e in client.events()]
        check_channel(second, 0, 4000)
        await client.ws.receive()
        assert client.close_code == 1000


async def test_client_leaving_mid_stream_cancels_its_work(gateway):
    server = await gateway(workers=2, model__delay=0.05, model__mode="sleep",
                           session__max_inflight=64)
    fmt = AudioFormat(1, 16000)
    client = await StreamerClient.connect(str(server.make_url(SIMPLE)))
    await client.start(fmt)
    await client.send_audio(make_pcm(fmt, 20.0))  # 40 segments, about 1 s of work
    async with aiohttp.ClientSession() as http:
        async def health():
            async with http.get(server.make_url("/api/v1/health")) as r:
                return await r.json()

        await wait_until(lambda: _busy(health), what="work in flight")
        await client.close()
        body = await wait_until(lambda: _idle(health), within=10, what="work cancelled")
    assert body["sessions"] == 0 and body["queued"] == 0 and body["inflight"] == 0
    # the gateway still serves
    report = await stream_audio(str(server.make_url(SIMPLE)), fmt, make_pcm(fmt, 0.5))
    check_channel(report.events, 0, 8000)


async def _busy(health):
    body = await health()
    return body["inflight"] > 0 and body


async def _idle(health):
    body = await health()
    return body["sessions"] == 0 and body["queued"] == 0 and body["inflight"] == 0 and body


async def test_failed_inference_gives_error_events_and_the_gateway_keeps_serving(gateway):
    server = await gateway(workers=2, model__failure_rate=1.0)
    fmt = AudioFormat(1, 16000)
    for _ in range(2):
        report = await stream_audio(str(server.make_url(SIMPLE)), fmt, make_pcm(fmt, 1.25))
        errors = [e for e in report.events if isinstance(e, ErrorEvent)]
        assert [(e.start_time, e.end_time) for e in errors] == [(0.0, 0.5), (0.5, 1.0),
                                                                 (1.0, 1.25)]
        assert all("failure_rate" in e.message for e in errors)
        assert report.close_code == 1000


async def test_a_panicking_model_really_kills_workers_and_they_come_back(gateway):
    server = await gateway(workers=2, model__panic_rate=1.0, pool__max_retries=1)
    fmt = AudioFormat(1, 16000)
    report = await stream_audio(str(server.make_url(SIMPLE)), fmt, make_pcm(fmt, 1.0))
    errors = [e for e in report.events if isinstance(e, ErrorEvent)]
    assert len(errors) == 2
    assert all("crashed (tried 2 times; this segment is not sent again)" in e.message
               for e in errors)
    async with aiohttp.ClientSession() as http:
        async def restarted():
            async with http.get(server.make_url("/api/v1/health")) as r:
                body = await r.json()
            return body["workers"]["restarts"] >= 2 and body["workers"]["ready"] == 2 and body

        await wait_until(restarted, what="workers respawned")


async def test_the_event_loop_keeps_running_while_workers_spin(gateway):
    """Workers burn CPU holding their GIL; the gateway's loop (this process) must not notice.
    The inline baseline, the same model on the loop's thread, shows what blocking looks like."""
    lags = {}
    for pool in ("embedded", "inline"):
        server = await gateway(workers=2, pool=pool, model__constant_factor=0.5,
                               model__mode="spin")
        fmt = AudioFormat(1, 16000)
        clients = [stream_audio(str(server.make_url(SIMPLE)), fmt, make_pcm(fmt, 3.0),
                                chunk_size=16000) for _ in range(3)]
        lags[pool] = await _max_loop_lag_during(asyncio.gather(*clients), server)
        await server.close()
    assert lags["embedded"] < 0.2, lags  # generous: shared machines hiccup
    assert lags["inline"] > 0.2, lags    # 0.25 s of spinning per segment on the loop


async def _max_loop_lag_during(work, server) -> float:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    worst = 0.0
    async with aiohttp.ClientSession() as http:
        while not task.done():
            t0 = loop.time()
            await asyncio.sleep(0.01)
            worst = max(worst, loop.time() - t0 - 0.01)
            async with http.get(server.make_url("/api/v1/health")) as r:
                assert r.status == 200
    reports = await task
    for report in reports:
        assert sum(e.output["count"] for e in report.events if isinstance(e, SegmentEvent)) \
            == 48000
    return worst


@pytest.mark.sends_invalid
async def test_protocol_errors_get_an_error_event_and_a_close_code(gateway):
    server = await gateway(workers=1, server__max_msg_size=4096)
    url = str(server.make_url(SIMPLE))
    cases = [
        (b"\x00\x01", 1008, "expected 'start' before audio, got a binary frame"),
        ("{not json", 1007, "not valid JSON"),
        (json.dumps({"request": "start", "format": {"bit_depth": 8}}), 1003, "bit_depth 8"),
        (json.dumps({"request": "start", "vad": {}}), 1008, "not used on /api/v1/simple"),
    ]
    async with aiohttp.ClientSession() as http:
        for payload, code, words in cases:
            async with http.ws_connect(url) as ws:
                if isinstance(payload, bytes):
                    await ws.send_bytes(payload)
                else:
                    await ws.send_str(payload)
                msg = await ws.receive_json()
                assert msg["type"] == "error" and words in msg["message"], msg
                assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE
                assert ws.close_code == code
        async with http.ws_connect(url) as ws:  # stop without start is not fatal
            await ws.send_str('{"request": "stop"}')
            msg = await ws.receive_json()
            assert "no stream is running" in msg["message"]
            await ws.send_str('{"request": "start"}')
            await ws.send_bytes(b"\x00\x00" * 100)
            await ws.send_str('{"request": "stop", "disconnect": true}')
            msgs = [json.loads(m.data) async for m in ws]
            assert [m["type"] for m in msgs] == ["started", "audio_acked", "segment", "stopped"]
            assert msgs[2]["count"] == 100
            assert ws.close_code == 1000
        async with http.ws_connect(url) as ws:  # a frame over max_msg_size
            await ws.send_str('{"request": "start"}')
            await ws.send_bytes(b"\x00" * 8192)
            assert [(await ws.receive_json())["type"] for _ in range(3)] == [
                "started", "audio_acked", "stopped"]  # the stream was finished
            msg = await ws.receive_json()
            assert msg["message"] == "audio frame of 8192 bytes; at most 4096 are accepted"
            assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1009
    report = await stream_audio(url, AudioFormat(), make_pcm(AudioFormat(), 0.5), chunk_size=4000)
    check_channel(report.events, 0, 8000)


async def test_incomplete_last_frame_is_reported_not_silently_dropped(gateway):
    server = await gateway(workers=1)
    fmt = AudioFormat(2, 16000)
    data = make_pcm(fmt, 0.5) + b"\x01\x02\x03"
    report = await stream_audio(str(server.make_url(SIMPLE)), fmt, data)
    errors = [e for e in report.events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and "last 3 bytes do not make a whole frame of 4" in \
        errors[0].message
    check_channel(report.events, 0, 8000)


def test_decoder_reference_matches_duration():
    fmt = AudioFormat(2, 44100, 16, False)
    assert abs(resampled_length(fmt, make_pcm(fmt, 1.0)) - 16000) <= 16
    audio = Decoder(fmt).feed(make_pcm(fmt, 0.1))
    assert audio.dtype == np.float32 and audio.shape[0] == 2 and audio.shape[1] > 0
