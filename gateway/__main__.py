"""``streamer-gateway``: the websocket gateway with its embedded worker processes."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import socket
import ssl
import sys
import time
from typing import Any, NoReturn

from aiohttp import web

from streamer import __version__
from streamer.config import Config, describe_settings, load_config, parse_assignment
from streamer.errors import ConfigError
from streamer.gateway.auth import describe_settings as describe_auth_settings
from streamer.gateway.state import BOOT, METRICS, POOL
from streamer.gateway.vad import VadSettings
from streamer.logs import FORMAT_ENV as LOG_FORMAT_ENV
from streamer.logs import setup_logging

log = logging.getLogger("streamer.gateway")


def build_parser() -> argparse.ArgumentParser:
    vad = "\n".join(f"  vad.{f.name} (default {f.default!r}): {f.metadata['doc']}"
                    for f in dataclasses.fields(VadSettings))
    settings = "\n".join(f"  {name} (default {default!r}): {doc}"
                         for name, default, doc in (*describe_settings(),
                                                    *describe_auth_settings()))
    parser = argparse.ArgumentParser(
        prog="streamer-gateway", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve live audio over websockets (/api/v1/simple, /api/v1/segmented), "
                    "running the model in worker processes.",
        epilog="Precedence: defaults < --config file < STREAMER_* environment < flags.\n"
               "Settings for --set (also STREAMER_<SECTION>__<KEY>):\n" + settings +
               "\n  model.<param>: the model's own parameters (e.g. model.delay=0.1)\n" + vad)
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default 8080)")
    parser.add_argument("--workers", type=int, help="worker processes (default: one per core; "
                        "with --nats the gateway starts none)")
    parser.add_argument("--model", help="model name (default counter)")
    parser.add_argument("--config", help="JSON or TOML config file")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="any setting, repeatable (e.g. --set model.delay=0.05)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--tls-cert", metavar="PEM", help="serve https/wss with this "
                        "certificate (chain) file; needs --tls-key")
    parser.add_argument("--tls-key", metavar="PEM", help="private key file for --tls-cert")
    parser.add_argument("--nats", metavar="URL",
                        help="dispatch to the workers of this NATS server (nats://HOST:PORT; "
                             "streamer-worker --nats) instead of starting worker processes; "
                             "credentials from STREAMER_NATS_TOKEN or STREAMER_NATS_USER and "
                             "STREAMER_NATS_PASSWORD")
    parser.add_argument("--metrics-address", metavar="HOST:PORT",
                        help="serve /metrics here (a bare PORT binds 127.0.0.1) and not on the "
                             "main port")
    parser.add_argument("--allow-anonymous", action="store_true", default=None,
                        help="without API keys (auth.keys), serve on a non-loopback address "
                             "anyway: anyone who reaches it may use the workers")
    parser.add_argument("--log-format", choices=("text", "json"),
                        help="text (default) or json: one object a line, with session and "
                             "trace ids as fields")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = dict(parse_assignment(item) for item in args.set)
    for flag, dotted in (("host", "server.host"), ("port", "server.port"),
                         ("workers", "pool.workers"), ("model", "model.name"),
                         ("log_level", "server.log_level"),
                         ("log_format", "server.log_format"),
                         ("nats", "pool.nats_url"),
                         ("tls_cert", "server.tls_cert"), ("tls_key", "server.tls_key"),
                         ("metrics_address", "server.metrics_address"),
                         ("allow_anonymous", "auth.allow_anonymous")):
        value = getattr(args, flag)
        if value is not None:
            overrides[dotted] = value
    return load_config(args.config, overrides=overrides)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        fail(f"configuration error: {exc}")
    setup_logging(config.server.log_level, process="gateway",
                  log_format=config.server.log_format)
    os.environ[LOG_FORMAT_ENV] = config.server.log_format  # embedded workers log alike
    from streamer.gateway.app import (
        create_app,  # after logging, so import-time messages are formatted
    )
    from streamer.gateway.event_loop import choose_loop
    from streamer.gateway.listeners import tls_context

    try:
        loop = choose_loop(config.server.event_loop)
        ssl_context = tls_context(config.server)
        app = create_app(config, boot_in_background=True)
    except ConfigError as exc:
        fail(f"configuration error: {exc}")
    try:  # before any worker starts: a busy port costs no model load
        sock = bind(config.server.host, config.server.port)
    except OSError as exc:
        fail(f"cannot listen on {config.server.host}:{config.server.port}: "
             f"{exc.strerror or exc}")
    with asyncio.Runner(loop_factory=loop.factory) as runner:
        raise SystemExit(runner.run(serve(app, sock, config, ssl_context, loop.name)))


def fail(message: str) -> NoReturn:
    """One line on stderr and exit status 2: the command line or its environment is wrong."""
    print(f"streamer-gateway: {message}", file=sys.stderr)
    raise SystemExit(2)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now (``listen`` comes when the server starts)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(app: web.Application, sock: socket.socket, config: Config,
                ssl_context: ssl.SSLContext | None = None, loop_name: str = "asyncio") -> int:
    """Serve until SIGINT/SIGTERM (exit 0) or until the workers cannot start (exit 1),
    logging start, readiness, drain and exit with their counts."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    app.on_shutdown.insert(0, _second_signal_exits_at_once)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    try:
        await runner.setup()  # a metrics address that cannot be bound fails here
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        await runner.cleanup()
        return 1
    site = web.SockSite(runner, sock, ssl_context=ssl_context)
    await site.start()
    host, port = sock.getsockname()[:2]
    workers = f"{config.pool.workers} workers"
    if config.pool.nats_url:
        from streamer.bus import redact

        workers = f"workers through NATS at {redact(config.pool.nats_url)}"
    log.info("listening on %s://%s:%d (%s, model %s, %s event loop); /readyz answers 200 "
             "once a worker is ready", "https" if ssl_context else "http",
             host if ":" not in host else f"[{host}]", port, workers, config.model.name,
             loop_name)
    boot = app[BOOT]
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({boot, stopping}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if boot.done() and (boot.cancelled() or boot.exception() is not None):
        reason = "cancelled" if boot.cancelled() else boot.exception()
        log.error("cannot start: %s", reason)
        code = 1
    else:
        if boot.done():
            await _log_ready(app, config, started, stopping)
        await stopping
        log.info("%s received: stopping", received[0] if received else "signal")
    stopping.cancel()
    await runner.cleanup()
    streams, answered = app[METRICS].totals()
    log.info("exiting after %.1f s: %d streams served, %d segments answered",
             time.monotonic() - started, streams, answered)
    return code


async def _log_ready(app: web.Application, config: Config, started: float,
                     stopping: asyncio.Future[Any]) -> None:
    """Say when the gateway can serve, with the workers it has. NATS workers join after the
    pool starts: wait for the first, then one heartbeat interval, in which every running
    worker announces itself."""
    pool = app[POOL]
    if not config.pool.nats_url:
        stats = pool.stats()
        log.info("ready after %.2f s: %d of %d workers ready", time.monotonic() - started,
                 stats.ready, stats.size)
        return
    from streamer.gateway.pool.nats import NatsPool

    assert isinstance(pool, NatsPool)
    joined = asyncio.ensure_future(pool.joined.wait())
    await asyncio.wait({joined, stopping}, return_when=asyncio.FIRST_COMPLETED)
    joined.cancel()
    if stopping.done():
        return
    ready_after = time.monotonic() - started
    await asyncio.wait({stopping}, timeout=config.pool.heartbeat_interval)
    if not stopping.done():
        log.info("ready after %.2f s: %s", ready_after, pool.fleet())


async def _second_signal_exits_at_once(app: web.Application) -> None:
    """The first SIGINT/SIGTERM drains sessions; a second one means "now"."""
    loop = asyncio.get_running_loop()

    def now() -> None:
        log.warning("second signal: exiting without draining")
        os._exit(1)  # workers see their socket close and exit too

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, now)


if __name__ == "__main__":
    main()
