"""The NATS worker's command line and imports (its behaviour with a real server is in
tests/e2e/test_nats.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import BIN, clean_env


def test_workers_do_not_import_the_gateway():
    """A worker host needs the model's dependencies, not the web server's. (nats-py itself
    imports aiohttp when it is installed, for websocket connections; it does not need it.)"""
    code = ("import sys, streamer.workers.__main__, streamer.workers.loop, streamer.workers.models,"
            " streamer.workers.nats_worker;"
            "bad = [m for m in sys.modules if m.startswith('streamer.gateway')];"
            "print(bad); raise SystemExit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_without_a_server_the_worker_says_what_it_needs():
    out = subprocess.run([str(BIN / "streamer-worker")], capture_output=True, text=True,
                         timeout=60, env=clean_env())
    assert out.returncode == 2 and "--nats nats://HOST:PORT is required" in out.stderr
    bad = subprocess.run([str(BIN / "streamer-worker"), "--nats", "http://u:secret@h:1"],
                         capture_output=True, text=True, timeout=60, env=clean_env())
    assert bad.returncode == 2 and "expected nats://HOST:PORT" in bad.stderr
    assert "secret" not in bad.stderr and "Traceback" not in bad.stderr


def test_credentials_never_appear_in_help():
    out = subprocess.run([str(BIN / "streamer-worker"), "--help"], capture_output=True,
                         text=True, timeout=60,
                         env=clean_env(STREAMER_NATS_TOKEN="help-must-not-show-this"))
    assert "STREAMER_NATS_TOKEN" in out.stdout and "help-must-not-show-this" not in out.stdout
