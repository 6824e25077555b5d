"""The console scripts as a user runs them: the gateway and the client as separate processes."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from streamer.protocol import AudioFormat
from tests.audio_gen import write_wav
from tests.conftest import BIN, free_port, stop_process


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited with {proc.returncode}: "
                                 f"{proc.stderr.read().decode()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health",
                                        timeout=1) as r:
                return json.load(r)
        except OSError:
            time.sleep(0.05)  # polling a process we do not control, bounded by the deadline
    raise AssertionError("gateway did not become healthy")


@pytest.fixture
def gateway_process():
    procs = []

    def start(*args: str) -> tuple[int, subprocess.Popen]:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
        proc = subprocess.Popen([str(BIN / "streamer-gateway"), "--port", str(port), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        procs.append(proc)
        wait_healthy(port, proc)
        return port, proc

    yield start
    for proc in procs:
        stop_process(proc, signal.SIGINT, 15)
        proc.stdout.close()
        proc.stderr.close()


def uvloop_or_skip(event_loop: str) -> None:
    """uvloop comes with the ``server`` extra: CI always has it."""
    if event_loop != "asyncio" and importlib.util.find_spec("uvloop") is None:
        if os.environ.get("CI"):
            raise AssertionError("uvloop (server extra) is not installed")
        pytest.skip("uvloop is not installed")


@pytest.mark.parametrize(("event_loop", "runs_on"), [("auto", "uvloop"), ("asyncio", "asyncio"),
                                                     ("uvloop", "uvloop")])
def test_client_cli_streams_a_wav_file_to_the_gateway_cli(gateway_process, tmp_path,
                                                          event_loop, runs_on):
    uvloop_or_skip(event_loop)
    port, proc = gateway_process("--workers", "2", "--set", "model.delay=0.01",
                                 "--set", f"server.event_loop={event_loop}")
    wav = tmp_path / "speech.wav"
    write_wav(wav, AudioFormat(2, 44100, 16, False), 1.6)
    out = subprocess.run([str(BIN / "streamer-client"), "-i", str(wav), "--addr",
                          f"ws://127.0.0.1:{port}/api/v1/simple", "--chunk-size", "3001"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    for channel in (0, 1):
        segs = [e for e in events if e["type"] == "segment" and e["channel"] == channel]
        assert [s["start_time"] for s in segs] == [0.0, 0.5, 1.0, 1.5]
        assert sum(s["count"] for s in segs) == 25600
    assert "first result after" in out.stderr and "close code 1000" in out.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    lag = re.search(r"^streamer_event_loop_lag_seconds_count (\S+)$", metrics, re.M)
    assert lag and float(lag[1]) > 0  # the loop-lag monitor ticks on this loop too
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    assert f"{runs_on} event loop" in proc.stderr.read().decode()


def test_gateway_refuses_bad_configuration_with_a_message(tmp_path):
    out = subprocess.run([str(BIN / "streamer-gateway"), "--set", "model.delay=-1"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "configuration error: model.delay must be between" in out.stderr
    out = subprocess.run([str(BIN / "streamer-gateway"), "--model", "nope"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "unknown model 'nope'" in out.stderr
    out = subprocess.run([str(BIN / "streamer-gateway"), "--set", "server.event_loop=trio"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert ("configuration error: server.event_loop must be one of auto, asyncio, uvloop, "
            "got 'trio'") in out.stderr


def test_gateway_stops_on_sigint_and_leaves_no_worker_behind(gateway_process):
    port, proc = gateway_process("--workers", "2")
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []


def test_client_cli_reports_a_missing_file_and_an_unreachable_gateway(tmp_path):
    out = subprocess.run([str(BIN / "streamer-client"), "-i", str(tmp_path / "none.wav")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "No such file" in out.stderr
    wav = tmp_path / "a.wav"
    write_wav(wav, AudioFormat(1, 16000, 16, False), 0.1)
    out = subprocess.run([str(BIN / "streamer-client"), "-i", str(wav), "--addr",
                          f"ws://127.0.0.1:{free_port()}/api/v1/simple"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 3 and "cannot connect to 127.0.0.1" in out.stderr


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_sigterm_mid_stream_delivers_results_then_closes_1001(gateway_process, tmp_path,
                                                              event_loop):
    uvloop_or_skip(event_loop)
    port, proc = gateway_process("--workers", "2", "--set", "server.drain_timeout=5",
                                 "--set", f"server.event_loop={event_loop}")
    children = psutil.Process(proc.pid).children(recursive=True)
    client = stream_in_real_time(port, tmp_path, seconds=20.0)
    first = client.stdout.readline()  # the first result: the stream is under way
    assert json.loads(first)["type"] == "segment"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert time.monotonic() - started < 10
    out, err = client.communicate(timeout=15)
    events = [json.loads(first)] + [json.loads(line) for line in out.splitlines()]
    segs = [e for e in events if e["type"] == "segment"]
    assert [s["start_time"] for s in segs] == [0.5 * i for i in range(len(segs))]  # no gap
    assert events[-1]["type"] == "stopped"  # the stream was finished, not dropped
    assert "close code 1001" in err
    log = proc.stderr.read().decode()
    assert "SIGTERM received: stopping" in log
    assert "draining 1 sessions" in log and "drained 1 of 1 sessions" in log
    assert re.search(rf"exiting after [\d.]+ s: 1 streams served, {len(segs)} segments "
                     r"answered", log), log
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []


def stream_in_real_time(port: int, tmp_path: Path, seconds: float) -> subprocess.Popen:
    """``streamer-client`` streaming a mono WAV of ``seconds`` to /simple, paced like a live
    source; its events come on stdout as JSON lines."""
    wav = write_wav(tmp_path / "live.wav", AudioFormat(1, 16000, 16, False), seconds)
    return subprocess.Popen([str(BIN / "streamer-client"), "-i", str(wav), "--addr",
                             f"ws://127.0.0.1:{port}/api/v1/simple", "--real-time"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_signal_exits_at_once_without_draining(gateway_process, tmp_path):
    port, proc = gateway_process("--workers", "1", "--set", "model.delay=5",
                                 "--set", "model.mode=sleep", "--set", "server.drain_timeout=60")
    children = psutil.Process(proc.pid).children(recursive=True)
    client = stream_in_real_time(port, tmp_path, seconds=1.0)
    try:
        wait_for_log(proc, "stream 1 started")
        proc.send_signal(signal.SIGTERM)
        wait_for_log(proc, "draining 1 sessions")  # the first signal: a drain of up to 60 s
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 1
        assert time.monotonic() - started < 5
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []  # the workers saw their gateway go and left too
    finally:
        client.kill()
        client.communicate()


def wait_for_log(proc: subprocess.Popen, words: str, within: float = 20.0) -> None:
    """Read the gateway's log until a line has ``words`` (bounded by ``within`` seconds)."""
    read_log_until(proc, words, within)


def test_a_busy_port_is_one_line_and_exit_2_before_any_worker_starts():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # a warm-up far longer than the timeout: booting workers first could not pass
        out = subprocess.run([str(BIN / "streamer-gateway"), "--port", str(port),
                              "--workers", "1", "--set", "model.delay=50",
                              "--set", "model.mode=sleep"],
                             capture_output=True, text=True, timeout=40)
    assert out.returncode == 2
    assert out.stderr == (f"streamer-gateway: cannot listen on 127.0.0.1:{port}: "
                          "Address already in use\n")


def test_port_0_logs_the_real_address_and_stops_with_counts(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    proc = subprocess.Popen([str(BIN / "streamer-gateway"), "--port", "0", "--workers", "1",
                             "--log-format", "json", "--log-level", "DEBUG",
                             "--set", "model.delay=0.01"],
                            stderr=subprocess.PIPE, env=env)
    try:
        started = json.loads(read_log_until(proc, "listening on"))
        address = re.search(r"listening on (http://127\.0\.0\.1:(\d+)) ", started["message"])
        assert address and address[2] != "0", started
        port = int(address[2])
        with urllib.request.urlopen(f"{address[1]}/livez", timeout=10) as r:
            assert r.status == 200
        wait_healthy(port, proc)
        wav = write_wav(tmp_path / "a.wav", AudioFormat(1, 16000, 16, False), 1.0)
        out = subprocess.run([str(BIN / "streamer-client"), "-i", str(wav), "--addr",
                              f"ws://127.0.0.1:{port}/api/v1/simple"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        records = [started] + [json.loads(line) for line in proc.stderr.read().splitlines()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    messages = [r["message"] for r in records]
    assert any(m.startswith("ready after") for m in messages)
    assert "SIGINT received: stopping" in messages
    assert "shutting down: no sessions to drain" in messages
    assert re.fullmatch(r"exiting after [\d.]+ s: 1 streams served, 2 segments answered",
                        records[-1]["message"]), messages[-5:]
    # session and trace ids are fields of the records about a session
    stream = next(r for r in records if "stream 1 started" in r["message"])
    assert stream["logger"] == "streamer.gateway.session" and stream["process"] == "gateway"
    assert re.fullmatch(r"[0-9a-f]{32}", stream["trace"]) and stream["session"]
    # the embedded worker logs in the gateway's format (every line above parsed as JSON)
    assert any(r["process"] == "worker-0" and r["logger"] == "streamer.worker" for r in records)


def read_log_until(proc: subprocess.Popen, words: str, within: float = 30.0) -> str:
    """The first stderr line with ``words`` (bounded by ``within`` seconds)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        if words in line:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"the gateway never logged {words!r}")


def test_workers_that_cannot_start_end_the_gateway_with_status_1():
    out = subprocess.run([str(BIN / "streamer-gateway"), "--port", "0", "--workers", "1",
                          "--set", "pool.start_timeout=1", "--set", "model.delay=30",
                          "--set", "model.mode=sleep"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "cannot start: workers failed to start: worker 0: not ready after 1.0 s" in out.stderr
    assert "Traceback" not in out.stderr
