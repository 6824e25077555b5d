"""The model inside the gateway process: the baselines the benchmarks compare against.

``mode="inline"`` calls the model on the event loop's thread (everything stalls while it runs);
``mode="thread"`` uses a thread pool (the GIL still stalls the loop for a spinning model). Never
the right choice for serving; useful to show why worker processes exist.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from concurrent.futures import ThreadPoolExecutor

from streamer.config import Config
from streamer.gateway.pool.base import Job, PoolStats
from streamer.wire import InferenceRequest, InferenceResult
from streamer.workers.models import make_model, model_class
from streamer.workers.runner import Runner


class InlinePool:
    kind = "inline"

    def __init__(self, config: Config, mode: str = "inline", threads: int | None = None) -> None:
        if mode not in ("inline", "thread"):
            raise ValueError(f"mode must be 'inline' or 'thread', got {mode!r}")
        self.mode = mode
        self._runner = Runner(make_model(config.model.name, config.model.params), worker_id=0)
        self._stateful = model_class(config.model.name).stateful
        self._executor = (ThreadPoolExecutor(threads or config.pool.workers or 1)
                          if mode == "thread" else None)
        self._inflight = 0
        self._ids = itertools.count(1)
        self._tails: dict[str, asyncio.Future[InferenceResult]] = {}  # a stream's last job

    @property
    def stateful(self) -> bool:
        return self._stateful

    @property
    def available(self) -> bool:
        return True

    async def start(self) -> None:
        self._runner.model.warmup()

    async def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, job: Job) -> asyncio.Future[InferenceResult]:
        loop = asyncio.get_running_loop()
        request = InferenceRequest(
            request_id=next(self._ids), session_id=job.session_id, channel=job.channel,
            seq=job.seq, start_time=job.start_time, end_time=job.end_time, audio=job.audio,
            is_final=job.is_final, stateful_key=job.stateful_key, trace=job.trace,
            step=job.step)
        if self._executor is None:
            fut: asyncio.Future[InferenceResult] = loop.create_future()
            fut.set_result(self._runner.run(request, time.time()))
            return fut
        self._inflight += 1
        key = job.stateful_key
        if key is None:
            out = loop.run_in_executor(self._executor, self._runner.run, request, time.time())
        else:  # one stream's jobs run one at a time, in order, like on its worker
            out = loop.create_task(self._after(self._tails.get(key), request))
            self._tails[key] = out
        out.add_done_callback(self._done)
        return out

    async def _after(self, previous: asyncio.Future[InferenceResult] | None,
                     request: InferenceRequest) -> InferenceResult:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._runner.run, request,
                                          time.time())

    def _done(self, _: object) -> None:
        self._inflight -= 1

    def release(self, stateful_key: str) -> None:
        tail = self._tails.pop(stateful_key, None)
        if tail is not None and not tail.done() and self._executor is not None:
            # after the stream's last job, on the thread pool like its jobs
            tail.add_done_callback(lambda _: self._executor.submit(  # type: ignore[union-attr]
                self._runner.model.end_stream, stateful_key))
            return
        self._runner.model.end_stream(stateful_key)

    def stats(self) -> PoolStats:
        return PoolStats(kind=f"{self.kind}-{self.mode}", size=1, ready=1, queued=0,
                         inflight=self._inflight, restarts=0, redispatched=0, poisoned=0,
                         available=True)
