"""Liveness and readiness probes on a real gateway whose real workers are still warming up."""

from __future__ import annotations

import aiohttp

from streamer.gateway.app import create_app
from streamer.gateway.pool import make_pool
from streamer.gateway.state import BOOT, POOL
from tests.conftest import make_config, wait_until

WARMUP = 4.0  # seconds of model warm-up (the counter model pays `delay` once to warm up)


async def get(http: aiohttp.ClientSession, url) -> tuple[int, dict]:
    async with http.get(url) as r:
        return r.status, await r.json()


async def test_livez_answers_while_readyz_waits_for_a_warm_worker(aiohttp_server):
    config = make_config(1, model__delay=WARMUP, model__mode="sleep")
    app = create_app(config, make_pool(config), boot_in_background=True)
    server = await aiohttp_server(app, host="127.0.0.1")
    boot = app[BOOT]
    async with aiohttp.ClientSession() as http:
        live, alive = await get(http, server.make_url("/livez"))
        ready, why = await get(http, server.make_url("/readyz"))
        health, body = await get(http, server.make_url("/api/v1/health"))
        async with http.get(server.make_url("/api/v1/simple")) as upgrade:
            refused = upgrade.status, await upgrade.json()
        assert not boot.done(), "the worker warmed up before the probes ran; raise WARMUP"
        assert (live, alive) == (200, {"status": "alive"})
        assert ready == 503 and why["status"] == "not_ready"
        assert why["reason"] == "starting: 0 of 1 workers ready"
        assert why["workers"] == {"size": 1, "ready": 0}
        assert health == 503 and body["live"] is True and body["ready"] is False
        assert refused[0] == 503 and refused[1]["reason"] == "not_ready"

        await wait_until(lambda: boot.done(), within=WARMUP + 60, what="the worker warm")
        assert app[POOL].stats().ready == 1
        ready, body = await get(http, server.make_url("/readyz"))
        assert (ready, body) == (200, {"status": "ready", "workers": {"size": 1, "ready": 1}})
        assert (await get(http, server.make_url("/livez")))[0] == 200
        health, body = await get(http, server.make_url("/api/v1/health"))
        assert health == 200 and body["status"] == "ok" and body["workers"]["ready"] == 1


async def test_readyz_says_why_when_workers_come_through_nats_and_none_has(gateway,
                                                                          nats_server):
    server = await gateway(workers=0, pool__nats_url=nats_server.url)
    async with aiohttp.ClientSession() as http:
        assert (await get(http, server.make_url("/livez")))[0] == 200
        status, body = await get(http, server.make_url("/readyz"))
    assert status == 503
    assert body == {"status": "not_ready", "workers": {"size": 0, "ready": 0},
                    "reason": "no worker is connected (workers come through NATS)"}
