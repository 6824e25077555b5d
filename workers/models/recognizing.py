"""The streaming half of a speech-to-text model: one recogniser per stream, fed a segment's
pieces while it is spoken (``feed``), asked for its text so far (``partial``) and closed at the
segment's end (``finish``); ``infer`` decodes a whole segment on the stream's recogniser (or on
a one-off one outside a stateful pool). ``transcribe`` (pocketsphinx) and ``vosk`` (Kaldi)
differ only in the recogniser they make and in what becomes of one when its stream ends."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import numpy as np

from streamer.workers.models.base import Model, SegmentInfo
from streamer.workers.models.speech import SAMPLE_RATE, Transcript, Utterances

WARMUP_SECONDS = 1.0

R = TypeVar("R", bound=Utterances)


class SpeechModel(Model, Generic[R]):
    stateful = True

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self._streams: dict[str, R] = {}
        self._segments: dict[str, float] = {}  # key -> start of the segment being fed

    def new_recognizer(self) -> R:
        """A recogniser for a stream that has none."""
        raise NotImplementedError

    def retire(self, rec: R) -> None:
        """A recogniser whose stream ended (free it, or keep it for the next stream)."""

    def words(self, result: Transcript) -> list[dict[str, Any]]:
        return [w.to_dict() for w in result.words]

    def output(self, result: Transcript) -> dict[str, Any]:
        return {"text": result.text, "words": self.words(result)}

    def warmup(self) -> None:
        """One utterance through each call of a recogniser (building what the first stream
        would otherwise wait for)."""
        rec = self.new_recognizer()
        t = np.arange(int(WARMUP_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
        rec.feed((0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
        rec.partial()
        rec.finish()
        self.retire(rec)

    def infer(self, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        """A whole segment (an interim: its text so far), on the stream's recogniser; outside a
        stateful pool, on a one-off one."""
        key = info.stateful_key
        rec = self.recognizer(key) if key is not None else self.new_recognizer()
        try:
            return self.decode(rec, audio, info)
        finally:
            if key is None:
                self.retire(rec)

    def decode(self, rec: R, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        """``audio`` as one utterance from ``info.start_time``."""
        rec.begin(info.start_time)
        rec.feed(audio)
        return self.answer(rec, info)

    def answer(self, rec: R, info: SegmentInfo) -> dict[str, Any]:
        """The text so far for an interim, else the final text and words."""
        if info.is_final is False:
            return {"text": rec.partial()}
        return self.output(rec.finish())

    def recognizer(self, key: str) -> R:
        """The stream's recogniser, made on first use."""
        rec = self._streams.get(key)
        if rec is None:
            rec = self._streams[key] = self.new_recognizer()
        return rec

    def feed(self, stateful_key: str, audio: np.ndarray, info: SegmentInfo) -> None:
        rec = self.recognizer(stateful_key)
        if self._segments.get(stateful_key) != info.start_time or rec.start_time is None:
            # A new segment, or this worker lost the first pieces (another one died holding
            # them): the utterance starts where this piece does.
            rec.begin(info.end_time - len(audio) / SAMPLE_RATE)
            self._segments[stateful_key] = info.start_time
        rec.feed(audio)

    def partial(self, stateful_key: str, info: SegmentInfo) -> dict[str, Any]:
        rec = self._streams.get(stateful_key)
        return {"text": rec.partial() if rec is not None else ""}

    def finish(self, stateful_key: str, info: SegmentInfo) -> dict[str, Any]:
        self._segments.pop(stateful_key, None)
        rec = self._streams.get(stateful_key)
        return self.output(rec.finish() if rec is not None else Transcript(""))

    def end_stream(self, stateful_key: str) -> None:
        self._segments.pop(stateful_key, None)
        rec = self._streams.pop(stateful_key, None)
        if rec is not None:
            self.retire(rec)

    @property
    def streams(self) -> int:
        """Streams whose recogniser is held (for tests and stats)."""
        return len(self._streams)
