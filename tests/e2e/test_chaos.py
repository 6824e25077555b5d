"""Chaos: workers die (SIGKILL, ``panic_rate``) again and again under load from several sessions
(NATS workers: ``test_nats.py``).
Every segment sent gets exactly one answer (a result or an explicit error), the gateway stays
up, and the pool returns to full size. Kills are triggered by results arriving, not by timers."""

from __future__ import annotations

import os
import signal

from streamer.client import stream_audio
from streamer.gateway.state import POOL
from streamer.protocol import SegmentEvent, ServerEvent
from tests.audio_gen import make_pcm
from tests.chaosutil import CHUNK, FMT, Killer, assert_fresh_state_after_one_loss, load
from tests.conftest import wait_until
from tests.e2e.test_simple import SIMPLE


async def test_sigkill_embedded_workers_repeatedly_under_load(gateway):
    server = await gateway(workers=2, model__delay=0.02, model__mode="sleep",
                           session__chunk_seconds=CHUNK, pool__restart_backoff=0.05,
                           pool__max_retries=3)
    pool = server.app[POOL]
    killer = Killer(lambda: [w.pid for w in pool.stats().workers if w.ready and w.pid], 8)
    errors = await load(server, sessions=4, seconds=8.0, on_event=killer)
    assert killer.kills >= 8
    assert pool.stats().lost >= killer.kills // 2  # a kill may hit a process already dying
    await wait_until(lambda: pool.stats().ready == 2, within=20, what="the pool back to 2")
    assert len(errors) <= 4  # only a segment whose every attempt was killed gets an error
    assert await load(server, sessions=1, seconds=1.0) == []  # and it serves as before


async def test_panicking_model_under_load(gateway):
    server = await gateway(workers=2, model__delay=0.01, model__mode="sleep",
                           model__panic_rate=0.1,
                           session__chunk_seconds=CHUNK, pool__restart_backoff=0.05,
                           pool__max_retries=4)
    pool = server.app[POOL]
    errors = await load(server, sessions=4, seconds=6.0)  # ~100 calls: ~10 panics
    assert pool.stats().restarts >= 1
    assert len(errors) <= 2  # a segment fails only if all 5 of its attempts panic
    await wait_until(lambda: pool.stats().ready == 2, within=20, what="the pool back to 2")


async def test_a_stateful_stream_whose_worker_dies_is_told_and_goes_on_with_fresh_state(gateway):
    server = await gateway(workers=1, model__name="stateful_counter", model__delay=0.03,
                           model__mode="sleep", session__chunk_seconds=CHUNK,
                           pool__worker_inflight=1)
    pool = server.app[POOL]
    killed: list[int] = []

    def kill_after_the_fourth_result(event: ServerEvent) -> None:
        if isinstance(event, SegmentEvent) and event.end_time == 4 * CHUNK and not killed:
            pid = pool.stats().workers[0].pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    report = await stream_audio(str(server.make_url(SIMPLE)), FMT, make_pcm(FMT, 3.0),
                                chunk_size=4000, on_event=kill_after_the_fourth_result)
    assert killed
    lost, segs, restart = assert_fresh_state_after_one_loss(report, 3.0)
    # in stream order: right before the first result with fresh state
    assert report.events.index(lost) + 1 == report.events.index(segs[restart])


async def test_workers_that_never_finish_booting_make_the_gateway_say_try_again_later(gateway):
    """Every respawned worker dies while warming up: the slot gives up after
    pool.max_boot_failures; a session already open gets an error event and close 1013, new
    ones are refused with 503, and the gateway itself stays up."""
    import aiohttp

    from streamer.client import StreamerClient

    server = await gateway(workers=1, model__delay=0.1, model__warmup_penalty=20.0,
                           model__mode="sleep", pool__max_boot_failures=2,
                           pool__restart_backoff=0.05)  # warm-up takes ~2 s
    client = await StreamerClient.connect(str(server.make_url(SIMPLE)))
    await client.start(FMT)
    slot = server.app[POOL].embedded.slots[0]
    first = slot.process.pid
    killed: set[int] = set()

    def kill_whatever_runs() -> bool:
        proc = slot.process
        if proc is not None and proc.pid not in killed and proc.exitcode is None:
            killed.add(proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
        return not server.app[POOL].available

    await wait_until(kill_whatever_runs, within=30, what="the slot to give up")
    assert first in killed and len(killed) >= 3  # the ready worker, then two failed boots
    await client.send_audio(make_pcm(FMT, 1.0))
    events = [e async for e in client.events()]
    await client.close()
    assert client.close_code == 1013
    assert "no worker can run the model" in events[-1].message
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url(SIMPLE)) as r:
            assert r.status == 503 and (await r.json())["reason"] == "not_ready"
        async with http.get(server.make_url("/api/v1/health")) as r:
            assert r.status == 503 and (await r.json())["ready"] is False
