"""The NATS worker's command line, imports, model thread and hang watchdog (its behaviour with a
real server is in tests/e2e/test_nats.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np

from tests.conftest import BIN, clean_env, make_config


def test_workers_do_not_import_the_gateway():
    """A worker host needs the model's dependencies, not the web server's. (nats-py itself
    imports aiohttp when it is installed, for websocket connections; it does not need it.)"""
    code = ("import sys, streamer.workers.__main__, streamer.workers.loop, streamer.workers.models,"
            " streamer.workers.nats_worker;"
            "bad = [m for m in sys.modules if m.startswith('streamer.gateway')];"
            "print(bad); raise SystemExit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_without_a_server_the_worker_says_what_it_needs():
    out = subprocess.run([str(BIN / "streamer-worker")], capture_output=True, text=True,
                         timeout=60, env=clean_env())
    assert out.returncode == 2 and "--nats nats://HOST:PORT is required" in out.stderr
    bad = subprocess.run([str(BIN / "streamer-worker"), "--nats", "http://u:secret@h:1"],
                         capture_output=True, text=True, timeout=60, env=clean_env())
    assert bad.returncode == 2 and "expected nats://HOST:PORT" in bad.stderr
    assert "secret" not in bad.stderr and "Traceback" not in bad.stderr


def test_credentials_never_appear_in_help():
    out = subprocess.run([str(BIN / "streamer-worker"), "--help"], capture_output=True,
                         text=True, timeout=60,
                         env=clean_env(STREAMER_NATS_TOKEN="help-must-not-show-this"))
    assert "STREAMER_NATS_TOKEN" in out.stdout and "help-must-not-show-this" not in out.stdout


def request(rid: int, key: str | None = None, samples: int = 1600):
    from streamer.wire import InferenceRequest

    return InferenceRequest(request_id=rid, session_id="s", channel=0, seq=rid, start_time=0.0,
                            end_time=0.1, audio=np.zeros(samples, np.float32).tobytes(),
                            stateful_key=key)


async def run_model_thread(model: str, feed, expect: int, **settings):
    """A ModelThread on this loop: ``feed(thread)`` submits work; returns the ``expect`` first
    (token, result) pairs it delivers, decoded."""
    from streamer.wire import from_wire
    from streamer.workers.nats_worker import ModelThread

    got: list[tuple[int, object]] = []
    enough = asyncio.Event()

    def deliver(token: int, payload: bytes) -> None:
        got.append((token, from_wire(payload)))
        if len(got) >= expect:
            enough.set()

    thread = ModelThread(make_config(0, model__name=model, model__delay=0, **settings),
                         asyncio.get_running_loop(), deliver)
    thread.start()
    try:
        assert await asyncio.wait_for(thread.ready, 30) is not None
        feed(thread)
        await asyncio.wait_for(enough.wait(), 30)
    finally:
        thread.stop()
    await asyncio.wait_for(thread.ended, 30)
    return got


async def test_the_model_thread_answers_each_token_with_the_gateways_request_id():
    got = await run_model_thread(
        "counter", lambda t: [t.submit(10 + i, request(500 + i)) for i in range(3)], 3)
    assert [(token, r.request_id) for token, r in got] == [(10, 500), (11, 501), (12, 502)]
    assert all(r.error is None and r.output["count"] == 1600 for _, r in got)


async def test_the_model_thread_ends_a_stream_in_order_with_its_requests():
    def feed(t):
        t.submit(1, request(1, key="a"))
        t.submit(2, request(2, key="a"))
        t.end_stream("a")  # after the two above, before the one below
        t.submit(3, request(3, key="a"))

    got = await run_model_thread("stateful_counter", feed, 3)
    assert [r.output["total"] for _, r in got] == [1600, 3200, 1600]


async def test_the_model_thread_batches_what_waits_when_the_model_batches():
    def feed(t):
        for i in range(4):
            t.submit(i, request(i))

    got = await run_model_thread("counter", feed, 4, pool__max_batch=4,
                                 pool__worker_inflight=4, pool__max_wait_ms=200)
    assert [token for token, _ in got] == [0, 1, 2, 3]
    assert max(r.batch_size for _, r in got) > 1


def test_the_supervisor_calls_a_worker_hung_when_its_stamp_goes_stale():
    from streamer.workers.__main__ import Watchdog
    from streamer.workers.nats_worker import Vitals

    class Value:
        def __init__(self, value: float) -> None:
            self.value = value

    dog = Watchdog(start_timeout=5.0, timeout=2.0)
    booting = Vitals(answered=Value(0), alive=Value(0.0))
    assert dog.verdict(booting, started=100.0, now=104.0) is None
    assert "not ready within 5 s" in (dog.verdict(booting, started=100.0, now=105.5) or "")
    serving = Vitals(answered=Value(3), alive=Value(110.0))
    assert dog.verdict(serving, started=100.0, now=111.5) is None
    assert "dropping it as hung" in (dog.verdict(serving, started=100.0, now=112.5) or "")
