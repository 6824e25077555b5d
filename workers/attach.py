"""Attached workers: connect to a gateway's worker address, authenticate, then run the same loop
as an embedded worker (``workers/loop.py``).

The connection is one byte stream per worker, like an embedded worker's socketpair, not a
``multiprocessing.managers`` queue proxy (240-430 us a round trip; see
doc/decisions/0002-worker-transport.md). Both
ends set ``TCP_NODELAY``: ``multiprocessing.connection`` over TCP does not, and 16-64 KB frames
(1 s of audio is 64 KB) then stall ~44 ms per round trip on Nagle plus delayed ACK. Both ends
prove they hold the authkey with ``multiprocessing.connection``'s HMAC challenge, each way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import struct
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge

from streamer.errors import ConfigError
from streamer.logs import setup_logging
from streamer.tracing import shutdown_tracing
from streamer.workers.loop import Counter, serve, start_tracing

log = logging.getLogger("streamer.worker")

Address = tuple[str, int] | str  # (host, port) or a unix socket path
AUTH_TIMEOUT = 5.0         # seconds either side may take to answer during authentication
RETRY_FIRST, RETRY_MAX = 0.1, 2.0  # reconnect backoff, seconds
REFUSED_EXIT_CODE = 4      # wrong authkey, or not a gateway at that address: retrying won't help


def parse_address(text: str) -> Address:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1), or a unix socket path (with /)."""
    text = text.strip()
    if "/" in text:
        return text
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ConfigError(f"worker address {text!r}: expected HOST:PORT, PORT or a unix socket "
                          "path")
    return host, number


def describe(address: Address) -> str:
    return address if isinstance(address, str) else f"{address[0]}:{address[1]}"


def tune(sock: socket.socket) -> None:
    """``TCP_NODELAY`` on a TCP socket: a frame goes out whole at once, never held by Nagle."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def set_io_timeout(sock: socket.socket, seconds: float) -> None:
    """A kernel timeout on reads and writes of a blocking socket (0: none). Unlike
    ``settimeout`` it also bounds ``os.read``, which ``Connection`` uses, so a peer that goes
    quiet mid-handshake fails it instead of blocking its thread forever."""
    tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def authenticate(sock: socket.socket, authkey: bytes, server: bool,
                 timeout: float = AUTH_TIMEOUT) -> None:
    """Mutual HMAC challenge on a connected socket (blocking; run it off the event loop). The
    server challenges first, like ``multiprocessing.connection.Listener``. Raises
    ``AuthenticationError`` for a wrong key, ``OSError``/``EOFError`` when the peer hangs up or
    stays silent, ``AssertionError`` when the peer does not speak this protocol."""
    sock.setblocking(True)
    set_io_timeout(sock, timeout)
    conn = Connection(os.dup(sock.fileno()))  # closing it leaves ``sock`` open
    try:
        if server:
            deliver_challenge(conn, authkey)
            answer_challenge(conn, authkey)
        else:
            answer_challenge(conn, authkey)
            deliver_challenge(conn, authkey)
    finally:
        conn.close()
        set_io_timeout(sock, 0)


def connect(address: Address, authkey: bytes, timeout: float = AUTH_TIMEOUT) -> Connection:
    """An authenticated connection to a gateway's worker address."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
    else:
        sock = socket.create_connection(address, timeout=timeout)
    try:
        tune(sock)
        authenticate(sock, authkey, server=False, timeout=timeout)
    except BaseException:
        sock.close()
        raise
    return Connection(sock.detach())


def run_attached(address: Address, authkey: bytes, log_level: str, parent_pid: int,
                 answered: Counter | None = None) -> None:
    """The model process of ``streamer-worker``: connect (retrying with backoff while the
    gateway is not up), serve until the gateway is gone, exit. Its supervisor starts another."""
    signal.set_wakeup_fd(-1)  # inherited from the supervisor: not ours
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    setup_logging(log_level, process=f"worker[{os.getpid()}]")
    start_tracing()
    where = describe(address)
    delay = RETRY_FIRST
    while True:
        try:
            conn = connect(address, authkey)
            break
        except AuthenticationError:
            log.error("the gateway at %s refused this worker: STREAMER_AUTHKEY does not match "
                      "the gateway's", where)
            raise SystemExit(REFUSED_EXIT_CODE) from None
        except AssertionError:
            log.error("%s is not a streamer gateway's worker address (it does not answer the "
                      "authentication challenge)", where)
            raise SystemExit(REFUSED_EXIT_CODE) from None
        except (OSError, EOFError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            log.info("gateway at %s not reachable (%s); retrying in %.1f s", where, reason,
                     delay)
            time.sleep(delay)  # this process has nothing else to do until the gateway is up
            delay = min(delay * 2, RETRY_MAX)
    log.info("attached to the gateway at %s", where)
    try:
        code = serve(conn, parent_pid=parent_pid, answered=answered)
    finally:
        with contextlib.suppress(OSError):
            conn.close()
        shutdown_tracing()  # a multiprocessing child skips atexit: flush spans here
    raise SystemExit(code)
