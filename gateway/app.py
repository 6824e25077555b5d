"""The aiohttp application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.pool import Pool, make_pool
from gateway.routes import add_routes
from gateway.session import Session
from gateway.state import CONFIG, POOL, SESSIONS
from shared.config import Config


def create_app(config: Config, pool: Pool | None = None) -> web.Application:
    """Build the app; the pool starts with the app and stops after every session closed."""
    app = web.Application()
    app[CONFIG] = config
    app[POOL] = pool if pool is not None else make_pool(config)
    app[SESSIONS] = set()
    app.cleanup_ctx.append(_pool_ctx)
    app.on_shutdown.append(_close_sessions)
    add_routes(app)
    return app


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[POOL].start()
    yield
    await app[POOL].stop()


async def _close_sessions(app: web.Application) -> None:
    sessions: set[Session] = app[SESSIONS]
    await asyncio.gather(*(s.shutdown() for s in list(sessions)), return_exceptions=True)
