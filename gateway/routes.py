"""HTTP and websocket routes."""

from __future__ import annotations

from aiohttp import web

from gateway.audio import MODEL_RATE
from gateway.segmenters import FixedSegmenter, Segmenter
from gateway.session import SegmenterFactory, Session
from gateway.state import CONFIG, POOL, SESSIONS
from shared.config import Config
from shared.errors import ProtocolError
from shared.protocol import StartRequest


def fixed_segmenters(start: StartRequest, config: Config) -> list[Segmenter]:
    if start.options:
        raise ProtocolError(f"{', '.join(sorted(start.options))} is not used on /api/v1/simple; "
                            "voice-activity settings belong to /api/v1/segmented")
    chunk = max(1, round(config.session.chunk_seconds * MODEL_RATE))
    return [FixedSegmenter(chunk) for _ in range(start.format.channels)]


def websocket_route(endpoint: str, make_segmenters: SegmenterFactory):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.WebSocketResponse:
        app = request.app
        config = app[CONFIG]
        ws = web.WebSocketResponse(max_msg_size=config.server.max_msg_size,
                                   heartbeat=config.server.heartbeat or None)
        await ws.prepare(request)
        session = Session(ws, app[POOL], config, endpoint, make_segmenters)
        app[SESSIONS].add(session)
        try:
            await session.run()
        finally:
            app[SESSIONS].discard(session)
        return ws

    return handler


async def health(request: web.Request) -> web.Response:
    stats = request.app[POOL].stats()
    body = {"status": "ok" if stats.ready else "unavailable", "live": True,
            "ready": stats.ready > 0,
            "workers": {"size": stats.size, "ready": stats.ready, "restarts": stats.restarts},
            "queued": stats.queued, "inflight": stats.inflight,
            "sessions": len(request.app[SESSIONS])}
    return web.json_response(body, status=200 if stats.ready else 503)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/simple", websocket_route("/api/v1/simple", fixed_segmenters))
    app.router.add_get("/api/v1/health", health)
