"""The one small interface every worker pool implements."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from streamer.wire import InferenceRequest, InferenceResult


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    worker_id: int
    pid: int | None  # None when not running, or for an attached worker on another host
    ready: bool      # warmed up and taking work (after its WorkerReady)
    inflight: int
    restarts: int
    kind: str = "embedded"  # or "attached"
    address: str = ""       # an attached worker's peer address
    answered: int = 0       # results it returned since it (re)started


@dataclass(frozen=True, slots=True)
class PoolStats:
    kind: str
    size: int
    ready: int
    queued: int
    inflight: int
    restarts: int
    redispatched: int
    crashed_requests: int
    available: bool
    workers: list[WorkerInfo] = field(default_factory=list)
    lost: int = 0  # worker connections lost while running (crash, kill, hang, worker left)


class Pool(Protocol):
    """Start, submit, stop, stats; plus the two hooks sessions need (cancel, end_stream)."""

    async def start(self) -> None: ...

    def submit(self, request: InferenceRequest) -> asyncio.Future[InferenceResult]: ...

    def cancel(self, request_ids: list[int]) -> None: ...

    def end_stream(self, stateful_key: str) -> None: ...

    async def stop(self) -> None: ...

    def stats(self) -> PoolStats: ...

    @property
    def stateful(self) -> bool: ...

    @property
    def available(self) -> bool:
        """False when no worker can ever take work again (not merely: none is ready now)."""
        ...
