"""Test audio in any wire format."""

from __future__ import annotations

import dataclasses
import wave
from pathlib import Path

import numpy as np

from streamer.client import pcm_bytes
from streamer.protocol import AudioFormat
from tests.g711_ref import ENCODERS


def make_pcm(fmt: AudioFormat, seconds: float, seed: int = 0) -> bytes:
    """Interleaved little-endian PCM: a different tone per channel plus a little noise (for a
    mu-law or A-law format: the same tones as 16-bit PCM, encoded)."""
    if fmt.encoding in ENCODERS:
        linear = make_pcm(dataclasses.replace(fmt, encoding="pcm", bit_depth=16), seconds, seed)
        return ENCODERS[fmt.encoding](np.frombuffer(linear, dtype="<i2")).tobytes()
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fmt.sample_rate))
    t = np.arange(n) / fmt.sample_rate
    chans = [0.4 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.05 * rng.standard_normal(n)
             for c in range(fmt.channels)]
    return pcm_bytes(np.stack(chans, axis=1), fmt)


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def write_pcm_wav(path: Path, channels: int, width: int, rate: int, frames: bytes) -> Path:
    """Interleaved integer PCM bytes as a WAV file (``width`` bytes per sample)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return path


def write_wav(path: Path, fmt: AudioFormat, seconds: float) -> Path:
    """``make_pcm`` audio of ``seconds`` as an integer PCM WAV file."""
    return write_pcm_wav(path, fmt.channels, fmt.bit_depth // 8, fmt.sample_rate,
                         make_pcm(fmt, seconds))
