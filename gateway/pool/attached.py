"""Attached workers: processes started elsewhere (``streamer-worker --connect``, e.g. under
honcho) that join the gateway over TCP or a unix socket at ``pool.worker_address``.

One byte stream per worker, like an embedded worker's socketpair, rather than queues served by
``multiprocessing.managers``: a manager queue proxy costs 240-430 us per round trip against
137-176 us for a socket read through asyncio (doc/decisions/0002-worker-transport.md), and a
byte stream per worker tells the gateway at once which worker died holding what.
``TCP_NODELAY`` is set on both ends (``multiprocessing.connection`` leaves Nagle on: 16-64 KB
frames stall ~44 ms). Each connection must pass ``multiprocessing.connection``'s HMAC
challenge with the authkey, both ways; the blocking challenge runs in a small thread pool with
kernel timeouts, never on the event loop, so a silent or hostile client cannot stall the loop or
other workers' admission.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import stat
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import AuthenticationError

from streamer.config import Config
from streamer.errors import PoolUnavailable, WireError
from streamer.gateway.pool.base import WorkerHost
from streamer.gateway.pool.link import WorkerLink
from streamer.workers.attach import authenticate, describe, parse_address, tune

log = logging.getLogger(__name__)

FIRST_ID = 1000  # attached worker ids start here (embedded slots are 0..255) and never repeat


class AttachedWorkers:
    def __init__(self, pool: WorkerHost, config: Config, authkey: bytes) -> None:
        self.pool = pool
        self.config = config
        self.address = parse_address(self.config.pool.worker_address)
        self.bound = ""
        self.links: dict[int, WorkerLink] = {}  # warming up and serving
        self.refused = 0  # connections that failed authentication
        self._authkey = authkey
        self._ids = itertools.count(FIRST_ID)
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._auth = ThreadPoolExecutor(max_workers=4, thread_name_prefix="worker-auth")

    async def start(self) -> None:
        try:
            self._sock = self._listen()
        except OSError as exc:
            raise PoolUnavailable(f"cannot listen for attached workers at "
                                  f"{describe(self.address)}: {exc.strerror or exc}") from None
        name = self._sock.getsockname()
        self.bound = name if isinstance(name, str) else f"{name[0]}:{name[1]}"
        self._accepting = asyncio.create_task(self._accept_loop(), name="attached-accept")
        log.info("attached workers may join at %s", self.bound)

    def _listen(self) -> socket.socket:
        if isinstance(self.address, str):
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(self.address).st_mode):
                    os.unlink(self.address)  # left by a gateway that did not stop cleanly
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(self.address)
            except OSError:
                sock.close()
                raise
        else:
            host, port = self.address
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family)
        sock.listen(64)
        sock.setblocking(False)
        return sock

    async def stop(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._sock is not None:
            self._sock.close()
            if isinstance(self.address, str):
                with contextlib.suppress(OSError):
                    os.unlink(self.address)
        for link in list(self.links.values()):
            link.close()  # end of stream: the worker's model process exits, it reconnects later
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._auth.shutdown(wait=False, cancel_futures=True)

    async def _accept_loop(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(self._sock)
            except OSError as exc:  # e.g. out of file descriptors: do not spin
                log.error("accepting a worker connection failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "a unix socket"
            task = asyncio.create_task(self._admit(sock, where), name=f"attach-{where}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _admit(self, sock: socket.socket, peer: str) -> None:
        """Authenticate, hand out an id and the config, wait for ready, then serve."""
        loop = asyncio.get_running_loop()
        try:
            tune(sock)
            await loop.run_in_executor(self._auth, authenticate, sock, self._authkey, True)
        except AuthenticationError:
            self.refused += 1
            log.warning("refused a worker from %s: wrong authkey (its STREAMER_AUTHKEY differs "
                        "from the gateway's)", peer)
            sock.close()
            return
        except (OSError, EOFError, AssertionError) as exc:
            self.refused += 1
            log.warning("refused a connection from %s: not a streamer worker, or it went quiet "
                        "during authentication (%s)", peer, exc or type(exc).__name__)
            sock.close()
            return
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock)
        link = WorkerLink(next(self._ids), "attached", reader, writer, peer=peer)
        self.links[link.worker_id] = link
        try:
            try:
                ready = await link.handshake(self.pool.worker_config(link.worker_id),
                                             self.config.pool.start_timeout)
            except (asyncio.IncompleteReadError, ConnectionError, TimeoutError,
                    WireError) as exc:
                log.warning("worker from %s left before it was ready (%s)", peer,
                            exc or type(exc).__name__)
                link.close()
                return
            log.info("worker %d attached from %s (host %s, pid %s), ready after %.2f s warm-up",
                     link.worker_id, peer, link.host, link.pid, ready.warmup_time)
            reason = await self.pool.serve(link)
            if not self.pool.stopping:
                log.warning("attached worker %d (%s, pid %s) %s", link.worker_id, peer,
                            link.pid, reason)
        finally:
            self.links.pop(link.worker_id, None)
            link.close()
