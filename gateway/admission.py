"""Admission control: refuse a new session, with a reason, when it could not be served in real
time. Three signals: the number of sessions, memory (gateway plus workers), and the pool's own
backlog of unanswered audio per ready worker, which rises before latency does."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

from streamer.config import ServerConfig
from streamer.gateway.pool.base import PoolStats


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str      # short label for metrics
    message: str     # what a person reads
    retry_after: int  # seconds


class Admission:
    def __init__(self, config: ServerConfig, pool_stats: Callable[[], PoolStats],
                 backlogs: Callable[[], Iterable[float]]) -> None:
        self.config = config
        self._pool_stats = pool_stats
        self._backlogs = backlogs
        self._memory_checked = 0.0
        self._memory_mb = 0.0

    def check(self, sessions: int) -> Refusal | None:
        cfg = self.config
        stats = self._pool_stats()
        if stats.ready == 0:
            return Refusal("not_ready", "no worker is ready yet (starting up or restarting); "
                           "try again shortly", 2)
        if sessions >= cfg.max_sessions:
            return Refusal("max_sessions", f"the server is at its limit of {cfg.max_sessions} "
                           "concurrent sessions", 5)
        backlog = sum(self._backlogs()) / stats.ready
        if backlog > cfg.max_backlog_seconds:
            return Refusal("backlog", f"the workers are {backlog:.1f} s of audio behind "
                           f"(limit {cfg.max_backlog_seconds:g} s per worker)", 5)
        if cfg.max_memory_mb > 0:
            used = self.memory_mb(stats)
            if used > cfg.max_memory_mb:
                return Refusal("memory", f"memory use {used:.0f} MB is over the limit of "
                               f"{cfg.max_memory_mb:.0f} MB", 10)
        return None

    def memory_mb(self, stats: PoolStats) -> float:
        """Resident memory of the gateway and its workers, re-read at most once a second."""
        now = time.monotonic()
        if now - self._memory_checked >= 1.0:
            total = psutil.Process().memory_info().rss
            for w in stats.workers:
                if w.pid is not None:
                    with contextlib.suppress(psutil.Error):
                        total += psutil.Process(w.pid).memory_info().rss
            self._memory_mb = total / 2**20
            self._memory_checked = now
        return self._memory_mb
