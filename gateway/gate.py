"""The door in front of the websockets: an aiohttp middleware that checks every upgrade request's
``Origin``, credential and key limits before any handler runs, and the token endpoint.

Every websocket upgrade passes through it, whatever its path, so an endpoint added later is
covered without being listed. Refusals are HTTP responses with a JSON body, before the upgrade:
403 for an origin, 401 for a credential, 429 (with ``Retry-After``) for a key's own limits.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from streamer.config import Config
from streamer.gateway.auth import (
    SUBPROTOCOL,
    TOKEN_PREFIX,
    TOKEN_SUBPROTOCOL_PREFIX,
    AuthSettings,
    KeyRing,
    Refused,
    Tokens,
    check_exposure,
    check_origin,
    check_subprotocols,
    presented_credential,
)
from streamer.gateway.keylimits import KeyLimits, KeyMetrics, Lease
from streamer.gateway.metrics import Metrics
from streamer.gateway.state import METRICS

log = logging.getLogger(__name__)

TOKEN_PATH = "/api/v1/token"
AUTH_INFO_PATH = "/api/v1/auth"
MISSING = Refused(401, "missing_credentials", "this gateway needs an API key: send "
                  "'Authorization: Bearer KEY', or pass a token from POST /api/v1/token as "
                  "?token=TOKEN or as the subprotocol 'streamer.token.TOKEN'")


class Gate:
    def __init__(self, settings: AuthSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.keys = KeyRing(settings, Tokens(settings.token_secret))
        self.limits = KeyLimits(settings.keys, KeyMetrics(metrics.registry))
        self._refused = metrics.refused

    def admit(self, request: web.BaseRequest) -> Lease | None:
        """A lease on the request's key (None when the gateway runs without keys)."""
        check_subprotocols(request.headers)
        check_origin(self.settings, request.headers.get("Origin"), request.headers.get("Host"))
        if not self.settings.required:
            return None
        credential = presented_credential(request.headers, request.query)
        if credential is None:
            raise MISSING
        spec = self.keys.by_credential(credential.secret)
        lease = self.limits.admit(spec)
        log.debug("upgrade for key %s (%s)", spec.name, credential.source)
        return lease

    def refusal(self, refused: Refused, request: web.BaseRequest) -> web.Response:
        self._refused.labels(refused.reason).inc()
        log.debug("refused an upgrade from %s: %s", request.remote, refused.reason)
        headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after else {}
        if refused.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="streamer"'
        return web.json_response(refused.body(), status=refused.status, headers=headers)


GATE = web.AppKey("gate", Gate)
# The lease of the upgrade being handled: the middleware and the handler run in one task.
_LEASE: contextvars.ContextVar[Lease | None] = contextvars.ContextVar("lease", default=None)


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    """The same test aiohttp's handshake applies, so every request it would upgrade is seen."""
    return request.headers.get("Upgrade", "").lower().strip() == "websocket"


def current_lease() -> Lease | None:
    """The API key's hold for the websocket being handled (None without keys)."""
    return _LEASE.get()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def gate_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_websocket_upgrade(request):
        return await handler(request)
    gate = request.app[GATE]
    try:
        lease = gate.admit(request)
    except Refused as refused:
        return gate.refusal(refused, request)
    token = _LEASE.set(lease)
    try:
        return await handler(request)
    finally:
        _LEASE.reset(token)
        if lease is not None:
            lease.release()


async def issue_token(request: web.Request) -> web.Response:
    """Exchange an API key (in the Authorization header) for a short-lived token."""
    gate = request.app[GATE]
    if not gate.settings.required:
        return web.json_response({"type": "error", "reason": "auth_off", "message": "this "
                                  "gateway has no API keys; connect without a token"},
                                 status=404)
    try:
        credential = presented_credential(request.headers, {})
        if credential is None:
            raise MISSING
        if credential.secret.startswith(TOKEN_PREFIX):
            raise Refused(401, "token_for_token", "a token cannot be exchanged for another; "
                          "send the API key")
        spec = gate.keys.by_key(credential.secret)
    except Refused as refused:
        return gate.refusal(refused, request)
    ttl = gate.settings.token_ttl
    if request.can_read_body:
        try:
            body = json.loads(await request.text() or "{}")
            asked = body.get("expires_in", ttl) if isinstance(body, dict) else None
        except json.JSONDecodeError:
            asked = None
        if isinstance(asked, bool) or not isinstance(asked, int | float) or asked <= 0:
            return web.json_response({"type": "error", "reason": "bad_request", "message":
                                      "the body must be empty or {\"expires_in\": SECONDS}"},
                                     status=400)
        ttl = min(ttl, float(asked))
    token, expires_at = gate.keys.tokens.issue(spec.name, ttl)
    log.debug("issued a token for key %s, %g s", spec.name, ttl)
    return web.json_response({"token": token, "expires_in": ttl, "expires_at": expires_at,
                              "key": spec.name, "subprotocols": [
                                  SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + token]},
                             headers={"Cache-Control": "no-store"})


async def auth_info(request: web.Request) -> web.Response:
    """What a page needs to know before it connects: whether to ask for a key or token."""
    gate = request.app[GATE]
    return web.json_response({"required": gate.settings.required, "token_path": TOKEN_PATH,
                              "subprotocol": SUBPROTOCOL,
                              "token_subprotocol_prefix": TOKEN_SUBPROTOCOL_PREFIX,
                              "token_ttl": gate.settings.token_ttl})


def install_gate(app: web.Application, config: Config) -> None:
    """Validate the ``auth`` section, refuse to run open where that is unsafe, and put the gate
    in front of every websocket (raises ConfigError at start-up)."""
    settings = AuthSettings.from_config(config.auth)
    check_exposure(settings, config.server.host)
    app[GATE] = Gate(settings, app[METRICS])
    app.middlewares.append(gate_middleware)
    app.router.add_post(TOKEN_PATH, issue_token)
    app.router.add_get(AUTH_INFO_PATH, auth_info)
