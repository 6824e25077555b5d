"""The client library against a real gateway with real workers: connect/send/iterate/stop,
stream_file, and every failure as a typed error (never an aiohttp exception)."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import numpy as np
import pytest
import soundfile

import streamer.client
from streamer.client import (
    ActivityEvent,
    AudioFormat,
    ClientError,
    ConnectFailed,
    ErrorEvent,
    InvalidURL,
    Refused,
    SegmentEvent,
    StoppedEvent,
    StreamClosed,
    connect,
    send_paced,
    stream_file,
)
from tests.audio_gen import make_pcm, write_wav
from tests.signals import DATA

SIMPLE = "/api/v1/simple"
SEGMENTED = "/api/v1/segmented"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_connect_send_stop_and_iterate_typed_events(gateway):
    server = await gateway(workers=2)
    fmt = AudioFormat(channels=2, sample_rate=8000)
    async with connect(str(server.make_url(SIMPLE)), format=fmt) as stream:
        for start in range(0, 8000, 1000):  # 1 s, as a live source would send it
            await stream.send(make_pcm(fmt, 1.0)[start * 4:(start + 1000) * 4])
        await stream.stop()
        await stream.stop()  # a second stop is a no-op
        events = [event async for event in stream]
    assert stream.done and stream.close_code == 1000
    for channel in (0, 1):
        segs = [e for e in events if isinstance(e, SegmentEvent) and e.channel == channel]
        assert [(s.start_time, s.end_time) for s in segs] == [(0.0, 0.5), (0.5, 1.0)]
        assert [s.output["count"] for s in segs] == [8000, 8000]  # resampled to 16 kHz
    assert sorted(e.channel for e in events if isinstance(e, StoppedEvent)) == [0, 1]


async def test_numpy_floats_are_sent_in_the_streams_format(gateway):
    server = await gateway(workers=1)
    t = np.arange(16000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    for fmt in (AudioFormat(), AudioFormat(bit_depth=32, is_float=True)):
        stream = await connect(str(server.make_url(SIMPLE)), format=fmt)  # awaitable too
        try:
            await stream.send(x)
            await stream.stop()
            counts = [e.output["count"] async for e in stream if isinstance(e, SegmentEvent)]
        finally:
            await stream.close()
        assert counts == [8000, 8000]
    with pytest.raises(ValueError, match="cannot send a int32 array"):
        async with connect(str(server.make_url(SIMPLE))) as stream:
            await stream.send(np.zeros(10, np.int32))


async def test_stream_file_gets_every_result_for_a_flac_file(gateway, tmp_path):
    server = await gateway(workers=2)
    rate = 44100
    t = np.arange(int(1.3 * rate)) / rate
    path = tmp_path / "tone.flac"
    soundfile.write(str(path), 0.3 * np.sin(2 * np.pi * 300 * t), rate, subtype="PCM_24")
    seen: list[object] = []
    report = await stream_file(str(server.make_url(SIMPLE)), path, on_event=seen.append)
    segs = [e for e in report.events if isinstance(e, SegmentEvent)]
    assert [(s.start_time, s.end_time) for s in segs] == [(0.0, 0.5), (0.5, 1.0), (1.0, 1.3)]
    assert sum(s.output["count"] for s in segs) == 20800  # 1.3 s at 16 kHz
    assert seen == report.events and report.results == 3 and report.errors == 0
    assert report.close_code == 1000 and report.audio_seconds == pytest.approx(1.3)


async def test_segmented_speech_with_interim_results(gateway):
    server = await gateway(workers=2)
    report = await stream_file(str(server.make_url(SEGMENTED)), DATA / "speech_3_sentences.wav",
                               interim_results=True)
    kinds = {type(e) for e in report.events}
    assert {ActivityEvent, SegmentEvent, StoppedEvent} <= kinds
    assert any(isinstance(e, SegmentEvent) and e.is_final is False for e in report.events)
    finals = [e for e in report.events if isinstance(e, SegmentEvent) and e.is_final]
    assert len(finals) == report.results >= 2


async def test_a_refusal_carries_the_gateways_reason_message_and_retry_after(gateway):
    server = await gateway(workers=1, server__max_sessions=1)
    url = str(server.make_url(SIMPLE))
    async with connect(url):
        with pytest.raises(Refused) as info:
            async with connect(url):
                pass
    refused = info.value
    assert refused.reason == "max_sessions" and refused.retry_after == 5
    assert "limit of 1 concurrent sessions" in refused.message
    assert str(refused) == ("refused by the gateway (max_sessions): the server is at its limit "
                            "of 1 concurrent sessions; retry after 5 s")
    assert isinstance(refused, ConnectFailed) and refused.status == 503
    assert not isinstance(refused, aiohttp.ClientError)


async def test_retry_on_refusal_waits_the_retry_after_then_connects(gateway):
    server = await gateway(workers=1, server__max_sessions=1)
    url = str(server.make_url(SIMPLE))
    holder = await connect(url)
    refusals: list[tuple[str, float]] = []
    first_refusal = asyncio.Event()

    def on_refused(refused: Refused, wait: float) -> None:
        refusals.append((refused.reason, wait))
        first_refusal.set()

    started = time.monotonic()
    waiting = asyncio.create_task(connect(url, retries=2, on_refused=on_refused)._open())
    async with asyncio.timeout(10):
        await first_refusal.wait()
    await holder.close()  # the slot frees while the second client waits its Retry-After
    stream = await asyncio.wait_for(waiting, 20)
    try:
        assert refusals == [("max_sessions", 5.0)]
        assert time.monotonic() - started >= 5.0  # it waited what the gateway asked
        await stream.send(make_pcm(AudioFormat(), 0.5))
        await stream.stop()
        assert [e.output["count"] async for e in stream if isinstance(e, SegmentEvent)] == \
            [8000]
    finally:
        await stream.close()
    # a Retry-After longer than the caller will wait is raised at once
    async with connect(url):
        t0 = time.monotonic()
        with pytest.raises(Refused):
            await connect(url, retries=3, max_retry_wait=1.0)
        assert time.monotonic() - t0 < 3


async def test_a_close_with_an_error_code_raises_with_code_and_reason(gateway):
    server = await gateway(workers=1)
    events = []
    with pytest.raises(StreamClosed) as info:
        async with connect(str(server.make_url(SEGMENTED)),
                           vad={"min_silence": "long"}) as stream:
            await stream.send(make_pcm(AudioFormat(), 0.2))
            async for event in stream:
                events.append(event)
    closed = info.value
    assert closed.code == 1007 and "min_silence" in closed.reason
    assert [type(e) for e in events] == [ErrorEvent]  # the error event came first
    assert str(closed).startswith("the gateway closed the stream with code 1007: ")
    # sending on a stream the gateway has closed raises the same way
    with pytest.raises(StreamClosed) as info:
        async with connect(str(server.make_url(SEGMENTED)), vad={"min_silence": "x"}) as stream:
            with pytest.raises(StreamClosed):
                async for _ in stream:
                    pass
            await stream.send(b"\0\0")
    assert info.value.code == 1007


@pytest.mark.parametrize(("url", "kind", "words"), [
    ("ftp://127.0.0.1/api/v1/simple", InvalidURL, "is not a websocket URL"),
    ("ws://", InvalidURL, "is not a websocket URL"),
    ("ws://127.0.0.1:99999/api/v1/simple", InvalidURL, "not a valid URL .*Port out of range"),
])
def test_bad_urls_are_refused_before_connecting(url, kind, words):
    with pytest.raises(kind, match=words):
        connect(url)


async def test_unreachable_and_unknown_paths_are_connect_failures(gateway):
    port = free_port()
    with pytest.raises(ConnectFailed, match=f"cannot connect to 127.0.0.1:{port}") as info:
        await connect(f"ws://127.0.0.1:{port}{SIMPLE}")
    assert info.value.status is None and not isinstance(info.value, aiohttp.ClientError)
    server = await gateway(workers=1)
    with pytest.raises(ConnectFailed, match=r"no websocket endpoint at '/api/v1/nope' "
                                            r"\(HTTP 404\)") as info:
        await connect(str(server.make_url("/api/v1/nope")))
    assert info.value.status == 404
    with pytest.raises(ConnectFailed, match="is not a websocket endpoint"):
        await connect(str(server.make_url("/api/v1/health")))


def test_every_error_is_a_client_error():
    for name in ("Refused", "ConnectFailed", "StreamClosed", "InvalidURL", "AudioFileError"):
        assert issubclass(getattr(streamer.client, name), ClientError)


async def test_real_time_sends_each_frame_once_its_audio_has_been_captured():
    fmt = AudioFormat(sample_rate=16000)
    sent: list[float] = []

    async def record(data: bytes) -> None:
        sent.append(time.perf_counter())

    t0 = time.perf_counter()
    await send_paced(record, bytes(2 * 1600 * 5), fmt, chunk_bytes=2 * 1600, real_time=True)
    assert len(sent) == 5
    for i, at in enumerate(sent):  # frame i holds audio up to (i + 1) * 100 ms
        assert at - t0 >= (i + 1) * 0.1 - 1e-3


async def test_wav_files_of_every_width_stream(gateway, tmp_path):
    server = await gateway(workers=1)
    for width in (8, 16, 24, 32):
        path = tmp_path / f"w{width}.wav"
        soundfile.write(str(path), 0.2 * np.ones(8000), 16000,
                        subtype="PCM_U8" if width == 8 else f"PCM_{width}")
        report = await stream_file(str(server.make_url(SIMPLE)), path)
        assert [e.output["count"] for e in report.events if isinstance(e, SegmentEvent)] == \
            [8000], width
    mono = write_wav(tmp_path / "m.wav", AudioFormat(), 0.5)
    report = await stream_file(str(server.make_url(SIMPLE)), mono, sample_format="f32")
    assert report.results == 1


@pytest.mark.parametrize("module", ["streamer.client", "streamer.client_cli", "streamer.loadtest"])
def test_the_client_side_loads_no_server_module(module):
    """Everything is installed here, so only the imports themselves can keep these out."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", f"import json, sys, {module}; "
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    server = ("msgspec", "msgpack", "soxr", "prometheus_client", "psutil", "opentelemetry.sdk",
              "streamer.gateway", "streamer.workers", "soundfile", "matplotlib")
    assert [m for m in loaded if m.startswith(server)] == []
    assert module in loaded
