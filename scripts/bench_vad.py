#!/usr/bin/env python
"""What voice-activity detection costs: CPU time per second of 16 kHz audio, one channel.

Runs the detector alone and the whole VadSegmenter (with interim segments) over a few signals fed
in chunks of several sizes, and prints a table; then the two detectors side by side (energy
against silero, same signals, same run): CPU per second of audio, the share of a core one channel
takes, and the ratio. Usage: .venv/bin/python scripts/bench_vad.py [--quick]
"""

from __future__ import annotations

import sys
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.gateway.vad import (  # noqa: E402
    FRAME_SAMPLES,
    EnergyVad,
    SileroVad,
    VadSegmenter,
    VadSettings,
)

RATE = 16_000
SECONDS = 60.0
DETECTOR_SECONDS = 20.0  # per signal in the side-by-side table (silero is slow)


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


def cpu_best_of(runs: int, fn) -> float:  # type: ignore[no-untyped-def]
    """Least CPU time of ``runs`` calls: other processes on the machine do not count."""
    times = []
    for _ in range(runs):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return min(times)


def detector_cost(make, x: np.ndarray, chunk: int = 1600) -> float:  # type: ignore[no-untyped-def]
    """CPU seconds per second of audio of a detector fed 100 ms chunks, through the segmenter's
    framing (whole frames only, the rest carried over)."""
    def go() -> None:
        det = make()
        frame = det.frame_samples
        usable = len(x) // frame * frame
        frames = x[:usable].reshape(-1, frame)
        per_chunk = max(1, chunk // frame)
        for i in range(0, len(frames), per_chunk):
            det.speech_frames(frames[i:i + per_chunk])
    return cpu_best_of(3, go) / (len(x) / RATE)


def compare_detectors(seconds: float) -> None:
    print(f"\nEnergy vs silero detector, one channel, 100 ms chunks ({seconds:.0f} s per signal, "
          f"CPU time, best of 3)")
    print(f"{'signal':<22}{'energy us/s':>13}{'silero us/s':>13}{'silero/energy':>15}"
          f"{'silero % core':>15}{'channels/core':>15}")
    for name, x in signals().items():
        x = x[:int(seconds * RATE)]
        energy = detector_cost(EnergyVad, x)
        silero = detector_cost(SileroVad, x)
        print(f"{name:<22}{energy * 1e6:>13.0f}{silero * 1e6:>13.0f}{silero / energy:>15.0f}"
              f"{silero * 100:>15.1f}{1 / silero:>15.0f}")


def main() -> None:
    if "--quick" in sys.argv:
        compare_detectors(5.0)
        return
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
    compare_detectors(DETECTOR_SECONDS)


if __name__ == "__main__":
    main()
