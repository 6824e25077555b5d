"""The aiohttp application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from functools import partial

from aiohttp import web

from streamer.config import Config
from streamer.gateway.admission import Admission
from streamer.gateway.detection import Detection
from streamer.gateway.gate import install_gate
from streamer.gateway.listeners import install_metrics_listener
from streamer.gateway.looplag import LoopLagMonitor
from streamer.gateway.metrics import Metrics
from streamer.gateway.page import add_page_routes
from streamer.gateway.pool import Pool, make_pool
from streamer.gateway.resume import Resumables
from streamer.gateway.routes import add_routes, server_vad_settings
from streamer.gateway.session import Session
from streamer.gateway.state import (
    ADMISSION,
    BOOT,
    CONFIG,
    DETECTION,
    LOOP_LAG,
    METRICS,
    POOL,
    RESUMABLES,
    SESSIONS,
    serving_stats,
)
from streamer.tracing import setup_tracing, shutdown_tracing

log = logging.getLogger(__name__)


def create_app(config: Config, pool: Pool | None = None, *,
               boot_in_background: bool = False) -> web.Application:
    """Build the app. Start-up order: tracing, metrics and loop-lag monitor, then the pool;
    shutdown runs the other way after every session was drained and closed.

    ``boot_in_background``: start-up returns while the workers boot, so the server answers
    (``/livez`` 200, ``/readyz`` 503) during a long model load; ``app[BOOT]`` is the boot task,
    whose failure the caller handles. Otherwise start-up waits for the pool, as tests expect.
    Cleanup ends with the tracer provider's flush and shutdown."""
    app = web.Application()
    app[CONFIG] = config
    the_pool = pool if pool is not None else make_pool(config)
    app[POOL] = the_pool
    sessions: set[Session] = set()
    app[SESSIONS] = sessions
    app[DETECTION] = detection = Detection(config)
    app[RESUMABLES] = Resumables(config.session.resume_window,
                                 detection.releaser(the_pool.release))
    app[METRICS] = metrics = Metrics(the_pool.stats)
    app[LOOP_LAG] = LoopLagMonitor(metrics.loop_lag.observe,
                                   warn_above=config.server.loop_lag_warning)
    app[ADMISSION] = Admission(config.server, partial(serving_stats, app),
                               lambda: (s.backlog_seconds for s in sessions))
    app.cleanup_ctx.append(_tracing_ctx)
    app.cleanup_ctx.append(_loop_lag_ctx)
    app.cleanup_ctx.append(partial(_pool_ctx, wait=not boot_in_background))
    app.cleanup_ctx.append(_detection_ctx)
    app.on_shutdown.append(_drain_sessions)
    add_routes(app)
    add_page_routes(app)
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


async def _pool_ctx(app: web.Application, wait: bool) -> AsyncIterator[None]:
    boot = app[BOOT] = asyncio.create_task(app[POOL].start(), name="pool-boot")
    if wait:
        await boot
    yield
    if not boot.done():
        boot.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # its caller reported it
        await boot
    await app[POOL].stop()


async def _detection_ctx(app: web.Application) -> AsyncIterator[None]:
    """The silero detector's processes: started now when it is the server's default detector,
    else by the first stream that asks for it."""
    detection = app[DETECTION]
    if server_vad_settings(app[CONFIG]).detector == "silero":
        detection.prestart()
    yield
    await detection.stop()


async def _drain_sessions(app: web.Application) -> None:
    """Let streaming sessions receive what they already sent, then close them with 1001."""
    app[RESUMABLES].close()  # streams whose socket dropped: nobody can resume them now
    sessions: set[Session] = app[SESSIONS]
    if not sessions:
        log.info("shutting down: no sessions to drain")
        return
    count, started = len(sessions), time.monotonic()
    log.info("shutting down: draining %d sessions (at most %g s)", count,
             app[CONFIG].server.drain_timeout)
    for session in list(sessions):
        await session.shutdown()
    waiting = [s.closed.wait() for s in list(sessions)]
    try:
        await asyncio.wait_for(asyncio.gather(*waiting), app[CONFIG].server.drain_timeout + 5.0)
    except TimeoutError:
        log.warning("%d sessions did not close in time", len(sessions))
    log.info("drained %d of %d sessions in %.2f s", count - len(sessions), count,
             time.monotonic() - started)
