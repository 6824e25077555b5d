"""Small test signals at 16 kHz (float32, mono): tones, noise, silence, and their concatenation.

Levels are given in dB re full scale of the signal's RMS (a sine of amplitude 1 is -3.01 dB).
Everything is deterministic: noise takes a seed.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np

RATE = 16_000
DATA = Path(__file__).parent / "data"


def n_samples(seconds: float) -> int:
    return round(seconds * RATE)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(n_samples(seconds), dtype=np.float32)


def tone(seconds: float, freq: float = 220.0, level_db: float = -20.0,
         phase: float = 0.0) -> np.ndarray:
    """A sine whose RMS is ``level_db`` dBFS."""
    amp = math.sqrt(2.0) * 10.0 ** (level_db / 20.0)
    t = np.arange(n_samples(seconds)) / RATE
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def sine(seconds: float, freq: float, amplitude: float) -> np.ndarray:
    """A sine of peak ``amplitude`` (RMS = amplitude / sqrt 2)."""
    t = np.arange(n_samples(seconds)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, level_db: float = -20.0, seed: int = 0) -> np.ndarray:
    """White Gaussian noise whose RMS is ``level_db`` dBFS."""
    rng = np.random.default_rng(seed)
    return (10.0 ** (level_db / 20.0) * rng.standard_normal(n_samples(seconds))).astype(np.float32)


def concat(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts).astype(np.float32, copy=False)


def with_background(x: np.ndarray, level_db: float = -60.0, seed: int = 1) -> np.ndarray:
    """``x`` plus a steady white-noise background, like a microphone in a quiet room."""
    rng = np.random.default_rng(seed)
    bg = 10.0 ** (level_db / 20.0) * rng.standard_normal(len(x))
    return (x + bg).astype(np.float32)


def bursts(spans: list[tuple[float, float]], total: float, kind: str = "tone",
           level_db: float = -20.0) -> np.ndarray:
    """Silence of ``total`` seconds with a tone (or noise) at each ``(start, end)`` second span."""
    out = silence(total)
    for i, (a, b) in enumerate(spans):
        part = (tone(b - a, 220.0 + 110 * i, level_db) if kind == "tone"
                else noise(b - a, level_db, seed=i))
        out[n_samples(a):n_samples(a) + len(part)] = part
    return out


def pcm16(*channels: np.ndarray) -> bytes:
    """Channels of float samples in [-1, 1] as interleaved little-endian s16 bytes."""
    x = np.stack(channels, axis=1)
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def read_wav(path: Path) -> np.ndarray:
    """A 16 kHz mono s16 WAV as float32 (s16 / 32768, like the gateway's decoder)."""
    with wave.open(str(path), "rb") as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, RATE):
            raise ValueError(f"{path}: expected 16 kHz mono s16")
        raw = w.readframes(w.getnframes())
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def click_train(seconds: float, period: float = 0.02, peak: float = 0.9,
                seed: int = 0) -> np.ndarray:
    """Loud clicks (5 ms decaying noise bursts) every ``period`` seconds: a rattle, a ratchet,
    a finger tapping the microphone. Every 20 ms frame holds one, so it is loud throughout."""
    rng = np.random.default_rng(seed)
    k = np.arange(80)
    click = (peak * np.exp(-k / 15.0) * rng.standard_normal(80) / 3.0).astype(np.float32)
    out = silence(seconds)
    for t in np.arange(0.0, seconds, period):
        i = n_samples(float(t))
        out[i:i + len(click)] += click[:len(out) - i]
    return np.clip(out, -1.0, 1.0)
