"""HTTP and websocket routes."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from streamer.config import Config
from streamer.errors import ProtocolError
from streamer.gateway.audio import MODEL_RATE
from streamer.gateway.auth import SUBPROTOCOL
from streamer.gateway.gate import current_lease
from streamer.gateway.segmenters import FixedSegmenter, Segmenter, SegmenterFactory
from streamer.gateway.session import Session
from streamer.gateway.state import ADMISSION, CONFIG, LOOP_LAG, METRICS, POOL, SESSIONS
from streamer.gateway.vad import VadSegmenter, VadSettings
from streamer.protocol import StartRequest

# aiohttp itself drops frames over this multiple of server.max_msg_size (a bare 1009 close);
# frames between the two get an error event that says what the limit is first.
HARD_FRAME_LIMIT_FACTOR = 4


def fixed_segmenters(start: StartRequest, config: Config) -> list[Segmenter]:
    if start.options:
        raise ProtocolError(f"{', '.join(sorted(start.options))} is not used on /api/v1/simple; "
                            "voice-activity settings belong to /api/v1/segmented")
    chunk = max(1, round(config.session.chunk_seconds * MODEL_RATE))
    return [FixedSegmenter(chunk) for _ in range(start.format.channels)]


def server_vad_settings(config: Config) -> VadSettings:
    """The server's voice-activity defaults (the ``vad`` config section over the built-ins)."""
    return VadSettings.from_config(config.vad)


def vad_segmenters(start: StartRequest, config: Config) -> list[Segmenter]:
    settings = VadSettings.from_options(start.options.get("vad"), server_vad_settings(config))
    return [VadSegmenter(settings, interim=start.interim_results)
            for _ in range(start.format.channels)]


def websocket_route(endpoint: str, make_segmenters: SegmenterFactory):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        app = request.app
        config = app[CONFIG]
        sessions: set[Session] = app[SESSIONS]
        refusal = app[ADMISSION].check(len(sessions))
        if refusal is not None:
            app[METRICS].refused.labels(refusal.reason).inc()
            return web.json_response(
                {"type": "error", "reason": refusal.reason, "message": refusal.message},
                status=503, headers={"Retry-After": str(refusal.retry_after)})
        lease = current_lease()  # the API key's hold, from the gate (None without keys)
        ws = web.WebSocketResponse(
            max_msg_size=config.server.max_msg_size * HARD_FRAME_LIMIT_FACTOR,
            heartbeat=config.server.heartbeat or None, protocols=(SUBPROTOCOL,))
        await ws.prepare(request)
        session = Session(ws, app[POOL], config, endpoint, make_segmenters, app[METRICS],
                          transport=request.transport,
                          traceparent_header=request.headers.get("traceparent"),
                          on_media=lease.charge if lease is not None else None)
        sessions.add(session)
        app[METRICS].sessions.labels(endpoint).inc()
        try:
            await session.run()
        finally:
            sessions.discard(session)
            app[METRICS].sessions.labels(endpoint).dec()
        return ws

    return handler


async def health(request: web.Request) -> web.Response:
    """Liveness (the process answers) and readiness (a worker can take work) apart."""
    stats = request.app[POOL].stats()
    body = {"status": "ok" if stats.ready else "unavailable", "live": True,
            "ready": stats.ready > 0,
            "workers": {"size": stats.size, "ready": stats.ready, "restarts": stats.restarts},
            "queued": stats.queued, "inflight": stats.inflight,
            "sessions": len(request.app[SESSIONS]),
            "loop_lag_max_ms": round(request.app[LOOP_LAG].worst * 1e3, 3)}
    return web.json_response(body, status=200 if stats.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/simple", websocket_route("/api/v1/simple", fixed_segmenters))
    server_vad_settings(app[CONFIG])  # a bad vad section fails at start-up, not per session
    app.router.add_get("/api/v1/segmented",
                       websocket_route("/api/v1/segmented", vad_segmenters))
    app.router.add_get("/api/v1/health", health)
    app.router.add_get("/metrics", metrics)
