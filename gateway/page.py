"""The browser page: ``GET /`` serves a static page that streams the microphone (or a file) to
the gateway and shows the results as they arrive. Plain files shipped inside the package, no
build step; the page learns the few server settings it needs from ``/page-config.json``."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

import streamer
from streamer.gateway.state import CONFIG

STATIC_DIR = Path(__file__).with_name("static")
# Everything the page loads comes from this origin; websockets go back to it too.
CONTENT_SECURITY_POLICY = ("default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                           "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
# The files may change with an upgrade: browsers revalidate (ETag/Last-Modified) every time.
PAGE_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "X-Content-Type-Options": "nosniff"}


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


async def static_file(request: web.Request) -> web.FileResponse:
    """Only the files the package ships, by plain name (no sub-folders, no listing)."""
    name = request.match_info["name"]
    path = STATIC_DIR / name
    if name.startswith(".") or not path.is_file():
        raise web.HTTPNotFound(text=f"no such file: {name}")
    return web.FileResponse(path, headers=PAGE_HEADERS)


async def page_config(request: web.Request) -> web.Response:
    """What the page shows besides the results: the model's name, the version, and where a
    trace can be looked at (``server.trace_ui_url``, with ``{trace_id}`` to fill in)."""
    config = request.app[CONFIG]
    return web.json_response({"model": config.model.name, "version": streamer.__version__,
                              "trace_ui_url": config.server.trace_ui_url or None},
                             headers={"Cache-Control": "no-store"})


def add_page_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get(r"/static/{name:[A-Za-z0-9_.-]+}", static_file)
    app.router.add_get("/page-config.json", page_config)
