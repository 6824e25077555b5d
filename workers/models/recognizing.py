"""The streaming half of a speech-to-text model: one recogniser per stream, fed a segment's
pieces while it is spoken (``feed``), asked for its text so far (``partial``) and closed at the
segment's end (``finish``). ``transcribe`` (pocketsphinx) and ``vosk`` (Kaldi) differ only in the
recogniser they make and in what becomes of one when its stream ends."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from streamer.workers.models.base import Model, SegmentInfo
from streamer.workers.models.speech import SAMPLE_RATE, Transcript


class Recognizer(Protocol):
    start_time: float | None  # where the open utterance starts on the stream; None: none open

    def begin(self, start_time: float = 0.0) -> None: ...

    def feed(self, audio: np.ndarray) -> None: ...

    def partial(self) -> str: ...

    def finish(self) -> Transcript: ...


R = TypeVar("R", bound=Recognizer)


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
