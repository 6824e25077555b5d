"""Attached-worker plumbing: addresses, the HMAC handshake both ways, TCP_NODELAY."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from multiprocessing import AuthenticationError

import pytest

from streamer.errors import ConfigError
from streamer.workers.attach import authenticate, connect, parse_address


@pytest.mark.parametrize("text, address", [
    ("127.0.0.1:8765", ("127.0.0.1", 8765)),
    ("8765", ("127.0.0.1", 8765)),
    (":8765", ("127.0.0.1", 8765)),
    ("0.0.0.0:1", ("0.0.0.0", 1)),
    ("[::1]:9", ("::1", 9)),
    ("/tmp/streamer.sock", "/tmp/streamer.sock"),
])
def test_worker_addresses(text, address):
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["host:port", "localhost:70000", ""])
def test_bad_worker_addresses_are_named(text):
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        parse_address(text)


class Server:
    """One accepted connection, authenticated in a thread like the gateway does."""

    def __init__(self, key: bytes, silent: bool = False) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.error: BaseException | None = None
        self._key, self._silent = key, silent
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock, _ = self.listener.accept()
        with sock:
            if self._silent:
                sock.recv(1)  # until the client gives up and closes
                return
            try:
                authenticate(sock, self._key, server=True, timeout=5.0)
            except BaseException as exc:
                self.error = exc

    def join(self) -> None:
        self._thread.join(10)
        self.listener.close()


def test_matching_keys_authenticate_both_ways_and_tcp_nodelay_is_on():
    server = Server(b"k1")
    conn = connect(("127.0.0.1", server.port), b"k1")
    server.join()
    assert server.error is None
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.gettimeout() is None  # blocking again, no kernel timeout left behind
    finally:
        sock.close()
        conn.close()


def test_a_wrong_key_is_refused_on_both_sides():
    server = Server(b"right")
    with pytest.raises(AuthenticationError):
        connect(("127.0.0.1", server.port), b"wrong")
    server.join()
    assert isinstance(server.error, AuthenticationError)


def test_a_silent_gateway_fails_the_handshake_instead_of_hanging():
    server = Server(b"k", silent=True)
    with pytest.raises(OSError):
        connect(("127.0.0.1", server.port), b"k", timeout=0.3)
    server.join()


def test_workers_import_neither_aiohttp_nor_the_gateway():
    """A worker host needs the model's dependencies, not the web server's."""
    code = ("import sys, streamer.workers.__main__, streamer.workers.loop, streamer.workers.models,"
            " streamer.workers.nats_worker;"
            "bad = [m for m in sys.modules if m == 'aiohttp' or m.startswith('streamer.gateway')];"
            "print(bad); raise SystemExit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
