"""One stream, from ``start`` to its end, without sockets, tasks or clocks of its own.

Frames go in (:meth:`StreamCore.feed`) and come out as :class:`Work`, jobs for the pool each with
the ledger slot its answer fills; answers go in (:meth:`StreamCore.settle`) and events come out
through the ledger's emit callable, in stream order. Everything here is synchronous: the session
does the I/O (reading the socket, submitting to the pool, sending), and unit tests drive this
class directly with bytes and results.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import context as otel_context
from opentelemetry import trace

from streamer.gateway.audio import MODEL_RATE, Decoder
from streamer.gateway.ledger import Ledger, Outgoing, Slot
from streamer.gateway.pool.base import Job
from streamer.gateway.segmenters import Activity, Piece, Segment, Segmenter
from streamer.protocol import (
    ActivityEvent,
    ErrorEvent,
    FinalizedEvent,
    SegmentEvent,
    ServerEvent,
    StartRequest,
    StoppedEvent,
    encode_event,
)
from streamer.tracing import context_from_traceparent, inject
from streamer.wire import InferenceResult

tracer = trace.get_tracer("streamer.gateway")

DETECTOR_KEY = "vad/"  # state keys of detectors run off the loop start with this
ARRIVALS_KEPT = 8192  # frames of arrival times kept to date results (minutes of audio)
STATE_LOST = ("the model's state for this stream was lost (its worker died); results from this "
              "segment on start from fresh state")


@dataclass(slots=True)
class Work:
    """A job for the pool and the slot its answer fills."""

    job: Job
    slot: Slot | None  # None: a piece fed to a streaming model, with no event of its own
    span: trace.Span
    audio_ready_at: float    # when the audio at the job's end reached the gateway
    audio_started_at: float  # when the audio at its start did
    from_finalize: bool = False  # closed early by a client's 'finalize'


@dataclass(slots=True)
class Fed:
    """What one call to feed or finish produced."""

    work: list[Work] = field(default_factory=list)
    audio: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    seconds: float = 0.0       # audio decoded, per channel
    decode_time: float = 0.0   # seconds spent decoding
    segment_time: float = 0.0  # seconds spent segmenting


class Arrivals:
    """When each part of the stream's audio reached the gateway, to date results against."""

    def __init__(self) -> None:
        self._ends: list[int] = []     # samples decoded after each frame
        self._times: list[float] = []  # when that frame arrived

    def note(self, samples: int, now: float) -> None:
        self._ends.append(samples)
        self._times.append(now)
        if len(self._ends) > 2 * ARRIVALS_KEPT:
            del self._ends[:ARRIVALS_KEPT], self._times[:ARRIVALS_KEPT]

    def of(self, sample: int, default: float) -> float:
        i = bisect.bisect_left(self._ends, sample)
        return self._times[i] if i < len(self._times) else default


def stream_span(session_id: str, endpoint: str, number: int, start: StartRequest,
                traceparent_header: str | None) -> trace.Span:
    """The stream's root span: a child of the client's trace (its ``start`` message's
    ``trace_id``, else the upgrade request's ``traceparent`` header), else a new trace."""
    parent = context_from_traceparent(start.trace_id)
    if not trace.get_current_span(parent).get_span_context().is_valid:
        parent = context_from_traceparent(traceparent_header)
    fmt = start.format
    return tracer.start_span("session", context=parent, attributes={
        "session.id": session_id, "http.route": endpoint, "stream.number": number,
        "audio.channels": fmt.channels, "audio.sample_rate": fmt.sample_rate,
        "audio.bit_depth": fmt.bit_depth, "audio.is_float": fmt.is_float})


class StreamCore:
    def __init__(self, session_id: str, number: int, start: StartRequest,
                 segmenters: list[Segmenter], stateful: bool, emit: Callable[[Outgoing], None],
                 span: trace.Span | None = None) -> None:
        self.session_id = session_id
        self.number = number
        self.start = start
        self.decoder = Decoder(start.format)
        self.segmenters = segmenters
        self.ledger = Ledger(emit)
        self.span = span or trace.INVALID_SPAN
        self._ctx: otel_context.Context = trace.set_span_in_context(self.span)
        self._keys = ([f"{session_id}/{number}/{c}" for c in range(len(segmenters))]
                      if stateful else [])
        self._detector_keys = [self.detector_key(c) for c, seg in enumerate(segmenters)
                               if getattr(getattr(seg, "detector", None), "offloaded", False)]
        self._arrivals = Arrivals()
        self.first_audio_at: float | None = None
        self._feeding = 0  # pieces fed to a streaming model and not answered yet
        self._notices: dict[int, str] = {}  # channel -> an error event for its next answer

    # ---- audio in, work out -------------------------------------------------------------
    def feed(self, data: bytes, now: float) -> Fed:
        return self.segment(self.decode(data, now), now)

    def decode(self, data: bytes, now: float) -> Fed:
        """First half of :meth:`feed`: the frame's audio in ``fed.audio``, not yet segmented
        (its detector's answers may be fetched in between)."""
        if self.first_audio_at is None:
            self.first_audio_at = now
        with tracer.start_as_current_span("decode", context=self._ctx) as span:
            t0 = time.perf_counter()
            audio = self.decoder.feed(data)
            fed = Fed(audio=audio, decode_time=time.perf_counter() - t0)
            span.set_attribute("audio.bytes", len(data))
            span.set_attribute("audio.samples", audio.shape[1])
        self._arrivals.note(self.decoder.samples_out, now)
        return fed

    def segment(self, fed: Fed, now: float) -> Fed:
        """Second half of :meth:`feed`: segment ``fed.audio`` and plan the work."""
        self._segment(fed.audio, fed, now)
        return fed

    def decode_tail(self, now: float) -> Fed:
        """The decoder's last samples, at the end of the stream (for :meth:`finish`)."""
        t0 = time.perf_counter()
        tail = self.decoder.flush()
        self._arrivals.note(self.decoder.samples_out, now)
        return Fed(audio=tail, decode_time=time.perf_counter() - t0)

    def finish(self, now: float, tail: Fed | None = None) -> Fed:
        """The client stopped: segment the decoder's tail (``tail``, from
        :meth:`decode_tail`, or decoded here), flush the segmenters, plan ``stopped``."""
        fed = self.decode_tail(now) if tail is None else tail
        self._segment(fed.audio, fed, now)
        for channel, segmenter in enumerate(self.segmenters):
            for out in segmenter.flush():
                self._plan(channel, out, fed, now)
        if self.decoder.pending_bytes:
            self._event(0, ErrorEvent(0, (
                f"the stream ended inside an audio frame: the last "
                f"{self.decoder.pending_bytes} bytes do not make a whole frame of "
                f"{self.start.format.frame_bytes} bytes and were dropped")))
        for channel in range(len(self.segmenters)):
            self._event(channel, StoppedEvent(channel, self.duration))
        return fed

    def finalize(self, now: float) -> Fed:
        """A client's ``finalize``: every channel's open segment is closed now (its results
        say ``from_finalize``), then one ``finalized`` per channel; the stream goes on."""
        fed = Fed()
        for channel, segmenter in enumerate(self.segmenters):
            planned = len(fed.work)
            for out in segmenter.finalize():
                self._plan(channel, out, fed, now)
            for work in fed.work[planned:]:
                work.from_finalize = True
            self._event(channel, FinalizedEvent(channel, self.duration))
        return fed

    def _segment(self, audio: np.ndarray, fed: Fed, now: float) -> None:
        fed.seconds = audio.shape[1] / MODEL_RATE
        for channel, segmenter in enumerate(self.segmenters):
            t0 = time.perf_counter()
            outs = segmenter.push(audio[channel])
            fed.segment_time += time.perf_counter() - t0
            for out in outs:
                self._plan(channel, out, fed, now)

    def _plan(self, channel: int, out: Segment | Activity | Piece, fed: Fed,
              now: float) -> None:
        if isinstance(out, Activity):
            self._event(channel, ActivityEvent(out.kind, channel, out.at / MODEL_RATE))
            return
        if isinstance(out, Piece):
            self._plan_piece(channel, out, fed, now)
            return
        start, end = out.start / MODEL_RATE, out.end / MODEL_RATE
        slot = self.ledger.plan(channel, end - start)
        span = tracer.start_span("dispatch", context=self._ctx, attributes={
            "session.id": self.session_id, "audio.channel": channel,
            "segment.start_time": start, "segment.end_time": end, "segment.seq": slot.seq})
        if out.is_final is not None:
            span.set_attribute("segment.is_final", out.is_final)
        job = Job(self.session_id, channel, slot.seq, start, end, out.audio.tobytes(),
                  out.is_final, self._keys[channel] if self._keys else None,
                  inject(trace.set_span_in_context(span)))
        fed.work.append(Work(job, slot, span, self._arrivals.of(out.end, now),
                             self._arrivals.of(out.start + 1, now)))

    def _plan_piece(self, channel: int, piece: Piece, fed: Fed, now: float) -> None:
        """A piece of an open segment for a streaming model. A ``feed`` has no event and takes
        no slot: the stream waits for its answer only to learn of a failure or lost state,
        told with the channel's next event."""
        start, end = piece.start / MODEL_RATE, piece.end / MODEL_RATE
        slot = None if piece.step == "feed" else self.ledger.plan(channel, end - start)
        if slot is None:
            self._feeding += 1
        span = tracer.start_span(piece.step, context=self._ctx, attributes={
            "session.id": self.session_id, "audio.channel": channel,
            "segment.start_time": start, "segment.end_time": end,
            "segment.piece_start_time": (piece.start + piece.offset) / MODEL_RATE,
            "segment.seq": slot.seq if slot is not None else -1})
        job = Job(self.session_id, channel, slot.seq if slot is not None else -1, start, end,
                  piece.audio.tobytes(), piece.step == "finish",
                  self._keys[channel] if self._keys else None,
                  inject(trace.set_span_in_context(span)), step=piece.step)
        fed.work.append(Work(job, slot, span, self._arrivals.of(piece.end, now),
                             self._arrivals.of(piece.start + 1, now)))

    def _fed_answer(self, work: Work, result: InferenceResult | None,
                    error: str | None = None) -> None:
        """A feed's answer: nothing to send, but a failure or lost state is told before the
        channel's next event."""
        self._feeding -= 1
        work.span.end()
        if result is not None:
            error = result.error
            if result.state_lost:
                error = STATE_LOST
        if error is not None:
            job = work.job
            self._notices.setdefault(job.channel, encode_event(ErrorEvent(
                job.channel, error, job.start_time, job.end_time, False)))

    def _with_notice(self, work: Work, out: Outgoing) -> Outgoing:
        notice = self._notices.pop(work.job.channel, None)
        if notice is not None and out.notice is None:
            out.notice = notice
        return out

    def _event(self, channel: int, event: ServerEvent) -> None:
        self.ledger.add(channel, Outgoing(encode_event(event), stream=self.number))

    # ---- answers in, events out ---------------------------------------------------------
    def settle(self, work: Work, result: InferenceResult | None) -> None:
        """Fill ``work``'s slot with the event for ``result`` (None: withdrawn, nothing to
        send). Any failure to build the event becomes an error event naming the segment."""
        if work.slot is None:
            self._fed_answer(work, result)
            return
        self.ledger.settle_by(work.slot, lambda: self._answer(work, result),
                              lambda exc: self._error(work, _explain(exc)))

    def fail(self, work: Work, message: str) -> None:
        """Answer ``work`` with an error event (it could not be run)."""
        if work.slot is None:
            self._fed_answer(work, None, message)
            return
        work.span.set_status(trace.StatusCode.ERROR, message)
        work.span.end()
        self.ledger.settle_by(work.slot, lambda: self._error(work, message),
                              lambda exc: self._error(work, "internal error"))

    def _answer(self, work: Work, result: InferenceResult | None) -> Outgoing | None:
        span = work.span
        if result is None:
            span.set_attribute("segment.cancelled", True)
            span.end()
            return None
        span.set_attribute("worker.id", result.worker_id)
        span.set_attribute("worker.queue_wait_seconds", result.queue_wait)
        span.set_attribute("worker.inference_seconds", result.inference_time)
        if result.error is not None:
            span.set_status(trace.StatusCode.ERROR, result.error)
        span.end()
        job = work.job
        if result.output is None:
            return self._error(work, result.error or "inference failed", result.state_lost)
        event = SegmentEvent(job.channel, job.start_time, job.end_time, result.output,
                             job.is_final, work.from_finalize)
        out = self._outgoing(work, encode_event(event), True)
        if result.state_lost:
            out.notice = encode_event(ErrorEvent(job.channel, STATE_LOST, job.start_time,
                                                 job.end_time, job.is_final))
        return self._with_notice(work, out)

    def _error(self, work: Work, message: str, state_lost: bool = False) -> Outgoing:
        job = work.job
        event = ErrorEvent(job.channel, message, job.start_time, job.end_time, job.is_final,
                           work.from_finalize)
        out = self._outgoing(work, encode_event(event), False)
        if state_lost:
            out.notice = encode_event(ErrorEvent(job.channel, STATE_LOST, job.start_time,
                                                 job.end_time, job.is_final))
        return self._with_notice(work, out)

    def _outgoing(self, work: Work, text: str, ok: bool) -> Outgoing:
        job = work.job
        return Outgoing(text, job.seconds, ok, "interim" if job.is_final is False else "final",
                        work.audio_ready_at, work.audio_started_at, self.first_audio_at,
                        self.number)

    # ---- the end --------------------------------------------------------------------------
    def close(self, attribute: str, value: float | bool) -> list[str]:
        """The stream is over: open outputs are dropped, its span ends. Returns the state keys
        to release: the model's, and its detectors' where they run off the loop."""
        self.ledger.close()
        self.span.set_attribute(attribute, value)
        self.span.end()
        return self._keys + self._detector_keys

    def detector_key(self, channel: int) -> str:
        """The state key of a channel's detector where it runs off the loop."""
        return f"{DETECTOR_KEY}{self.session_id}/{self.number}/{channel}"

    @staticmethod
    def is_detector_key(key: str) -> bool:
        return key.startswith(DETECTOR_KEY)

    @property
    def offloaded(self) -> bool:
        """Whether a channel's detector runs off the loop (frames must visit it first)."""
        return bool(self._detector_keys)

    @property
    def channels(self) -> int:
        return len(self.segmenters)

    @property
    def duration(self) -> float:
        return self.decoder.samples_out / MODEL_RATE

    @property
    def open(self) -> int:
        """Outputs planned and not settled, and pieces fed and not answered."""
        return self.ledger.open + self._feeding

    @property
    def backlog_seconds(self) -> float:
        return self.ledger.backlog_seconds


def _explain(exc: Exception) -> str:
    if isinstance(exc, TypeError | ValueError):
        return f"the model's output could not be sent as JSON ({type(exc).__name__}: {exc})"
    return f"internal error while handling this segment's result ({type(exc).__name__})"
