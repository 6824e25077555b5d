"""Streaming speech recognition on pocketsphinx, independent of the worker machinery.

A :class:`StreamingRecognizer` is one stream's recogniser with an explicit incremental API: open an
utterance at a time on the stream's timeline with :meth:`~StreamingRecognizer.begin`, ``feed``
16 kHz float32 audio as it arrives, ask for the ``partial`` text at any time, ``finish`` for the
final :class:`Transcript` with word times, ``reset`` to drop everything.

pocketsphinx decoders are heavy (tens of MB and up to a second to build) and hold one utterance
at a time, so recognisers borrow one from a :class:`DecoderPool` built once, while an utterance is
open. When more utterances are open than the pool has decoders, the least recently used one is
taken away; its recogniser keeps its utterance's audio and replays it on its next call. Decoding is
deterministic (the feature extraction is reset at each utterance, then given the stream's own
cepstral mean), so a replay, or any other split of the same audio into ``feed`` calls, gives the
same words and times. A stream carries its cepstral mean from one utterance to the next (the
decoder's adaptation to the speaker and microphone); nothing else is shared between streams.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FRAME_RATE = 100  # pocketsphinx frames per second (10 ms)
SAMPLE_RATE = 16_000
_NOT_WORDS = re.compile(r"^(<s>|</s>|<sil>|\[.*\]|\+\+.*\+\+)$")
_ALTERNATE = re.compile(r"\(\d+\)$")  # "the(2)": the dictionary's second pronunciation


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start_time: float  # seconds on the stream's timeline
    end_time: float
    confidence: float | None = None  # posterior probability, 0 to 1

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "start_time": self.start_time, "end_time": self.end_time,
                "confidence": self.confidence}


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)


def to_s16(audio: np.ndarray) -> bytes:
    """Float samples in [-1, 1] as the little-endian 16-bit PCM pocketsphinx reads."""
    x = np.nan_to_num(np.asarray(audio, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2").tobytes()


class Utterances:
    """What every recogniser here keeps of its open utterance: when it began on the stream's
    timeline (``start_time``, None when none is open) and how many samples it was fed. A
    subclass decodes (``_decode``), reads the partial text (``_partial_text``), closes an
    utterance into words (``_close``) and drops an unfinished one (``_drop_utterance``)."""

    def __init__(self) -> None:
        self._samples = 0
        self.start_time: float | None = None  # None: no utterance open

    def begin(self, start_time: float = 0.0) -> None:
        """Open an utterance at ``start_time`` (dropping an unfinished one)."""
        self._drop_utterance()
        self._samples = 0
        self._opened()
        self.start_time = float(start_time)

    def feed(self, audio: np.ndarray) -> None:
        """Decode more of the open utterance: 16 kHz mono float32 in [-1, 1]."""
        if self.start_time is None:
            self.begin()
        data = to_s16(audio)
        if data:
            self._samples += len(data) // 2  # counted first: words closed in _decode end here
            self._decode(data)

    def partial(self) -> str:
        """The best text of the open utterance so far ('' if none)."""
        if self.start_time is None or not self._samples:
            return ""
        return self._partial_text()

    def finish(self) -> Transcript:
        """Close the open utterance and return its final text and words."""
        if self.start_time is None:
            return Transcript("")
        words = self._close()
        self._samples = 0
        self.start_time = None
        return Transcript(" ".join(w.word for w in words), words)

    def reset(self) -> None:
        """Drop the open utterance."""
        self._drop_utterance()
        self._samples = 0
        self.start_time = None

    @property
    def samples(self) -> int:
        """Samples fed to the open utterance."""
        return self._samples

    def _opened(self) -> None:
        """A new utterance begins (after the last one was dropped)."""

    def _decode(self, data: bytes) -> None:
        raise NotImplementedError

    def _partial_text(self) -> str:
        raise NotImplementedError

    def _close(self) -> list[Word]:
        """End the open utterance (it may hold no samples) and return its words."""
        raise NotImplementedError

    def _drop_utterance(self) -> None:
        raise NotImplementedError


class DecoderPool:
    """A few decoders lent to recognisers while they have an utterance open.

    ``make`` builds one decoder; ``size`` of them are built up front (at worker boot). A
    recogniser that needs one while all are lent takes the least recently used one; its owner
    is told (it replays its audio when it next runs).
    """

    def __init__(self, make: Callable[[], Any], size: int) -> None:
        if size < 1:
            raise ValueError("a decoder pool needs at least one decoder")
        self._free = [make() for _ in range(size)]
        self.size = size
        self._lent: OrderedDict[int, tuple[StreamingRecognizer, Any]] = OrderedDict()
        self.evictions = 0  # decoders taken from an open utterance (each costs a replay)
        self.initial_cmn: str = self._free[0].get_cmn()

    def acquire(self, owner: StreamingRecognizer) -> Any:
        lent = self._lent.get(id(owner))
        if lent is not None:
            self._lent.move_to_end(id(owner))
            return lent[1]
        if self._free:
            decoder = self._free.pop()
        else:
            _, (victim, decoder) = self._lent.popitem(last=False)
            victim._lost_decoder()
            self.evictions += 1
        self._lent[id(owner)] = (owner, decoder)
        return decoder

    def release(self, owner: StreamingRecognizer) -> None:
        lent = self._lent.pop(id(owner), None)
        if lent is not None:
            self._free.append(lent[1])

    @property
    def in_use(self) -> int:
        return len(self._lent)


class StreamingRecognizer(Utterances):
    """One stream's speech recogniser (see the module's docstring).

    ``begin(start_time)`` opens an utterance whose first sample lies at ``start_time`` seconds on
    the stream's timeline (``feed`` opens one at 0.0 if none is open); word times are on that
    timeline. ``finish`` closes it; ``reset`` also forgets what the stream learnt (its cepstral
    mean). Calls must come from one thread at a time.
    """

    def __init__(self, pool: DecoderPool) -> None:
        super().__init__()
        self._pool = pool
        self._cmn = pool.initial_cmn
        self._decoder: Any = None
        self._audio: list[bytes] = []  # the open utterance, for a replay after losing the decoder

    def reset(self) -> None:
        """Drop the open utterance and the stream's adaptation: as good as new."""
        super().reset()
        self._cmn = self._pool.initial_cmn

    def fed_pcm(self) -> bytes:
        """The open utterance's audio as fed, 16-bit PCM (see :func:`to_s16`)."""
        return b"".join(self._audio)

    # ---- decoding ----------------------------------------------------------------------------
    def _decode(self, data: bytes) -> None:
        self._ensure_decoder().process_raw(data, False, False)
        self._audio.append(data)

    def _partial_text(self) -> str:
        hyp = self._ensure_decoder().hyp()
        return _clean_text(hyp.hypstr) if hyp is not None else ""

    def _close(self) -> list[Word]:
        assert self.start_time is not None
        start = self.start_time
        decoder = self._ensure_decoder() if self._samples else None
        words: list[Word] = []
        if decoder is not None:
            decoder.end_utt()
            end = start + self._samples / SAMPLE_RATE
            for seg in decoder.seg() or ():  # None when nothing was recognised
                if _NOT_WORDS.match(seg.word):
                    continue
                words.append(Word(
                    word=_ALTERNATE.sub("", seg.word),
                    start_time=round(start + seg.start_frame / FRAME_RATE, 3),
                    end_time=round(min(end, start + (seg.end_frame + 1) / FRAME_RATE), 3),
                    confidence=round(float(seg.prob), 3)))
            self._cmn = decoder.get_cmn()
            self._pool.release(self)
            self._decoder = None
        self._audio.clear()
        return words

    def _ensure_decoder(self) -> Any:
        if self._decoder is not None:
            return self._pool.acquire(self)  # marks it recently used
        decoder = self._decoder = self._pool.acquire(self)
        decoder.reinit_feat()  # forget the previous utterance's feature state
        decoder.set_cmn(self._cmn)
        decoder.start_utt()
        for data in self._audio:  # a replay after the decoder was lent to another stream
            decoder.process_raw(data, False, False)
        return decoder

    def _lost_decoder(self) -> None:
        """Called by the pool: the decoder went to another stream mid-utterance."""
        self._decoder.end_utt()
        self._decoder = None

    def _drop_utterance(self) -> None:
        if self._decoder is not None:
            self._decoder.end_utt()
            self._pool.release(self)
            self._decoder = None
        self._audio.clear()


def _clean_text(text: str) -> str:
    return " ".join(_ALTERNATE.sub("", w) for w in text.split() if not _NOT_WORDS.match(w))
