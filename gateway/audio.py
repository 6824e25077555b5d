"""Streaming audio decoding: bytes in any supported format -> float32 per channel at 16 kHz.

Linear PCM is scaled to [-1, 1]; mu-law and A-law bytes are expanded through a 256-entry table
(:mod:`streamer.gateway.g711`) to the same scale as 16-bit PCM, then resampled like PCM.

Stateful across frames: a frame may end mid-sample or mid-frame of channels and the remainder is
carried over; the resampler keeps its filter state between frames, and ``flush`` releases its tail,
so a stream decodes to the same samples however the client split it.
"""

from __future__ import annotations

import numpy as np
import soxr

from streamer.gateway.g711 import float_table
from streamer.protocol import G711_ENCODINGS, AudioFormat

MODEL_RATE = 16_000
_SCALE = {"<i2": 1.0 / 32768.0, "<i4": 1.0 / 2147483648.0}


class Decoder:
    def __init__(self, fmt: AudioFormat, target_rate: int = MODEL_RATE,
                 quality: str = "HQ") -> None:
        fmt.validate()
        self.fmt = fmt
        self.target_rate = target_rate
        self._dtype = np.dtype(fmt.dtype)
        self._scale = _SCALE.get(fmt.dtype)
        self._table = float_table(fmt.encoding) if fmt.encoding in G711_ENCODINGS else None
        self._frame_bytes = fmt.frame_bytes
        self._remainder = b""
        self._resampler = (soxr.ResampleStream(fmt.sample_rate, target_rate, fmt.channels,
                                               dtype="float32", quality=quality)
                           if fmt.sample_rate != target_rate else None)
        self.frames_in = 0      # input frames decoded (per channel)
        self.samples_out = 0    # output samples produced (per channel)
        self.flushed = False

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame waiting for the next chunk."""
        return len(self._remainder)

    def feed(self, data: bytes) -> np.ndarray:
        """Decode one chunk; returns shape (channels, n) float32 at the target rate."""
        if self.flushed:
            raise RuntimeError("decoder already flushed")
        if self._remainder:
            data = self._remainder + data
        usable = len(data) - len(data) % self._frame_bytes
        self._remainder = bytes(data[usable:]) if usable < len(data) else b""
        if usable == 0:
            return np.zeros((self.fmt.channels, 0), dtype=np.float32)
        raw = np.frombuffer(data, dtype=self._dtype, count=usable // self._dtype.itemsize)
        frames = raw.reshape(-1, self.fmt.channels)
        self.frames_in += frames.shape[0]
        if self._table is not None:
            x = self._table[frames]
        elif self._scale is not None:
            x = frames.astype(np.float32)
            x *= np.float32(self._scale)
        else:
            # float input may hold NaN or infinities, which would poison the resampler's state
            # and every model after it: silence and full scale instead
            x = np.nan_to_num(frames.astype(np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        self.samples_out += x.shape[0]
        return x.T

    def flush(self) -> np.ndarray:
        """Release the resampler's tail at the end of a stream (an incomplete last frame, which
        cannot be decoded, is reported by :attr:`pending_bytes` and dropped)."""
        if self.flushed:
            return np.zeros((self.fmt.channels, 0), dtype=np.float32)
        self.flushed = True
        if self._resampler is None:
            return np.zeros((self.fmt.channels, 0), dtype=np.float32)
        tail = self._resampler.resample_chunk(
            np.zeros((0, self.fmt.channels), dtype=np.float32), last=True)
        self.samples_out += tail.shape[0]
        return tail.T
