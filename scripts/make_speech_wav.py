#!/usr/bin/env python
"""How the speech fixtures in tests/data were made (needs espeak-ng: apt-get install espeak-ng).

Two files, speech_3_sentences.wav and speech_3_more_sentences.wav, each of three sentences
synthesised separately (espeak-ng 1.51, voice en-us, 175 words per minute),
resampled from 22.05 kHz to 16 kHz with soxr, trimmed of their own leading and trailing silence,
joined with 0.7 s pauses and 0.3 s of silence at both ends, a white-noise background at -60 dBFS
(seed 7) added, scaled to a -3 dBFS peak (the speech is then about -21 dBFS RMS) and written as
16 kHz mono s16. It prints where each sentence lies; the tests hold those spans. It also writes
sentences.gram, a JSGF grammar that allows all six sentences among many others (each slot has
alternatives), with which pocketsphinx recognises them word for word. Another espeak-ng version may
give slightly different audio, so the committed files are the fixtures.

Usage: .venv/bin/python scripts/make_speech_wav.py [OUT_DIR]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import soxr

RATE = 16_000
FIXTURES = {
    "speech_3_sentences.wav": ["The brown fox jumps over the dog.",
                               "Please call me back tomorrow.", "Have a nice day."],
    "speech_3_more_sentences.wav": ["The red cat runs over the fence.",
                                    "Please text me later tonight.", "Have a great day."],
}
GRAMMAR = """#JSGF V1.0;
grammar sentences;
public <sentence> = <statement> | <request> | <wish>;
<statement> = the (brown | red | quick) (fox | cat | dog) (jumps | runs | walks)
              over the (dog | fox | fence);
<request> = please (call | text | email) me (back | later) (today | tomorrow | tonight);
<wish> = have a (nice | good | great) day;
"""
PAUSE, EDGE = 0.7, 0.3


def synthesise(text: str, tmp: Path, voice: str = "en-us", speed: int = 175) -> np.ndarray:
    out = tmp / "s.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out), text],
                   check=True)
    with wave.open(str(out), "rb") as w:
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32768.0
        rate = w.getframerate()
    x = soxr.resample(x, rate, RATE)
    loud = np.flatnonzero(np.abs(x) > 1e-3)
    return x[loud[0]:loud[-1] + 1]


def write(target: Path, sentences: list[str], voice: str = "en-us", speed: int = 175) -> None:
    parts, spans, pos = [], [], round(EDGE * RATE)
    with tempfile.TemporaryDirectory() as tmp:
        for text in sentences:
            x = synthesise(text, Path(tmp), voice, speed)
            spans.append((pos / RATE, (pos + len(x)) / RATE))
            parts += [np.zeros(round(PAUSE * RATE)), x]
            pos += len(x) + round(PAUSE * RATE)
    parts[0] = np.zeros(round(EDGE * RATE))
    y = np.concatenate([*parts, np.zeros(round(EDGE * RATE))])
    y += 10 ** (-60 / 20) * np.random.default_rng(7).standard_normal(len(y))
    y *= 10 ** (-3 / 20) / np.abs(y).max()
    s16 = np.clip(np.round(y * 32768), -32768, 32767).astype("<i2")
    with wave.open(str(target), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(s16.tobytes())
    print(f"{target}: {len(y) / RATE:.2f} s; sentences at",
          ", ".join(f"{a:.3f}-{b:.3f} s" for a, b in spans))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else
               Path(__file__).resolve().parent.parent / "tests/data")
    for name, sentences in FIXTURES.items():
        write(out / name, sentences)
    (out / "sentences.gram").write_text(GRAMMAR, encoding="utf-8")
    print(f"{out / 'sentences.gram'}: a grammar for all of them")


if __name__ == "__main__":
    main()
