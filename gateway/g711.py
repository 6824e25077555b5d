"""G.711 expansion: 8-bit mu-law and A-law code words -> 16-bit linear samples.

Telephony sources (SIP trunks, media-stream webhooks) send G.711 at 8 kHz. Each code word is a
sign bit, a 3-bit segment (exponent) and a 4-bit step within the segment; the segments double in
width, which is what makes the code logarithmic. With only 256 code words, decoding is one table
lookup per sample: the tables are built once here from that bit layout.

mu-law: the code word is sent inverted; sign bit 1 means negative; a segment's values are offset
by a bias of 132 so every segment starts at a power of two. Range +-32124.
A-law: the even bits are sent inverted (XOR 0x55); sign bit 1 means positive; segment 0 is linear
with the same step as segment 1. Range +-32256.
Both return the middle of each code word's interval, so quantization error is at most half a step.
"""

from __future__ import annotations

import numpy as np

MULAW_BIAS = 0x84  # 132


def _mulaw_table() -> np.ndarray:
    code = np.arange(256, dtype=np.int32) ^ 0xFF          # undo the inversion on the line
    segment = (code >> 4) & 0x07
    step = code & 0x0F
    magnitude = (((step << 3) + MULAW_BIAS) << segment) - MULAW_BIAS
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    code = np.arange(256, dtype=np.int32) ^ 0x55          # undo the even-bit inversion
    segment = (code >> 4) & 0x07
    step = code & 0x0F
    linear = (step << 4) + 8                               # segment 0: steps of 16, mid-point
    shifted = ((step << 4) + 0x108) << np.maximum(segment - 1, 0)  # segments 1..7
    magnitude = np.where(segment == 0, linear, shifted)
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


MULAW_TO_LINEAR: np.ndarray = _mulaw_table()
"""256 int16 values: ``MULAW_TO_LINEAR[code]`` is the 16-bit linear sample of a mu-law byte."""
ALAW_TO_LINEAR: np.ndarray = _alaw_table()
"""256 int16 values: ``ALAW_TO_LINEAR[code]`` is the 16-bit linear sample of an A-law byte."""
MULAW_TO_LINEAR.flags.writeable = False
ALAW_TO_LINEAR.flags.writeable = False

TABLES: dict[str, np.ndarray] = {"mulaw": MULAW_TO_LINEAR, "alaw": ALAW_TO_LINEAR}


def float_table(encoding: str) -> np.ndarray:
    """The table for ``encoding`` as float32 scaled like 16-bit PCM (value / 32768)."""
    return (TABLES[encoding].astype(np.float32) / np.float32(32768.0)).astype(np.float32)
