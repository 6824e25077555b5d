"""Acoustic features of a segment, in numpy: a real (if small) model that needs no weights.

``features`` (stateless) returns, per segment, flat JSON-safe numbers:

- ``rms_dbfs``, ``peak_dbfs``: loudness, dB re full scale (1.0); a sine of amplitude 1 has an RMS
  of -3.01 dBFS. Digital silence gives the floor, -120.
- ``voiced_ratio``: share of 20 ms analysis frames with a clear pitch (YIN), 0 to 1.
- ``median_pitch_hz``: median pitch of the voiced frames, ``None`` (JSON null) if none is voiced.
- ``spectral_centroid_hz``: the "centre of mass" of the magnitude spectrum, a brightness measure;
  ``None`` for digital silence.
- ``zero_crossing_rate``: sign changes per sample, 0 to 1 (a 220 Hz sine gives 440 / 16000).

``smoothed_features`` (stateful) adds an exponential moving average of those values over the
final segments of one stream (``smoothed_<name>``) and ``segments_seen``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.config import setting
from streamer.errors import ConfigError, ModelError
from streamer.workers.models.base import Model, SegmentInfo, register

RATE = 16_000
FLOOR_DB = -120.0
HOP = 320            # 20 ms between pitch frames
WINDOW = 480         # 30 ms YIN integration window
SPECTRUM_FRAME = 512  # 32 ms frames for the spectral centroid
FEATURES = ("rms_dbfs", "peak_dbfs", "voiced_ratio", "median_pitch_hz", "spectral_centroid_hz",
            "zero_crossing_rate")


def db(value: float) -> float:
    """20 log10 of an amplitude, never below the floor (so never -inf)."""
    return round(max(FLOOR_DB, 20.0 * math.log10(value)) if value > 0 else FLOOR_DB, 2)


def yin_pitch(x: np.ndarray, fmin: float, fmax: float, threshold: float,
              min_level_db: float) -> np.ndarray:
    """Pitch in Hz of each 20 ms frame of ``x`` (YIN, de Cheveigné & Kawahara 2002), 0 where the
    frame is unvoiced. Vectorised over frames: one FFT cross-correlation per frame."""
    tau_min = max(2, int(RATE / fmax))
    tau_max = int(math.ceil(RATE / fmin))
    length = WINDOW + tau_max + 1
    if len(x) < length:
        x = np.pad(x, (0, length - len(x)))
    x = x.astype(np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(x, length)[::HOP]
    nfft = 1 << (length + WINDOW - 1).bit_length()
    spec = np.fft.rfft(frames, nfft) * np.conj(np.fft.rfft(frames[:, :WINDOW], nfft))
    r = np.fft.irfft(spec, nfft)[:, :tau_max + 2]  # r[t, tau] = sum_j x[j] x[j + tau], j < W
    c = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames**2, axis=1)], axis=1)
    taus = np.arange(tau_max + 2)
    energy = c[:, taus + WINDOW] - c[:, taus]  # sum of x^2 over [tau, tau + W)
    d = np.maximum(energy[:, :1] + energy - 2.0 * r, 0.0)
    d[:, 0] = 0.0
    running = np.cumsum(d[:, 1:], axis=1)
    cmnd = np.ones_like(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        cmnd[:, 1:] = np.where(running > 0, d[:, 1:] * taus[1:] / running, 1.0)
    search = cmnd[:, tau_min:tau_max + 1]
    below = search < threshold
    voiced = below.any(axis=1)
    first = below.argmax(axis=1)
    # From the first dip under the threshold, walk down to its local minimum.
    lags = np.arange(search.shape[1])
    rising = np.diff(search, axis=1, append=np.inf) >= 0
    best = np.argmax(rising & (lags >= first[:, None]), axis=1) + tau_min
    # Parabolic interpolation around the minimum for a sub-sample period.
    rows = np.arange(len(frames))
    a, b, c2 = cmnd[rows, best - 1], cmnd[rows, best], cmnd[rows, best + 1]
    denom = a - 2.0 * b + c2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c2) / denom, 0.0)
    period = best + np.clip(shift, -1.0, 1.0)
    level = energy[:, 0] / WINDOW
    loud = level > 10.0 ** (min_level_db / 10.0)
    return np.where(voiced & loud, RATE / period, 0.0)


def spectral_centroid(x: np.ndarray) -> float | None:
    if len(x) < SPECTRUM_FRAME:
        x = np.pad(x, (0, SPECTRUM_FRAME - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64),
                                                      SPECTRUM_FRAME)[::SPECTRUM_FRAME // 2]
    power = (np.abs(np.fft.rfft(frames * np.hanning(SPECTRUM_FRAME), axis=1)) ** 2).mean(axis=0)
    magnitude = np.sqrt(power)
    total = float(magnitude.sum())
    if total <= 1e-9:
        return None
    freqs = np.fft.rfftfreq(SPECTRUM_FRAME, 1.0 / RATE)
    return round(float((freqs * magnitude).sum() / total), 1)


@register("features")
class FeaturesModel(Model):
    @dataclass(frozen=True, slots=True)
    class Params:
        pitch_min_hz: float = setting(60.0, 30.0, 1000.0, "lowest pitch searched, Hz")
        pitch_max_hz: float = setting(500.0, 60.0, 4000.0, "highest pitch searched, Hz")
        voicing_threshold: float = setting(0.2, 0.01, 1.0, "YIN dip a frame needs to be voiced "
                                           "(lower: stricter)")
        min_level_db: float = setting(-60.0, -120.0, 0.0,
                                      "frames quieter than this (dBFS RMS) are unvoiced")

        def __post_init__(self) -> None:
            # Here rather than in the model's __init__: the gateway builds Params to check the
            # config before it starts any worker, so this fails at start-up, not at each boot.
            if self.pitch_min_hz >= self.pitch_max_hz:
                raise ConfigError(f"model.pitch_min_hz ({self.pitch_min_hz}) must be below "
                                  f"model.pitch_max_hz ({self.pitch_max_hz})")

    def warmup(self) -> None:
        t = np.arange(RATE) / RATE
        self.measure(np.sin(2 * np.pi * 220 * t).astype(np.float32))

    def infer(self, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        return self.measure(audio)

    def measure(self, audio: np.ndarray) -> dict[str, Any]:
        p = self.params
        x = np.asarray(audio, dtype=np.float32)
        if len(x) == 0:
            return {"rms_dbfs": FLOOR_DB, "peak_dbfs": FLOOR_DB, "voiced_ratio": 0.0,
                    "median_pitch_hz": None, "spectral_centroid_hz": None,
                    "zero_crossing_rate": 0.0}
        x64 = x.astype(np.float64)
        pitch = yin_pitch(x, p.pitch_min_hz, p.pitch_max_hz, p.voicing_threshold,
                          p.min_level_db)
        voiced = pitch[pitch > 0]
        signs = np.signbit(x)
        crossings = int(np.count_nonzero(signs[1:] != signs[:-1]))
        return {
            "rms_dbfs": db(math.sqrt(float(np.mean(x64 * x64)))),
            "peak_dbfs": db(float(np.max(np.abs(x64)))),
            "voiced_ratio": round(len(voiced) / len(pitch), 3),
            "median_pitch_hz": round(float(np.median(voiced)), 1) if len(voiced) else None,
            "spectral_centroid_hz": spectral_centroid(x),
            "zero_crossing_rate": round(crossings / (len(x) - 1), 5) if len(x) > 1 else 0.0,
        }


@dataclass(slots=True)
class _Smoothed:
    values: dict[str, float | None] = field(default_factory=dict)
    segments: int = 0


@register("smoothed_features")
class SmoothedFeaturesModel(FeaturesModel):
    """``features`` plus their exponential moving average over one stream's final segments.

    Stateful: all segments of a (session, stream, channel) reach the same worker in order, keyed by
    ``info.stateful_key``. Only final segments (and ``/simple`` chunks, which have no ``is_final``)
    move the average; an interim result shows what the average would be with it, without keeping
    it, so the growing versions of one segment are not counted several times. A value that is
    ``None`` for a segment (no pitch) leaves its average where it was.
    """

    stateful = True

    @dataclass(frozen=True, slots=True)
    class Params(FeaturesModel.Params):
        alpha: float = setting(0.3, 0.01, 1.0, "weight of the newest segment in the average "
                               "(1: no smoothing)")

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self._streams: dict[str, _Smoothed] = {}

    def infer(self, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        if info.stateful_key is None:
            raise ModelError("smoothed_features needs a stateful_key (a stateful pool)")
        raw = self.measure(audio)
        state = self._streams.get(info.stateful_key) or _Smoothed()
        alpha = self.params.alpha
        smoothed: dict[str, float | None] = {}
        for name in FEATURES:
            new, old = raw[name], state.values.get(name)
            if new is None or old is None:
                smoothed[name] = old if new is None else new
            else:
                smoothed[name] = alpha * new + (1.0 - alpha) * old
        seen = state.segments + 1
        if info.is_final is not False:
            self._streams[info.stateful_key] = _Smoothed(smoothed, seen)
        out = dict(raw)
        out.update({f"smoothed_{name}": None if value is None else round(value, 5)
                    for name, value in smoothed.items()})
        out["segments_seen"] = seen
        out["streams_held"] = len(self._streams)  # shows that ended streams' state is released
        return out

    def end_stream(self, stateful_key: str) -> None:
        self._streams.pop(stateful_key, None)

    @property
    def streams(self) -> int:
        """Streams whose state is held (for tests and stats)."""
        return len(self._streams)
