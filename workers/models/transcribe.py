"""``transcribe``: speech to text with pocketsphinx, per stream.

Output per segment: ``text``; on a final segment (and on each ``/simple`` chunk) also ``words``, a
list of ``{"word", "start_time", "end_time", "confidence"}`` with times in seconds on the stream's
audio timeline. Interim segments give the text so far.

It is a streaming model: on ``/api/v1/segmented`` the gateway feeds each speech segment to the
stream's recogniser while it is spoken (``feed``), an interim is the decoder's current hypothesis
(``partial``) and the final closes the utterance (``finish``). ``infer`` decodes whole segments
(``/api/v1/simple``); it too continues an utterance it has open when a call only extends it.

The recognition itself lives in :mod:`streamer.workers.models.speech`; this module binds it to the
worker's model interface and validates the options.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.config import setting
from streamer.errors import ConfigError
from streamer.workers.models.base import SegmentInfo, register
from streamer.workers.models.recognizing import SpeechModel
from streamer.workers.models.speech import (
    DecoderPool,
    StreamingRecognizer,
    Transcript,
    to_s16,
)


def _readable_file(name: str, path: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"model.{name}: no such file {path!r}")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"model.{name}: cannot read {path!r}")


def _check_grammar(path: str) -> None:
    from pocketsphinx import Jsgf, set_loglevel
    set_loglevel("FATAL")
    try:
        Jsgf(path)
    except (ValueError, RuntimeError):
        raise ConfigError(f"model.grammar: {path!r} is not a valid JSGF grammar "
                          "(it must start with '#JSGF V1.0;' and a 'grammar NAME;' line and "
                          "define a public rule)") from None


def _check_keywords(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        phrases = [line.strip() for line in f if line.strip()]
    if not phrases:
        raise ConfigError(f"model.keywords: {path!r} holds no key phrase (one per line, "
                          "optionally followed by a threshold like /1e-20/)")


@register("transcribe")
class TranscribeModel(SpeechModel[StreamingRecognizer]):

    @dataclass(frozen=True, slots=True)
    class Params:
        language_model: str = setting("", doc="n-gram language model file (ARPA or binary); "
                                      "empty: the bundled US English model")
        dictionary: str = setting("", doc="pronunciation dictionary; empty: the bundled "
                                  "CMU dictionary")
        acoustic_model: str = setting("", doc="acoustic model directory; empty: the bundled "
                                      "US English model")
        grammar: str = setting("", doc="JSGF grammar file: recognise only the sentences it "
                               "allows (instead of the language model)")
        keywords: str = setting("", doc="key phrase list, one per line with an optional "
                                "/threshold/: spot those phrases only (instead of the language "
                                "model)")
        decoders: int = setting(2, 1, 64, "decoders built per worker; more utterances open at "
                                "once than this are decoded by turns, replaying audio")
        rescore: bool = setting(False, doc="with a language model, rescore each utterance when "
                                "it ends (pocketsphinx's "
                                "fwdflat and bestpath passes): slightly different words, but "
                                "the final then costs about half the utterance's decoding "
                                "again instead of one piece")

        def __post_init__(self) -> None:
            # Checked when the gateway validates its config, before any worker starts.
            chosen = [name for name in ("language_model", "grammar", "keywords")
                      if getattr(self, name)]
            if len(chosen) > 1:
                raise ConfigError(f"model.{chosen[0]} and model.{chosen[1]} exclude each "
                                  "other: set one of language_model, grammar, keywords")
            for name in ("language_model", "dictionary", "grammar", "keywords"):
                if getattr(self, name):
                    _readable_file(name, getattr(self, name))
            if self.acoustic_model and not os.path.isdir(self.acoustic_model):
                raise ConfigError(f"model.acoustic_model: no such directory "
                                  f"{self.acoustic_model!r}")
            if self.grammar:
                _check_grammar(self.grammar)
            if self.keywords:
                _check_keywords(self.keywords)

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        self._pool: DecoderPool | None = None

    def decoder_options(self) -> dict[str, Any]:
        p = self.params
        options: dict[str, Any] = {"samprate": 16000, "loglevel": "FATAL"}
        if not p.rescore and not p.grammar and not p.keywords:  # n-gram search only
            options.update(fwdflat=False, bestpath=False)
        for key, value in (("hmm", p.acoustic_model), ("dict", p.dictionary),
                           ("lm", p.language_model), ("jsgf", p.grammar), ("kws", p.keywords)):
            if value:
                options[key] = value
        return options

    def make_decoder(self) -> Any:
        from pocketsphinx import Decoder
        try:
            return Decoder(**self.decoder_options())
        except RuntimeError:
            pass
        missing = self.words_not_in_dictionary()
        if missing:
            raise ConfigError(f"model.{'grammar' if self.params.grammar else 'keywords'}: "
                              f"not in the dictionary: {', '.join(missing[:20])}")
        raise ConfigError(f"pocketsphinx could not build a decoder from "
                          f"{self.decoder_options()} (a file in the wrong format?)")

    def words_not_in_dictionary(self) -> list[str]:
        """Words of the grammar or key phrases the dictionary lacks (why a build fails)."""
        source = self.params.grammar or self.params.keywords
        if not source:
            return []
        from pocketsphinx import get_model_path
        dictionary = self.params.dictionary or get_model_path("en-us/cmudict-en-us.dict")
        with open(dictionary, encoding="utf-8", errors="replace") as f:
            known = {line.split(maxsplit=1)[0].split("(")[0] for line in f if line.strip()}
        with open(source, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if self.params.grammar:  # drop comments, the header, rule names, tags and weights
            text = re.sub(r"//[^\n]*|/\*[\s\S]*?\*/|#JSGF[^;]*;|grammar [^;]*;|import [^;]*;"
                          r"|<[^>]*>|\{[^}]*\}|/[^/\n]*/|\bpublic\b", " ", text)
        else:
            text = re.sub(r"/[^/]*/", " ", text)
        words = re.findall(r"[^\s()\[\]|*+;=]+", text)
        return sorted({w for w in words if w not in known and w.lower() not in known})

    @property
    def pool(self) -> DecoderPool:
        if self._pool is None:
            self._pool = DecoderPool(self.make_decoder, self.params.decoders)
        return self._pool

    def new_recognizer(self) -> StreamingRecognizer:
        return StreamingRecognizer(self.pool)

    def retire(self, rec: StreamingRecognizer) -> None:
        rec.reset()  # gives its decoder back

    def decode(self, rec: StreamingRecognizer, audio: np.ndarray,
               info: SegmentInfo) -> dict[str, Any]:
        fed = rec.samples
        if (rec.start_time == info.start_time and 0 < fed <= len(audio)
                and to_s16(audio[:fed]) == rec.fed_pcm()):
            rec.feed(audio[fed:])  # the same utterance, grown: decode the new part only
            return self.answer(rec, info)
        return super().decode(rec, audio, info)

    def words(self, result: Transcript) -> list[dict[str, Any]]:
        """Word dicts; without the rescoring pass an n-gram search has no posteriors (every
        word would say 1.0), so its words carry no confidence."""
        words = super().words(result)
        if not self.params.rescore and not self.params.grammar and not self.params.keywords:
            for w in words:
                w["confidence"] = None
        return words
