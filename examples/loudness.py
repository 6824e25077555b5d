"""A model brought by import path: ``streamer-gateway --model examples.loudness:Loudness``.

Nothing is registered and nothing in the package is edited: the gateway imports this class, and
every worker (embedded, or on NATS with ``streamer-worker``) imports it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.config import setting
from streamer.workers.models import Model, SegmentInfo


class Loudness(Model):
    """Each segment's RMS level and peak in dBFS, and whether it is louder than a threshold.
    Returns numpy values on purpose: the worker converts them to plain JSON numbers."""

    @dataclass(frozen=True, slots=True)
    class Params:
        threshold_db: float = setting(-30.0, -120.0, 0.0, "level above which a segment is loud")

    def infer(self, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        x = np.asarray(audio, dtype=np.float64)
        rms = np.sqrt(np.mean(x * x)) if len(x) else 0.0
        peak = np.max(np.abs(x)) if len(x) else 0.0
        rms_db = 20 * np.log10(max(rms, 1e-6))
        peak_db = 20 * np.log10(max(peak, 1e-6))
        return {"rms_dbfs": np.round(rms_db, 2), "peak_dbfs": np.round(peak_db, 2),
                "loud": bool(rms_db > self.params.threshold_db)}
