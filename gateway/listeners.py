"""Where the gateway listens besides its main port: TLS for the main listener, and an optional
separate listener for ``/metrics`` so that metrics need not be reachable where clients are."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from streamer.config import Config, ServerConfig
from streamer.errors import ConfigError
from streamer.gateway.metrics import Metrics
from streamer.gateway.state import METRICS

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"


Address = tuple[str, int] | str  # (host, port) or a unix socket path


def parse_address(text: str) -> Address:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1), or a unix socket path (with /)."""
    text = text.strip()
    if "/" in text:
        return text
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ConfigError(f"address {text!r}: expected HOST:PORT, PORT or a unix socket path")
    return host, number


def describe(address: Address) -> str:
    return address if isinstance(address, str) else f"{address[0]}:{address[1]}"


def tls_context(server: ServerConfig) -> ssl.SSLContext | None:
    """A server SSL context from ``server.tls_cert``/``server.tls_key`` (PEM), or None."""
    if not server.tls_cert and not server.tls_key:
        return None
    if not (server.tls_cert and server.tls_key):
        raise ConfigError("TLS needs both --tls-cert and --tls-key (server.tls_cert, "
                          "server.tls_key)")
    for what, path in (("certificate", server.tls_cert), ("key", server.tls_key)):
        if not Path(path).is_file():
            raise ConfigError(f"TLS {what} file {path} does not exist")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(server.tls_cert, server.tls_key)
    except (ssl.SSLError, OSError) as exc:
        # the message names the files, never their contents
        raise ConfigError(f"cannot load the TLS certificate {server.tls_cert} with key "
                          f"{server.tls_key}: {exc.__class__.__name__}") from None
    return context


class MetricsListener:
    """``/metrics`` on its own address; the main listener then answers 404 there."""

    def __init__(self, address: str, metrics: Metrics) -> None:
        self.address = parse_address(address)
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self.bound: str = ""  # HOST:PORT once listening (the real port when 0 was asked)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(METRICS_PATH, self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site: web.BaseSite
        if isinstance(self.address, str):
            site = web.UnixSite(self._runner, self.address)
        else:
            site = web.TCPSite(self._runner, *self.address)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(f"cannot serve metrics on {describe(self.address)}: "
                              f"{exc.strerror or exc}") from None
        server = getattr(site, "_server", None)
        socks = getattr(server, "sockets", None) or []
        if socks and not isinstance(self.address, str):
            host, port = socks[0].getsockname()[:2]
            self.bound = f"{host}:{port}"
        else:
            self.bound = describe(self.address)
        log.info("metrics on %s%s", self.bound, METRICS_PATH)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


METRICS_LISTENER = web.AppKey("metrics_listener", MetricsListener)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _hide_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == METRICS_PATH:
        raise web.HTTPNotFound()
    return await handler(request)


async def _metrics_listener_ctx(app: web.Application) -> AsyncIterator[None]:
    listener = app[METRICS_LISTENER]
    await listener.start()
    yield
    await listener.stop()


def install_metrics_listener(app: web.Application, config: Config) -> None:
    """With ``server.metrics_address`` set, serve ``/metrics`` there and only there."""
    if not config.server.metrics_address:
        return
    app[METRICS_LISTENER] = MetricsListener(config.server.metrics_address, app[METRICS])
    app.middlewares.append(_hide_metrics)
    app.cleanup_ctx.append(_metrics_listener_ctx)

