"""Models that misbehave on purpose, loaded by import path (``tests.e2e.poison_models:...``)
in real worker processes."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from streamer.workers.models import Model, SegmentInfo

CHUNK = 0.5  # seconds per segment in the tests that use these models


class Unsendable(Model):
    """Segment 0: bytes; 1: a set; 2: a numpy scalar; 3: a nested numpy array; 4: an object;
    later ones: a plain count."""

    def infer(self, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        index = round(info.start_time / CHUNK)
        values: list[Any] = [b"\x00\x01", {"a", "b"}, np.float32(0.25),
                             [np.arange(3, dtype=np.int16), {"m": np.eye(2)}], object()]
        if index < len(values):
            return {"value": values[index]}
        return {"count": int(len(audio))}


class KillsOnSecondSegment(Model):
    """Kills its worker process on the segment starting at 0.5 s, every time it sees it."""

    def infer(self, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        if round(info.start_time / CHUNK) == 1:
            os._exit(9)
        return {"count": int(len(audio))}


class Raises(Model):
    """Raises on every segment: a model error, answered once and never retried."""

    def infer(self, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        raise RuntimeError("this model always fails")


class NotAModel:
    def infer(self, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        return {}


class Verbose(Model):
    """A 4 KB output per segment: events fill a socket that nobody reads within a few frames."""

    def infer(self, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        return {"text": "x" * 4096}
