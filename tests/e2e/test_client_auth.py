"""The client library and its commands against a real gateway that has API keys: a key, a token
and wss with a private certificate all stream; refusals are typed errors with the gateway's
reason, one line and exit code 4 on the command line, and the key never shows in any output."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest

import streamer.client
from streamer.client import (
    ConnectFailed,
    Forbidden,
    RateLimited,
    SegmentEvent,
    Unauthorized,
    connect,
    fetch_token,
    stream_audio,
    stream_file,
)
from streamer.gateway.app import create_app
from streamer.gateway.auth import hash_key, new_key
from streamer.gateway.pool import make_pool
from streamer.protocol import AudioFormat
from tests.audio_gen import make_pcm, write_wav
from tests.conftest import make_config
from tests.e2e.test_auth_commands import make_certificate

BIN = Path(sys.executable).parent
SIMPLE = "/api/v1/simple"
KEY, OTHER_KEY = new_key(), new_key()
FMT = AudioFormat()
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMER_", "OTEL_"))}


def keys(**limits: Any) -> list[dict[str, Any]]:
    return [{"name": "alice", "hash": hash_key(KEY), **limits}]


def samples(events: list[Any]) -> int:
    return sum(e.output["count"] for e in events if isinstance(e, SegmentEvent))


async def one_second(url: str, **options: Any) -> list[Any]:
    """Stream 1 s of audio with ``connect`` and return every event."""
    async with connect(url, format=FMT, **options) as stream:
        await stream.send(make_pcm(FMT, 1.0))
        await stream.stop()
        events = [event async for event in stream]
    assert stream.close_code == 1000
    return events


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**BASE_ENV, **(env or {})})
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_line(err: str) -> str:
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    return lines[0]


async def test_a_key_streams_with_connect_stream_file_and_stream_audio(gateway, tmp_path):
    server = await gateway(workers=1, auth__keys=keys())
    url = str(server.make_url(SIMPLE))
    assert samples(await one_second(url, api_key=KEY)) == 16000
    report = await stream_file(url, write_wav(tmp_path / "a.wav", FMT, 0.5), api_key=KEY)
    assert samples(report.events) == 8000 and report.close_code == 1000
    report = await stream_audio(url, FMT, make_pcm(FMT, 0.5), api_key=KEY)
    assert samples(report.events) == 8000 and report.close_code == 1000


async def test_a_token_from_fetch_token_streams_as_a_subprotocol(gateway):
    server = await gateway(workers=1, auth__keys=keys())
    url = str(server.make_url(SIMPLE))
    issued = await fetch_token(url, KEY, expires_in=30)  # any gateway URL names the host
    assert issued.key == "alice" and issued.expires_in == 30
    assert issued.token not in repr(issued)
    assert samples(await one_second(url, token=issued.token)) == 16000
    with pytest.raises(Unauthorized) as refused:
        await fetch_token(str(server.make_url("/")), OTHER_KEY)
    assert refused.value.reason == "invalid_key" and refused.value.status == 401
    with pytest.raises(Unauthorized) as refused:
        await one_second(url, token=issued.token[:-4] + "AAAA")
    assert refused.value.reason == "invalid_token"
    with pytest.raises(ValueError, match="not both"):
        connect(url, api_key=KEY, token=issued.token)


async def test_fetch_token_from_a_gateway_without_keys_says_so(gateway):
    server = await gateway(workers=1)
    with pytest.raises(ConnectFailed) as failed:
        await fetch_token(str(server.make_url("/")), KEY)
    assert failed.value.status == 404 and "has no API keys" in str(failed.value)


@pytest.mark.parametrize("api_key, reason", [(None, "missing_credentials"),
                                             (OTHER_KEY, "invalid_key")])
async def test_no_key_or_a_wrong_one_raises_unauthorized_with_the_reason(gateway, api_key,
                                                                         reason):
    server = await gateway(workers=1, auth__keys=keys())
    url = str(server.make_url(SIMPLE))
    told: list[float] = []
    with pytest.raises(Unauthorized) as refused:  # 401 is not retried, whatever retries says
        await one_second(url, api_key=api_key, retries=3,
                         on_refused=lambda _r, wait: told.append(wait))
    exc = refused.value
    assert (exc.status, exc.reason, told) == (401, reason, [])
    assert exc.message and str(exc).startswith(f"refused by the gateway ({reason}, HTTP 401): ")
    assert KEY not in str(exc) and OTHER_KEY not in str(exc)
    with pytest.raises(Unauthorized):
        await stream_audio(url, FMT, make_pcm(FMT, 0.1), api_key=api_key)
    assert samples(await one_second(url, api_key=KEY)) == 16000


async def test_a_page_from_another_origin_raises_forbidden_and_is_not_retried(gateway):
    server = await gateway(workers=1)  # no keys: only the gateway's own (loopback) origin
    url = str(server.make_url(SIMPLE))
    told: list[float] = []
    with pytest.raises(Forbidden) as refused:
        await one_second(url, headers={"Origin": "https://elsewhere.example"}, retries=2,
                         on_refused=lambda _r, wait: told.append(wait))
    assert (refused.value.status, refused.value.reason, told) == (403, "origin_not_allowed", [])


async def test_over_the_keys_session_limit_is_rate_limited_and_retried_after_its_wait(gateway):
    server = await gateway(workers=1, auth__keys=keys(max_sessions=1))
    url = str(server.make_url(SIMPLE))
    first = await connect(url, api_key=KEY)
    try:
        with pytest.raises(RateLimited) as limited:  # the wait is longer than allowed
            await connect(url, api_key=KEY, retries=2, max_retry_wait=1)
        assert limited.value.status == 429 and limited.value.reason == "key_max_sessions"
        assert limited.value.retry_after == 5

        def release(refused: Any, wait: float) -> None:  # the first session ends meanwhile
            assert isinstance(refused, RateLimited) and wait == 5
            asyncio.get_running_loop().create_task(first.close())

        events = await one_second(url, api_key=KEY, retries=1, on_refused=release)
        assert samples(events) == 16000
    finally:
        await first.close()


@pytest.fixture
async def tls_gateway(aiohttp_server, tmp_path):
    """A gateway with a key serving wss with a certificate made for the test; yields its
    /simple URL and the certificate's path."""
    cert, tls_key = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, tls_key)
    config = make_config(1, auth__keys=keys())
    server = await aiohttp_server(create_app(config, make_pool(config, "embedded")),
                                  host="127.0.0.1", ssl=context)
    return f"wss://127.0.0.1:{server.port}{SIMPLE}", cert


async def test_wss_with_a_private_certificate_needs_ssl(tls_gateway):
    url, cert = tls_gateway
    trusting = ssl.create_default_context(cafile=str(cert))
    assert samples(await one_second(url, api_key=KEY, ssl=trusting)) == 16000
    issued = await fetch_token(url, KEY, ssl=trusting)
    assert samples(await one_second(url, token=issued.token, ssl=trusting)) == 16000
    with pytest.raises(ConnectFailed) as failed:
        await one_second(url, api_key=KEY)
    assert "TLS certificate does not verify" in str(failed.value)


async def test_the_client_command_streams_over_wss_with_cacert_and_a_key_from_the_env(
        tls_gateway, tmp_path):
    url, cert = tls_gateway
    wav = str(write_wav(tmp_path / "a.wav", FMT, 0.5))
    code, out, err = await run(str(BIN / "streamer-client"), "-i", wav, "--addr", url,
                               "--cacert", str(cert), env={"STREAMER_API_KEY": KEY})
    assert code == 0, err
    assert sum(1 for line in out.splitlines() if '"segment"' in line) == 1
    assert KEY not in out + err
    code, out, err = await run(str(BIN / "streamer-client"), "-i", wav, "--addr", url,
                               "--api-key", KEY)
    assert code == 3 and "TLS certificate does not verify" in one_line(err)
    assert KEY not in out + err
    code, _, err = await run(str(BIN / "streamer-client"), "-i", wav, "--addr", url,
                             "--cacert", str(tmp_path / "none.pem"), "--api-key", KEY)
    assert code == 2 and one_line(err).startswith("streamer-client: cannot read --cacert ")


@pytest.mark.parametrize("name, args", [
    ("streamer-client", ["-i", "{wav}"]),
    ("streamer-loadtest", ["-n", "1", "--seconds", "0.5", "--ramp-up", "0"]),
])
async def test_the_commands_name_the_refusal_and_never_print_the_key(gateway, tmp_path, name,
                                                                     args):
    server = await gateway(workers=1, auth__keys=keys())
    wav = str(write_wav(tmp_path / "a.wav", FMT, 0.5))
    command = [str(BIN / name), *(a.format(wav=wav) for a in args),
               "--addr", str(server.make_url(SIMPLE))]
    code, out, err = await run(*command, "--api-key", OTHER_KEY)
    assert code == 4, err
    assert "refused by the gateway (invalid_key, HTTP 401): " in one_line(err)
    assert OTHER_KEY not in out + err
    code, out, err = await run(*command, env={"STREAMER_API_KEY": OTHER_KEY})
    assert code == 4 and "(invalid_key, HTTP 401)" in one_line(err)
    code, _, err = await run(*command)
    assert code == 4 and "(missing_credentials, HTTP 401)" in one_line(err)
    assert "set STREAMER_API_KEY or pass --api-key KEY" in err
    code, out, err = await run(*command, "--api-key", KEY)
    assert code == 0, err
    assert KEY not in out + err
    issued = await fetch_token(str(server.make_url("/")), KEY)
    code, out, err = await run(*command, "--token", issued.token)
    assert code == 0, err
    assert issued.token not in out + err
    help_text = (await run(str(BIN / name), "--help", env={"STREAMER_API_KEY": KEY}))[1]
    assert "--api-key" in help_text and KEY not in help_text


def test_the_library_exports_the_auth_names():
    for name in ("Unauthorized", "Forbidden", "RateLimited", "fetch_token", "IssuedToken"):
        assert name in streamer.client.__all__ and hasattr(streamer.client, name)
