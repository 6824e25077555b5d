"""Shared fixtures and helpers: a real gateway with real worker processes on 127.0.0.1 (port 0),
separately run ``streamer-worker`` processes, free ports and bounded waits."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from streamer.config import Config, load_config
from streamer.gateway.app import create_app
from streamer.gateway.pool import Pool, make_pool

GatewayFactory = Callable[..., Awaitable[TestServer]]
BIN = Path(sys.executable).parent  # the installed commands


def free_port() -> int:
    """A port free on 127.0.0.1 now (for commands that need one before they start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                 within: float = 10.0) -> None:
    """Send ``sig``, and SIGKILL if it has not exited within ``within`` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(within)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_config(workers: int = 2, **settings: Any) -> Config:
    """Config from dotted settings (``model__delay=0.1`` or ``{"model.delay": 0.1}``), with the
    process environment ignored so a developer's STREAMER_* variables cannot change a test."""
    overrides = {"pool.workers": workers, "server.heartbeat": 0}
    overrides.update({k.replace("__", "."): v for k, v in settings.items()})
    return load_config(env={}, overrides=overrides)


@pytest.fixture
def gateway(aiohttp_server: Any) -> GatewayFactory:
    """``await gateway(workers=2, model__delay=0.01)`` -> a started TestServer."""

    async def factory(workers: int = 2, pool: str = "embedded", **settings: Any) -> TestServer:
        config = make_config(workers, **settings)
        the_pool: Pool = make_pool(config, pool)
        return await aiohttp_server(create_app(config, the_pool), host="127.0.0.1")

    return factory


async def wait_until(predicate: Callable[[], Any], within: float = 10.0,
                     what: str = "condition") -> Any:
    """Poll ``predicate`` (sync or async) until truthy; fail with ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    env.update(extra)
    return env


@pytest.fixture
def nats_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A started nats-server with token auth; this process's gateways get the token."""
    from tests.natsutil import NatsServer, require_nats_binary

    server = NatsServer(require_nats_binary(), tmp_path / "nats-server.log")
    server.start()
    monkeypatch.setenv("STREAMER_NATS_TOKEN", server.token)
    yield server
    server.stop()


@pytest.fixture
def nats_workers(tmp_path: Path, nats_server: Any) -> Iterator[Callable[..., Any]]:
    """``nats_workers(model="counter", **settings)`` starts a ``streamer-worker --nats``;
    settings are dotted config keys (``model__delay="0.02"``) passed as environment."""
    from tests.natsutil import NatsWorker

    started: list[NatsWorker] = []

    def start(model: str = "counter", token: str | None = None, group: bool = False,
              **settings: Any) -> NatsWorker:
        env = {"STREAMER_" + k.upper(): str(v) for k, v in settings.items()}
        w = NatsWorker(nats_server.url, tmp_path / f"nats-worker-{len(started)}.log",
                       nats_server.token if token is None else token, model, env, group)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()
