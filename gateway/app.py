"""The aiohttp application factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from streamer.config import Config
from streamer.gateway.admission import Admission
from streamer.gateway.gate import install_gate
from streamer.gateway.listeners import install_metrics_listener
from streamer.gateway.looplag import LoopLagMonitor
from streamer.gateway.metrics import Metrics
from streamer.gateway.pool import Pool, make_pool
from streamer.gateway.routes import add_routes
from streamer.gateway.session import Session
from streamer.gateway.state import ADMISSION, CONFIG, LOOP_LAG, METRICS, POOL, SESSIONS
from streamer.tracing import setup_tracing, shutdown_tracing

log = logging.getLogger(__name__)


def create_app(config: Config, pool: Pool | None = None) -> web.Application:
    """Build the app (no side effects until it starts). Start-up order: tracing, the loop-lag
    monitor, then the pool; cleanup runs the other way after every session was drained and
    closed, and ends with the tracer provider's flush and shutdown."""
    app = web.Application()
    app[CONFIG] = config
    the_pool = pool if pool is not None else make_pool(config)
    app[POOL] = the_pool
    sessions: set[Session] = set()
    app[SESSIONS] = sessions
    app[METRICS] = metrics = Metrics(the_pool.stats)
    app[LOOP_LAG] = LoopLagMonitor(metrics.loop_lag.observe,
                                   warn_above=config.server.loop_lag_warning)
    app[ADMISSION] = Admission(config.server, the_pool.stats,
                               lambda: (s.backlog_seconds for s in sessions))
    app.cleanup_ctx.append(_tracing_ctx)
    app.cleanup_ctx.append(_loop_lag_ctx)
    app.cleanup_ctx.append(_pool_ctx)
    app.on_shutdown.append(_drain_sessions)
    add_routes(app)
    install_gate(app, config)  # who may connect: keys, tokens, origins, per-key limits
    install_metrics_listener(app, config)
    return app


async def _tracing_ctx(app: web.Application) -> AsyncIterator[None]:
    setup_tracing("streamer-gateway")
    yield
    shutdown_tracing()


async def _loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    app[LOOP_LAG].start()
    yield
    await app[LOOP_LAG].stop()


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[POOL].start()
    yield
    await app[POOL].stop()


async def _drain_sessions(app: web.Application) -> None:
    """Let streaming sessions receive what they already sent, then close them with 1001."""
    sessions: set[Session] = app[SESSIONS]
    if not sessions:
        return
    log.info("shutting down: draining %d sessions (at most %g s)", len(sessions),
             app[CONFIG].server.drain_timeout)
    for session in list(sessions):
        await session.shutdown()
    waiting = [s.closed.wait() for s in list(sessions)]
    try:
        await asyncio.wait_for(asyncio.gather(*waiting), app[CONFIG].server.drain_timeout + 5.0)
    except TimeoutError:
        log.warning("%d sessions did not close in time", len(sessions))
