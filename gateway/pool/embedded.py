"""Worker processes started and supervised by the gateway itself (the default, one command).

Each worker has its own socketpair: the gateway reads and writes length-prefixed msgpack frames
through asyncio, so the event loop never makes a blocking call (a ``multiprocessing.Queue``'s
feeder thread doubled gateway CPU and loop lag: doc/decisions/0002-worker-transport.md). The
socket's transport reads straight into its :class:`WorkerLink`, which hands each result to the
dispatcher in the same callback.
Workers are forked from a forkserver that has already imported the worker code, so a respawn
after a crash takes milliseconds, not an interpreter start. One task per slot supervises it:
boot, serve until the worker dies, reap, respawn in the same slot. A worker that had answered
something is respawned at once; deaths in a row before any answer (a model that crashes on
every segment) back off; a slot whose boots keep failing gives up instead of crash-looping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import socket
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from streamer.config import Config
from streamer.errors import PoolUnavailable, WireError
from streamer.gateway.pool.base import WorkerHost
from streamer.gateway.pool.link import WorkerLink, open_link
from streamer.workers.loop import run_worker
from streamer.workers.respawn import Backoff

log = logging.getLogger(__name__)

SENTINEL_GRACE = 0.5  # after the process exits, seconds its stream gets to deliver what it sent


@dataclass(slots=True)
class _Slot:
    worker_id: int
    process: BaseProcess | None = None
    sentinel: int | None = None
    link: WorkerLink | None = None
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    boot_failures: int = 0
    idle_deaths: int = 0  # deaths in a row without answering anything
    given_up: bool = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.link is not None else None


class EmbeddedWorkers:
    def __init__(self, pool: WorkerHost, config: Config) -> None:
        self.pool = pool
        self.config = config
        self.backoff = Backoff.from_config(config.pool)
        self.slots = [_Slot(i) for i in range(self.config.pool.workers)]
        self._given_up = 0  # slots that stopped respawning (checked on every submit)
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["streamer.workers.loop"])

    @property
    def available(self) -> bool:
        return self._given_up < len(self.slots)

    async def start(self) -> None:
        """Boot every slot; fail naming each worker that did not become ready, and how."""
        links = await asyncio.gather(*(self._boot(s) for s in self.slots),
                                     return_exceptions=True)
        failures = [f"worker {s.worker_id}: {r}" for s, r in zip(self.slots, links, strict=True)
                    if isinstance(r, BaseException)]
        if failures:
            raise PoolUnavailable("workers failed to start: " + "; ".join(failures))
        for slot, link in zip(self.slots, links, strict=True):
            assert isinstance(link, WorkerLink)
            slot.task = asyncio.create_task(self._supervise(slot, link),
                                            name=f"worker-{slot.worker_id}-supervisor")
        log.info("%d embedded workers ready (model %s)", len(self.slots),
                 self.config.model.name)

    async def stop(self) -> None:
        for slot in self.slots:
            if slot.link is not None:
                slot.link.close()  # end of stream: the worker exits by itself
        await asyncio.gather(*(self._reap(s, grace=5.0) for s in self.slots))
        for slot in self.slots:
            if slot.task is not None:
                slot.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await slot.task

    async def _supervise(self, slot: _Slot, link: WorkerLink | None) -> None:
        while link is not None:
            reason = await self.pool.serve(link)
            slot.link = None
            if self.pool.stopping:
                return
            # a hung worker is killed at once; a crashed one has already exited
            code = await self._reap(slot, grace=0.0 if link.abort_reason else 2.0)
            slot.restarts += 1
            slot.idle_deaths = self.backoff.next_idle_deaths(slot.idle_deaths,
                                                             bool(link.answered))
            delay = self.backoff.delay(slot.idle_deaths)
            log.warning("worker %d (pid %s) %s, exit code %s; respawning%s", slot.worker_id,
                        link.pid, reason, code, f" in {delay:.2f} s" if delay else "")
            link = await self._respawn(slot, delay)

    async def _respawn(self, slot: _Slot, delay: float) -> WorkerLink | None:
        while not self.pool.stopping:
            if delay:
                await asyncio.sleep(delay)
            try:
                return await self._boot(slot)
            except PoolUnavailable as exc:
                log.error("worker %d failed to restart: %s", slot.worker_id, exc)
                if slot.boot_failures >= self.config.pool.max_boot_failures:
                    slot.given_up = True
                    self._given_up += 1
                    log.error("worker %d gave up after %d failed boots in a row",
                              slot.worker_id, slot.boot_failures)
                    self.pool.slot_gave_up()
                    return None
                delay = self.backoff.delay(slot.boot_failures) or self.backoff.first
        return None

    async def _boot(self, slot: _Slot) -> WorkerLink:
        """Start one worker and wait for its ready message; raise naming how it died."""
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair()
        proc = self._ctx.Process(
            target=run_worker, name=f"streamer-worker-{slot.worker_id}", daemon=True,
            args=(slot.worker_id, child, self.config.server.log_level))
        try:
            await loop.run_in_executor(None, proc.start)  # the first start launches the server
        except Exception as exc:
            parent.close()
            slot.boot_failures += 1
            raise PoolUnavailable(f"could not start a process: {exc}") from None
        finally:
            child.close()
        slot.process = proc
        slot.sentinel = proc.sentinel
        loop.add_reader(proc.sentinel, self._exited, slot)
        link = await open_link(parent, slot.worker_id, "embedded")
        slot.link = link
        timeout = self.config.pool.start_timeout
        try:
            ready = await link.handshake(self.pool.worker_config(slot.worker_id), timeout)
        except (ConnectionError, TimeoutError, WireError) as exc:
            slot.link = None
            link.close()
            await self._reap(slot, grace=1.0)
            slot.boot_failures += 1
            if isinstance(exc, TimeoutError):
                raise PoolUnavailable(f"not ready after {timeout} s") from None
            if isinstance(exc, WireError):
                raise PoolUnavailable(f"broke the protocol while starting: {exc}") from None
            raise PoolUnavailable(f"exited with code {proc.exitcode} before it was ready") \
                from None
        slot.boot_failures = 0
        log.debug("worker %d (pid %s) ready after %.3f s warm-up", slot.worker_id, ready.pid,
                  ready.warmup_time)
        return link

    def _exited(self, slot: _Slot) -> None:
        """The process sentinel fired: the worker exited. Its stream normally ends with it;
        if something else still holds the socket open, give the link up after a short grace."""
        self._unwatch(slot)
        link = slot.link
        if link is not None and not link.closed:
            asyncio.get_running_loop().call_later(
                SENTINEL_GRACE, lambda: None if link.closed else link.abort("exited"))

    def _unwatch(self, slot: _Slot) -> None:
        if slot.sentinel is not None:
            asyncio.get_running_loop().remove_reader(slot.sentinel)
            slot.sentinel = None

    async def _reap(self, slot: _Slot, grace: float) -> int | None:
        """Wait for a worker's exit without blocking the loop; kill it after ``grace``."""
        self._unwatch(slot)
        proc = slot.process
        if proc is None:
            return None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError):  # process object already closed
            if proc.exitcode is None and grace > 0:
                await loop.run_in_executor(None, proc.join, grace)
            if proc.exitcode is None:
                proc.kill()
                await loop.run_in_executor(None, proc.join, 5.0)
            return proc.exitcode
        return None
