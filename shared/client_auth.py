"""How a client presents its credential: an API key as ``Authorization: Bearer``, or a
short-lived token as a websocket subprotocol; and exchanging a key for a token
(``POST /api/v1/token``), which a server hands to a browser or to a process that should not hold
the key itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any

import aiohttp
from yarl import URL

from streamer.client_errors import REFUSALS, ConnectFailed, InvalidURL
from streamer.protocol import SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX

TOKEN_PATH = "/api/v1/token"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token and when it stops working. Pass ``token`` as ``connect(..., token=...)``, or to a
    browser, which offers ``subprotocols`` when it opens the websocket."""

    token: str = field(repr=False)
    expires_in: float      # seconds the gateway granted (at most what was asked)
    expires_at: float      # Unix time
    key: str               # the API key's name (never the key)

    @property
    def subprotocols(self) -> tuple[str, str]:
        return SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + self.token


def credentials(api_key: str | None = None, token: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[dict[str, str] | None,
                                                                tuple[str, ...]]:
    """The headers and websocket subprotocols that present ``api_key`` (``Authorization:
    Bearer``) or ``token`` (the subprotocol pair the gateway selects from, which keeps the token
    out of URLs and so out of access logs). The gateway accepts one credential per request."""
    if api_key is not None and token is not None:
        raise ValueError("pass api_key or token, not both")
    if api_key is not None:
        if not api_key.strip() or any(c in api_key for c in "\r\n"):
            raise ValueError("api_key must be a non-empty single-line string")
        return {**(headers or {}), "Authorization": f"Bearer {api_key.strip()}"}, ()
    if token is not None:
        if not token.strip() or any(c in token for c in "\r\n, "):
            raise ValueError("token must be a non-empty string without spaces or commas")
        return headers, (SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + token.strip())
    return headers, ()


def token_url(base_url: str) -> str:
    """The token endpoint on ``base_url``'s host: any gateway URL will do (ws/wss/http/https,
    with or without a path)."""
    try:
        url = URL(base_url if "://" in base_url else f"http://{base_url}")
    except (ValueError, TypeError) as exc:
        raise InvalidURL(f"{base_url!r} is not a valid URL ({exc})") from None
    scheme = {"ws": "http", "wss": "https"}.get(url.scheme, url.scheme)
    if scheme not in ("http", "https") or not url.host:
        raise InvalidURL(f"{base_url!r} is not a gateway URL; expected http(s):// or ws(s)://"
                         "HOST:PORT")
    return str(url.with_scheme(scheme).with_path(TOKEN_PATH).with_query(None)
               .with_fragment(None))


async def fetch_token(base_url: str, api_key: str, expires_in: float | None = None, *,
                      ssl: SSLContext | bool = True,
                      timeout: float = 10.0) -> IssuedToken:  # noqa: ASYNC109
    """A token for ``api_key`` from the gateway at ``base_url``, valid for ``expires_in``
    seconds (the gateway caps it at its ``auth.token_ttl``; None: that cap). A refusal raises
    :class:`~streamer.client_errors.Unauthorized` (a wrong key) with the gateway's reason;
    no answer, or a gateway without keys, :class:`~streamer.client_errors.ConnectFailed`."""
    url = token_url(base_url)
    headers, _ = credentials(api_key=api_key)
    body = None if expires_in is None else {"expires_in": expires_in}
    try:
        async with asyncio.timeout(timeout), aiohttp.ClientSession() as http, \
                http.post(url, headers=headers, json=body, ssl=ssl) as resp:
            status, text = resp.status, await resp.text()
            retry_after = resp.headers.get("Retry-After")
    except TimeoutError as exc:
        raise ConnectFailed(f"no answer from {url} within {timeout:g} s", url) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise ConnectFailed(f"cannot get a token from {url}: {exc or type(exc).__name__}",
                            url) from exc
    data: Any = None
    with contextlib.suppress(ValueError):
        data = json.loads(text)
    fields = data if isinstance(data, dict) else {}
    if status == 200 and isinstance(fields.get("token"), str):
        return IssuedToken(fields["token"], float(fields.get("expires_in", 0)),
                           float(fields.get("expires_at", 0)), str(fields.get("key", "")))
    message = str(fields.get("message") or text.strip() or f"HTTP {status}")[:300]
    if status in REFUSALS:
        wait = None
        if retry_after is not None:
            try:
                wait = max(0.0, float(retry_after))
            except ValueError:
                wait = None
        raise REFUSALS[status](url, str(fields.get("reason", "unknown")), message, wait, status)
    raise ConnectFailed(f"{url}: the gateway answered HTTP {status}: {message}", url, status)
