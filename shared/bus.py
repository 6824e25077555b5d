"""What gateways and workers share about NATS: subject names, connection options and
credentials (from the environment only, so they never appear in flags, help or logs).

Subjects, under ``pool.nats_subject`` (default ``streamer``):
``<p>.<model>.workers``  workers' heartbeats (:class:`~streamer.wire.WorkerAnnounce`);
``<p>.<model>.gateways`` gateways' heartbeats (:class:`~streamer.wire.GatewayBeat`);
``<p>.worker.<id>``      one worker's requests (affinity and per-worker limits need addressing);
``<p>.gateway.<id>.<n>`` one gateway's replies from its worker ``n`` (results and ``busy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from streamer.errors import ConfigError

TOKEN_ENV = "STREAMER_NATS_TOKEN"
USER_ENV = "STREAMER_NATS_USER"
PASSWORD_ENV = "STREAMER_NATS_PASSWORD"


def _token(text: str) -> str:
    """A model name as one subject token (import paths hold dots and colons)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "_"


def workers_subject(prefix: str, model: str) -> str:
    return f"{prefix}.{_token(model)}.workers"


def gateways_subject(prefix: str, model: str) -> str:
    return f"{prefix}.{_token(model)}.gateways"


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def redact(url: str) -> str:
    """The URL for logs and errors: any user:password in it replaced."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def connect_options(url: str, name: str, env: Mapping[str, str] | None = None
                    ) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect``: the server, the credentials from the
    environment, and reconnects forever (the caller decides what an outage means)."""
    env = os.environ if env is None else env
    if not url.startswith(("nats://", "tls://", "ws://", "wss://")):
        raise ConfigError(f"pool.nats_url {redact(url)!r}: expected nats://HOST:PORT "
                          "(or tls://HOST:PORT)")
    opts: dict[str, Any] = {"servers": [url], "name": name, "allow_reconnect": True,
                            "max_reconnect_attempts": -1, "reconnect_time_wait": 0.5,
                            "connect_timeout": 2.0, "ping_interval": 5,
                            "max_outstanding_pings": 2}
    token = env.get(TOKEN_ENV, "")
    user, password = env.get(USER_ENV, ""), env.get(PASSWORD_ENV, "")
    if token:
        opts["token"] = token
    elif user:
        opts["user"], opts["password"] = user, password
    return opts


def is_auth_error(exc: BaseException) -> bool:
    """The server refused the credentials (retrying cannot help)."""
    text = f"{type(exc).__name__} {exc}".lower()
    return "authorization" in text or "authentication" in text


class CredentialsRefused(Exception):
    """The NATS server refused this process's credentials."""


async def connect(url: str, name: str, on_error: Callable[[Exception], Awaitable[None]],
                  **callbacks: Any) -> Any:
    """``nats.connect`` that keeps trying while the server is unreachable (it may be starting)
    but stops at once with :class:`CredentialsRefused` when it refuses the credentials, which
    the client itself would retry forever."""
    import nats

    refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def errors(exc: Exception) -> None:
        if is_auth_error(exc) and not refused.done():
            refused.set_result(None)
        await on_error(exc)

    attempt = asyncio.ensure_future(nats.connect(**connect_options(url, name), error_cb=errors,
                                                 **callbacks))
    waiters: set[asyncio.Future[Any]] = {attempt, refused}
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if attempt.done():
        refused.cancel()
        return attempt.result()
    attempt.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # cancelled on purpose
        await attempt
    raise CredentialsRefused(f"the NATS server at {redact(url)} refused the credentials")
