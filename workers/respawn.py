"""One respawn policy for every worker supervisor: the gateway's embedded slots and the
``streamer-worker`` command alike.

A worker that had answered something was doing its job: it is respawned at once. Deaths in a row
before any answer (a model that crashes at start or on every segment) wait ``first`` seconds,
doubling each time up to ``limit``, so a broken model does not spin a core restarting.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.config import PoolConfig

MAX_DOUBLINGS = 6  # the longest wait is first * 2**6


@dataclass(frozen=True, slots=True)
class Backoff:
    first: float
    limit: float

    @classmethod
    def from_config(cls, pool: PoolConfig) -> Backoff:
        return cls(pool.restart_backoff, pool.restart_backoff * 2**MAX_DOUBLINGS)

    def delay(self, idle_deaths: int) -> float:
        """Seconds to wait before the next start, after ``idle_deaths`` deaths in a row
        without an answer (0: respawn at once)."""
        if idle_deaths <= 0:
            return 0.0
        return float(min(self.first * 2 ** min(idle_deaths - 1, MAX_DOUBLINGS), self.limit))

    @staticmethod
    def next_idle_deaths(idle_deaths: int, answered: bool) -> int:
        """A death after an answer starts the count again."""
        return 0 if answered else idle_deaths + 1
