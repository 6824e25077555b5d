"""Typed keys for what the app holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from streamer.config import Config

if TYPE_CHECKING:
    from streamer.gateway.admission import Admission
    from streamer.gateway.looplag import LoopLagMonitor
    from streamer.gateway.metrics import Metrics
    from streamer.gateway.pool import Pool
    from streamer.gateway.session import Session

CONFIG = web.AppKey("config", Config)
POOL: web.AppKey[Pool] = web.AppKey("pool")
SESSIONS: web.AppKey[set[Session]] = web.AppKey("sessions")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
ADMISSION: web.AppKey[Admission] = web.AppKey("admission")
LOOP_LAG: web.AppKey[LoopLagMonitor] = web.AppKey("loop_lag")
