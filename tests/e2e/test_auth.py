"""Who may connect, against a real gateway: every refusal with its status and JSON reason, each
followed by a session that works; keys and fresh tokens both stream."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import aiohttp
import pytest

from streamer.gateway.auth import hash_key, new_key
from streamer.protocol import AudioFormat
from tests.audio_gen import make_pcm
from tests.conftest import wait_until

SIMPLE = "/api/v1/simple"
KEY_A, KEY_B = new_key(), new_key()
FMT = AudioFormat()


def keys(**limits_a: Any) -> list[dict[str, Any]]:
    return [{"name": "alice", "hash": hash_key(KEY_A), **limits_a},
            {"name": "bob", "hash": hash_key(KEY_B)}]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def upgrade(server, headers: dict[str, str] | None = None, query: str = "",
                  path: str = SIMPLE) -> tuple[int, dict[str, Any], Any]:
    """A websocket upgrade request as plain HTTP, so a refusal's status, headers and JSON body
    can be read (client libraries hide them)."""
    hs = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), **(headers or {})}
    async with aiohttp.ClientSession() as http, \
            http.get(str(server.make_url(path)) + query, headers=hs) as resp:
        body = await resp.json() if resp.content_type == "application/json" else {}
        return resp.status, body, resp.headers


async def stream(server, seconds: float = 1.0, headers: dict[str, str] | None = None,
                 query: str = "", protocols: tuple[str, ...] = ()) -> tuple[list[dict], int]:
    """One stream: every event and the close code."""
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(str(server.make_url(SIMPLE)) + query, headers=headers,
                            protocols=protocols) as ws:
        await ws.send_str(json.dumps({"request": "start"}))
        pcm = make_pcm(FMT, seconds)
        for i in range(0, len(pcm), 4000):
            await ws.send_bytes(pcm[i:i + 4000])
        await ws.send_str(json.dumps({"request": "stop", "disconnect": True}))
        events = [json.loads(m.data) async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
        return events, ws.close_code


async def good_session(server, headers: dict[str, str] | None = None, query: str = "",
                       protocols: tuple[str, ...] = ()) -> None:
    events, code = await stream(server, 1.0, headers, query, protocols)
    assert sum(e["count"] for e in events if e["type"] == "segment") == 16000, events
    assert not [e for e in events if e["type"] == "error"] and code == 1000


async def get_token(server, key: str = KEY_A, **body: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, \
            http.post(server.make_url("/api/v1/token"), headers=bearer(key),
                      json=body or None) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Cache-Control"] == "no-store"
        return await resp.json()


async def test_a_key_in_the_header_streams_and_both_schemes_work(gateway):
    server = await gateway(workers=1, auth__keys=keys())
    await good_session(server, bearer(KEY_A))
    await good_session(server, {"Authorization": f"Token {KEY_B}"})


@pytest.mark.parametrize("headers, query, reason", [
    ({}, "", "missing_credentials"),
    ({"Authorization": "Bearer sk_wrong"}, "", "invalid_key"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "", "invalid_authorization"),
    ({}, "?token=" + KEY_A, "key_in_url"),
    ({"Authorization": "Bearer st1.e30.AAAA"}, "", "invalid_token"),
])
async def test_missing_or_wrong_credentials_get_401_before_the_upgrade(gateway, headers, query,
                                                                       reason):
    server = await gateway(workers=1, auth__keys=keys())
    status, body, resp_headers = await upgrade(server, headers, query)
    assert status == 401 and body["reason"] == reason and body["type"] == "error", body
    assert "WWW-Authenticate" in resp_headers
    assert KEY_A not in json.dumps(body)
    await good_session(server, bearer(KEY_A))


async def test_a_fresh_token_streams_in_the_url_and_as_a_subprotocol(gateway):
    server = await gateway(workers=1, auth__keys=keys())
    issued = await get_token(server)
    assert issued["expires_in"] == 60 and issued["key"] == "alice"
    token = issued["token"]
    await good_session(server, query=f"?token={token}")
    await good_session(server, protocols=("streamer.v1", f"streamer.token.{token}"))
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(server.make_url(SIMPLE), protocols=tuple(issued["subprotocols"])) \
            as ws:
        assert ws.protocol == "streamer.v1"  # a browser needs one offered protocol selected
    # the token alone would not be selected (and aiohttp would log what it cannot select)
    status, body, _ = await upgrade(server, {"Sec-WebSocket-Protocol": f"streamer.token.{token}"})
    assert status == 400 and body["reason"] == "missing_subprotocol"


async def test_an_expired_token_gets_401_then_a_fresh_one_works(gateway):
    server = await gateway(workers=1, auth__keys=keys(), auth__token_ttl=2)
    issued = await get_token(server)
    await good_session(server, query=f"?token={issued['token']}")  # valid until it expires
    await wait_until(lambda: time.time() > issued["expires_at"], within=5.0,
                     what="the token's expiry time")
    status, body, _ = await upgrade(server, query=f"?token={issued['token']}")
    assert status == 401 and body["reason"] == "token_expired", body
    await good_session(server, query=f"?token={(await get_token(server))['token']}")


async def test_a_forged_token_gets_401(gateway):
    server = await gateway(workers=1, auth__keys=keys())
    token = (await get_token(server))["token"]
    prefix, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["k"] = "bob"  # re-labelled for another key, old signature
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    for forged in (f"{prefix}.{forged_payload}.{signature}", token[:-4] + "AAAA"):
        status, body, _ = await upgrade(server, query=f"?token={forged}")
        assert status == 401 and body["reason"] == "invalid_token", body
    # a token signed by another gateway (its own random secret) is forged here too
    other = await gateway(workers=1, auth__keys=keys())
    status, body, _ = await upgrade(other, query=f"?token={token}")
    assert status == 401 and body["reason"] == "invalid_token"
    await good_session(server, query=f"?token={token}")


async def test_the_token_endpoint_wants_a_key(gateway):
    server = await gateway(workers=1, auth__keys=keys())
    token = (await get_token(server))["token"]
    async with aiohttp.ClientSession() as http:
        for headers, reason in (({}, "missing_credentials"),
                                (bearer("sk_nope"), "invalid_key"),
                                (bearer(token), "token_for_token")):
            async with http.post(server.make_url("/api/v1/token"), headers=headers) as resp:
                assert resp.status == 401 and (await resp.json())["reason"] == reason
        async with http.get(server.make_url("/api/v1/auth")) as resp:
            info = await resp.json()
            assert info["required"] is True and info["token_path"] == "/api/v1/token"
    assert (await get_token(server, expires_in=5))["expires_in"] == 5
    assert (await get_token(server, expires_in=3600))["expires_in"] == 60  # capped


async def test_without_keys_only_the_gateways_own_origin_may_connect(gateway):
    server = await gateway(workers=1)
    own = f"http://127.0.0.1:{server.port}"
    status, body, _ = await upgrade(server, {"Origin": "https://evil.example"})
    assert status == 403 and body["reason"] == "origin_not_allowed"
    await good_session(server, {"Origin": own})
    await good_session(server)  # no Origin: not a browser
    async with aiohttp.ClientSession() as http, \
            http.post(server.make_url("/api/v1/token")) as resp:
        assert resp.status == 404 and (await resp.json())["reason"] == "auth_off"


async def test_a_listed_origin_may_connect_and_others_get_403(gateway):
    server = await gateway(workers=1, auth__keys=keys(),
                           auth__allowed_origins=["https://app.example.com"])
    status, body, _ = await upgrade(server, {"Origin": "https://evil.example", **bearer(KEY_A)})
    assert status == 403 and body["reason"] == "origin_not_allowed"
    await good_session(server, {"Origin": "https://app.example.com", **bearer(KEY_A)})


async def test_over_a_keys_session_limit_gets_429_with_retry_after(gateway):
    server = await gateway(workers=1, auth__keys=keys(max_sessions=1))
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(server.make_url(SIMPLE), headers=bearer(KEY_A)) as held:
        status, body, headers = await upgrade(server, bearer(KEY_A))
        assert status == 429 and body["reason"] == "key_max_sessions", body
        assert int(headers["Retry-After"]) > 0
        await good_session(server, bearer(KEY_B))  # another key is not affected
        await held.close()
    await wait_until(lambda: 'streamer_key_sessions{key="alice"} 0.0' in metrics_text(server),
                     what="the held session to end")
    await good_session(server, bearer(KEY_A))


def metrics_text(server) -> str:
    from streamer.gateway.state import METRICS
    return server.app[METRICS].render().decode()


async def test_over_a_keys_audio_rate_ends_the_stream_then_refuses_with_429(gateway):
    server = await gateway(workers=1, auth__keys=keys(audio_seconds_per_minute=1.5))
    events, code = await stream(server, 2.0, bearer(KEY_A))
    segments = [e for e in events if e["type"] == "segment"]
    errors = [e for e in events if e["type"] == "error"]
    assert code == 1008 and len(errors) == 1 and events[-1] == errors[0], events
    assert "over its limit of 1.5 s of audio per minute" in errors[0]["message"]
    # the audio accepted before the limit was crossed still got its results
    assert segments and sum(s["count"] for s in segments) >= 1.5 * 16000
    status, body, headers = await upgrade(server, bearer(KEY_A))
    assert status == 429 and body["reason"] == "key_audio_rate"
    assert 1 <= int(headers["Retry-After"]) <= 60
    await good_session(server, bearer(KEY_B))
    text = metrics_text(server)
    assert 'streamer_key_refused_total{key="alice",reason="audio_rate"} 2.0' in text
    assert 'streamer_key_audio_seconds_total{key="bob"} 1.0' in text
    assert KEY_A not in text and KEY_B not in text


async def test_refusals_are_counted_by_reason(gateway):
    server = await gateway(workers=1, auth__keys=keys())
    await upgrade(server, {})
    await upgrade(server, bearer("sk_bad"))
    text = metrics_text(server)
    assert 'streamer_sessions_refused_total{reason="missing_credentials"} 1.0' in text
    assert 'streamer_sessions_refused_total{reason="invalid_key"} 1.0' in text
