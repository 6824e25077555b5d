"""A reference G.711 encoder for tests, written from the standard's segment layout (the gateway
only decodes; telephony clients encode)."""

from __future__ import annotations

import numpy as np

MULAW_CLIP = 32635  # largest magnitude whose biased value still fits segment 7


def mulaw_encode(pcm: np.ndarray) -> np.ndarray:
    """int16 samples -> mu-law code words (uint8)."""
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    biased = np.minimum(np.abs(x), MULAW_CLIP) + 0x84
    segment = np.clip(np.floor(np.log2(biased)).astype(np.int32) - 7, 0, 7)
    step = (biased >> (segment + 3)) & 0x0F
    return (~(sign | (segment << 4) | step) & 0xFF).astype(np.uint8)


def alaw_encode(pcm: np.ndarray) -> np.ndarray:
    """int16 samples -> A-law code words (uint8)."""
    x = pcm.astype(np.int32)
    sign = np.where(x >= 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32767)
    segment = np.where(magnitude < 256, 0,
                       np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 7)
    step = np.where(segment == 0, magnitude >> 4, magnitude >> (segment + 3)) & 0x0F
    return ((sign | (segment << 4) | step) ^ 0x55).astype(np.uint8)


ENCODERS = {"mulaw": mulaw_encode, "alaw": alaw_encode}


def quantization_bound(pcm: np.ndarray) -> np.ndarray:
    """Largest error G.711 may make on each int16 sample: half the step of its segment."""
    return np.maximum(8.0, (np.abs(pcm.astype(np.float64)) + 0x84) / 32.0)
