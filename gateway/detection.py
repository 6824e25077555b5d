"""The silero voice-activity detector off the event loop.

Silero's network holds the GIL for 1-2 ms per 32 ms frame and channel; on the loop that is the
loop's lag (measured: p99 10-14 ms at 1-4 live transcription sessions, against 3-5 ms with the
energy detector). So the network runs in a small pool of processes of its own, started when a
stream first asks for it: before a frame's samples reach a channel's segmenter, the session
sends the channel's new whole frames there and hands the probabilities that come back to the
segmenter's :class:`OffloadedSilero`, which makes the decisions (threshold, hysteresis) as the
in-process detector would. When the processes cannot answer (one died twice on a frame, none can
start, or no answer within ``ANSWER_TIMEOUT``), the loop computes those frames itself, so a
stream never stalls on its detector.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections import deque
from collections.abc import Callable

import numpy as np

from streamer.config import Config, ModelConfig
from streamer.errors import PoolUnavailable
from streamer.gateway.pool.base import Job, Pool, PoolStats
from streamer.gateway.stream import StreamCore
from streamer.gateway.vad import SileroVad
from streamer.wire import InferenceResult

log = logging.getLogger(__name__)

MODEL = "silero_vad"
ANSWER_TIMEOUT = 5.0  # seconds to wait for a frame's probabilities before the loop does it


class OffloadedSilero(SileroVad):
    """A channel's silero detector whose network runs elsewhere: :meth:`take` gives the whole
    frames of the samples about to be pushed, :meth:`supply` their probabilities; frames with
    none supplied are computed here, from fresh network state."""

    offloaded = True

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__(threshold)
        self._rest = np.zeros(0, dtype=np.float32)
        self._supplied: deque[float] = deque()

    def take(self, samples: np.ndarray) -> np.ndarray:
        """The whole frames completed by ``samples`` (a part-frame waits for the next call),
        as a flat float32 array: exactly the frames the segmenter will classify."""
        joined = np.concatenate([self._rest, np.asarray(samples, dtype=np.float32)])
        whole = len(joined) - len(joined) % self.frame_samples
        self._rest = joined[whole:]
        return joined[:whole]

    def supply(self, probabilities: list[float]) -> None:
        self._supplied.extend(probabilities)

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        have = min(len(frames), len(self._supplied))
        out = np.fromiter((self._supplied.popleft() for _ in range(have)), np.float32, have)
        if have < len(frames):
            out = np.concatenate([out, super().probabilities(frames[have:])])
        return out


class Detection:
    """The gateway's detector processes (an embedded pool running the ``silero_vad`` model),
    started on first use, and the per-frame exchange with them."""

    def __init__(self, config: Config, workers: int | None = None) -> None:
        self.workers = config.pool.vad_workers if workers is None else workers
        self._config = dataclasses.replace(
            config, model=ModelConfig(MODEL),
            # part of the gateway's own pipeline: not niced below it like the model's workers
            pool=dataclasses.replace(config.pool, workers=max(1, self.workers), worker_nice=0,
                                     max_batch=1, nats_url=""))
        self._pool: Pool | None = None
        self._boot: asyncio.Task[None] | None = None
        self._seq = itertools.count()
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.workers > 0

    def detector(self, threshold: float) -> SileroVad:
        """A new silero detector for one channel, offloaded when processes are configured."""
        return OffloadedSilero(threshold) if self.enabled else SileroVad(threshold)

    def prestart(self) -> None:
        """Start the processes now rather than on a stream's first frame."""
        if self.enabled:
            self._started()

    async def run(self, core: StreamCore, audio: np.ndarray) -> None:
        """Get the probabilities of the frames ``audio`` (channels x samples) completes, for
        every offloaded channel of ``core``, before the core segments it."""
        asked: list[tuple[OffloadedSilero, asyncio.Future[InferenceResult]]] = []
        for channel, segmenter in enumerate(core.segmenters):
            detector = getattr(segmenter, "detector", None)
            if not isinstance(detector, OffloadedSilero):
                continue
            frames = detector.take(audio[channel])
            if not len(frames):
                continue
            pool = self._started()
            if pool is None:
                continue
            job = Job(core.session_id, channel, next(self._seq), 0.0, 0.0, frames.tobytes(),
                      stateful_key=core.detector_key(channel))
            try:
                asked.append((detector, pool.submit(job)))
            except PoolUnavailable as exc:
                self._fell_back(str(exc))
        for detector, answer in asked:
            try:
                async with asyncio.timeout(ANSWER_TIMEOUT):
                    result = await answer
            except TimeoutError:
                self._fell_back(f"no answer within {ANSWER_TIMEOUT:g} s")
                continue
            except PoolUnavailable as exc:
                self._fell_back(str(exc))
                continue
            output = result.output
            if output is None or not isinstance(output.get("p"), list):
                self._fell_back(result.error or "no probabilities in the answer")
                continue
            detector.supply(output["p"])

    def release(self, key: str) -> None:
        if self._pool is not None:
            self._pool.release(key)

    def releaser(self, model_release: Callable[[str], None]) -> Callable[[str], None]:
        """One release for a stream's keys: detector state here, model state in the pool."""
        def release(key: str) -> None:
            if StreamCore.is_detector_key(key):
                self.release(key)
            else:
                model_release(key)
        return release

    def stats(self) -> PoolStats | None:
        """The detector processes' pool, once started."""
        return self._pool.stats() if self._pool is not None else None

    async def stop(self) -> None:
        if self._boot is not None and not self._boot.done():
            self._boot.cancel()
        if self._pool is not None:
            await self._pool.stop()

    def _started(self) -> Pool | None:
        if self._pool is None:
            from streamer.gateway.pool.supervisor import WorkerPool

            try:
                self._pool = WorkerPool(self._config)
            except Exception as exc:  # a broken install: the loop detects, and says why once
                self._fell_back(f"cannot start detector processes: {exc}")
                self.workers = 0
                return None
            log.info("starting %d silero detector process(es)", self.workers)
            self._boot = asyncio.create_task(self._pool.start(), name="detector-boot")
            self._boot.add_done_callback(self._booted)
        return self._pool

    def _booted(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._fell_back(f"detector processes failed to start: {task.exception()}")

    def _fell_back(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("silero detector processes could not answer (%s); the event loop runs "
                        "the detector for those frames", why)
