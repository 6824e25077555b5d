"""Bad input, overload and faults: each case gets a clear answer and the gateway keeps serving."""

from __future__ import annotations

import asyncio
import gc
import json

import aiohttp
import psutil
import pytest

from streamer.client import StreamerClient, stream_audio
from streamer.gateway.state import SESSIONS
from streamer.protocol import AudioFormat, ErrorEvent, SegmentEvent
from tests.audio_gen import make_pcm
from tests.conftest import wait_until
from tests.wsraw import RawWebSocket

SIMPLE = "/api/v1/simple"
TP = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"


async def good_session(server) -> None:
    """After every bad case: a normal session on the same gateway gets all its results."""
    report = await stream_audio(str(server.make_url(SIMPLE)), AudioFormat(),
                                make_pcm(AudioFormat(), 1.0), chunk_size=4000)
    assert sum(e.output["count"] for e in report.events if isinstance(e, SegmentEvent)) == 16000
    assert not [e for e in report.events if isinstance(e, ErrorEvent)]
    assert report.close_code == 1000


async def exchange(server, *frames, read: int = 1):
    """Send frames; return the first ``read`` JSON events and the close code."""
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url(SIMPLE)) as ws:
        for frame in frames:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))
        events = []
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                events.append(json.loads(msg.data))
        return events[:read] if read else events, ws.close_code


START = {"request": "start"}


BAD_INPUTS = [
    (["{oops"], 1007, "not valid JSON"),
    (["42"], 1007, "must be a JSON object, got a number"),
    ([{"request": "rewind"}], 1007, 'unknown request "rewind"'),
    ([{"format": {}}], 1007, "needs a 'request' field"),
    ([{"request": "start", "format": {"channels": "two"}}], 1007, "must be an integer"),
    ([{"request": "start", "interim_results": 1}], 1007, "must be true or false"),
    ([{"request": "start", "format": {"bit_depth": 24}}], 1003, "bit_depth 24"),
    ([{"request": "start", "format": {"bit_depth": 16, "is_float": True}}], 1003,
     "is_float true"),
    ([{"request": "start", "format": {"channels": 0}}], 1003, "got 0"),
    ([{"request": "start", "format": {"channels": 64}}], 1003, "got 64"),
    ([{"request": "start", "format": {"sample_rate": 0}}], 1003, "sample_rate"),
    ([{"request": "start", "format": {"sample_rate": -8000}}], 1003, "got -8000"),
    ([{"request": "start", "format": {"sample_rate": 10**9}}], 1003, "got 1000000000"),
    ([b"\x00\x00"], 1008, "expected 'start' before audio, got a binary frame"),
    ([{"request": "start", "trace_id": "x" * 800}], 1007, "'trace_id' is 800 characters"),
    ([START, b"\x00" * 5000], 1009, "audio frame of 5000 bytes; at most 4096"),
    (["{" + " " * 3000 + "}"], 1009, "control message of 3002 bytes; at most 1024"),
]


def _mark_invalid(case: tuple) -> object:
    """The cases that send no audio break the protocol schema itself: mark them."""
    sends_audio = any(isinstance(frame, bytes) for frame in case[0])
    return case if sends_audio else pytest.param(*case, marks=pytest.mark.sends_invalid)


@pytest.mark.parametrize("frames, code, words", [_mark_invalid(case) for case in BAD_INPUTS])
async def test_each_bad_input_gets_an_error_event_and_a_close_code(gateway, frames, code,
                                                                  words):
    server = await gateway(workers=1, server__max_msg_size=4096, session__max_text_bytes=1024)
    events, close_code = await exchange(server, *frames, read=0)
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and words in errors[0]["message"], events
    assert events[-1] == errors[0]  # after what was accepted before it
    assert close_code == code
    await good_session(server)


async def test_stop_without_start_is_answered_and_the_socket_goes_on(gateway):
    server = await gateway(workers=1)
    events, code = await exchange(server, {"request": "stop"}, START, b"\x00\x00" * 10,
                                  {"request": "stop", "disconnect": True}, read=0)
    assert "no stream is running" in events[0]["message"]
    assert [e["type"] for e in events[1:3]] == ["started", "audio_acked"]
    assert events[3]["count"] == 10 and code == 1000
    events, code = await exchange(server, {"request": "stop", "disconnect": True}, read=0)
    assert "no stream is running" in events[0]["message"] and code == 1000
    await good_session(server)


async def test_a_text_flood_is_closed(gateway):
    server = await gateway(workers=1, session__max_text_per_second=20)
    events, code = await exchange(server, *[{"request": "stop"}] * 40, read=0)
    assert "more than 20 control messages in one second" in events[-1]["message"]
    assert code == 1008
    await good_session(server)


async def test_audio_after_stop_with_disconnect_is_ignored(gateway):
    server = await gateway(workers=1)
    audio = make_pcm(AudioFormat(), 1.0)
    events, code = await exchange(server, START, audio, {"request": "stop", "disconnect": True},
                                  audio, audio, read=0)
    assert [e.get("count") for e in events if e["type"] == "segment"] == [8000, 8000]
    assert not [e for e in events if e["type"] == "error"] and code == 1000
    await good_session(server)


async def test_a_malformed_trace_id_starts_a_new_trace_instead_of_failing(gateway):
    server = await gateway(workers=1)
    for trace_id in ("not-a-traceparent", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", TP):
        report = await stream_audio(str(server.make_url(SIMPLE)), AudioFormat(),
                                    make_pcm(AudioFormat(), 0.5), trace_id=trace_id)
        assert [e.output["count"] for e in report.events if isinstance(e, SegmentEvent)] == \
            [8000]


async def test_a_client_that_never_starts_is_timed_out(gateway):
    server = await gateway(workers=1, session__start_timeout=0.3)
    events, code = await exchange(server)
    assert events[0]["message"] == "no 'start' within 0.3 s of connecting" and code == 1008
    await good_session(server)


async def test_a_client_silent_mid_stream_gets_its_results_then_a_timeout(gateway):
    server = await gateway(workers=1, session__idle_timeout=0.5)
    events, code = await exchange(server, START, make_pcm(AudioFormat(), 0.75), read=0)
    assert [e.get("count") for e in events if e["type"] == "segment"] == [8000, 4000]
    assert events[-1]["message"] == "no audio or control message for 0.5 s" and code == 1008
    await good_session(server)


async def test_a_stream_past_the_maximum_duration_is_ended(gateway):
    server = await gateway(workers=1, session__max_stream_seconds=1.0)
    audio = make_pcm(AudioFormat(), 0.25)
    events, code = await exchange(server, START, *[audio] * 8, read=0)
    counts = [e.get("count") for e in events if e["type"] == "segment"]
    assert sum(counts) == 20000  # every accepted frame up to the one that crossed 1 s
    assert "stream longer than the maximum of 1 s of audio" in events[-1]["message"]
    assert code == 1008
    await good_session(server)


async def test_a_client_that_vanishes_mid_stream_leaves_nothing_behind(gateway):
    server = await gateway(workers=1, model__delay=0.05, model__mode="sleep")
    raw = await RawWebSocket.connect("127.0.0.1", server.port, SIMPLE)
    raw.send_text(json.dumps(START))
    raw.send_binary(make_pcm(AudioFormat(), 4.0))
    await raw.drain()
    async with aiohttp.ClientSession() as http:
        async def health():
            async with http.get(server.make_url("/api/v1/health")) as r:
                return await r.json()

        await wait_until(lambda: _has(health, "inflight"), what="work in flight")
        raw.vanish()
        await wait_until(lambda: _idle(health), what="the session to be cleaned up")
    await good_session(server)


async def _has(health, key):
    return (await health())[key] > 0


async def _idle(health):
    body = await health()
    return body["sessions"] == 0 and body["inflight"] == 0 and body["queued"] == 0


async def test_a_client_that_stops_reading_is_ended_and_memory_stays_bounded(gateway):
    """The client offers 10 minutes of audio (19 MB of PCM, 38 MB once decoded, 240 MB of
    events) and reads nothing. The gateway must stop reading it (backpressure), cut it off
    after send_timeout, and meanwhile hold a bounded amount: its memory may not grow by a
    fraction of that. The inline pool answers at once and each event is 4 KB, so events pile
    up at the socket as fast as possible."""
    server = await gateway(workers=1, pool="inline", session__chunk_seconds=0.01,
                           session__send_timeout=1.0, session__max_inflight=8,
                           model__name="tests.e2e.poison_models:Verbose")
    me = psutil.Process()
    gc.collect()
    before = peak = me.memory_info().rss

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, me.memory_info().rss)
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    raw = await RawWebSocket.connect("127.0.0.1", server.port, SIMPLE, recv_buffer=2048)
    raw.send_text(json.dumps(START))
    audio = make_pcm(AudioFormat(), 1.0)
    sent = 0
    try:
        with pytest.raises(ConnectionError):
            async with asyncio.timeout(60):
                for _ in range(600):
                    raw.send_binary(audio)
                    await raw.drain()  # blocks once the gateway stops reading us
                    sent += 1
        assert sent < 600, "the gateway kept reading a client that reads nothing"
        async with aiohttp.ClientSession() as http:
            async def gone():
                async with http.get(server.make_url("/api/v1/health")) as r:
                    return (await r.json())["sessions"] == 0

            await wait_until(gone, within=20, what="the non-reading session to end")
    finally:
        sampler.cancel()
    growth = (peak - before) / 2**20
    assert growth < 16, f"the gateway's process grew by {growth:.1f} MB for a stuck client"
    report = await stream_audio(str(server.make_url(SIMPLE)), AudioFormat(),
                                make_pcm(AudioFormat(), 0.5))  # and it serves on
    assert sum(isinstance(e, SegmentEvent) for e in report.events) == 50
    assert report.close_code == 1000


async def test_overload_refuses_extra_sessions_at_once_and_serves_the_admitted(gateway):
    server = await gateway(workers=2, server__max_sessions=3)
    url = str(server.make_url(SIMPLE))
    fmt = AudioFormat()
    clients = [await StreamerClient.connect(url) for _ in range(3)]
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(url, headers={"Upgrade": "websocket"}) as r:
                assert r.status == 503
                assert r.headers["Retry-After"] == "5"
                body = await r.json()
                assert body["reason"] == "max_sessions"
                assert "limit of 3 concurrent sessions" in body["message"]
    for client in clients:
        await client.start(fmt)
        await client.send_audio(make_pcm(fmt, 1.0))
        await client.stop(disconnect=True)
    for client in clients:
        events = [e async for e in client.events()]
        assert [e.output["count"] for e in events if isinstance(e, SegmentEvent)] == \
            [8000, 8000]
        await client.close()
    await good_session(server)


async def test_a_backlogged_pool_refuses_new_sessions(gateway):
    server = await gateway(workers=1, model__delay=0.5, model__mode="sleep",
                           server__max_backlog_seconds=1.0, session__max_inflight=64)
    url = str(server.make_url(SIMPLE))
    busy = await StreamerClient.connect(url)
    await busy.start(AudioFormat())
    await busy.send_audio(make_pcm(AudioFormat(), 3.0))  # 6 segments, 3 s of work
    async with aiohttp.ClientSession() as http:
        async def refused():
            async with http.get(url) as r:
                return r.status == 503 and (await r.json())["reason"] == "backlog"

        await wait_until(refused, what="a backlog refusal")
    await busy.close()


async def test_errors_from_a_model_do_not_stop_other_sessions(gateway):
    server = await gateway(workers=2, model__failure_rate=0.5, model__seed=3)
    url = str(server.make_url(SIMPLE))
    reports = await asyncio.gather(*[stream_audio(url, AudioFormat(),
                                                  make_pcm(AudioFormat(), 2.0))
                                     for _ in range(4)])
    for report in reports:
        answers = [e for e in report.events if isinstance(e, SegmentEvent | ErrorEvent)]
        assert [(a.start_time, a.end_time) for a in answers] == \
            [(0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0)]  # exactly one answer each
        assert report.close_code == 1000


async def test_timeouts_fire_even_while_the_client_answers_heartbeats(gateway):
    server = await gateway(workers=1, server__heartbeat=0.1, session__start_timeout=0.5,
                           session__idle_timeout=0.5)
    events, code = await exchange(server)  # aiohttp's client answers every ping
    assert events[0]["message"] == "no 'start' within 0.5 s of connecting" and code == 1008
    events, code = await exchange(server, START, make_pcm(AudioFormat(), 0.5), read=0)
    assert events[-1]["message"] == "no audio or control message for 0.5 s" and code == 1008


@pytest.mark.sends_invalid
async def test_a_long_close_reason_is_cut_on_a_character_boundary(gateway):
    server = await gateway(workers=1)
    field = "é" * 100  # 200 bytes of two-byte characters in the error message
    texts, close = [], None
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url(SIMPLE)) as ws:
        await ws.send_str(json.dumps({"request": "start", "format": {field: 1}}))
        async with asyncio.timeout(10):
            while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                texts.append(json.loads(msg.data))
            close = msg
    assert field in texts[0]["message"]  # the whole message is in the error event
    # a reason split inside a character would reach the client as an ERROR ("Invalid UTF-8")
    assert close.type == aiohttp.WSMsgType.CLOSE and close.data == 1007
    assert 100 < len(close.extra.encode()) <= 123
    assert texts[0]["message"].startswith(close.extra)
    await good_session(server)


async def test_a_session_whose_bookkeeping_breaks_closes_1011_and_the_gateway_serves_on(
        gateway, monkeypatch):
    from streamer.gateway.ledger import LedgerError
    from streamer.gateway.stream import StreamCore

    real_settle = StreamCore.settle
    broken = {"left": 1}

    def settle_once_broken(self, work, result):
        if broken["left"]:
            broken["left"] -= 1
            raise LedgerError("an injected fault")
        return real_settle(self, work, result)

    monkeypatch.setattr(StreamCore, "settle", settle_once_broken)
    server = await gateway(workers=1)
    async with asyncio.timeout(20):  # a hang fails here, not in the suite's timeout
        report = await stream_audio(str(server.make_url(SIMPLE)), AudioFormat(),
                                    make_pcm(AudioFormat(), 1.0))
    assert report.close_code == 1011
    errors = [e for e in report.events if isinstance(e, ErrorEvent)]
    assert errors and "internal error" in errors[-1].message
    await wait_until(lambda: not server.app[SESSIONS], what="the broken session to end")
    await good_session(server)
