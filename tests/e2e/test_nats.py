"""Gateways and workers on NATS: a real nats-server on 127.0.0.1, real ``streamer-worker --nats``
processes, gateways in this process, real websocket traffic."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import pytest

from streamer.client import stream_audio
from streamer.gateway.state import POOL
from streamer.protocol import ErrorEvent, SegmentEvent, ServerEvent
from tests.audio_gen import make_pcm
from tests.conftest import wait_until
from tests.e2e.test_chaos import CHUNK, FMT, Killer, assert_each_segment_answered_once
from tests.e2e.test_simple import SIMPLE, check_channel

FAST = {"pool__heartbeat_interval": 0.2, "pool__heartbeat_timeout": 2.0}


async def nats_gateway(gateway, nats_server, **settings):
    return await gateway(workers=0, pool__nats_url=nats_server.url, model__mode="sleep",
                         session__chunk_seconds=CHUNK, **FAST, **settings)


async def test_two_gateways_share_three_workers_through_sigkills(gateway, nats_server,
                                                                 nats_workers):
    procs = [nats_workers(model__delay="0.02", model__mode="sleep",
                          pool__heartbeat_interval="0.2", pool__heartbeat_timeout="2")
             for _ in range(3)]
    servers = [await nats_gateway(gateway, nats_server, model__delay=0.02,
                                  pool__max_retries=3) for _ in range(2)]
    pools = [s.app[POOL] for s in servers]
    for pool in pools:
        await wait_until(lambda p=pool: p.stats().ready == 3, within=40,
                         what="3 workers heard through NATS")
    async with aiohttp.ClientSession() as http:  # readiness and /metrics reflect the fleet
        async with http.get(servers[1].make_url("/api/v1/health")) as r:
            assert r.status == 200 and (await r.json())["workers"]["ready"] == 3
        async with http.get(servers[0].make_url("/metrics")) as r:
            assert "streamer_workers_ready 3.0" in await r.text()

    def model_pids() -> list[int]:
        return [pid for p in procs for pid in p.model_pids()]

    killer = Killer(model_pids, 10)
    seconds = 6.0

    async def load(server, seed: int) -> list[str]:
        reports = await asyncio.gather(*(
            stream_audio(str(server.make_url(SIMPLE)), FMT, make_pcm(FMT, seconds, seed=seed + i),
                         chunk_size=4000, on_event=killer) for i in range(2)))
        errors: list[str] = []
        for report in reports:
            assert report.close_code == 1000
            errors += assert_each_segment_answered_once(report.events, seconds)
        return errors

    errors = sum(await asyncio.gather(load(servers[0], 0), load(servers[1], 10)), [])
    assert killer.kills >= 4
    assert sum(p.stats().lost for p in pools) >= killer.kills  # each gateway saw workers go
    assert len(errors) <= 4
    for pool in pools:  # the supervisors bring the fleet back, and both gateways see it
        await wait_until(lambda p=pool: p.stats().ready == 3, within=40, what="fleet back")
    assert all(p.proc.poll() is None for p in procs)
    for pool in pools:  # no worker was ever handed more than its capacity by one gateway
        assert all(w.inflight <= 2 for w in pool.stats().workers)


async def test_per_worker_limit_holds_across_gateways(gateway, nats_server, nats_workers):
    """One worker of capacity 1, two gateways each allowed 4 in flight: the worker turns
    away what is beyond its capacity (busy) and every segment is still answered once."""
    nats_workers(model__delay="0.03", model__mode="sleep", pool__worker_inflight="1",
                 pool__heartbeat_interval="0.2", pool__heartbeat_timeout="2")
    servers = [await nats_gateway(gateway, nats_server, model__delay=0.03,
                                  pool__worker_inflight=4) for _ in range(2)]
    for s in servers:
        await wait_until(lambda s=s: s.app[POOL].stats().ready == 1, within=40, what="worker")
    seconds = 2.0
    reports = await asyncio.gather(*(
        stream_audio(str(s.make_url(SIMPLE)), FMT, make_pcm(FMT, seconds, seed=i),
                     chunk_size=4000) for i, s in enumerate(servers)))
    for report in reports:
        assert not assert_each_segment_answered_once(report.events, seconds)


async def test_a_stateful_stream_keeps_order_and_is_told_when_its_worker_dies(
        gateway, nats_server, nats_workers):
    procs = [nats_workers(model="stateful_counter", model__delay="0.03", model__mode="sleep",
                          pool__worker_inflight="1", pool__heartbeat_interval="0.2",
                          pool__heartbeat_timeout="2") for _ in range(2)]
    server = await nats_gateway(gateway, nats_server, model__name="stateful_counter",
                                model__delay=0.03, pool__worker_inflight=1)
    pool = server.app[POOL]
    await wait_until(lambda: pool.stats().ready == 2, within=40, what="2 workers")
    killed: list[int] = []

    def kill_after_the_fourth_result(event: ServerEvent) -> None:
        if isinstance(event, SegmentEvent) and event.end_time == 4 * CHUNK and not killed:
            busy = [w for w in pool.stats().workers if w.inflight]
            pids = {w.pid for w in busy}
            for p in procs:  # the model process of the worker holding the stream
                for pid in p.model_pids():
                    if pid in pids:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)

    report = await stream_audio(str(server.make_url(SIMPLE)), FMT, make_pcm(FMT, 3.0),
                                chunk_size=4000, on_event=kill_after_the_fourth_result)
    assert killed
    lost = [e for e in report.events if isinstance(e, ErrorEvent)]
    assert len(lost) == 1 and "state for this stream was lost" in lost[0].message
    segs = [e for e in report.events if isinstance(e, SegmentEvent)]
    check_channel(report.events, 0, 48000, chunk=4000)
    totals = [e.output["total"] for e in segs]
    restart = next(i for i, e in enumerate(segs) if e.start_time == lost[0].start_time)
    assert restart >= 4
    assert totals[:restart] == [4000 * (i + 1) for i in range(restart)]
    assert totals[restart:] == [4000 * (i + 1) for i in range(len(segs) - restart)]


async def test_the_broker_stops_and_comes_back(gateway, nats_server, nats_workers):
    nats_workers(model__delay="0.02", model__mode="sleep", pool__heartbeat_interval="0.2",
                 pool__heartbeat_timeout="2")
    server = await nats_gateway(gateway, nats_server, model__delay=0.02,
                                pool__nats_outage_grace=1.0)
    pool = server.app[POOL]
    await wait_until(lambda: pool.stats().ready == 1, within=40, what="the worker")
    url = str(server.make_url(SIMPLE))
    assert not assert_each_segment_answered_once(
        (await stream_audio(url, FMT, make_pcm(FMT, 1.0), chunk_size=4000)).events, 1.0)

    stopped = asyncio.Event()

    def stop_the_broker(event: ServerEvent) -> None:
        if isinstance(event, SegmentEvent) and not stopped.is_set():
            stopped.set()
            nats_server.stop()

    # mid-stream: the session ends with every segment answered (results or errors), no hang
    report = await asyncio.wait_for(stream_audio(url, FMT, make_pcm(FMT, 3.0), chunk_size=4000,
                                                 on_event=stop_the_broker, real_time=True),
                                    60)
    assert stopped.is_set()
    spans = [(e.start_time, e.end_time) for e in report.events
             if isinstance(e, SegmentEvent | ErrorEvent) and e.start_time is not None]
    assert len(spans) == len(set(spans))  # never twice
    await wait_until(lambda: pool.stats().ready == 0, within=10, what="not ready while down")
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url(SIMPLE)) as r:
            assert r.status == 503  # new sessions refused
        async with http.get(server.make_url("/api/v1/health")) as r:
            assert r.status == 503
    nats_server.start()
    await wait_until(lambda: pool.stats().ready == 1, within=30, what="recovered by itself")
    again = await stream_audio(url, FMT, make_pcm(FMT, 1.0), chunk_size=4000)
    assert not assert_each_segment_answered_once(again.events, 1.0)


async def test_wrong_credentials_are_refused_with_a_clear_message(gateway, nats_server,
                                                                 nats_workers, monkeypatch):
    worker = nats_workers(token="not-the-token")
    assert await asyncio.wait_for(asyncio.to_thread(worker.proc.wait), 30) == 2
    text = worker.text()
    assert "refused this worker's credentials" in text and "Traceback" not in text
    assert "not-the-token" not in text and nats_server.token not in text
    monkeypatch.setenv("STREAMER_NATS_TOKEN", "not-the-token")
    from streamer.errors import PoolUnavailable
    from streamer.gateway.pool.nats import NatsPool
    from tests.conftest import make_config

    pool = NatsPool(make_config(0, **{"pool.nats_url": nats_server.url}))
    with pytest.raises(PoolUnavailable, match="refused this gateway's credentials") as info:
        await pool.start()
    assert "not-the-token" not in str(info.value)
    await pool.stop()
