"""Who may connect: API keys, short-lived signed tokens and allowed origins.

Keys are configured as hashes only, so a leaked config file or a config dump does not hand out
access. A key is 32 random bytes (256 bits) from :mod:`secrets`; its configured form is
``sha256:`` plus the hex SHA-256 of the key's text. A slow or salted hash (scrypt, bcrypt) exists
to make guessing low-entropy passwords expensive and to defeat tables precomputed for common
ones; neither applies to a uniformly random 256-bit value, which no table covers and no search
can reach. A plain SHA-256 also lets the gateway find a presented key with one hash and one
dictionary lookup instead of a slow hash per configured key on every upgrade.

Tokens let a browser connect, which cannot set an ``Authorization`` header on a websocket. A
token is ``st1.<payload>.<signature>``: the payload (base64url JSON) names the key and the
expiry time, the signature is an HMAC-SHA256 over it with the gateway's token secret. A token
carries no limits of its own: it is checked against its key's current entry, so it shares that
key's limits and dies with the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from streamer.errors import ConfigError
from streamer.protocol import SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX

log = logging.getLogger(__name__)

KEY_PREFIX = "sk_"
HASH_PREFIX = "sha256:"
TOKEN_PREFIX = "st1."
_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_TOKEN_CONTEXT = b"streamer-token-v1."


def new_key() -> str:
    """A fresh API key: 256 random bits, URL-safe, recognisable by its prefix."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The configured form of a key (see the module docstring for why SHA-256 suffices)."""
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


class Refused(Exception):
    """An HTTP refusal before the websocket upgrade; ``message`` never quotes a credential."""

    def __init__(self, status: int, reason: str, message: str,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    def body(self) -> dict[str, str]:
        return {"type": "error", "reason": self.reason, "message": self.message}


@dataclass(frozen=True, slots=True)
class KeySpec:
    name: str
    hash: str = field(repr=False)
    max_sessions: int = 0  # 0: no limit of its own
    audio_seconds_per_minute: float = 0.0  # channel-seconds of audio; 0: no limit


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """The ``auth`` config section, validated."""

    keys: tuple[KeySpec, ...] = ()
    token_ttl: float = 60.0
    token_secret: bytes = field(default=b"", repr=False)  # empty: random per process
    allowed_origins: tuple[str, ...] = ()
    allow_anonymous: bool = False

    @property
    def required(self) -> bool:
        return bool(self.keys)

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> AuthSettings:
        known = {"keys", "token_ttl", "token_secret", "allowed_origins", "allow_anonymous"}
        for name in raw:
            if name not in known:
                raise ConfigError(f"unknown setting auth.{name} "
                                  f"(known: {', '.join(sorted(known))})")
        keys = _parse_keys(raw.get("keys", []))
        ttl = raw.get("token_ttl", 60.0)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 1 <= ttl <= 86400:
            raise ConfigError("auth.token_ttl must be a number of seconds between 1 and 86400")
        secret = raw.get("token_secret", "")
        if not isinstance(secret, str) or (secret and len(secret) < 32):
            # the value itself is never quoted: it is a secret
            raise ConfigError("auth.token_secret must be text of at least 32 characters "
                              "(or empty: a random secret per process)")
        origins = raw.get("allowed_origins", [])
        if isinstance(origins, str):
            origins = [o for o in origins.split(",") if o.strip()]
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise ConfigError("auth.allowed_origins must be a list of origins like "
                              "'https://app.example.com', or '*' for any")
        anonymous = raw.get("allow_anonymous", False)
        if not isinstance(anonymous, bool):
            raise ConfigError("auth.allow_anonymous must be true or false")
        return cls(keys=keys, token_ttl=float(ttl), token_secret=secret.encode(),
                   allowed_origins=tuple(_normal_origin(o) for o in origins),
                   allow_anonymous=anonymous)


def _parse_keys(raw: Any) -> tuple[KeySpec, ...]:
    if not isinstance(raw, list):
        raise ConfigError("auth.keys must be a list of {name, hash, max_sessions, "
                          "audio_seconds_per_minute} tables")
    specs: list[KeySpec] = []
    for i, entry in enumerate(raw):
        where = f"auth.keys[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table with name and hash")
        unknown = set(entry) - {"name", "hash", "max_sessions", "audio_seconds_per_minute"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        name, digest = entry.get("name"), entry.get("hash")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(f"{where}.name must be 1-64 letters, digits or _.@-")
        if not isinstance(digest, str) or not _HASH_RE.match(digest):
            # never echo the value: someone may have pasted the key itself here
            raise ConfigError(f"{where}.hash must be 'sha256:' and 64 hex digits, the hash "
                              "printed by streamer-keygen (never the key itself)")
        sessions = entry.get("max_sessions", 0)
        if isinstance(sessions, bool) or not isinstance(sessions, int) or sessions < 0:
            raise ConfigError(f"{where}.max_sessions must be a whole number >= 0 (0: no limit)")
        rate = entry.get("audio_seconds_per_minute", 0)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not (
                math.isfinite(rate) and rate >= 0):
            raise ConfigError(f"{where}.audio_seconds_per_minute must be a number >= 0 "
                              "(0: no limit)")
        specs.append(KeySpec(name, digest, sessions, float(rate)))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError("auth.keys: every key needs its own name")
    if len({s.hash for s in specs}) != len(specs):
        raise ConfigError("auth.keys: two entries have the same hash")
    return tuple(specs)


def describe_settings() -> list[tuple[str, Any, str]]:
    """(dotted name, default, doc) for ``--help``."""
    return [
        ("auth.keys", [], "API keys as a list of {name, hash, max_sessions, "
         "audio_seconds_per_minute}; hashes from streamer-keygen; empty: no keys (open, "
         "loopback only unless --allow-anonymous)"),
        ("auth.token_ttl", 60.0, "lifetime of a token from POST /api/v1/token, seconds"),
        ("auth.token_secret", "", "HMAC secret that signs tokens, at least 32 characters; "
         "the same on every gateway behind one address; empty: random per process"),
        ("auth.allowed_origins", [], "Origins allowed to open websockets besides the "
         "gateway's own ('*': any); empty: own origin only without keys, any with keys"),
        ("auth.allow_anonymous", False, "serve without keys on a non-loopback address"),
    ]


# ---- keys and tokens ---------------------------------------------------------------------
class Tokens:
    """Issues and verifies signed, expiring tokens."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self._clock = clock

    def issue(self, key_name: str, ttl: float) -> tuple[str, float]:
        """A token for ``key_name`` and its expiry time (Unix seconds)."""
        expires = round(self._clock() + ttl, 3)
        payload = _b64(json.dumps({"k": key_name, "exp": expires},
                                  separators=(",", ":")).encode())
        return f"{TOKEN_PREFIX}{payload}.{_b64(self._sign(payload))}", float(expires)

    def verify(self, token: str) -> str:
        """The key name a token was issued for, or :class:`Refused` (401)."""
        forged = Refused(401, "invalid_token", "the token is malformed or its signature does "
                         "not match; get a new one from POST /api/v1/token")
        parts = token[len(TOKEN_PREFIX):].split(".")
        if not token.startswith(TOKEN_PREFIX) or len(parts) != 2:
            raise forged
        payload, signature = parts
        try:
            given = _unb64(signature)
        except ValueError:
            raise forged from None
        if not hmac.compare_digest(given, self._sign(payload)):
            raise forged
        try:
            claims = json.loads(_unb64(payload))
            name, expires = claims["k"], claims["exp"]
        except (ValueError, KeyError, TypeError):
            raise forged from None
        if not isinstance(name, str) or not isinstance(expires, int | float):
            raise forged
        if self._clock() >= expires:
            raise Refused(401, "token_expired", "the token has expired; get a new one from "
                          "POST /api/v1/token")
        return name

    def _sign(self, payload: str) -> bytes:
        return hmac.new(self._secret, _TOKEN_CONTEXT + payload.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


class KeyRing:
    """Finds the configured key for a presented key or token."""

    def __init__(self, settings: AuthSettings, tokens: Tokens) -> None:
        self._by_hash = {spec.hash: spec for spec in settings.keys}
        self._by_name = {spec.name: spec for spec in settings.keys}
        self.tokens = tokens

    def by_key(self, key: str) -> KeySpec:
        digest = hash_key(key)
        spec = self._by_hash.get(digest)
        if spec is None or not hmac.compare_digest(spec.hash, digest):
            raise Refused(401, "invalid_key", "the API key is not valid")
        return spec

    def by_token(self, token: str) -> KeySpec:
        spec = self._by_name.get(self.tokens.verify(token))
        if spec is None:
            raise Refused(401, "invalid_token", "the token's API key is no longer valid")
        return spec

    def by_credential(self, credential: str) -> KeySpec:
        if credential.startswith(TOKEN_PREFIX):
            return self.by_token(credential)
        return self.by_key(credential)


@dataclass(frozen=True, slots=True)
class Presented:
    """What a request carried: where from (header, query, subprotocol) and the secret."""

    source: str
    secret: str = field(repr=False)


def presented_credential(headers: Mapping[str, str], query: Mapping[str, str]) -> Presented | None:
    """The credential of an upgrade request, or None. A request may carry only one."""
    found: list[Presented] = []
    auth = headers.get("Authorization")
    if auth is not None:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() not in ("bearer", "token") or not value.strip():
            raise Refused(401, "invalid_authorization", "the Authorization header must be "
                          "'Bearer KEY' or 'Token KEY'")
        found.append(Presented("header", value.strip()))
    if "token" in query:
        found.append(Presented("query", query["token"]))
    for proto in headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            found.append(Presented("subprotocol", proto[len(TOKEN_SUBPROTOCOL_PREFIX):]))
    if len(found) > 1:
        raise Refused(401, "ambiguous_credentials", "send one credential: the Authorization "
                      "header, a ?token= parameter or a token subprotocol, not several")
    if not found:
        return None
    cred = found[0]
    if cred.source != "header" and not cred.secret.startswith(TOKEN_PREFIX):
        raise Refused(401, "key_in_url", "API keys go in the Authorization header only (URLs "
                      "and subprotocols end up in logs); a browser exchanges its key for a "
                      "token at POST /api/v1/token")
    return cred


def check_subprotocols(headers: Mapping[str, str]) -> None:
    """A token subprotocol needs ``streamer.v1`` offered beside it: the gateway selects that one
    (a browser fails a handshake where none is selected), and aiohttp logs offered protocols it
    cannot select, which would put the token in the log."""
    offered = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if SUBPROTOCOL not in offered and any(p.startswith(TOKEN_SUBPROTOCOL_PREFIX)
                                          for p in offered):
        raise Refused(400, "missing_subprotocol", f"offer the subprotocol '{SUBPROTOCOL}' "
                      "together with the token subprotocol")


# ---- origins -----------------------------------------------------------------------------
def _normal_origin(origin: str) -> str:
    origin = origin.strip().rstrip("/").lower()
    if origin in ("*", "null"):
        return origin
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        raise ConfigError(f"auth.allowed_origins: {origin!r} is not an origin like "
                          "'https://app.example.com' or 'http://localhost:3000'")
    return origin


def _host_port(netloc: str, default_port: int | None) -> tuple[str, int | None]:
    parts = urlsplit("//" + netloc)
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "").lower(), port if port is not None else default_port


def same_origin(origin: str, host_header: str | None) -> bool:
    """Whether an ``Origin`` names the host the request was sent to. The scheme is not compared:
    behind a TLS-terminating proxy the gateway sees http while the page is https."""
    if not host_header:
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    default = 443 if parts.scheme == "https" else 80
    o_host, o_port = _host_port(parts.netloc, default)
    h_host, h_port = _host_port(host_header, None)
    return o_host == h_host and (h_port is None or h_port == o_port)


def check_origin(settings: AuthSettings, origin: str | None, host_header: str | None) -> None:
    """403 unless the origin may open a websocket. No ``Origin``: not a browser, allowed (the
    header is how a browser tells a server which page is asking; other clients have no page).

    Without keys on loopback, the gateway's own origin counts only under a loopback name: a
    page can point a name it owns at 127.0.0.1 (DNS rebinding) and then look same-origin."""
    if origin is None:
        return
    if same_origin(origin, host_header) and (
            settings.required or settings.allow_anonymous
            or is_loopback(urlsplit(origin).hostname or "")):
        return
    allowed = settings.allowed_origins
    if "*" in allowed or (not allowed and settings.required):
        return  # with keys, a page needs a credential anyway
    if origin.strip().rstrip("/").lower() in allowed:
        return
    raise Refused(403, "origin_not_allowed", "websocket connections from this page's origin are "
                  "not allowed (auth.allowed_origins)")


# ---- where the gateway may run open ------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost, or "" (every address)


def check_exposure(settings: AuthSettings, host: str) -> None:
    """Without keys, serve only on loopback unless anonymous access was asked for."""
    if settings.required or is_loopback(host):
        return
    if not settings.allow_anonymous:
        raise ConfigError(f"refusing to serve without API keys on {host or 'every address'}: "
                          "anyone who can reach it could use the workers. Configure auth.keys "
                          "(streamer-keygen prints one), listen on 127.0.0.1, or pass "
                          "--allow-anonymous")
    log.warning("serving WITHOUT authentication on %s (--allow-anonymous): anyone who can reach "
                "it may open sessions", host or "every address")
