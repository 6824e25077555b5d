"""Worker processes started and supervised by the gateway itself (the default, one command).

Each worker has its own socketpair: the gateway reads and writes length-prefixed msgpack frames
through asyncio, so the event loop never makes a blocking call (a ``multiprocessing.Queue``'s
feeder thread doubled gateway CPU and loop lag in the measurements of DESIGN.md section 3).
Workers are forked from a forkserver that has already imported the worker code, so a respawn
after a crash takes milliseconds, not an interpreter start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import socket
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from gateway.dispatch import Dispatcher
from gateway.pool.base import PoolStats, WorkerInfo
from shared.config import Config
from shared.errors import PoolUnavailable, WireError
from shared.wire import HEADER, InferenceRequest, InferenceResult, WorkerReady, frame, from_wire
from workers.loop import run_worker
from workers.models import model_class
from workers.models.base import parse_params

log = logging.getLogger(__name__)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size < 0:
        raise WireError(f"frame length {size} is not supported")
    return await reader.readexactly(size)


@dataclass(slots=True)
class _Slot:
    worker_id: int
    process: BaseProcess | None = None
    writer: asyncio.StreamWriter | None = None
    task: asyncio.Task[None] | None = None
    ready: bool = False
    restarts: int = 0
    boot_failures: int = 0
    given_up: bool = False


class EmbeddedPool:
    kind = "embedded"

    def __init__(self, config: Config) -> None:
        self.config = config
        cls = model_class(config.model.name)
        parse_params(cls, config.model.params, config.model.name)  # fail before any fork
        self._stateful = cls.stateful
        self._dispatch = Dispatcher(config.pool.worker_inflight, config.pool.max_retries)
        self._slots = [_Slot(i) for i in range(config.pool.workers)]
        self._stopping = False
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["workers.loop"])
        self._respawns: set[asyncio.Task[None]] = set()

    @property
    def stateful(self) -> bool:
        return self._stateful

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        results = await asyncio.gather(*(self._boot(s) for s in self._slots),
                                       return_exceptions=True)
        failures = [f"worker {s.worker_id}: {r}" for s, r in zip(self._slots, results, strict=True)
                    if isinstance(r, BaseException)]
        if failures:
            await self.stop()
            raise PoolUnavailable("workers failed to start: " + "; ".join(failures))
        log.info("%d workers ready (model %s)", len(self._slots), self.config.model.name)

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._respawns):
            task.cancel()
        for slot in self._slots:
            if slot.writer is not None:
                slot.writer.close()  # end of stream: the worker exits by itself
        await asyncio.gather(*(self._reap(s, grace=5.0) for s in self._slots))
        for slot in self._slots:
            if slot.task is not None:
                slot.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await slot.task
        self._dispatch.fail_all("the gateway is shutting down")

    async def _boot(self, slot: _Slot) -> None:
        """Start one worker and wait for its ready message; raise naming how it died."""
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair()
        proc = self._ctx.Process(
            target=run_worker, name=f"streamer-worker-{slot.worker_id}", daemon=True,
            args=(slot.worker_id, child, self.config.model.name, dict(self.config.model.params),
                  self.config.server.log_level))
        slot.process = proc
        try:
            await loop.run_in_executor(None, proc.start)  # the first start launches the server
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        try:
            data = await asyncio.wait_for(read_frame(reader), self.config.pool.start_timeout)
            ready = from_wire(data)
            if not isinstance(ready, WorkerReady):
                raise WireError(f"expected a ready message, got {ready.KIND}")
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, WireError) as exc:
            writer.close()
            await self._reap(slot, grace=1.0)
            slot.boot_failures += 1
            if isinstance(exc, TimeoutError):
                raise PoolUnavailable(f"not ready after {self.config.pool.start_timeout} s") \
                    from None
            raise PoolUnavailable(f"exited with code {proc.exitcode} before it was ready") \
                from None
        slot.writer, slot.ready, slot.boot_failures = writer, True, 0
        self._dispatch.add_worker(slot.worker_id, lambda payload: writer.write(frame(payload)))
        slot.task = asyncio.create_task(self._read_results(slot, reader),
                                        name=f"worker-{slot.worker_id}-results")
        log.debug("worker %d (pid %s) ready after %.3f s warm-up", slot.worker_id, ready.pid,
                  ready.warmup_time)

    async def _read_results(self, slot: _Slot, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                msg = from_wire(await read_frame(reader))
                if isinstance(msg, InferenceResult):
                    self._dispatch.on_result(msg)
                else:
                    log.warning("worker %d sent an unexpected %s", slot.worker_id, msg.KIND)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except WireError as exc:
            log.error("worker %d sent a bad frame (%s); replacing it", slot.worker_id, exc)
        if not self._stopping:
            await self._on_death(slot)

    async def _on_death(self, slot: _Slot) -> None:
        slot.ready = False
        self._dispatch.remove_worker(slot.worker_id, f"worker {slot.worker_id} crashed")
        if slot.writer is not None:
            slot.writer.close()
            slot.writer = None
        code = await self._reap(slot, grace=2.0)
        log.warning("worker %d exited with code %s; respawning", slot.worker_id, code)
        slot.restarts += 1
        task = asyncio.create_task(self._respawn(slot))
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    async def _respawn(self, slot: _Slot) -> None:
        delay = self.config.pool.restart_backoff
        while not self._stopping:
            if slot.boot_failures:
                await asyncio.sleep(delay * 2 ** min(slot.boot_failures - 1, 6))
            try:
                await self._boot(slot)
                return
            except PoolUnavailable as exc:
                log.error("worker %d failed to restart: %s", slot.worker_id, exc)
                if slot.boot_failures >= self.config.pool.max_boot_failures:
                    slot.given_up = True
                    log.error("worker %d gave up after %d failed boots", slot.worker_id,
                              slot.boot_failures)
                    if not self.available:
                        self._dispatch.fail_all("no worker can start")
                    return

    async def _reap(self, slot: _Slot, grace: float) -> int | None:
        """Wait for a worker's exit without blocking the loop; kill it after ``grace``."""
        proc = slot.process
        if proc is None:
            return None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError):  # process object already closed
            if proc.exitcode is None:
                await loop.run_in_executor(None, proc.join, grace)
            if proc.exitcode is None:
                proc.kill()
                await loop.run_in_executor(None, proc.join, 5.0)
            return proc.exitcode
        return None

    # ---- work ---------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return any(not s.given_up for s in self._slots)

    def submit(self, request: InferenceRequest) -> asyncio.Future[InferenceResult]:
        if not self.available or self._stopping:
            fut: asyncio.Future[InferenceResult] = asyncio.get_running_loop().create_future()
            fut.set_result(InferenceResult(request_id=request.request_id, worker_id=-1,
                                           error="inference failed: no worker is available"))
            return fut
        return self._dispatch.submit(request)

    def cancel(self, request_ids: list[int]) -> None:
        self._dispatch.cancel(request_ids)

    def end_stream(self, stateful_key: str) -> None:
        self._dispatch.end_stream(stateful_key)

    def stats(self) -> PoolStats:
        d = self._dispatch.stats()
        workers = [WorkerInfo(s.worker_id, s.process.pid if s.process else None, s.ready,
                              d.per_worker.get(s.worker_id, 0), s.restarts) for s in self._slots]
        return PoolStats(kind=self.kind, size=len(self._slots),
                         ready=sum(1 for s in self._slots if s.ready), queued=d.queued,
                         inflight=d.inflight, restarts=sum(s.restarts for s in self._slots),
                         redispatched=d.redispatched, crashed_requests=d.crashed_requests,
                         available=self.available, workers=workers)
