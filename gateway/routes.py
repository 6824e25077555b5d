"""HTTP and websocket routes."""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST

from streamer.config import Config
from streamer.errors import ProtocolError
from streamer.gateway.audio import MODEL_RATE
from streamer.gateway.auth import SUBPROTOCOL
from streamer.gateway.detection import Detection
from streamer.gateway.gate import current_lease
from streamer.gateway.segmenters import FixedSegmenter, Segmenter, SegmenterFactory
from streamer.gateway.session import Session
from streamer.gateway.state import (
    ADMISSION,
    CONFIG,
    DETECTION,
    LOOP_LAG,
    METRICS,
    POOL,
    RESUMABLES,
    SESSIONS,
    booted,
    serving_stats,
)
from streamer.gateway.vad import VadSegmenter, VadSettings
from streamer.logs import bind_log_fields, reset_log_fields
from streamer.protocol import StartRequest
from streamer.tracing import context_from_traceparent
from streamer.workers.models import model_class

tracer = trace.get_tracer("streamer.gateway")

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


def vad_segmenters(detection: Detection) -> SegmenterFactory:
    """Segmenters for ``/api/v1/segmented``; a silero detector runs in ``detection``'s
    processes when it has any."""
    def make(start: StartRequest, config: Config) -> list[Segmenter]:
        settings = VadSettings.from_options(start.options.get("vad"),
                                            server_vad_settings(config))
        feed = config.session.feed_interval if streaming_model(config) else None
        return [VadSegmenter(settings, interim=start.interim_results, feed_interval=feed,
                             detector=(detection.detector(settings.speech_probability)
                                       if settings.detector == "silero" else None))
                for _ in range(start.format.channels)]
    return make


@functools.cache
def _streams(name: str) -> bool:
    return model_class(name).streaming()


def streaming_model(config: Config) -> bool:
    """Whether the configured model takes a segment's audio while it grows."""
    return _streams(config.model.name)


def websocket_route(endpoint: str, make_segmenters: SegmenterFactory):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        app = request.app
        config = app[CONFIG]
        sessions: set[Session] = app[SESSIONS]
        # The upgrade is an HTTP server span of its own (admission, handshake); the session
        # span that follows picks its parent from the 'start' message or this same header.
        with tracer.start_as_current_span(
                f"{request.method} {endpoint}", kind=trace.SpanKind.SERVER,
                context=context_from_traceparent(request.headers.get("traceparent")),
                attributes=upgrade_attributes(request, endpoint)) as span:
            refusal = app[ADMISSION].check(len(sessions))
            if refusal is not None:
                app[METRICS].refused.labels(refusal.reason).inc()
                span.set_attributes({"http.response.status_code": 503, "error.type": "503",
                                     "streamer.refusal.reason": refusal.reason})
                span.set_status(trace.StatusCode.ERROR, refusal.message)
                return web.json_response(
                    {"type": "error", "reason": refusal.reason, "message": refusal.message},
                    status=503, headers={"Retry-After": str(refusal.retry_after)})
            lease = current_lease()  # the API key's hold, from the gate (None without keys)
            ws = web.WebSocketResponse(
                max_msg_size=config.server.max_msg_size * HARD_FRAME_LIMIT_FACTOR,
                heartbeat=config.server.heartbeat or None, protocols=(SUBPROTOCOL,))
            try:
                await ws.prepare(request)
            except web.HTTPException as exc:  # not a websocket handshake: 400 and the like
                span.set_attributes({"http.response.status_code": exc.status,
                                     "error.type": str(exc.status)})
                raise
            span.set_attribute("http.response.status_code", 101)
        session = Session(ws, app[POOL], config, endpoint, make_segmenters, app[METRICS],
                          detection=app[DETECTION], transport=request.transport,
                          traceparent_header=request.headers.get("traceparent"),
                          on_media=lease.charge if lease is not None else None,
                          resumables=app[RESUMABLES])
        # every record logged for this socket (here and in tasks it starts) carries the
        # session's id and its current stream's trace id as fields
        fields = bind_log_fields(lambda: session.log.extra or {})
        sessions.add(session)
        app[METRICS].sessions.labels(endpoint).inc()
        try:
            await session.run()
        finally:
            sessions.discard(session)
            app[METRICS].sessions.labels(endpoint).dec()
            reset_log_fields(fields)
        return ws

    return handler


def upgrade_attributes(request: web.Request, route: str) -> dict[str, Any]:
    """HTTP server span attributes, named as OpenTelemetry's semantic conventions name them."""
    attrs: dict[str, Any] = {
        "http.request.method": request.method, "http.route": route, "url.path": request.path,
        "url.scheme": request.scheme,
        "network.protocol.version": f"{request.version.major}.{request.version.minor}"}
    if request.url.host:
        attrs["server.address"] = request.url.host
    if request.url.port:
        attrs["server.port"] = request.url.port
    if request.remote:
        attrs["client.address"] = request.remote
    if "User-Agent" in request.headers:
        attrs["user_agent.original"] = request.headers["User-Agent"]
    return attrs


async def health(request: web.Request) -> web.Response:
    """Everything an operator looks at first, in one JSON body; 503 while not ready."""
    stats = serving_stats(request.app)
    body = {"status": "ok" if stats.ready else "unavailable", "live": True,
            "ready": stats.ready > 0,
            "workers": {"size": stats.size, "ready": stats.ready, "restarts": stats.restarts},
            "queued": stats.queued, "inflight": stats.inflight,
            "sessions": len(request.app[SESSIONS]),
            "loop_lag_max_ms": round(request.app[LOOP_LAG].worst * 1e3, 3)}
    return web.json_response(body, status=200 if stats.ready else 503)


async def livez(request: web.Request) -> web.Response:
    """Liveness: the process answers HTTP. Never depends on workers, so an orchestrator does
    not restart a gateway whose workers are still booting or respawning."""
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 only while a worker can take a new session's audio; else 503 saying
    why, so an orchestrator (or a person) can tell start-up from an outage."""
    app = request.app
    stats = serving_stats(app)
    workers = {"size": stats.size, "ready": stats.ready}
    if stats.ready:
        return web.json_response({"status": "ready", "workers": workers})
    raw = app[POOL].stats()
    if not booted(app):
        reason = (f"starting: {raw.ready} of {raw.size} workers ready"
                  if raw.size else "starting")
    elif not stats.available:
        reason = "no worker can start (every worker slot gave up); restart the gateway"
    elif raw.size == 0:
        reason = "no worker is connected (workers come through NATS)"
    else:
        reason = f"no worker is ready ({raw.size} starting or restarting)"
    return web.json_response({"status": "not_ready", "reason": reason, "workers": workers},
                             status=503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/simple", websocket_route("/api/v1/simple", fixed_segmenters))
    server_vad_settings(app[CONFIG])  # a bad vad section fails at start-up, not per session
    app.router.add_get("/api/v1/segmented",
                       websocket_route("/api/v1/segmented", vad_segmenters(app[DETECTION])))
    app.router.add_get("/api/v1/health", health)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
