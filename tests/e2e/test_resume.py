"""Streams that survive the network: a proxy cuts the connection, the client resumes, and what
comes back equals what the same audio gives without cuts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets

import aiohttp
import pytest

from streamer.client import Reconnected, Stream, connect, play, read_audio
from streamer.gateway.state import RESUMABLES
from tests.conftest import wait_until
from tests.cutproxy import CutProxy
from tests.signals import DATA

SIMPLE, SEGMENTED = "/api/v1/simple", "/api/v1/segmented"
SPEECH = DATA / "speech_3_sentences.wav"
START = {"request": "start", "format": {"channels": 1, "sample_rate": 16000, "bit_depth": 16}}


def without_seq(events: list) -> list:
    """Events to compare across runs: their numbers depend on where acks fell."""
    return [dataclasses.replace(e, seq=None) for e in events if not isinstance(e, Reconnected)]


async def cut_along(proxy: CutProxy, stream: Stream, total: int, times: int) -> None:
    """Cut the live connection ``times`` times, spread evenly over the audio as it is sent (so
    every cut falls mid-stream, however slow the machine)."""
    for k in range(1, times + 1):
        mark = total * k // (times + 1)
        await wait_until(lambda: stream.sent_bytes >= mark and proxy.live > 0,  # noqa: B023
                         within=30.0, what=f"byte {mark} sent on a live connection")
        proxy.cut()


@pytest.mark.parametrize("path", [SIMPLE, SEGMENTED])
async def test_ten_cuts_in_a_real_time_stream_lose_and_repeat_nothing(gateway, path):
    server = await gateway(workers=2)
    clip = read_audio(SPEECH)
    options = {"interim_results": True} if path == SEGMENTED else {}
    async with connect(str(server.make_url(path)), format=clip.format, **options) as stream:
        expected = (await play(stream, clip.data)).events
    assert not any(isinstance(e, Reconnected) for e in expected)

    async with (CutProxy(server.port) as proxy,
                connect(proxy.url(path), format=clip.format, **options) as stream):
        cutter = asyncio.create_task(cut_along(proxy, stream, len(clip.data), 10))
        report = await play(stream, clip.data, chunk_ms=40, real_time=True)
        await cutter
    reconnects = [e for e in report.events if isinstance(e, Reconnected)]
    assert proxy.cuts == 10 and len(reconnects) == 10, (proxy.cuts, reconnects)
    assert without_seq(report.events) == without_seq(expected)
    assert report.close_code == 1000
    assert sum(r.resent_bytes for r in reconnects) <= stream.sent_bytes
    assert len(server.app[RESUMABLES]) == 0  # the stream ended: nothing is held


async def open_stream(http: aiohttp.ClientSession,
                      url: str) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    ws = await http.ws_connect(url)
    await ws.send_str(json.dumps(START))
    started = await ws.receive_json()
    assert started["type"] == "started" and started["seq"] == 1
    return ws, started["resume_token"]


async def refused(http: aiohttp.ClientSession, url: str, token: str, words: str) -> None:
    async with http.ws_connect(url) as ws:
        await ws.send_str(json.dumps({"request": "resume", "resume_token": token,
                                      "last_seq": 1}))
        msg = await ws.receive_json()
        assert msg["type"] == "error" and words in msg["message"], msg
        assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1008


async def test_forged_and_expired_tokens_are_refused(gateway):
    server = await gateway(workers=1, session__resume_window=0.5)
    held = server.app[RESUMABLES]
    async with CutProxy(server.port) as proxy, aiohttp.ClientSession() as http:
        ws, token = await open_stream(http, proxy.url(SIMPLE))
        await ws.send_bytes(b"\x00\x00" * 16000)
        await wait_until(lambda: held.detached == 0 and len(held) == 1, what="a stream")
        proxy.cut()
        await wait_until(lambda: held.detached == 1, what="the stream to be held")
        await refused(http, str(server.make_url(SIMPLE)), secrets.token_urlsafe(32),
                      "unknown or expired resume token")
        await wait_until(lambda: len(held) == 0, what="the window to expire")
        await refused(http, str(server.make_url(SIMPLE)), token,
                      "unknown or expired resume token")
        assert server.app[RESUMABLES].detached == 0


async def test_a_stream_is_resumed_by_one_socket_at_a_time(gateway):
    server = await gateway(workers=1)
    held = server.app[RESUMABLES]
    url = str(server.make_url(SIMPLE))
    async with CutProxy(server.port) as proxy, aiohttp.ClientSession() as http:
        ws, token = await open_stream(http, proxy.url(SIMPLE))
        audio = bytes(range(256)) * 188  # 48128 bytes, 1.5 s
        await ws.send_bytes(audio[:24000])
        proxy.cut()
        await wait_until(lambda: held.detached == 1, what="the stream to be held")
        async with http.ws_connect(url) as first:
            await first.send_str(json.dumps({"request": "resume", "resume_token": token,
                                             "last_seq": 1}))
            resumed = await first.receive_json()
            assert resumed["type"] == "resumed" and 0 <= resumed["audio_bytes"] <= 24000
            await refused(http, url, token, "attached to another socket")
            await first.send_bytes(audio[resumed["audio_bytes"]:])
            await first.send_str('{"request": "stop", "disconnect": true}')
            events = [json.loads(m.data) async for m in first]
    counts = [e["count"] for e in events if e["type"] == "segment"]
    assert sum(counts) == len(audio) // 2, counts  # nothing lost, nothing counted twice
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(2, 2 + len(seqs))), seqs  # everything after seq 1, once
    assert events[-1]["type"] == "stopped" and first.close_code == 1000


async def test_held_results_are_bounded_and_the_stream_ends_past_the_bound(gateway):
    server = await gateway(workers=1, session__chunk_seconds=0.05, model__delay=0.05,
                           model__mode="sleep", session__resume_max_events=16,
                           session__max_inflight=64,
                           session__resume_window=60)
    held = server.app[RESUMABLES]
    async with CutProxy(server.port) as proxy, aiohttp.ClientSession() as http:
        ws, token = await open_stream(http, proxy.url(SIMPLE))
        await ws.send_bytes(b"\x00\x00" * 48000)  # 3 s: 60 results, more than 16 held
        await wait_until(lambda: len(held) == 1, what="a stream")
        (stream,) = list(held)
        await wait_until(lambda: stream.audio_bytes == 96000, what="the audio to arrive")
        proxy.cut()
        await wait_until(lambda: len(held) == 0, what="the stream to end past the bound")
        assert stream.replay.kept <= 16 and stream.replay.bytes <= 1 << 20
        await refused(http, str(server.make_url(SIMPLE)), token, "unknown or expired")


async def test_resume_on_a_socket_with_a_running_stream_finishes_it_then_refuses(gateway):
    server = await gateway(workers=1)
    async with aiohttp.ClientSession() as http:
        ws, token = await open_stream(http, str(server.make_url(SIMPLE)))
        await ws.send_bytes(b"\x00\x00" * 8000)
        await ws.send_str(json.dumps({"request": "resume", "resume_token": token,
                                      "last_seq": 1}))
        events = [json.loads(m.data) async for m in ws]
        assert [e["type"] for e in events] == ["audio_acked", "segment", "stopped", "error"]
        assert "while a stream is running" in events[-1]["message"] and ws.close_code == 1008
    assert len(server.app[RESUMABLES]) == 0
