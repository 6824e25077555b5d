"""The boundary between sessions and workers: a :class:`Job` goes in, an awaitable answer comes
out. Every pool implements :class:`Pool`; request ids, queues, retries and wire formats stay
behind it, so a transport (worker processes today, a message broker tomorrow) is a new pool, not
a change to sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from streamer.gateway.pool.link import WorkerLink
from streamer.wire import InferenceResult, WorkerConfig


class Job(msgspec.Struct, frozen=True):
    """One segment of one channel for the model: what a stream knows, nothing about transport.
    ``stateful_key`` names the model state it belongs to (all jobs with one key reach the same
    worker, in order); ``trace`` carries the W3C context of its dispatch span. ``step`` is empty
    for a whole segment (the model's ``infer``); for a piece of an open segment sent to a
    streaming model it is ``feed``, ``partial`` or ``finish`` and ``audio`` holds only the
    samples from ``end_time - len(audio)`` on (``start_time`` stays the segment's start).
    A Struct, not a dataclass: one is made per segment, and a frozen dataclass takes several
    times as long to build."""

    session_id: str
    channel: int
    seq: int
    start_time: float
    end_time: float
    audio: bytes  # little-endian float32, 16 kHz
    is_final: bool | None = None
    stateful_key: str | None = None
    trace: dict[str, str] = msgspec.field(default_factory=dict)
    step: str = ""

    @property
    def seconds(self) -> float:
        return self.end_time - self.start_time

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio the job carries (a piece carries less than its segment)."""
        return len(self.audio) / 4 / 16_000


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    worker_id: int
    pid: int | None  # None when not running, or for a NATS worker on another host
    ready: bool      # warmed up and taking work (after its WorkerReady)
    inflight: int
    restarts: int
    kind: str = "embedded"  # or "nats"
    address: str = ""       # a NATS worker's host and name
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
    poisoned: int   # segments answered with an error after the workers holding them died
    available: bool
    workers: list[WorkerInfo] = field(default_factory=list)
    lost: int = 0  # worker connections lost while running (crash, kill, hang, worker left)


class Pool(Protocol):
    """Start, submit, release, stop, stats.

    ``submit`` never blocks: it queues the job and returns a future that resolves exactly once,
    with the model's output or an error result (a worker that died holding it, a model error).
    Cancelling the future withdraws the job. It raises :class:`PoolUnavailable` only when no
    worker can ever take work (``available`` is False)."""

    async def start(self) -> None: ...

    def submit(self, job: Job) -> asyncio.Future[InferenceResult]: ...

    def release(self, stateful_key: str) -> None:
        """A stateful stream is over: whichever worker holds its model state drops it."""
        ...

    async def stop(self) -> None: ...

    def stats(self) -> PoolStats: ...

    @property
    def stateful(self) -> bool: ...

    @property
    def available(self) -> bool:
        """False when no worker can ever take work again (not merely: none is ready now)."""
        ...


class WorkerHost(Protocol):
    """What a worker transport (embedded processes) needs from the pool
    that owns it: the transports depend on this, never on the pool's class."""

    @property
    def stopping(self) -> bool: ...

    def worker_config(self, worker_id: int) -> WorkerConfig:
        """The handshake's answer: the gateway's model and timings for this worker."""
        ...

    async def serve(self, link: WorkerLink) -> str:
        """Give a ready worker work until its link ends; returns what happened to it."""
        ...

    def slot_gave_up(self) -> None:
        """An embedded slot stopped respawning: if no worker can ever come, fail what waits."""
        ...


async def heartbeat_ticks(interval: float) -> AsyncIterator[tuple[float, bool]]:
    """``(now, late)`` every ``interval`` seconds, for a pool's watchdog. ``late``: the tick came
    well after its time (the loop itself was held up), so silence measured on it would be ours,
    not the workers'; a watchdog judges no worker on such a tick."""
    last = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        now = time.monotonic()
        late = now - last > 2 * interval + 0.1
        last = now
        yield now, late
