"""Which worker gets which request: futures keyed by request id, and who holds what.

Transport-free bookkeeping shared by every pool that talks to worker processes. Requests wait in
one FIFO in the gateway and go to the least-loaded ready worker, at most ``per_worker`` at a time,
so a slow or dead worker holds little and a crash re-sends only what it held. Requests with an
affinity key (stateful models) always go to the worker that holds that key's state; when that
worker dies, the key's next answer is marked ``state_lost`` (it comes from fresh state).

Exactly one answer per request: a future is resolved once, and a result counts only when it
comes from the worker that holds the request now (not one it was taken from when it died). A
request held by ``max_retries + 1`` workers that died is a poison segment: it is answered with an
error and never sent again (``poisoned`` counts them), so one bad segment costs a bounded number
of workers. Requests re-sent after a death are suspects and run alone on an idle worker, so the
segments that merely shared a worker with a poison one are not blamed for the next death. A
model's exception is an ordinary error result and is never retried.

Callers see jobs and futures only: request ids, the queue, retries and the wire request are
this module's business. Cancelling a job's future withdraws it: a queued job is dropped unsent
when the queue reaches it, and a result that still comes for a sent one is dropped. The one
future per job is all a job costs the event loop here: no callback is attached to it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from streamer.gateway.pool.base import Job
from streamer.wire import EndSession, InferenceRequest, InferenceResult, replace

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    request: InferenceRequest
    future: asyncio.Future[InferenceResult]
    worker: int | None = None
    state_lost: bool = False  # first request of its stateful key on a new worker


@dataclass(slots=True)
class _Worker:
    send: Callable[[bytes], None]
    inflight: set[int] = field(default_factory=set)
    suspect: int | None = None  # a request held when another worker died: it runs alone
    full: bool = False  # said busy (other gateways share it): nothing more until it has room

    def takes(self, per_worker: int, suspect: bool) -> bool:
        """Room for one more request (a suspect only on an idle worker)."""
        if self.full or self.suspect is not None or len(self.inflight) >= per_worker:
            return False
        return not (suspect and self.inflight)


@dataclass(frozen=True, slots=True)
class DispatchStats:
    workers: int
    queued: int
    inflight: int
    redispatched: int
    poisoned: int
    per_worker: dict[int, int]


class Dispatcher:
    def __init__(self, per_worker: int = 2, max_retries: int = 1) -> None:
        self.per_worker = per_worker
        self.max_retries = max_retries
        self._workers: dict[int, _Worker] = {}
        self._pending: dict[int, _Pending] = {}
        self._queue: deque[int] = deque()
        self._affinity: dict[str, int] = {}
        self._lost_keys: set[str] = set()  # stateful keys whose worker died
        self._ids = itertools.count(1)
        self.redispatched = 0
        self.poisoned = 0

    # ---- workers come and go ------------------------------------------------------------
    def add_worker(self, worker_id: int, send: Callable[[bytes], None]) -> None:
        self._workers[worker_id] = _Worker(send)
        self._pump()

    def remove_worker(self, worker_id: int, reason: str) -> None:
        """Fail over what a dead worker held: re-send, or answer with an error after retries."""
        worker = self._workers.pop(worker_id, None)
        if worker is None:
            return
        for key in [k for k, w in self._affinity.items() if w == worker_id]:
            del self._affinity[key]
            self._lost_keys.add(key)
        retry: list[int] = []
        for rid in sorted(worker.inflight):
            pending = self._pending.get(rid)
            if pending is None or pending.future.done():
                self._pending.pop(rid, None)
                continue
            req = pending.request
            if req.attempt >= self.max_retries:
                self.poisoned += 1
                log.error("request %d (session %s, channel %d, %.2f-%.2f s) was held by %d "
                          "workers that died; answering it with an error, not sending it again",
                          rid, req.session_id, req.channel, req.start_time, req.end_time,
                          req.attempt + 1)
                self._resolve(rid, InferenceResult(
                    request_id=rid, worker_id=worker_id,
                    error=f"inference failed: {reason} (tried {req.attempt + 1} times; "
                          "this segment is not sent again)"))
                continue
            pending.request = replace(req, attempt=req.attempt + 1)
            pending.worker = None
            retry.append(rid)
        self.redispatched += len(retry)
        self._queue.extendleft(reversed(retry))
        self._pump()

    def busy(self, worker_id: int, rid: int) -> None:
        """A worker shared with other gateways refused ``rid`` (it is full): queue it again,
        first, as if never sent, and send that worker nothing until :meth:`has_room`."""
        worker = self._workers.get(worker_id)
        if worker is None or rid not in worker.inflight:
            return
        worker.inflight.discard(rid)
        worker.full = True
        if worker.suspect == rid:
            worker.suspect = None
        pending = self._pending.get(rid)
        if pending is not None and not pending.future.done():
            pending.worker = None
            self._queue.appendleft(rid)
        self._pump()

    def has_room(self, worker_id: int) -> None:
        """The worker said it has free capacity again."""
        worker = self._workers.get(worker_id)
        if worker is not None and worker.full:
            worker.full = False
            self._pump()

    def resend(self, worker_id: int) -> None:
        """Messages to or from a worker may have been lost (the broker connection dropped and
        came back): queue what it holds again, first, without counting an attempt. A result
        that still comes for the first copy is taken as the answer; the second is dropped."""
        worker = self._workers.get(worker_id)
        if worker is None:
            return
        again = sorted(rid for rid in worker.inflight if rid in self._pending)
        worker.inflight.clear()
        worker.suspect = None
        worker.full = False
        for rid in again:
            self._pending[rid].worker = None
        self._queue.extendleft(reversed(again))
        self._pump()

    # ---- requests -----------------------------------------------------------------------
    def submit(self, job: Job) -> asyncio.Future[InferenceResult]:
        """Queue ``job``; the future resolves with its one answer. Cancel it to withdraw."""
        rid = next(self._ids)
        request = InferenceRequest(
            request_id=rid, session_id=job.session_id, channel=job.channel, seq=job.seq,
            start_time=job.start_time, end_time=job.end_time, audio=job.audio,
            is_final=job.is_final, stateful_key=job.stateful_key, trace=job.trace,
            step=job.step)
        fut: asyncio.Future[InferenceResult] = asyncio.get_running_loop().create_future()
        self._pending[rid] = _Pending(request, fut)
        self._queue.append(rid)
        self._pump()
        return fut

    def on_result(self, result: InferenceResult, worker_id: int | None = None) -> None:
        """A result read from ``worker_id``'s connection (default: the id the result names)."""
        wid = result.worker_id if worker_id is None else worker_id
        rid = result.request_id
        worker = self._workers.get(wid)
        if worker is None or rid not in worker.inflight:
            log.debug("dropping result for request %d from worker %d, which does not hold it",
                      rid, wid)
            return
        worker.inflight.discard(rid)
        worker.full = False  # it finished one: room for one more
        if worker.suspect == rid:
            worker.suspect = None
        if rid in self._pending:
            self._resolve(rid, result)
        else:
            log.debug("dropping late result for request %d", rid)
        self._pump()

    def release(self, key: str) -> None:
        """A stateful stream ended: tell its worker to drop the state."""
        self._lost_keys.discard(key)
        worker_id = self._affinity.pop(key, None)
        worker = self._workers.get(worker_id) if worker_id is not None else None
        if worker is not None:
            worker.send(EndSession(stateful_key=key).to_wire())

    def fail_all(self, reason: str) -> None:
        for rid in list(self._pending):
            self._resolve(rid, InferenceResult(request_id=rid, worker_id=-1,
                                               error=f"inference failed: {reason}"))
        self._queue.clear()

    def stats(self) -> DispatchStats:
        return DispatchStats(
            workers=len(self._workers), queued=len(self._queue),
            inflight=sum(len(w.inflight) for w in self._workers.values()),
            redispatched=self.redispatched, poisoned=self.poisoned,
            per_worker={wid: len(w.inflight) for wid, w in self._workers.items()})

    # ---- internals ----------------------------------------------------------------------
    def _resolve(self, rid: int, result: InferenceResult) -> None:
        pending = self._pending.pop(rid, None)
        if pending is not None and not pending.future.done():
            if pending.state_lost:
                result = replace(result, state_lost=True)
            pending.future.set_result(result)

    def _pick(self, request: InferenceRequest) -> int | None:
        key = request.stateful_key
        suspect = request.attempt > 0
        if key is not None and key in self._affinity:
            wid = self._affinity[key]
            return wid if self._workers[wid].takes(self.per_worker, suspect) else None
        pinned = self._pinned() if key is not None else {}
        # A new stream goes to the worker with the fewest jobs, then the fewest streams: on
        # idle workers streams would otherwise all pile onto the first one.
        free = [(len(w.inflight), pinned.get(wid, 0), wid) for wid, w in self._workers.items()
                if w.takes(self.per_worker, suspect)]
        if not free:
            return None
        wid = min(free)[2]
        if key is not None:
            self._affinity[key] = wid
        return wid

    def _pinned(self) -> dict[int, int]:
        """Streams (stateful keys) each worker holds."""
        count: dict[int, int] = {}
        for wid in self._affinity.values():
            count[wid] = count.get(wid, 0) + 1
        return count

    def _pump(self) -> None:
        """Hand queued requests to workers with room, oldest first."""
        if not self._queue or not self._workers:
            return
        skipped: list[int] = []
        while self._queue:
            rid = self._queue.popleft()
            pending = self._pending.get(rid)
            if pending is None or pending.future.done():
                self._pending.pop(rid, None)
                continue
            wid = self._pick(pending.request)
            if wid is None:
                skipped.append(rid)
                if pending.request.stateful_key is None and not pending.request.attempt:
                    break  # nobody has room; affinity requests or suspects may still fit
                continue
            pending.worker = wid
            key = pending.request.stateful_key
            if key is not None and key in self._lost_keys:
                self._lost_keys.discard(key)
                pending.state_lost = True
            worker = self._workers[wid]
            worker.inflight.add(rid)
            if pending.request.attempt:
                worker.suspect = rid
            worker.send(pending.request.to_wire(sent_at=time.time()))
        self._queue.extendleft(reversed(skipped))
