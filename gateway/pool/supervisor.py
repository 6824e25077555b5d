"""The production pool on one machine: worker processes behind one Dispatcher, supervised.

``pool.workers`` embedded processes the gateway starts and respawns itself (``embedded.py``);
workers on other machines, shared by several gateways, are the NATS pool's (``nats.py``). A
worker is one :class:`WorkerLink` and gets work only after its ``ready``. Liveness: the
process sentinel and end of stream, and a heartbeat timeout that catches a worker that is stuck
with its connection still open.
When a worker is gone, the Dispatcher re-sends what it held (at most ``max_retries`` times) or
answers it with an error; nothing it held is lost or answered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from streamer.config import Config
from streamer.errors import ConfigError, PoolUnavailable
from streamer.gateway.dispatch import Dispatcher
from streamer.gateway.pool.base import Job, PoolStats, WorkerInfo, heartbeat_ticks
from streamer.gateway.pool.embedded import EmbeddedWorkers
from streamer.gateway.pool.link import WorkerLink
from streamer.wire import Heartbeat, InferenceResult, WorkerConfig
from streamer.workers.models import model_class
from streamer.workers.models.base import parse_params

log = logging.getLogger(__name__)


class WorkerPool:
    def __init__(self, config: Config) -> None:
        self.config = config
        cls = model_class(config.model.name)
        parse_params(cls, config.model.params, config.model.name)  # fail before any worker
        self._stateful = cls.stateful
        pool = config.pool
        self._dispatch = Dispatcher(pool.worker_inflight, pool.max_retries)
        self._links: dict[int, WorkerLink] = {}
        self._stopping = False
        self._watchdog: asyncio.Task[None] | None = None
        self.lost = 0  # worker connections that ended while the pool was running
        if not pool.workers:
            raise ConfigError("no workers: --workers is 0 and no --nats server is given for "
                              "workers elsewhere")
        self.embedded = EmbeddedWorkers(self, config)

    kind = "embedded"

    @property
    def stateful(self) -> bool:
        return self._stateful

    @property
    def stopping(self) -> bool:
        return self._stopping

    def slot_gave_up(self) -> None:
        if not self.available:
            self._dispatch.fail_all("no worker can start")

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.embedded.start()
        except BaseException:
            await self.stop()
            raise
        self._watchdog = asyncio.create_task(self._watch(), name="pool-heartbeats")

    async def stop(self) -> None:
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self.embedded.stop()
        self._dispatch.fail_all("the gateway is shutting down")

    def worker_config(self, worker_id: int) -> WorkerConfig:
        """What every worker runs: the gateway's model, its settings and the pool's timings."""
        pool = self.config.pool
        return WorkerConfig(worker_id=worker_id, model=self.config.model.name,
                            params=dict(self.config.model.params), max_batch=pool.max_batch,
                            max_wait=pool.max_wait_ms / 1000.0,
                            heartbeat_interval=pool.heartbeat_interval,
                            heartbeat_timeout=pool.heartbeat_timeout, nice=pool.worker_nice)

    async def serve(self, link: WorkerLink) -> str:
        """Give a ready worker work until its stream ends, then fail over what it held.
        Returns what happened to it, in words for logs and error events."""
        wid = link.worker_id
        self._links[wid] = link
        self._dispatch.add_worker(wid, link.send)
        reason = "was stopped"
        try:
            aborted = await link.run(self._dispatch.on_result)
            reason = aborted or "crashed"
        finally:
            self._links.pop(wid, None)
            if not self._stopping:
                self.lost += 1
            self._dispatch.remove_worker(wid, f"worker {wid} {reason}")
        return reason

    async def _watch(self) -> None:
        """Send heartbeats and drop workers that have been silent too long. A tick that comes
        late (the loop itself was held up) checks nothing: the workers' frames may be sitting
        unread in their sockets, and silence measured then would be ours, not theirs."""
        pool = self.config.pool
        async for now, late in heartbeat_ticks(pool.heartbeat_interval):
            for link in list(self._links.values()):
                silent = now - link.last_heard
                if silent > pool.heartbeat_timeout and not late:
                    log.error("worker %d (pid %s) sent nothing for %.1f s; dropping it as hung",
                              link.worker_id, link.pid, silent)
                    link.abort(f"stopped responding ({silent:.1f} s without a heartbeat)")
                else:
                    link.send(Heartbeat(worker_id=link.worker_id, sent_at=time.time()).to_wire())

    # ---- work ---------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """False only when no worker can ever come: every embedded slot gave up."""
        return self.embedded.available

    def submit(self, job: Job) -> asyncio.Future[InferenceResult]:
        if self._stopping:
            raise PoolUnavailable("the gateway is shutting down")
        if not self.available:
            raise PoolUnavailable("no worker can run the model (every worker failed to start); "
                                  "try again later")
        return self._dispatch.submit(job)

    def release(self, stateful_key: str) -> None:
        self._dispatch.release(stateful_key)

    def stats(self) -> PoolStats:
        d = self._dispatch.stats()
        workers: list[WorkerInfo] = []
        restarts = 0
        for slot in self.embedded.slots:
            link = slot.link
            workers.append(WorkerInfo(slot.worker_id, slot.pid, bool(link and link.ready),
                                      d.per_worker.get(slot.worker_id, 0), slot.restarts,
                                      answered=link.answered if link else 0))
            restarts += slot.restarts
        return PoolStats(kind=self.kind, size=len(workers),
                         ready=sum(1 for w in workers if w.ready), queued=d.queued,
                         inflight=d.inflight, restarts=restarts, redispatched=d.redispatched,
                         poisoned=d.poisoned, available=self.available,
                         workers=workers, lost=self.lost)
