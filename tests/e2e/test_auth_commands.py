"""The gateway's access controls as an operator runs them: streamer-keygen, refusing to run open
on a non-loopback address, TLS with a certificate made here, a separate metrics listener, and no
secret in any output after a run that used every kind of secret."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import psutil
import pytest

from streamer.gateway.auth import AuthSettings, hash_key, new_key
from streamer.protocol import AudioFormat
from tests.audio_gen import make_pcm
from tests.conftest import wait_until
from tests.natsutil import NatsServer, require_nats_binary

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    env.update(extra)
    return env


def test_keygen_prints_a_key_and_the_config_entry_that_accepts_it():
    out = subprocess.run([str(BIN / "streamer-keygen"), "--name", "alice", "--max-sessions",
                          "3", "--audio-seconds-per-minute", "120"],
                         capture_output=True, text=True, timeout=30, check=True)
    first, rest = out.stdout.split("\n", 1)
    key = first.rsplit(" ", 1)[1]
    assert key.startswith("sk_")
    entry = tomllib.loads(rest.split("\n", 1)[1])["auth"]["keys"][0]
    assert entry == {"name": "alice", "hash": hash_key(key), "max_sessions": 3,
                     "audio_seconds_per_minute": 120.0}
    assert AuthSettings.from_config({"keys": [entry]}).keys[0].name == "alice"
    again = subprocess.run([str(BIN / "streamer-keygen"), "--hash-stdin"], input=key + "\n",
                           capture_output=True, text=True, timeout=30, check=True)
    assert again.stdout.strip() == hash_key(key)


def test_the_gateway_refuses_to_run_open_on_a_non_loopback_address():
    # refused before anything binds or starts
    out = subprocess.run([str(BIN / "streamer-gateway"), "--host", "0.0.0.0", "--workers", "1"],
                         capture_output=True, text=True, timeout=60, env=clean_env())
    assert out.returncode == 2
    assert "refusing to serve without API keys on 0.0.0.0" in out.stderr
    assert "--allow-anonymous" in out.stderr


def make_certificate(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            raise AssertionError("openssl is needed for the TLS test in CI")
        pytest.skip("openssl command not found: cannot make a test certificate")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   capture_output=True, timeout=60, check=True)
    return cert, key


def fetch(url: str, context: ssl.SSLContext | None = None, method: str = "GET",
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(url: str, context: ssl.SSLContext, proc: subprocess.Popen, workers: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited with {proc.returncode}: "
                                 f"{proc.stderr.read().decode()}")
        try:
            status, body = fetch(url, context)
            if status == 200 and json.loads(body)["workers"]["ready"] >= workers:
                return
        except OSError:
            pass
        time.sleep(0.05)  # polling a process we do not control, bounded by the deadline
    raise AssertionError("gateway did not become ready")


async def stream_wss(url: str, context: ssl.SSLContext, headers: dict[str, str] | None = None,
                     ) -> list[dict]:
    events = await _stream_wss(url, context, headers)
    # a TLS close is a short exchange of its own: let it finish before this loop ends
    port = int(url.split(":")[2].split("/")[0])
    await wait_until(lambda: not [c for c in psutil.Process().net_connections("tcp")
                                  if c.raddr and c.raddr.port == port],
                     within=10, what="the client's TLS connection to close")
    return events


async def _stream_wss(url: str, context: ssl.SSLContext, headers: dict[str, str] | None,
                      ) -> list[dict]:
    fmt = AudioFormat()
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(url, headers=headers, ssl=context) as ws:
        await ws.send_str(json.dumps({"request": "start"}))
        await ws.send_bytes(make_pcm(fmt, 1.0))
        await ws.send_str(json.dumps({"request": "stop", "disconnect": True}))
        events = [json.loads(m.data) async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
        assert ws.close_code == 1000
    assert sum(e["count"] for e in events if e["type"] == "segment") == 16000, events
    return events


def test_tls_streams_over_wss_and_no_secret_appears_anywhere(tmp_path):
    cert, tls_key = make_certificate(tmp_path)
    key, wrong_key = new_key(), new_key()
    nats_token = "nats-token-" + os.urandom(12).hex()
    nats = NatsServer(require_nats_binary(), tmp_path / "nats.log", token=nats_token)
    nats.start()
    token_secret = "token-secret-" + os.urandom(16).hex()
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({"auth": {"keys": [{"name": "alice", "hash": hash_key(key)}],
                                           "token_secret": token_secret}}))
    port, metrics_port = free_port(), free_port()
    env = clean_env(STREAMER_NATS_TOKEN=nats_token)
    gateway = subprocess.Popen(
        [str(BIN / "streamer-gateway"), "--port", str(port), "--workers", "0", "--config",
         str(config), "--tls-cert", str(cert), "--tls-key", str(tls_key), "--log-level", "DEBUG",
         "--metrics-address", f"127.0.0.1:{metrics_port}", "--nats", nats.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    worker = None
    try:
        context = ssl.create_default_context(cafile=str(cert))
        base = f"https://127.0.0.1:{port}"
        worker = subprocess.Popen([str(BIN / "streamer-worker"), "--nats", nats.url,
                                   "--log-level", "DEBUG"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        wait_ready(base + "/api/v1/health", context, gateway, 1)  # the NATS token was used

        status, body = fetch(base + "/api/v1/token", context, "POST",
                             {"Authorization": f"Bearer {key}"})
        assert status == 200
        token = json.loads(body)["token"]
        events = asyncio.run(stream_wss(f"wss://127.0.0.1:{port}/api/v1/simple", context,
                                        {"Authorization": f"Bearer {key}"}))
        events += asyncio.run(stream_wss(f"wss://127.0.0.1:{port}/api/v1/simple?token={token}",
                                         context))
        refusals = [fetch(base + "/api/v1/token", context, "POST",
                          {"Authorization": f"Bearer {wrong_key}"})[1],
                    fetch(base + f"/api/v1/simple?token={token[:-3]}xyz", context, "GET",
                          {"Upgrade": "websocket", "Connection": "Upgrade",
                           "Sec-WebSocket-Version": "13",
                           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})[1]]
        assert b"invalid_key" in refusals[0] and b"invalid_token" in refusals[1]
        with pytest.raises(OSError):  # plain http is not served
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)

        assert fetch(base + "/metrics", context)[0] == 404  # not on the public port
        status, metrics = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200 and b'streamer_key_sessions{key="alice"}' in metrics
    finally:
        for proc in (gateway, worker):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        outputs = []
        for proc in (gateway, worker):
            if proc is not None:
                try:
                    out, err = proc.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    out, err = proc.communicate()
                outputs.append(out.decode() + err.decode())
        nats.stop()
    logs = "\n".join(outputs)
    assert "listening on https://" in logs and "key alice" in logs  # DEBUG lines were written
    helps = [subprocess.run([str(BIN / name), "--help"], capture_output=True, text=True,
                            timeout=30, env=env).stdout
             for name in ("streamer-gateway", "streamer-worker", "streamer-client",
                          "streamer-keygen")]
    places = {"logs": logs, "metrics": metrics.decode(), "events": json.dumps(events),
              "refusals": b"".join(refusals).decode(), "help": "\n".join(helps)}
    secrets = {"key": key, "wrong key": wrong_key, "token": token,
               "token signature": token.rsplit(".", 1)[1], "NATS token": nats_token,
               "token secret": token_secret}
    for where, text in places.items():
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} appears in the {where}"


def test_a_metrics_address_in_use_stops_the_gateway_with_a_message():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([str(BIN / "streamer-gateway"), "--port", str(free_port()),
                              "--workers", "1", "--metrics-address", f"127.0.0.1:{port}"],
                             capture_output=True, text=True, timeout=90, env=clean_env())
    assert out.returncode == 1, out.stderr
    assert f"cannot start: cannot serve metrics on 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr


def test_tls_needs_both_files_and_they_must_load(tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    for args, words in ((["--tls-cert", str(bogus)], "TLS needs both --tls-cert and --tls-key"),
                        (["--tls-cert", str(tmp_path / "no.pem"), "--tls-key", str(bogus)],
                         "does not exist"),
                        (["--tls-cert", str(bogus), "--tls-key", str(bogus)],
                         "cannot load the TLS certificate")):
        out = subprocess.run([str(BIN / "streamer-gateway"), "--workers", "1", *args],
                             capture_output=True, text=True, timeout=60, env=clean_env())
        assert out.returncode == 2 and words in out.stderr, out.stderr
        assert "not base64" not in out.stderr
