"""The upstream stub model: counts samples, at a configurable cost and failure rate.

It stands in for real inference in tests and benchmarks: ``mode="spin"`` burns CPU while holding
the GIL, the way a neural network's Python-side work does, so anything that runs it on the event
loop's thread shows it at once.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.config import setting
from streamer.errors import ConfigError, ModelError
from streamer.workers.models.base import Model, SegmentInfo, register

MODES = ("spin", "cpu", "sleep")
PANIC_EXIT_CODE = 101  # what a panicking Rust worker exits with upstream


@register("counter")
class CounterModel(Model):
    @dataclass(frozen=True, slots=True)
    class Params:
        delay: float = setting(0.0, 0.0, 60.0, "seconds per call")
        constant_factor: float = setting(0.0, 0.0, 100.0, "seconds per second of audio")
        jitter: float = setting(0.0, 0.0, 60.0, "up to this many seconds added at random")
        failure_rate: float = setting(0.0, 0.0, 1.0, "chance a call returns an error")
        panic_rate: float = setting(0.0, 0.0, 1.0, "chance a call kills the worker process")
        warmup_penalty: float = setting(0.0, 0.0, 1000.0,
                                     "the first call costs (1 + this) times the usual")
        mode: str = setting("spin", doc="'spin' burns CPU holding the GIL until a wall-clock "
                            "deadline; 'cpu' until the cost is paid in this thread's CPU time "
                            "(preemption and GIL waits do not count); 'sleep' waits")
        seed: int = setting(-1, -1, 2**31, "random seed (-1: from the OS)")

    def __init__(self, params: Params) -> None:
        if params.mode not in MODES:
            raise ConfigError(f"model.mode must be one of {', '.join(MODES)}, "
                              f"got {params.mode!r}")
        super().__init__(params)
        self._rng = random.Random(None if params.seed < 0 else params.seed)
        self._calls = 0

    def warmup(self) -> None:
        self._spend(self._cost(1.0))
        self._calls += 1

    def infer(self, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        out = self.infer_batch([(audio, info)])[0]
        if isinstance(out, Exception):
            raise out
        return out

    def infer_batch(self, items: list[tuple[np.ndarray, SegmentInfo]]
                    ) -> list[dict[str, Any] | Exception]:
        """One call for the whole batch: ``delay`` and ``jitter`` are paid once and
        ``constant_factor`` on all of the audio, so a batch costs less than its parts (like a
        network whose fixed per-call overhead dominates small inputs)."""
        p = self.params
        cost = self._cost(sum(len(audio) for audio, _ in items) / 16_000)
        self._calls += 1
        for _ in items:
            if p.panic_rate and self._rng.random() < p.panic_rate:
                os._exit(PANIC_EXIT_CODE)  # a real crash: no cleanup, no reply
        self._spend(cost)
        out: list[dict[str, Any] | Exception] = []
        for audio, info in items:
            if p.failure_rate and self._rng.random() < p.failure_rate:
                out.append(ModelError("counter model failed on purpose (failure_rate)"))
            else:
                out.append(self._output(audio, info))
        return out

    def _output(self, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        return {"count": int(len(audio))}

    def _cost(self, seconds_of_audio: float) -> float:
        p = self.params
        cost = p.delay + p.constant_factor * seconds_of_audio
        if p.jitter:
            cost += self._rng.uniform(0.0, p.jitter)
        if self._calls == 0:
            cost *= 1.0 + p.warmup_penalty
        return cost

    def _spend(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.params.mode == "sleep":
            time.sleep(seconds)
            return
        if self.params.mode == "cpu":
            deadline = time.thread_time() + seconds
            while (left := deadline - time.thread_time()) > 0:
                # the thread's CPU clock is a system call: read it about once a millisecond
                _spin_until(time.perf_counter() + min(left, 1e-3))
            return
        _spin_until(time.perf_counter() + seconds)


def _spin_until(deadline: float) -> None:
    while time.perf_counter() < deadline:
        pass


@register("stateful_counter")
class StatefulCounterModel(CounterModel):
    """The counter with memory: ``total`` is the samples seen so far on the stream. It makes
    state loss visible: after the worker holding a stream dies, ``total`` starts again."""

    stateful = True

    def __init__(self, params: CounterModel.Params) -> None:
        super().__init__(params)
        self._totals: dict[str, int] = {}

    def _output(self, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        key = info.stateful_key or info.session_id
        total = self._totals.get(key, 0) + len(audio)
        self._totals[key] = total
        return {"count": int(len(audio)), "total": total}

    def end_stream(self, stateful_key: str) -> None:
        self._totals.pop(stateful_key, None)
