"""Attached workers as separate processes (``streamer-worker --connect``), and the Procfile run by
honcho: real gateways, real worker processes, real websocket traffic on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import aiohttp
import psutil
import pytest

from streamer.client import stream_audio
from streamer.gateway.state import POOL
from streamer.protocol import AudioFormat, ErrorEvent
from tests.audio_gen import make_pcm
from tests.conftest import BIN, KEY, clean_env, free_port, wait_until
from tests.e2e.test_simple import SIMPLE, check_channel

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"


def spawn(args: list[str], log: Path, env: dict[str, str],
          cwd: Path | None = None) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)


async def stream_and_check(server, seconds: float = 2.3, sessions: int = 2) -> None:
    fmt = AudioFormat(1, 16000)
    reports = await asyncio.gather(*(
        stream_audio(str(server.make_url(SIMPLE)), fmt, make_pcm(fmt, seconds, seed=i),
                     chunk_size=3001) for i in range(sessions)))
    for report in reports:
        assert report.close_code == 1000
        assert not [e for e in report.events if isinstance(e, ErrorEvent)]
        check_channel(report.events, 0, round(seconds * 16000))


async def test_attached_workers_join_an_embedded_one_and_every_segment_arrives_once(
        gateway, workers, authkey):
    server = await gateway(workers=1, pool__worker_address="127.0.0.1:0",
                           model__delay=0.01, model__mode="sleep")
    pool = server.app[POOL]
    for _ in range(2):
        workers(pool.worker_address)
    await wait_until(lambda: pool.stats().ready == 3, within=30, what="2 attached workers ready")
    stats = pool.stats()
    assert stats.kind == "embedded+attached"
    ids = sorted((w.kind, w.worker_id) for w in stats.workers)
    assert ids[0] == ("attached", 1000) and ids[1] == ("attached", 1001)
    assert ids[2] == ("embedded", 0)  # ids never collide
    for link in pool.attached.links.values():  # Nagle off on the gateway's end
        sock = link._writer.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    await stream_and_check(server, sessions=3)
    assert all(w.answered > 0 for w in pool.stats().workers)  # every worker took work


async def test_an_attached_worker_runs_the_gateways_model_settings_over_a_unix_socket(
        gateway, workers, authkey, tmp_path):
    path = tmp_path / "workers.sock"
    server = await gateway(workers=0, pool__worker_address=str(path), model__failure_rate=1.0)
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/api/v1/health")) as r:
            assert r.status == 503  # alive, but no worker is ready
            assert (await r.json())["live"] is True
        async with http.get(server.make_url(SIMPLE)) as r:  # so no session is admitted
            assert r.status == 503 and "no worker is ready" in (await r.json())["message"]
    workers(str(path))
    pool = server.app[POOL]
    await wait_until(lambda: pool.stats().ready == 1, within=30, what="the worker ready")
    fmt = AudioFormat(1, 16000)
    report = await stream_audio(str(server.make_url(SIMPLE)), fmt, make_pcm(fmt, 1.0))
    errors = [e for e in report.events if isinstance(e, ErrorEvent)]
    assert len(errors) == 2 and all("failure_rate" in e.message for e in errors)


async def test_a_worker_started_before_the_gateway_retries_then_attaches(
        gateway, workers, authkey):
    port = free_port()
    early = workers(f"127.0.0.1:{port}", KEY, "--log-format", "json")
    await wait_until(lambda: "not reachable" in early.text(), within=30,
                     what="the worker retrying")
    server = await gateway(workers=0, pool__worker_address=f"127.0.0.1:{port}")
    pool = server.app[POOL]
    await wait_until(lambda: pool.stats().ready == 1, within=30, what="the early worker ready")
    assert early.proc.poll() is None
    # the supervisor's --log-format reaches the model process it forks: every line is JSON
    records = [json.loads(line) for line in early.text().splitlines()]
    retry = next(r for r in records if "not reachable" in r["message"])
    assert retry["process"] == f"worker[{retry['pid']}]" and retry["logger"] == "streamer.worker"
    await stream_and_check(server, sessions=1)


async def test_a_wrong_authkey_is_refused_with_a_message_and_the_gateway_keeps_serving(
        gateway, workers, authkey):
    server = await gateway(workers=0, pool__worker_address="127.0.0.1:0")
    pool = server.app[POOL]
    host, port = pool.worker_address.rsplit(":", 1)
    # a client that connects and says nothing must not hold up anyone else's admission
    silent = socket.create_connection((host, int(port)))
    intruder = workers(pool.worker_address, key="not-the-key")
    await wait_until(lambda: intruder.proc.poll() is not None, within=30,
                     what="the intruder to exit")
    assert intruder.proc.returncode == 2
    assert "STREAMER_AUTHKEY does not match" in intruder.text()
    assert "refused this worker" in intruder.text()
    assert pool.attached.refused == 1 and pool.stats().size == 0
    workers(pool.worker_address)
    await wait_until(lambda: pool.stats().ready == 1, within=30, what="the good worker ready")
    await stream_and_check(server, sessions=1)
    silent.close()


async def test_a_hung_worker_is_dropped_on_missed_heartbeats_and_comes_back(
        gateway, workers, authkey, caplog):
    server = await gateway(workers=0, pool__worker_address="127.0.0.1:0",
                           pool__heartbeat_interval=0.1, pool__heartbeat_timeout=0.8,
                           model__delay=0.02, model__mode="sleep")
    pool = server.app[POOL]
    ws = [workers(pool.worker_address) for _ in range(2)]
    await wait_until(lambda: pool.stats().ready == 2, within=30, what="2 workers ready")
    hung = ws[0].model_pids()[0]
    os.kill(hung, signal.SIGSTOP)  # alive, connection open, answering nothing
    try:
        fmt = AudioFormat(1, 16000)
        report = await stream_audio(str(server.make_url(SIMPLE)), fmt, make_pcm(fmt, 4.0),
                                    chunk_size=8000)
        check_channel(report.events, 0, 64000)  # what the hung worker held went elsewhere
        await wait_until(lambda: pool.stats().lost >= 1, within=10, what="the hung one dropped")
        assert "dropping it as hung" in caplog.text
    finally:
        os.kill(hung, signal.SIGCONT)  # it finds its connection closed and starts over
    await wait_until(lambda: pool.stats().ready == 2, within=30, what="the pool back to 2")
    assert hung not in ws[0].model_pids()


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
    """README's command from the checkout's root, with no virtualenv on PATH: the Procfile
    itself must find the binaries."""
    if VENV_BIN != BIN and not os.environ.get("CI"):
        pytest.skip(f"the Procfile runs the checkout's .venv; these tests run from {BIN}")
    port, worker_port = free_port(), free_port()
    env = env_without_venv()
    dotenv = tmp_path / ".env"  # README writes .env; a developer's own is left alone here
    dotenv.write_text(f"STREAMER_AUTHKEY={KEY}\n"
                      f"STREAMER_POOL__WORKER_ADDRESS=127.0.0.1:{worker_port}\n")
    log = tmp_path / "honcho.log"
    honcho = spawn([".venv/bin/honcho", "start", "-e", str(dotenv), "-p", str(port),
                    "-c", "worker=2"], log, env, cwd=ROOT)
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
        group = psutil.Process(honcho.pid).children(recursive=True)
        fmt = AudioFormat(2, 44100)
        report = await stream_audio(f"ws://127.0.0.1:{port}{SIMPLE}", fmt, make_pcm(fmt, 1.6),
                                    chunk_size=4001)
        for channel in (0, 1):
            check_channel(report.events, channel, 25600)
    finally:
        honcho.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, honcho.wait, 30)
    assert code == 143, log.read_text()  # honcho's exit code after a SIGTERM
    _, alive = psutil.wait_procs(group, timeout=10)
    assert alive == []  # gateway, supervisors and model processes all gone
