"""Event-loop lag: how late a periodic timer fires. Python's answer to tokio's task metrics.

A loop that runs blocking work shows it here first: every callback, every websocket frame and
every result waits at least as long as the timer did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class LoopLagMonitor:
    def __init__(self, observe: Callable[[float], None], interval: float = 0.05,
                 warn_above: float = 0.1) -> None:
        self.observe = observe
        self.interval = interval
        self.warn_above = warn_above
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            planned = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - planned)
            self.worst = max(self.worst, lag)
            self.observe(lag)
            if lag > self.warn_above:
                log.warning("event loop lag %.1f ms (a blocking call on the loop?)", lag * 1e3)
