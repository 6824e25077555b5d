"""Typed keys for what the app holds."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

from aiohttp import web

from streamer.config import Config
from streamer.gateway.pool.base import PoolStats

if TYPE_CHECKING:
    from streamer.gateway.admission import Admission
    from streamer.gateway.detection import Detection
    from streamer.gateway.looplag import LoopLagMonitor
    from streamer.gateway.metrics import Metrics
    from streamer.gateway.pool import Pool
    from streamer.gateway.resume import Resumables
    from streamer.gateway.session import Session

CONFIG = web.AppKey("config", Config)
POOL: web.AppKey[Pool] = web.AppKey("pool")
SESSIONS: web.AppKey[set[Session]] = web.AppKey("sessions")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
ADMISSION: web.AppKey[Admission] = web.AppKey("admission")
LOOP_LAG: web.AppKey[LoopLagMonitor] = web.AppKey("loop_lag")
RESUMABLES: web.AppKey[Resumables] = web.AppKey("resumables")
DETECTION: web.AppKey[Detection] = web.AppKey("detection")
BOOT: web.AppKey[asyncio.Task[None]] = web.AppKey("boot")


def booted(app: web.Application) -> bool:
    """The pool's start-up finished without error (workers may still come and go after)."""
    boot = app.get(BOOT)
    return boot is not None and boot.done() and not boot.cancelled() \
        and boot.exception() is None


def serving_stats(app: web.Application) -> PoolStats:
    """The pool's stats, with no worker counted ready until start-up is over: the pool
    dispatches nothing before then, so admission and readiness must not promise it."""
    stats = app[POOL].stats()
    return stats if booted(app) else dataclasses.replace(stats, ready=0)
