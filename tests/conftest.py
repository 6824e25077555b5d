"""Factory fixtures: a real gateway with real worker processes on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from streamer.config import Config, load_config
from streamer.gateway.app import create_app
from streamer.gateway.pool import Pool, make_pool

GatewayFactory = Callable[..., Awaitable[TestServer]]


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
