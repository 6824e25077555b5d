"""One websocket, from the first ``start`` to the close.

The reader (``_read_loop``) is the only caller of ``ws.receive``; a separate sender task writes
events in order. Every output of a channel takes a sequence number when it is planned, so results
are released in stream order however workers finish. A semaphore bounds the segments of one
session that await a result or an unsent event: when it is exhausted the reader stops reading the
socket, and TCP pushes back on a client that sends faster than the workers keep up. A client that
stops reading its results is ended after ``session.send_timeout``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from opentelemetry import context as otel_context
from opentelemetry import trace

from streamer.config import Config
from streamer.errors import PoolUnavailable, ProtocolError
from streamer.gateway.audio import MODEL_RATE, Decoder
from streamer.gateway.dispatch import new_request_id
from streamer.gateway.metrics import Metrics
from streamer.gateway.pool import Pool
from streamer.gateway.reorder import Reorderer
from streamer.gateway.segmenters import Activity, Segment, Segmenter, SegmenterOutput
from streamer.protocol import (
    ActivityEvent,
    ErrorEvent,
    SegmentEvent,
    ServerEvent,
    StartRequest,
    StoppedEvent,
    StopRequest,
    encode_event,
    parse_client_message,
)
from streamer.tracing import context_from_traceparent, inject, trace_id_hex
from streamer.wire import InferenceRequest, InferenceResult

log = logging.getLogger(__name__)
tracer = trace.get_tracer("streamer.gateway")

SegmenterFactory = Callable[[StartRequest, Config], list[Segmenter]]
_ARRIVALS_KEPT = 8192  # frames of arrival times kept to date results (minutes of audio)


class SessionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line about a session with its id and current trace id."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"[session {extra.get('session')} trace {extra.get('trace', '-')}] {msg}", kwargs


@dataclass(slots=True)
class _Out:
    """One text frame waiting to be sent, with what the metrics need to know about it."""

    text: str
    is_segment: bool = False
    stream: _Stream | None = None
    audio_ready_at: float | None = None  # when the audio at the result's end_time arrived
    audio_started_at: float | None = None  # when the audio at its start_time arrived
    seconds: float = 0.0  # the segment's duration
    kind: str = "final"
    ok: bool = True
    notice: str | None = None  # an error event sent just before this one, in the same slot


@dataclass(slots=True)
class _Stream:
    number: int
    start: StartRequest
    decoder: Decoder
    segmenters: list[Segmenter]
    reorder: Reorderer[_Out]
    span: trace.Span
    ctx: otel_context.Context
    stateful_keys: set[str] = field(default_factory=set)
    arrivals_end: list[int] = field(default_factory=list)  # samples_out after each frame
    arrivals_at: list[float] = field(default_factory=list)  # monotonic time of that frame
    first_audio_at: float | None = None
    got_first_result: bool = False

    def note_arrival(self, now: float) -> None:
        self.arrivals_end.append(self.decoder.samples_out)
        self.arrivals_at.append(now)
        if len(self.arrivals_end) > 2 * _ARRIVALS_KEPT:
            del self.arrivals_end[:_ARRIVALS_KEPT], self.arrivals_at[:_ARRIVALS_KEPT]

    def arrival_of(self, sample: int) -> float:
        """When the audio up to ``sample`` had reached the gateway."""
        i = bisect.bisect_left(self.arrivals_end, sample)
        if i >= len(self.arrivals_at):
            return time.monotonic()
        return self.arrivals_at[i]


class Session:
    def __init__(self, ws: web.WebSocketResponse, pool: Pool, config: Config, endpoint: str,
                 make_segmenters: SegmenterFactory, metrics: Metrics,
                 transport: Any = None, traceparent_header: str | None = None,
                 on_media: Callable[[float], str | None] | None = None) -> None:
        self.ws = ws
        self.pool = pool
        self.config = config
        self.endpoint = endpoint
        self.metrics = metrics
        self.id = uuid.uuid4().hex[:12]
        self.log = SessionLog(log, {"session": self.id})
        self._transport = transport
        self._traceparent_header = traceparent_header
        self._make_segmenters = make_segmenters
        # told each frame's channel-seconds; a message back ends the stream (a key's audio rate)
        self._on_media = on_media
        self._stream: _Stream | None = None
        self._streams_started = 0
        self._slots = asyncio.Semaphore(config.session.max_inflight)
        self._outbox: asyncio.Queue[_Out] = asyncio.Queue()
        self._unsent = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._inflight: dict[int, tuple[asyncio.Future[InferenceResult], float]] = {}
        self._client_gone = False
        self._shutting_down = False
        self._receiving: asyncio.Future[Any] | None = None
        self._text_times: deque[float] = deque()
        # per-frame metrics, their label lookups done once
        stage = "vad" if endpoint.endswith("segmented") else "segment"
        self._media_seconds = metrics.media_seconds.labels(endpoint)
        self._decode_rtf = metrics.rtf.labels("decode")
        self._decode_seconds = metrics.processing_seconds.labels("decode")
        self._segment_rtf = metrics.rtf.labels(stage)
        self._segment_seconds = metrics.processing_seconds.labels(stage)
        self.closed = asyncio.Event()

    @property
    def backlog_seconds(self) -> float:
        """Seconds of this session's audio sent to the pool and not yet answered."""
        return sum(seconds for _, seconds in self._inflight.values())

    # ---- the whole life of the socket ---------------------------------------------------
    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop(), name=f"session-{self.id}-sender")
        try:
            await self._read_loop()
        except ProtocolError as exc:
            self.log.info("protocol error: %s", exc.message)
            await self._fail(exc.message, exc.close_code)
        except PoolUnavailable as exc:
            self.log.error("cannot serve: %s", exc)
            await self._fail(str(exc), WSCloseCode.TRY_AGAIN_LATER)
        finally:
            self._abandon()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self.closed.set()

    async def _read_loop(self) -> None:
        cfg = self.config.session
        while True:
            if self._shutting_down:
                await self._leave_for_shutdown()
                return
            timeout = cfg.idle_timeout if self._stream is not None else cfg.start_timeout
            # Our own deadline: aiohttp restarts ws.receive(timeout) after every heartbeat pong.
            self._receiving = asyncio.ensure_future(self.ws.receive())
            try:
                async with asyncio.timeout(timeout):
                    msg = await self._receiving
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._shutting_down and task is not None and not task.cancelling():
                    continue  # shutdown() took the receive back; this task goes on to drain
                raise
            except TimeoutError:
                await self._timed_out(waited=timeout)
                return
            finally:
                self._receiving = None
            if msg.type == WSMsgType.TEXT:
                if not await self._on_text(msg.data):
                    return
            elif msg.type == WSMsgType.BINARY:
                await self._on_audio(msg.data)
            elif msg.type == WSMsgType.ERROR:
                self._client_gone = self.ws.closed
                self.log.info("websocket error: %s", self.ws.exception())
                return
            else:  # CLOSE, CLOSING, CLOSED: the client left
                self._client_gone = True
                if self._stream is not None:
                    self.log.info("client left mid-stream; dropping its work")
                return

    async def _on_text(self, text: str) -> bool:
        """Handle a control message; False when the socket is done."""
        try:
            self._check_text_limits(text)
            msg = parse_client_message(text)
        except ProtocolError:
            if self._stream is not None:
                await self._finish_stream()  # keep what was accepted before the bad message
            raise
        if isinstance(msg, StartRequest):
            if self._stream is not None:
                await self._finish_stream()
            self._open_stream(msg)
            return True
        assert isinstance(msg, StopRequest)
        if self._stream is None:
            self._emit(ErrorEvent(0, "got 'stop' but no stream is running; send 'start' first"))
        else:
            await self._finish_stream()
        if msg.disconnect:
            await self._idle.wait()
            await self.ws.close(code=WSCloseCode.OK, message=b"stopped")
            return False
        return True

    def _check_text_limits(self, text: str) -> None:
        cfg = self.config.session
        size = len(text) if len(text) * 4 <= cfg.max_text_bytes else len(text.encode())
        if size > cfg.max_text_bytes:
            raise ProtocolError(f"control message of {size} bytes; at most "
                                f"{cfg.max_text_bytes} are accepted", WSCloseCode.MESSAGE_TOO_BIG)
        now = time.monotonic()
        self._text_times.append(now)
        while self._text_times and self._text_times[0] < now - 1.0:
            self._text_times.popleft()
        if len(self._text_times) > cfg.max_text_per_second:
            raise ProtocolError(f"more than {cfg.max_text_per_second:g} control messages in one "
                                "second", WSCloseCode.POLICY_VIOLATION)

    async def _on_audio(self, data: bytes) -> None:
        stream = self._stream
        if stream is None:
            raise ProtocolError("expected 'start' before audio, got a binary frame",
                                WSCloseCode.POLICY_VIOLATION)
        if len(data) > self.config.server.max_msg_size:
            await self._finish_stream()  # keep what was accepted before the bad frame
            raise ProtocolError(f"audio frame of {len(data)} bytes; at most "
                                f"{self.config.server.max_msg_size} are accepted",
                                WSCloseCode.MESSAGE_TOO_BIG)
        now = time.monotonic()
        if stream.first_audio_at is None:
            stream.first_audio_at = now
        with tracer.start_as_current_span("decode", context=stream.ctx) as span:
            t0 = time.perf_counter()
            audio = stream.decoder.feed(data)
            spent = time.perf_counter() - t0
            span.set_attribute("audio.bytes", len(data))
            span.set_attribute("audio.samples", audio.shape[1])
        stream.note_arrival(now)
        self._observe_decode(audio.shape[1] / MODEL_RATE, spent)
        await self._push(stream, audio)
        if stream.decoder.samples_out > self.config.session.max_stream_seconds * MODEL_RATE:
            await self._finish_stream()
            raise ProtocolError(f"stream longer than the maximum of "
                                f"{self.config.session.max_stream_seconds:g} s of audio",
                                WSCloseCode.POLICY_VIOLATION)
        if self._on_media is not None:
            over = self._on_media(audio.shape[0] * audio.shape[1] / MODEL_RATE)
            if over is not None:
                await self._finish_stream()
                raise ProtocolError(over, WSCloseCode.POLICY_VIOLATION)

    def _observe_decode(self, seconds: float, spent: float) -> None:
        if seconds > 0:
            self._media_seconds.inc(seconds)
            self._decode_rtf.observe(spent / seconds)
        self._decode_seconds.inc(spent)

    # ---- streams ------------------------------------------------------------------------
    def _open_stream(self, start: StartRequest) -> None:
        segmenters = self._make_segmenters(start, self.config)
        self._streams_started += 1
        parent = context_from_traceparent(start.trace_id)
        if not trace.get_current_span(parent).get_span_context().is_valid:
            parent = context_from_traceparent(self._traceparent_header)
        span = tracer.start_span("session", context=parent, attributes={
            "session.id": self.id, "session.endpoint": self.endpoint,
            "stream.number": self._streams_started, "audio.channels": start.format.channels,
            "audio.sample_rate": start.format.sample_rate,
            "audio.bit_depth": start.format.bit_depth, "audio.is_float": start.format.is_float})
        self._stream = _Stream(number=self._streams_started, start=start,
                               decoder=Decoder(start.format), segmenters=segmenters,
                               reorder=Reorderer(self._release), span=span,
                               ctx=trace.set_span_in_context(span))
        self.log = SessionLog(log, {"session": self.id, "trace": trace_id_hex(span)})
        self.metrics.streams.labels(self.endpoint).inc()
        fmt = start.format
        self.log.info("stream %d started on %s (%d ch, %d Hz, %d-bit%s)", self._streams_started,
                      self.endpoint, fmt.channels, fmt.sample_rate, fmt.bit_depth,
                      " float" if fmt.is_float else "")

    async def _finish_stream(self, drain_timeout: float | None = None) -> None:
        """Flush everything through the pipeline and wait until every result is sent."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        stopped_at = time.monotonic()
        t0 = time.perf_counter()
        tail = stream.decoder.flush()
        self._observe_decode(tail.shape[1] / MODEL_RATE, time.perf_counter() - t0)
        stream.note_arrival(stopped_at)
        await self._push(stream, tail)
        for channel, segmenter in enumerate(stream.segmenters):
            for out in segmenter.flush():
                await self._plan(stream, channel, out)
        if stream.decoder.pending_bytes:
            dropped = stream.decoder.pending_bytes
            self._plan_event(stream, 0, ErrorEvent(0, (
                f"the stream ended inside an audio frame: the last {dropped} bytes do not make "
                f"a whole frame of {stream.start.format.frame_bytes} bytes and were dropped")))
        duration = stream.decoder.samples_out / MODEL_RATE
        for channel in range(len(stream.segmenters)):
            self._plan_event(stream, channel, StoppedEvent(channel, duration))
        try:
            async with asyncio.timeout(drain_timeout):
                await self._idle.wait()
        except TimeoutError:
            self.log.warning("results still pending after %.1f s drain; closing", drain_timeout)
        self.metrics.drain.labels(self.endpoint).observe(time.monotonic() - stopped_at)
        self._end_stream(stream, "audio.seconds", duration)
        self.log.info("stream %d finished, %.2f s of audio", stream.number, duration)

    async def _push(self, stream: _Stream, audio: Any) -> None:
        seconds = audio.shape[1] / MODEL_RATE
        for channel, segmenter in enumerate(stream.segmenters):
            t0 = time.perf_counter()
            outs = segmenter.push(audio[channel])
            spent = time.perf_counter() - t0
            self._segment_seconds.inc(spent)
            if seconds > 0:
                self._segment_rtf.observe(spent / seconds)
            for out in outs:
                await self._plan(stream, channel, out)

    async def _plan(self, stream: _Stream, channel: int, out: SegmenterOutput) -> None:
        if isinstance(out, Activity):
            self._plan_event(stream, channel, ActivityEvent(out.kind, channel,
                                                            out.at / MODEL_RATE))
        else:
            await self._submit(stream, channel, out)

    async def _submit(self, stream: _Stream, channel: int, seg: Segment) -> None:
        if not self.pool.available:
            raise PoolUnavailable("no worker can run the model (every worker failed to start); "
                                  "try again later")
        await self._slots.acquire()
        seq = stream.reorder.reserve(channel)
        key = None
        if self.pool.stateful:
            key = f"{self.id}/{stream.number}/{channel}"
            stream.stateful_keys.add(key)
        start, end = seg.start / MODEL_RATE, seg.end / MODEL_RATE
        span = tracer.start_span("dispatch", context=stream.ctx, attributes={
            "session.id": self.id, "audio.channel": channel, "segment.start_time": start,
            "segment.end_time": end, "segment.seq": seq})
        if seg.is_final is not None:
            span.set_attribute("segment.is_final", seg.is_final)
        req = InferenceRequest(request_id=new_request_id(), session_id=self.id, channel=channel,
                               seq=seq, start_time=start, end_time=end,
                               audio=seg.audio.tobytes(), is_final=seg.is_final,
                               stateful_key=key, trace=inject(trace.set_span_in_context(span)))
        self._planned()
        fut = self.pool.submit(req)
        self._inflight[req.request_id] = (fut, end - start)
        fut.add_done_callback(partial(self._on_result, stream, req, span,
                                      stream.arrival_of(seg.end), time.monotonic()))

    def _on_result(self, stream: _Stream, req: InferenceRequest, span: trace.Span,
                   audio_ready_at: float, submitted_at: float,
                   fut: asyncio.Future[InferenceResult]) -> None:
        self._inflight.pop(req.request_id, None)
        if fut.cancelled():
            span.set_attribute("segment.cancelled", True)
            span.end()
            self._done_one(is_segment=True)
            return
        result = fut.result()
        notice = None
        if result.state_lost:  # the worker holding this stream's model state died
            notice = encode_event(ErrorEvent(
                req.channel, "the model's state for this stream was lost (its worker died); "
                "results from this segment on start from fresh state", req.start_time,
                req.end_time, req.is_final))
        event: ServerEvent
        if result.output is not None:
            event = SegmentEvent(req.channel, req.start_time, req.end_time, result.output,
                                 req.is_final)
        else:
            event = ErrorEvent(req.channel, result.error or "inference failed", req.start_time,
                               req.end_time, req.is_final)
            span.set_status(trace.StatusCode.ERROR, result.error)
        self._observe_result(req, result, span, time.monotonic() - submitted_at)
        kind = "interim" if req.is_final is False else "final"
        stream.reorder.put(req.channel, req.seq, _Out(
            encode_event(event), True, stream, audio_ready_at,
            stream.arrival_of(round(req.start_time * MODEL_RATE) + 1),
            req.end_time - req.start_time, kind, result.ok, notice))

    def _observe_result(self, req: InferenceRequest, result: InferenceResult,
                        span: trace.Span, round_trip: float) -> None:
        m = self.metrics
        span.set_attribute("worker.id", result.worker_id)
        span.set_attribute("worker.queue_wait", result.queue_wait)
        span.set_attribute("worker.inference_time", result.inference_time)
        span.end()
        if result.worker_id < 0 or (not result.ok and result.inference_time == 0):
            return  # nothing ran: no worker could take it, or its worker died holding it
        seconds = req.end_time - req.start_time
        # waiting, on the gateway's clock: its own FIFO, the transport and the worker's queue
        m.queue_wait.observe(max(0.0, round_trip - result.inference_time))
        m.inference.observe(result.inference_time)
        m.worker_busy.labels(str(result.worker_id)).inc(result.inference_time)
        if seconds > 0:
            m.rtf.labels("model").observe(result.inference_time / seconds)

    def _plan_event(self, stream: _Stream, channel: int, event: ServerEvent) -> None:
        self._planned()
        stream.reorder.put(channel, stream.reorder.reserve(channel), _Out(encode_event(event)))

    def _emit(self, event: ServerEvent) -> None:
        """An event outside any channel's order (session-level errors)."""
        self._planned()
        self._outbox.put_nowait(_Out(encode_event(event)))

    def _release(self, channel: int, item: _Out) -> None:
        self._outbox.put_nowait(item)

    # ---- sending ------------------------------------------------------------------------
    def _planned(self) -> None:
        self._unsent += 1
        self._idle.clear()

    def _done_one(self, is_segment: bool) -> None:
        if is_segment:
            self._slots.release()
        self._unsent -= 1
        if self._unsent == 0:
            self._idle.set()

    async def _send_loop(self) -> None:
        timeout = self.config.session.send_timeout
        while True:
            item = await self._outbox.get()
            try:
                if not self._client_gone:
                    async with asyncio.timeout(timeout):
                        if item.notice is not None:
                            await self.ws.send_str(item.notice)
                        await self.ws.send_str(item.text)
                    self._observe_sent(item)
            except TimeoutError:
                self._client_gone = True
                self.log.warning("client has not read its results for %.0f s; ending session",
                                 timeout)
                self._drop_connection()
            except (ConnectionError, RuntimeError) as exc:
                self._client_gone = True
                self.log.info("cannot send to client (%s)", exc)
            finally:
                self._done_one(item.is_segment)

    def _observe_sent(self, item: _Out) -> None:
        if not item.is_segment or item.stream is None:
            return
        now = time.monotonic()
        stream = item.stream
        self.metrics.segments.labels(self.endpoint, "ok" if item.ok else "error").inc()
        if item.audio_ready_at is not None:
            self.metrics.finalization.labels(self.endpoint, item.kind).observe(
                now - item.audio_ready_at)
        if item.audio_started_at is not None and item.seconds > 0:
            self.metrics.rtf.labels("end_to_end").observe(
                (now - item.audio_started_at) / item.seconds)
        if not stream.got_first_result and stream.first_audio_at is not None:
            stream.got_first_result = True
            self.metrics.first_result.labels(self.endpoint).observe(now - stream.first_audio_at)

    def _drop_connection(self) -> None:
        """A client that does not read cannot be sent a close frame either: cut the TCP."""
        if self._transport is not None:
            self._transport.abort()
        if self._receiving is not None:
            self._receiving.cancel()

    # ---- endings ------------------------------------------------------------------------
    async def _fail(self, message: str, code: int) -> None:
        """The stream cannot go on: say why in an error event (close reasons are capped at 123
        bytes), then close with ``code``."""
        if self.ws.closed or self._client_gone:
            return
        self._emit(ErrorEvent(0, message))
        await self._idle.wait()
        await self.ws.close(code=code, message=message.encode()[:120])

    async def _timed_out(self, waited: float) -> None:
        if self._stream is None:
            since = "of connecting" if not self._streams_started else "after the last stream"
            message = f"no 'start' within {waited:g} s {since}"
        else:
            message = f"no audio or control message for {waited:g} s"
            await self._finish_stream()
        raise ProtocolError(message, WSCloseCode.POLICY_VIOLATION)

    def _abandon(self) -> None:
        """The socket is done: take back work nobody will read."""
        if self._inflight:
            self.pool.cancel(list(self._inflight))
            for fut, _ in list(self._inflight.values()):
                fut.cancel()
        stream, self._stream = self._stream, None
        if stream is not None:
            self._end_stream(stream, "session.abandoned", True)

    def _end_stream(self, stream: _Stream, attribute: str, value: float | bool) -> None:
        """A stream is over: workers drop its model state, its span ends."""
        for key in stream.stateful_keys:
            self.pool.end_stream(key)
        stream.span.set_attribute(attribute, value)
        stream.span.end()

    async def shutdown(self) -> None:
        """Server shutdown: deliver what the stream already sent, then close 1001."""
        self._shutting_down = True
        if self._receiving is not None:
            self._receiving.cancel()

    async def _leave_for_shutdown(self) -> None:
        if self._stream is not None:
            await self._finish_stream(drain_timeout=self.config.server.drain_timeout)
        if not self.ws.closed and not self._client_gone:
            await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
