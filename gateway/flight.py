"""A session's jobs at the pool: submitted under a bound, answers fed back to the stream core.

At most ``limit`` segments of a session await an answer or an unsent event (a slot is returned
when the segment's event is sent, or at once when there is none to send). Waiting for a slot is
what stops the session's reader, so TCP pushes back on a client that sends faster than the
workers keep up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from streamer.errors import PoolUnavailable
from streamer.gateway.ledger import Outgoing
from streamer.gateway.observe import SessionMetrics
from streamer.gateway.pool import Pool
from streamer.gateway.stream import StreamCore, Work
from streamer.wire import InferenceResult

log = logging.getLogger(__name__)


class Flight:
    def __init__(self, pool: Pool, limit: int, observe: SessionMetrics,
                 on_broken: Callable[[str], None]) -> None:
        self.pool = pool
        self._slots = asyncio.Semaphore(limit)
        self._observe = observe
        self._on_broken = on_broken
        # each job's future -> what its answer settles (one dict entry per job, no closure)
        self._waiting: dict[asyncio.Future[InferenceResult], tuple[StreamCore, Work, float]] = {}
        self._progress = asyncio.Event()  # an answer came back

    async def submit(self, core: StreamCore, work: list[Work]) -> None:
        """Hand ``work`` to the pool in order, waiting for a slot before each job."""
        for item in work:
            await self._slots.acquire()
            try:
                fut = self.pool.submit(item.job)
            except PoolUnavailable as exc:
                self._slots.release()
                core.fail(item, f"inference failed: {exc}")
                raise
            self._waiting[fut] = (core, item, time.monotonic())
            fut.add_done_callback(self._answered)

    def _answered(self, fut: asyncio.Future[InferenceResult]) -> None:
        core, work, submitted_at = self._waiting.pop(fut)
        self._progress.set()
        result = None if fut.cancelled() else fut.result()
        try:
            if result is not None:
                self._observe.result(work, result, time.monotonic() - submitted_at)
            core.settle(work, result)
        except Exception as exc:  # the stream's bookkeeping broke: it cannot go on
            log.exception("cannot settle the answer for %s", work.slot)
            self._on_broken(f"internal error: {exc}")
            result = None
        if result is None or work.slot is None:
            self._slots.release()  # nothing will be sent for it

    def sent(self, out: Outgoing, sent_at: float | None) -> None:
        """An event left at ``sent_at`` (None: dropped): a segment's answer returns its slot."""
        if out.segment_seconds is not None:
            self._slots.release()
        if sent_at is not None:
            self._observe.sent(out, sent_at)

    async def settled(self, core: StreamCore) -> None:
        """Until every output ``core`` planned is settled."""
        while core.open:
            self._progress.clear()
            await self._progress.wait()

    def adopt(self, on_broken: Callable[[str], None]) -> None:
        """A resumed stream's jobs now belong to a new session: it is told when they break."""
        self._on_broken = on_broken

    def withdraw(self) -> None:
        """The session is over: take back every job nobody will read."""
        for fut in list(self._waiting):
            fut.cancel()
