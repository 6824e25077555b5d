#!/usr/bin/env python
"""What the transcribe model costs in one worker: resident memory and CPU per second of audio.

Each configuration runs in a fresh process (so its memory is its own): it builds the model as a
worker does (warm-up included) and reports the process's RSS, then decodes the espeak-ng fixtures
(tests/data) sentence by sentence through ``Model.infer`` three ways:

- ``final only``: one call per sentence (what /segmented does without interim results);
- ``interims``: a call every 0.5 s of growth with the segment so far, then the final (what it does
  with interim results today); the model decodes only the new tail of each call;
- ``interims, re-decoded``: the same calls, each decoded from scratch (what a model without the
  streaming recogniser would pay).

Usage: .venv/bin/python scripts/bench_transcribe.py [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
RATE = 16_000
INTERIM = 0.5
SPANS = {"speech_3_sentences.wav": [(0.300, 2.245), (2.945, 4.415), (5.115, 5.948)],
         "speech_3_more_sentences.wav": [(0.300, 2.006), (2.706, 4.289), (4.989, 5.874)]}
CONFIGS = {
    "grammar, 1 decoder": {"grammar": str(DATA / "sentences.gram"), "decoders": 1},
    "grammar, 2 decoders": {"grammar": str(DATA / "sentences.gram"), "decoders": 2},
    "language model, 1 decoder": {"decoders": 1},
    "language model, 2 decoders": {"decoders": 2},
}


def child(params: dict[str, object], repeats: int) -> dict[str, float]:
    """Runs in its own process: build, measure RSS, decode, measure CPU."""
    import numpy as np
    import psutil

    from streamer.workers.models import make_model
    from streamer.workers.models.base import SegmentInfo

    proc = psutil.Process()
    base_rss = proc.memory_info().rss
    started = time.perf_counter()
    model = make_model("transcribe", params)
    model.warmup()
    boot = time.perf_counter() - started
    rss = proc.memory_info().rss
    sentences = []
    for name, spans in SPANS.items():
        with wave.open(str(DATA / name), "rb") as w:
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
        for a, b in spans:
            start = a - 0.2
            sentences.append((x[round(start * RATE):round((b + 0.1) * RATE)], start))
    seconds = repeats * sum(len(s) for s, _ in sentences) / RATE
    step = round(INTERIM * RATE)

    def calls(with_interims: bool, fresh: bool) -> float:
        cpu = time.process_time()
        for r in range(repeats):
            for i, (audio, start) in enumerate(sentences):
                key = f"s{r}-{i}"
                ends = list(range(step, len(audio), step)) if with_interims else []
                for end in [*ends, len(audio)]:
                    final = end == len(audio)
                    info = SegmentInfo("bench", 0, start, start + end / RATE, final,
                                       f"{key}-{end}" if fresh else key)
                    model.infer(audio[:end], info)
                    if fresh:
                        model.end_stream(info.stateful_key or "")
                model.end_stream(key)
        return (time.process_time() - cpu) / seconds

    return {"boot_s": boot, "rss_mb": rss / 1e6, "model_mb": (rss - base_rss) / 1e6,
            "final_only": calls(False, False), "interims": calls(True, False),
            "interims_redecoded": calls(True, True), "audio_s": seconds}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]), int(sys.argv[3]))))
        return
    repeats = 1 if "--quick" in sys.argv else 3
    print("transcribe (pocketsphinx) in one worker process: memory after warm-up, CPU seconds "
          f"per second of audio (espeak-ng sentences, interims every {INTERIM} s)")
    print(f"{'configuration':<28}{'boot s':>8}{'RSS MB':>8}{'model MB':>10}{'final only':>12}"
          f"{'interims':>10}{'re-decoded':>12}")
    for label, params in CONFIGS.items():
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(params),
                              str(repeats)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{label:<28}{r['boot_s']:>8.2f}{r['rss_mb']:>8.0f}{r['model_mb']:>10.0f}"
              f"{r['final_only']:>12.3f}{r['interims']:>10.3f}{r['interims_redecoded']:>12.3f}")


if __name__ == "__main__":
    main()
