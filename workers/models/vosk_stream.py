"""One stream's speech recogniser on vosk (Kaldi), independent of the worker machinery.

A :class:`VoskStream` wraps one ``vosk.KaldiRecognizer`` with the same incremental API as
:class:`~streamer.workers.models.speech.StreamingRecognizer`: ``begin`` an utterance at a time on
the stream's timeline, ``feed`` 16 kHz float32 audio, ``partial`` text at any time, ``finish``
for the final :class:`~streamer.workers.models.speech.Transcript`, ``reset`` to drop the open
utterance.

Two things of vosk's shape it hides. Its word times run on the recogniser's own clock, the samples
it was given since it was made (across utterances and resets), so each utterance notes that clock
when it begins and maps times onto the stream's timeline. And vosk ends an utterance by itself
after half a second of trailing silence (``AcceptWaveform`` returns true; there is no switch for
it in vosk 0.3.45): the words of such a part are kept and the utterance goes on, so one segment
gives one result however many pauses it holds.

After a final result vosk starts the next utterance from a new feature pipeline (no speaker
adaptation is carried over), so a recogniser passes nothing of one stream's audio on to the next
stream that uses it, only the cache of decoding graph it built. vosk releases the GIL while it
decodes, so streams on different threads decode at once.
"""

from __future__ import annotations

import json
from typing import Any

from streamer.workers.models.speech import SAMPLE_RATE, Utterances, Word


class VoskStream(Utterances):
    """One stream's recogniser (see the module's docstring); ``recognizer`` is a
    ``vosk.KaldiRecognizer`` at 16 kHz with word times on (``SetWords(True)``). Calls must come
    from one thread at a time."""

    def __init__(self, recognizer: Any) -> None:
        super().__init__()
        self._rec = recognizer
        self._clock = 0  # samples given to the recogniser since it was made: vosk's timeline
        self._origin = 0.0  # vosk's time at which the open utterance began
        self._done: list[Word] = []  # parts of the open utterance vosk already closed

    def _opened(self) -> None:
        self._origin = self._clock / SAMPLE_RATE

    def _decode(self, data: bytes) -> None:
        ended = self._rec.AcceptWaveform(data)
        self._clock += len(data) // 2
        if ended:  # vosk's own endpoint inside the segment: keep its words, go on
            self._done += self._words(self._rec.Result())

    def _partial_text(self) -> str:
        now = json.loads(self._rec.PartialResult()).get("partial", "")
        return " ".join([w.word for w in self._done] + now.split())

    def _close(self) -> list[Word]:
        words = self._done + (self._words(self._rec.FinalResult()) if self._samples else [])
        self._done = []
        return words

    def _drop_utterance(self) -> None:
        """Close an unfinished utterance with a final result, thrown away: vosk then starts
        the next one afresh (a new feature pipeline), as after any final."""
        if self._samples:
            self._rec.FinalResult()
        self._done.clear()

    def _words(self, result: str) -> list[Word]:
        """vosk's words of one part, on the stream's timeline, inside the utterance."""
        assert self.start_time is not None
        start = self.start_time
        end = start + self._samples / SAMPLE_RATE
        words = []
        for w in json.loads(result).get("result", ()):
            a = min(end, max(start, start + float(w["start"]) - self._origin))
            b = min(end, max(a, start + float(w["end"]) - self._origin))
            words.append(Word(word=str(w["word"]), start_time=round(a, 3),
                              end_time=round(b, 3), confidence=round(float(w["conf"]), 3)))
        return words
