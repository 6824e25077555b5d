"""One websocket, from the first ``start`` to the close.

The reader (``_read_loop``) is the only caller of ``ws.receive``; a separate sender task writes
events in order. Every output of a channel takes a sequence number when it is planned, so results
are released in stream order however workers finish. A semaphore bounds the segments of one
session that await a result or an unsent event: when it is exhausted the reader stops reading the
socket, and TCP pushes back on a client that sends faster than the workers keep up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from aiohttp import WSCloseCode, WSMsgType, web

from gateway.audio import MODEL_RATE, Decoder
from gateway.dispatch import new_request_id
from gateway.pool import Pool
from gateway.reorder import Reorderer
from gateway.segmenters import Activity, Segment, Segmenter, SegmenterOutput
from shared.config import Config
from shared.errors import ProtocolError
from shared.protocol import (
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
from shared.wire import InferenceRequest, InferenceResult

log = logging.getLogger(__name__)

SegmenterFactory = Callable[[StartRequest, Config], list[Segmenter]]


@dataclass(slots=True)
class _Stream:
    number: int
    start: StartRequest
    decoder: Decoder
    segmenters: list[Segmenter]
    reorder: Reorderer[tuple[str, bool]]
    stateful_keys: set[str] = field(default_factory=set)


class Session:
    def __init__(self, ws: web.WebSocketResponse, pool: Pool, config: Config,
                 endpoint: str, make_segmenters: SegmenterFactory) -> None:
        self.ws = ws
        self.pool = pool
        self.config = config
        self.endpoint = endpoint
        self.id = uuid.uuid4().hex[:12]
        self._make_segmenters = make_segmenters
        self._stream: _Stream | None = None
        self._streams_started = 0
        self._slots = asyncio.Semaphore(config.session.max_inflight)
        self._outbox: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
        self._unsent = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._inflight: dict[int, asyncio.Future[InferenceResult]] = {}
        self._client_gone = False

    # ---- the whole life of the socket ---------------------------------------------------
    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop(), name=f"session-{self.id}-sender")
        try:
            await self._read_loop()
        except ProtocolError as exc:
            await self._fail(exc)
        finally:
            self._abandon()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _read_loop(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.TEXT:
                if not await self._on_text(msg.data):
                    return
            elif msg.type == WSMsgType.BINARY:
                await self._on_audio(msg.data)
            elif msg.type == WSMsgType.ERROR:
                self._client_gone = self.ws.closed
                log.info("session %s: websocket error: %s", self.id, self.ws.exception())
                return
            else:  # CLOSE, CLOSING, CLOSED: the client left
                self._client_gone = True
                if self._stream is not None:
                    log.info("session %s: client left mid-stream; dropping its work", self.id)
                return

    async def _on_text(self, text: str) -> bool:
        """Handle a control message; False when the socket is done."""
        try:
            msg = parse_client_message(text)
        except ProtocolError as exc:
            if self._stream is not None:
                await self._finish_stream()  # keep what was accepted before the bad message
            raise exc
        if isinstance(msg, StartRequest):
            if self._stream is not None:
                await self._finish_stream()
            self._open_stream(msg)
            return True
        assert isinstance(msg, StopRequest)
        if self._stream is None:
            self._emit(ErrorEvent(0, "got 'stop' but no stream is running; send 'start' first"))
            return True
        await self._finish_stream()
        if msg.disconnect:
            await self.ws.close(code=WSCloseCode.OK, message=b"stopped")
            return False
        return True

    async def _on_audio(self, data: bytes) -> None:
        stream = self._stream
        if stream is None:
            raise ProtocolError("expected 'start' before audio, got a binary frame",
                                WSCloseCode.POLICY_VIOLATION)
        await self._push(stream, stream.decoder.feed(data))

    # ---- streams ------------------------------------------------------------------------
    def _open_stream(self, start: StartRequest) -> None:
        segmenters = self._make_segmenters(start, self.config)
        self._streams_started += 1
        self._stream = _Stream(number=self._streams_started, start=start,
                               decoder=Decoder(start.format), segmenters=segmenters,
                               reorder=Reorderer(self._release))
        log.info("session %s: stream %d started on %s (%d ch, %d Hz, %d-bit%s)", self.id,
                 self._streams_started, self.endpoint, start.format.channels,
                 start.format.sample_rate, start.format.bit_depth,
                 " float" if start.format.is_float else "")

    async def _finish_stream(self) -> None:
        """Flush everything through the pipeline and wait until every result is sent."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        await self._push(stream, stream.decoder.flush())
        for channel, segmenter in enumerate(stream.segmenters):
            for out in segmenter.flush():
                await self._plan(stream, channel, out)
        if stream.decoder.pending_bytes:
            self._emit(ErrorEvent(0, f"the stream ended inside an audio frame: the last "
                                     f"{stream.decoder.pending_bytes} bytes do not make a whole "
                                     f"frame of {stream.start.format.frame_bytes} bytes and "
                                     f"were dropped"))
        duration = stream.decoder.samples_out / MODEL_RATE
        for channel in range(len(stream.segmenters)):
            self._plan_event(stream, channel, StoppedEvent(channel, duration))
        await self._idle.wait()
        for key in stream.stateful_keys:
            self.pool.end_stream(key)
        log.info("session %s: stream %d finished, %.2f s of audio", self.id, stream.number,
                 duration)

    async def _push(self, stream: _Stream, audio: object) -> None:
        for channel, segmenter in enumerate(stream.segmenters):
            for out in segmenter.push(audio[channel]):  # type: ignore[index]
                await self._plan(stream, channel, out)

    async def _plan(self, stream: _Stream, channel: int, out: SegmenterOutput) -> None:
        if isinstance(out, Activity):
            self._plan_event(stream, channel, ActivityEvent(out.kind, channel,
                                                            out.at / MODEL_RATE))
        else:
            await self._submit(stream, channel, out)

    async def _submit(self, stream: _Stream, channel: int, seg: Segment) -> None:
        await self._slots.acquire()
        seq = stream.reorder.reserve(channel)
        key = None
        if self.pool.stateful:
            key = f"{self.id}/{stream.number}/{channel}"
            stream.stateful_keys.add(key)
        req = InferenceRequest(request_id=new_request_id(), session_id=self.id, channel=channel,
                               seq=seq, start_time=seg.start / MODEL_RATE,
                               end_time=seg.end / MODEL_RATE, audio=seg.audio.tobytes(),
                               is_final=seg.is_final, stateful_key=key)
        self._planned()
        fut = self.pool.submit(req)
        self._inflight[req.request_id] = fut
        fut.add_done_callback(partial(self._on_result, stream, req))

    def _on_result(self, stream: _Stream, req: InferenceRequest,
                   fut: asyncio.Future[InferenceResult]) -> None:
        self._inflight.pop(req.request_id, None)
        if fut.cancelled():
            self._done_one(is_segment=True)
            return
        result = fut.result()
        event: ServerEvent
        if result.output is not None:
            event = SegmentEvent(req.channel, req.start_time, req.end_time, result.output,
                                 req.is_final)
        else:
            event = ErrorEvent(req.channel, result.error or "inference failed", req.start_time,
                               req.end_time, req.is_final)
        stream.reorder.put(req.channel, req.seq, (encode_event(event), True))

    def _plan_event(self, stream: _Stream, channel: int, event: ServerEvent) -> None:
        self._planned()
        stream.reorder.put(channel, stream.reorder.reserve(channel), (encode_event(event), False))

    def _emit(self, event: ServerEvent) -> None:
        """An event outside any channel's order (session-level errors)."""
        self._planned()
        self._outbox.put_nowait((encode_event(event), False))

    def _release(self, channel: int, item: tuple[str, bool]) -> None:
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
        while True:
            text, is_segment = await self._outbox.get()
            try:
                if not self._client_gone:
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError) as exc:
                self._client_gone = True
                log.info("session %s: cannot send to client (%s)", self.id, exc)
            finally:
                self._done_one(is_segment)

    # ---- endings ------------------------------------------------------------------------
    async def _fail(self, exc: ProtocolError) -> None:
        log.info("session %s: protocol error: %s", self.id, exc.message)
        if self.ws.closed:
            return
        self._emit(ErrorEvent(0, exc.message))
        await self._idle.wait()
        await self.ws.close(code=exc.close_code, message=exc.message.encode()[:120])

    def _abandon(self) -> None:
        """The socket is done: take back work nobody will read."""
        if self._inflight:
            ids = list(self._inflight)
            self.pool.cancel(ids)
            for fut in list(self._inflight.values()):
                fut.cancel()
        stream, self._stream = self._stream, None
        if stream is not None:
            for key in stream.stateful_keys:
                self.pool.end_stream(key)

    async def shutdown(self, code: int = WSCloseCode.GOING_AWAY) -> None:
        await self.ws.close(code=code, message=b"server shutting down")
