"""Typed keys for what the app holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from shared.config import Config

if TYPE_CHECKING:
    from gateway.pool import Pool
    from gateway.session import Session

CONFIG = web.AppKey("config", Config)
POOL: web.AppKey[Pool] = web.AppKey("pool")
SESSIONS: web.AppKey[set[Session]] = web.AppKey("sessions")
