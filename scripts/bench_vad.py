#!/usr/bin/env python
"""What voice-activity detection costs: CPU time per second of 16 kHz audio, one channel.

Runs the detector alone and the whole VadSegmenter (with interim segments) over a few signals fed
in chunks of several sizes, and prints a table. Usage: .venv/bin/python scripts/bench_vad.py
"""

from __future__ import annotations

import sys
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.gateway.vad import FRAME_SAMPLES, EnergyVad, VadSegmenter, VadSettings  # noqa: E402

RATE = 16_000
SECONDS = 60.0


def signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = int(SECONDS * RATE)
    t = np.arange(n) / RATE
    bursts = np.where((t % 3.0) < 1.5, 0.1 * np.sin(2 * np.pi * 220 * t), 0.0)
    out = {
        "digital silence": np.zeros(n),
        "steady noise": 0.01 * rng.standard_normal(n),
        "tone bursts": bursts + 0.001 * rng.standard_normal(n),
    }
    wav = ROOT / "tests" / "data" / "speech_3_sentences.wav"
    if wav.exists():
        with wave.open(str(wav), "rb") as w:
            speech = np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32768.0
        out["speech (tests/data)"] = np.resize(speech, n)
    return {k: v.astype(np.float32) for k, v in out.items()}


def best_of(runs: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_segmenter(x: np.ndarray, chunk: int) -> float:
    def go() -> None:
        seg = VadSegmenter(VadSettings(), interim=True)
        for i in range(0, len(x), chunk):
            seg.push(x[i:i + chunk])
        seg.flush()
    return best_of(3, go)


def bench_detector(x: np.ndarray, chunk: int) -> float:
    frames_per_chunk = max(1, chunk // FRAME_SAMPLES)
    frames = x[:len(x) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)

    def go() -> None:
        det = EnergyVad()
        for i in range(0, len(frames), frames_per_chunk):
            det.speech_frames(frames[i:i + frames_per_chunk])
    return best_of(3, go)


def main() -> None:
    chunks = {"20 ms": 320, "100 ms": 1600, "1 s": 16000}
    print(f"VAD cost per second of 16 kHz audio, one channel ({SECONDS:.0f} s per signal, "
          f"best of 3)")
    print(f"{'signal':<22}{'chunk':>8}{'detector us/s':>15}{'segmenter us/s':>16}"
          f"{'x real time':>13}")
    for name, x in signals().items():
        for label, chunk in chunks.items():
            det = bench_detector(x, chunk) / SECONDS * 1e6
            seg = bench_segmenter(x, chunk) / SECONDS * 1e6
            print(f"{name:<22}{label:>8}{det:>15.0f}{seg:>16.0f}{1e6 / seg:>13.0f}")


if __name__ == "__main__":
    main()
