#!/usr/bin/env python
"""Decode + resample throughput of the gateway's Decoder, in x real time on one core.

Feeds a stream in 20 ms websocket frames through ``gateway.audio.Decoder`` (PCM -> float32 per
channel, soxr HQ to 16 kHz) and compares it with its two pieces timed alone in the same run: the
sample conversion (numpy) and the streaming resampler (soxr) on the same frames. CPU time of
this process is the measure ("one core"); wall time is shown beside it.

Target (doc/07_performance.md): 48 kHz stereo s16 to 16 kHz over 1000x real time on one core.
The pieces measured alone allow about 1200x, so the decoder's own bookkeeping must stay small.

Usage: .venv/bin/python scripts/bench_decode.py [--seconds 60] [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import soxr
from bench_common import machine, markdown_table, table, write_json

from streamer.gateway.audio import MODEL_RATE, Decoder
from streamer.protocol import AudioFormat

TARGET_X = 1000.0  # the target: 48 kHz stereo s16 -> 16 kHz over 1000x real time
FORMATS = {
    "48 kHz stereo s16": AudioFormat(2, 48000, 16, False),
    "48 kHz stereo f32": AudioFormat(2, 48000, 32, True),
    "44.1 kHz mono s16": AudioFormat(1, 44100, 16, False),
    "16 kHz mono s16 (no resampling)": AudioFormat(1, 16000, 16, False),
}
FRAME_SECONDS = 0.02


def pcm(fmt: AudioFormat, seconds: float) -> bytes:
    rng = np.random.default_rng(1)
    n = int(seconds * fmt.sample_rate)
    t = np.arange(n) / fmt.sample_rate
    x = np.stack([0.3 * np.sin(2 * np.pi * (200 + 100 * c) * t) + 0.05 * rng.standard_normal(n)
                  for c in range(fmt.channels)], axis=1)
    return (x.astype("<f4") if fmt.is_float else (x * 32767).astype("<i2")).tobytes()


def frames(fmt: AudioFormat, data: bytes) -> list[bytes]:
    size = round(FRAME_SECONDS * fmt.sample_rate) * fmt.frame_bytes
    return [data[i:i + size] for i in range(0, len(data), size)]


def best_cpu(runs: int, fn: Callable[[], None]) -> tuple[float, float]:
    """Best of ``runs`` (CPU seconds, wall seconds)."""
    best = (float("inf"), float("inf"))
    for _ in range(runs):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        best = min(best, (time.process_time() - c0, time.perf_counter() - w0))
    return best


def bench_format(fmt: AudioFormat, seconds: float, runs: int) -> dict[str, Any]:
    chunks = frames(fmt, pcm(fmt, seconds))
    scale = np.float32(1.0 / 32768.0) if not fmt.is_float else None
    dtype = np.dtype(fmt.dtype)

    def decode() -> None:
        dec = Decoder(fmt)
        for c in chunks:
            dec.feed(c)
        dec.flush()

    def convert_one(c: bytes) -> np.ndarray:
        x = np.frombuffer(c, dtype=dtype).reshape(-1, fmt.channels)
        if scale is None:
            return x.astype(np.float32, copy=False)
        y = x.astype(np.float32)
        y *= scale
        return y

    def convert() -> None:
        for c in chunks:
            convert_one(c)

    converted = [convert_one(c) for c in chunks]

    def resample() -> None:
        if fmt.sample_rate == MODEL_RATE:
            return
        rs = soxr.ResampleStream(fmt.sample_rate, MODEL_RATE, fmt.channels, dtype="float32",
                                 quality="HQ")
        for x in converted:
            rs.resample_chunk(x)
        rs.resample_chunk(np.zeros((0, fmt.channels), np.float32), last=True)

    decode()  # warm up
    d_cpu, d_wall = best_cpu(runs, decode)
    c_cpu, _ = best_cpu(runs, convert)
    r_cpu, _ = best_cpu(runs, resample)
    return {"seconds": seconds, "frames": len(chunks), "decoder_cpu": d_cpu,
            "decoder_wall": d_wall, "convert_cpu": c_cpu, "resample_cpu": r_cpu,
            "x_realtime_cpu": seconds / d_cpu, "x_realtime_wall": seconds / d_wall,
            "pieces_x_realtime": seconds / max(c_cpu + r_cpu, 1e-12),
            "us_per_frame": d_cpu / len(chunks) * 1e6}


def rows(result: dict[str, Any]) -> list[list[object]]:
    out: list[list[object]] = []
    for name, r in result["formats"].items():
        target = f"> {TARGET_X:.0f}x: {'met' if r['x_realtime_cpu'] > TARGET_X else 'NOT met'}" \
            if name == "48 kHz stereo s16" else ""
        out.append([name, f"{r['x_realtime_cpu']:.0f}x", f"{r['x_realtime_wall']:.0f}x",
                    f"{r['us_per_frame']:.1f}", f"{r['convert_cpu'] / r['seconds'] * 1e6:.0f}",
                    f"{r['resample_cpu'] / r['seconds'] * 1e6:.0f}",
                    f"{r['pieces_x_realtime']:.0f}x",
                    f"{r['x_realtime_cpu'] / r['pieces_x_realtime']:.2f}", target])
    return out


HEADERS = ["format (20 ms frames)", "x real time (CPU)", "x real time (wall)", "us/frame",
           "convert us/s", "resample us/s", "pieces alone", "decoder/pieces", "target"]


def markdown(result: dict[str, Any]) -> str:
    return markdown_table(HEADERS, rows(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="audio per format")
    p.add_argument("--runs", type=int, default=5, help="best of this many")
    p.add_argument("--quick", action="store_true", help="a few seconds, for tests")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    seconds, runs = (3.0, 2) if args.quick else (args.seconds, args.runs)
    result = {"benchmark": "decode", "machine": machine(), "frame_seconds": FRAME_SECONDS,
              "formats": {name: bench_format(fmt, seconds, runs)
                          for name, fmt in FORMATS.items()}}
    print(f"Decode + resample to 16 kHz (soxr HQ), {seconds:.0f} s per format in "
          f"{FRAME_SECONDS * 1e3:.0f} ms frames, best of {runs}, one core")
    print(table(HEADERS, rows(result)))
    write_json(args.json, result)


if __name__ == "__main__":
    main()
