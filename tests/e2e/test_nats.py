"""Gateways and workers on NATS: a real nats-server on 127.0.0.1, real ``streamer-worker --nats``
processes, gateways in this process, real websocket traffic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import aiohttp
import psutil
import pytest

from streamer.client import stream_audio
from streamer.gateway.state import POOL
from streamer.protocol import AudioFormat, ErrorEvent, SegmentEvent, ServerEvent
from tests.audio_gen import make_pcm
from tests.chaosutil import (
    CHUNK,
    FMT,
    Killer,
    assert_each_segment_answered_once,
    assert_fresh_state_after_one_loss,
    load,
)
from tests.conftest import BIN, clean_env, free_port, wait_until
from tests.e2e.test_simple import SIMPLE, check_channel
from tests.natsutil import TOKEN, require_nats_binary

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"

FAST = {"pool__heartbeat_interval": 0.2, "pool__heartbeat_timeout": 2.0}


async def nats_gateway(gateway, nats_server, **settings):
    return await gateway(workers=0, pool__nats_url=nats_server.url, model__mode="sleep",
                         session__chunk_seconds=CHUNK, **{**FAST, **settings})


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
    errors = sum(await asyncio.gather(*(load(s, 2, 6.0, on_event=killer, seed=10 * i)
                                        for i, s in enumerate(servers))), [])
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
    assert_fresh_state_after_one_loss(report, 3.0)


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


async def test_a_hung_worker_is_dropped_and_comes_back(gateway, nats_server, nats_workers):
    """A worker process that stops (SIGSTOP: alive, answering nothing) is killed and replaced
    by its supervisor; what it held goes to the other worker."""
    procs = [nats_workers(model__delay="0.02", model__mode="sleep",
                          pool__heartbeat_interval="0.2", pool__heartbeat_timeout="1.5")
             for _ in range(2)]
    server = await nats_gateway(gateway, nats_server, model__delay=0.02)
    pool = server.app[POOL]
    await wait_until(lambda: pool.stats().ready == 2, within=40, what="2 workers")
    hung = procs[0].model_pids()[0]
    os.kill(hung, signal.SIGSTOP)
    try:
        report = await stream_audio(str(server.make_url(SIMPLE)), FMT, make_pcm(FMT, 4.0),
                                    chunk_size=8000)
        assert not assert_each_segment_answered_once(report.events, 4.0)
        await wait_until(lambda: pool.stats().lost >= 1, within=10, what="the hung one gone")
        assert "dropping it as hung" in procs[0].text()
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed by its supervisor, normally
            os.kill(hung, signal.SIGCONT)
    await wait_until(lambda: pool.stats().ready == 2, within=40, what="the fleet back to 2")
    assert hung not in procs[0].model_pids()


async def test_sigterm_to_a_worker_group_leaves_cleanly(gateway, nats_server, nats_workers):
    """honcho stops a process with SIGTERM to its whole group, so the worker process gets it
    twice (from honcho, then from its supervisor): it still says ``gone`` (the gateway lets
    it go at once, long before its heartbeat timeout), exits 0 and logs no error."""
    worker = nats_workers(group=True, pool__heartbeat_interval="0.2",
                          pool__heartbeat_timeout="30")
    server = await nats_gateway(gateway, nats_server, pool__heartbeat_timeout=30.0)
    pool = server.app[POOL]
    await wait_until(lambda: pool.stats().ready == 1, within=40, what="the worker")
    assert not assert_each_segment_answered_once(
        (await stream_audio(str(server.make_url(SIMPLE)), FMT, make_pcm(FMT, 1.0),
                            chunk_size=4000)).events, 1.0)
    os.killpg(worker.proc.pid, signal.SIGTERM)
    assert await asyncio.wait_for(asyncio.to_thread(worker.proc.wait), 20) == 0
    await wait_until(lambda: pool.stats().ready == 0, within=5, what="the worker gone")
    text = worker.text()
    assert "never retrieved" not in text and "Traceback" not in text, text
    assert " ERROR " not in text and "CancelledError" not in text, text


def spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def env_without_venv() -> dict[str, str]:
    """The environment of a fresh shell: no STREAMER_* settings, no virtualenv on PATH."""
    venvs = {BIN.resolve(), VENV_BIN.resolve()}
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and Path(p).resolve() not in venvs)
    env = clean_env(PATH=path)
    env.pop("VIRTUAL_ENV", None)
    assert shutil.which("streamer-gateway", path=path) is None  # nothing else supplies them
    return env


async def test_honcho_runs_the_procfile_as_readme_says(tmp_path):
    """README's command from the checkout's root, with no virtualenv on PATH: nats-server with
    a token from .env, a gateway and two workers; everyone authenticates."""
    if VENV_BIN != BIN and not os.environ.get("CI"):
        pytest.skip(f"the Procfile runs the checkout's .venv; these tests run from {BIN}")
    require_nats_binary()
    port, nats_port, monitor = free_port(), free_port(), free_port()
    env = env_without_venv()
    dotenv = tmp_path / ".env"  # README writes .env; a developer's own is left alone here
    dotenv.write_text(f"STREAMER_NATS_TOKEN={TOKEN}\nNATS_PORT={nats_port}\n"
                      f"NATS_MONITOR_PORT={monitor}\n")
    log = tmp_path / "honcho.log"
    honcho = spawn([".venv/bin/honcho", "start", "-e", str(dotenv), "-p", str(port), "-c",
                    "worker=2"], log, env)
    try:
        async with aiohttp.ClientSession() as http:
            async def ready() -> bool:
                if honcho.poll() is not None:
                    raise AssertionError(f"honcho exited: {log.read_text()}")
                try:
                    async with http.get(f"http://127.0.0.1:{port}/api/v1/health") as r:
                        return (await r.json())["workers"]["ready"] == 2
                except aiohttp.ClientError:
                    return False

            await wait_until(ready, within=60, what=f"the Procfile's 2 workers ready "
                                                    f"({log.read_text()})")
            async with http.get(f"http://127.0.0.1:{monitor}/connz") as r:
                assert (await r.json())["num_connections"] == 3  # a gateway and 2 workers
        group = psutil.Process(honcho.pid).children(recursive=True)
        fmt = AudioFormat(2, 44100)
        report = await stream_audio(f"ws://127.0.0.1:{port}{SIMPLE}", fmt, make_pcm(fmt, 1.6),
                                    chunk_size=4001)
        for channel in (0, 1):
            check_channel(report.events, channel, 25600)
        # a client without the token is refused by the server, with its reason
        reader, writer = await asyncio.open_connection("127.0.0.1", nats_port)
        try:
            assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"INFO ")
            writer.write(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
            answer = await asyncio.wait_for(reader.readline(), 10)
            assert answer.startswith(b"-ERR") and b"Authorization Violation" in answer, answer
        finally:
            writer.close()
    finally:
        honcho.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, honcho.wait, 30)
    assert code == 143, log.read_text()  # honcho's exit code after a SIGTERM
    _, alive = psutil.wait_procs(group, timeout=10)
    assert alive == []  # nats-server, gateway, supervisors and model processes all gone
    assert TOKEN not in log.read_text()  # the secret appears in no log


async def test_a_sigkilled_gateway_leaves_workers_and_other_gateways_serving(
        gateway, nats_server, nats_workers, tmp_path):
    """A gateway process killed mid-stream on a stateful model: the other gateway keeps
    serving on the same worker, and the worker drops the dead gateway's stream state."""
    worker = nats_workers(model="stateful_counter", model__delay="0.02", model__mode="sleep",
                          pool__heartbeat_interval="0.2", pool__heartbeat_timeout="1.5")
    server = await nats_gateway(gateway, nats_server, model__name="stateful_counter",
                                model__delay=0.02)
    pool = server.app[POOL]
    await wait_until(lambda: pool.stats().ready == 1, within=40, what="the worker")
    port = free_port()
    env = clean_env(STREAMER_NATS_TOKEN=nats_server.token,
                    STREAMER_POOL__HEARTBEAT_INTERVAL="0.2",
                    STREAMER_POOL__HEARTBEAT_TIMEOUT="1.5",
                    STREAMER_SESSION__CHUNK_SECONDS=str(CHUNK))
    other = spawn([str(BIN / "streamer-gateway"), "--port", str(port), "--workers", "0",
                   "--nats", nats_server.url, "--model", "stateful_counter"],
                  tmp_path / "other-gateway.log", env)
    try:
        async with aiohttp.ClientSession() as http:
            async def other_ready() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(other_ready, within=40, what="the second gateway ready")
        log = tmp_path / "other-gateway.log"  # its start-up line counts the NATS workers
        line = await wait_until(lambda: next((x for x in log.read_text().splitlines()
                                              if "ready after" in x), None),
                                within=10, what="the ready line")
        assert "1 worker through NATS at nats://127.0.0.1" in line and "on 1 host" in line, line
        killed = asyncio.Event()

        def kill_the_other(event: ServerEvent) -> None:
            if isinstance(event, SegmentEvent) and not killed.is_set():
                killed.set()
                other.kill()

        doomed = asyncio.ensure_future(stream_audio(
            f"ws://127.0.0.1:{port}{SIMPLE}", FMT, make_pcm(FMT, 3.0, seed=1), chunk_size=4000,
            real_time=True, on_event=kill_the_other))
        report = await stream_audio(str(server.make_url(SIMPLE)), FMT, make_pcm(FMT, 3.0),
                                    chunk_size=4000, real_time=True)
        await asyncio.wait_for(asyncio.gather(doomed, return_exceptions=True), 30)
        assert killed.is_set()
        check_channel(report.events, 0, 48000, chunk=4000)  # unaffected, state intact
        totals = [e.output["total"] for e in report.events if isinstance(e, SegmentEvent)]
        assert totals == [4000 * (i + 1) for i in range(len(totals))]
        await wait_until(lambda: "went silent; dropped its streams' state" in worker.text(),
                         within=20, what="the worker dropping the dead gateway's state")
        assert worker.proc.poll() is None and pool.stats().lost == 0
    finally:
        other.kill()
        other.wait(10)
