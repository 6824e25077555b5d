"""Cutting one channel's audio into the segments the model sees.

A segmenter takes the channel's samples as they are decoded and returns what is ready: segments to
send to the model and, for voice-activity segmenters, activity events. One segmenter per channel;
sample positions are on the channel's own 16 kHz timeline from the start of the stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from streamer.config import Config
from streamer.protocol import StartRequest


@dataclass(frozen=True, slots=True)
class Segment:
    start: int  # first sample, 16 kHz, from the start of the stream
    audio: np.ndarray
    is_final: bool | None = None

    @property
    def end(self) -> int:
        return self.start + len(self.audio)


@dataclass(frozen=True, slots=True)
class Activity:
    """Speech started (``active``) or ended (``inactive``) at sample ``at``."""

    kind: str
    at: int


@dataclass(frozen=True, slots=True)
class Piece:
    """Part of an open speech segment, for a streaming model: the samples from ``start +
    offset`` on, not sent before. ``step`` says what the model does after taking them in:
    ``feed`` (nothing to answer), ``partial`` (answer an interim), ``finish`` (the segment
    ended: answer the final)."""

    start: int   # the segment's first sample
    offset: int  # where this piece begins, samples after ``start``
    audio: np.ndarray
    step: str

    @property
    def end(self) -> int:
        return self.start + self.offset + len(self.audio)


SegmenterOutput = Segment | Activity | Piece


class Segmenter(Protocol):
    def push(self, samples: np.ndarray) -> list[SegmenterOutput]: ...

    def flush(self) -> list[SegmenterOutput]: ...

    def finalize(self) -> list[SegmenterOutput]:
        """Close what is open now (a client's ``finalize``); later pushes go on the same
        timeline."""
        ...


SegmenterFactory = Callable[[StartRequest, Config], list[Segmenter]]


class SampleBuffer:
    """Appends chunks and hands out contiguous runs without re-copying on every append."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self.size = 0

    def append(self, samples: np.ndarray) -> None:
        if len(samples):
            self._parts.append(samples)
            self.size += len(samples)

    def take(self, n: int) -> np.ndarray:
        """Remove and return the first ``n`` samples (``n <= size``) as one float32 array."""
        joined = self._joined()
        head, rest = joined[:n], joined[n:]
        self._parts = [rest] if len(rest) else []
        self.size = len(rest)
        return np.ascontiguousarray(head, dtype=np.float32)

    def _joined(self) -> np.ndarray:
        if len(self._parts) != 1:
            self._parts = [np.concatenate(self._parts) if self._parts
                           else np.zeros(0, np.float32)]
        return self._parts[0]


class FixedSegmenter:
    """Fixed-length chunks for ``/api/v1/simple``; the last one may be shorter."""

    def __init__(self, chunk_samples: int) -> None:
        if chunk_samples < 1:
            raise ValueError("chunk_samples must be positive")
        self.chunk = chunk_samples
        self._buf = SampleBuffer()
        self._next_start = 0

    def push(self, samples: np.ndarray) -> list[SegmenterOutput]:
        self._buf.append(samples)
        out: list[SegmenterOutput] = []
        while self._buf.size >= self.chunk:
            out.append(self._emit(self.chunk))
        return out

    def flush(self) -> list[SegmenterOutput]:
        return [self._emit(self._buf.size)] if self._buf.size else []

    def finalize(self) -> list[SegmenterOutput]:
        """The partial chunk now; the next chunk starts where it ended."""
        return self.flush()

    def _emit(self, n: int) -> Segment:
        seg = Segment(self._next_start, self._buf.take(n))
        self._next_start += n
        return seg
