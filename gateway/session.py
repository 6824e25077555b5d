"""One websocket, from the first ``start`` to the close: the I/O around a :class:`StreamCore`.

The reader is the only caller of ``ws.receive``; a sender task writes events in order. The core
decodes, segments, plans and settles; this class hands its jobs to the pool and its events to
the socket. A semaphore bounds a session's segments awaiting an answer or an unsent event: when
it runs out the reader stops reading and TCP pushes back on the client. A client that stops
reading is cut off after ``session.send_timeout``; broken bookkeeping closes with 1011.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from streamer.config import Config
from streamer.errors import PoolUnavailable, ProtocolError
from streamer.gateway.detection import Detection
from streamer.gateway.flight import Flight
from streamer.gateway.limits import InputLimits
from streamer.gateway.metrics import Metrics
from streamer.gateway.observe import SessionLog, SessionMetrics
from streamer.gateway.outbox import Outbox
from streamer.gateway.pool import Pool
from streamer.gateway.resume import Resumables
from streamer.gateway.segmenters import SegmenterFactory
from streamer.gateway.stream import StreamCore, stream_span
from streamer.gateway.stream_io import StreamDeps, StreamIO
from streamer.protocol import (
    ErrorEvent,
    FinalizeRequest,
    ResumeRequest,
    StartRequest,
    StopRequest,
    parse_client_message,
)
from streamer.tracing import trace_id_hex

log = logging.getLogger(__name__)

CLEAN_CLOSES = (WSCloseCode.OK, WSCloseCode.GOING_AWAY)  # a client that meant to leave

SESSION_REQUESTS = frozenset({"start", "stop", "keepalive", "finalize", "resume"})


class Session:
    def __init__(self, ws: web.WebSocketResponse, pool: Pool, config: Config, endpoint: str,
                 make_segmenters: SegmenterFactory, metrics: Metrics,
                 detection: Detection | None = None, transport: Any = None,
                 traceparent_header: str | None = None,
                 on_media: Callable[[float], str | None] | None = None,
                 resumables: Resumables | None = None) -> None:
        self.ws, self.pool, self.config, self.endpoint = ws, pool, config, endpoint
        self.id = uuid.uuid4().hex[:12]
        self.log = SessionLog(log, {"session": self.id})
        observe = SessionMetrics(metrics, endpoint)
        self._transport, self._traceparent_header = transport, traceparent_header
        self._make_segmenters = make_segmenters
        self._stream: StreamIO | None = None
        self._streams = 0  # streams opened on this socket
        self._flight = Flight(pool, config.session.max_inflight, observe, self._break)
        self._outbox = Outbox(ws, config.session.send_timeout,
                              lambda out, at: self._flight.sent(out, at), self._drop_connection)
        detection = detection if detection is not None else Detection(config, workers=0)
        release = detection.releaser(pool.release)
        self._deps = StreamDeps(observe, detection, release, InputLimits(config),
                                resumables if resumables is not None
                                else Resumables(0.0, release), self._outbox, on_media)
        self._dropped = False  # the socket went away without a close from the client
        self._cut_off = False  # we cut it: a client that does not read is not kept
        self._shutting_down = False
        self._receiving: asyncio.Future[Any] | None = None  # the reader's ws.receive()
        self._breaking: asyncio.Task[None] | None = None  # a 1011 close under way
        self.closed = asyncio.Event()

    @property
    def backlog_seconds(self) -> float:
        """Seconds of this session's audio handed to the pool and not yet answered."""
        return self._stream.core.backlog_seconds if self._stream is not None else 0.0

    # ---- the whole life of the socket ---------------------------------------------------
    async def run(self) -> None:
        sender = asyncio.create_task(self._outbox.run(), name=f"session-{self.id}-sender")
        try:
            await self._read_loop()
        except ProtocolError as exc:
            self.log.info("protocol error: %s", exc.message)
            await self._outbox.close(exc.close_code, exc.message, error=True)
        except PoolUnavailable as exc:
            self.log.error("cannot serve: %s", exc)
            await self._outbox.close(WSCloseCode.TRY_AGAIN_LATER, str(exc), error=True)
        except Exception as exc:  # a bug must close the socket with a reason, never hang it
            self.log.exception("session failed")
            await self._outbox.close(WSCloseCode.INTERNAL_ERROR,
                                     f"internal error: {type(exc).__name__}", error=True)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self._outbox.discard()
            stream, self._stream = self._stream, None
            if stream is not None and not (self._dropped and stream.keep_for_resume()):
                self._flight.withdraw()
                stream.close("session.abandoned", True)
            self.closed.set()

    async def _read_loop(self) -> None:
        cfg = self.config.session
        while not self._shutting_down:
            timeout = cfg.idle_timeout if self._stream is not None else cfg.start_timeout
            # Our own deadline: aiohttp restarts ws.receive(timeout) after every heartbeat pong.
            self._receiving = asyncio.ensure_future(self.ws.receive())
            try:
                async with asyncio.timeout(timeout):
                    msg = await self._receiving
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._shutting_down and task is not None and not task.cancelling():
                    break  # shutdown() took the receive back; this task goes on to drain
                # aiohttp cancels the handler when the connection is lost; not when we cut it
                self._dropped = not self._shutting_down and not self._cut_off
                raise
            except TimeoutError:
                return await self._timed_out(timeout)
            finally:
                self._receiving = None
            if msg.type == WSMsgType.TEXT:
                if not await self._on_text(msg.data):
                    return
            elif msg.type == WSMsgType.BINARY:
                await self._on_audio(msg.data)
            else:  # ERROR, CLOSE, CLOSING, CLOSED: the client left
                self._outbox.gone = msg.type != WSMsgType.ERROR or self.ws.closed
                self._dropped = msg.type != WSMsgType.CLOSE or msg.data not in CLEAN_CLOSES
                self.log.info("client left%s", " mid-stream" if self._stream else "")
                return
        await self._finish_stream(drain_timeout=self.config.server.drain_timeout)
        await self._outbox.close(WSCloseCode.GOING_AWAY, "server shutting down")

    async def _on_text(self, text: str) -> bool:
        """Handle a control message; False when the socket is done."""
        try:
            self._deps.limits.text(text, time.monotonic())
            msg = parse_client_message(text, SESSION_REQUESTS)
        except ProtocolError:
            await self._finish_stream()  # keep what was accepted before the bad message
            raise
        if isinstance(msg, StartRequest):
            await self._finish_stream()
            self._open_stream(msg)
        elif isinstance(msg, FinalizeRequest):
            if self._stream is None:
                raise ProtocolError("expected 'start' before 'finalize'")
            await self._stream.finalize()
        elif isinstance(msg, ResumeRequest):
            await self._resume(msg)
        elif isinstance(msg, StopRequest):
            if self._stream is None:
                self._outbox.event(ErrorEvent(0, "got 'stop' but no stream is running; send "
                                               "'start' first"))
            await self._finish_stream()
            if msg.disconnect:
                await self._outbox.close(WSCloseCode.OK, "stopped")
                return False
        # a keepalive needs no answer: any message resets the idle timer
        return True

    async def _on_audio(self, data: bytes) -> None:
        if self._stream is None:
            raise ProtocolError("expected 'start' before audio, got a binary frame")
        try:
            await self._stream.audio(data)
        except ProtocolError:
            await self._finish_stream()  # keep what was accepted before the bad frame
            raise

    # ---- streams ------------------------------------------------------------------------
    def _open_stream(self, start: StartRequest) -> None:
        self._streams += 1
        span = stream_span(self.id, self.endpoint, self._streams, start,
                           self._traceparent_header)
        self.log = SessionLog(log, {"session": self.id, "trace": trace_id_hex(span)})
        segmenters = self._make_segmenters(start, self.config)
        self._stream = StreamIO.open(self._deps, self.endpoint, self.config.session, self._flight,
                                     self.log, lambda emit: StreamCore(
                                         self.id, self._streams, start, segmenters,
                                         self.pool.stateful, emit, span))
        self.log.info("stream %d started on %s (%s)", self._streams, self.endpoint,
                      start.format.describe())

    async def _finish_stream(self, drain_timeout: float | None = None) -> None:
        """Flush everything through the pipeline and wait until every result is sent."""
        if self._stream is not None:
            await self._stream.finish(drain_timeout)  # if it raises, the session's end closes it
            self._stream = None

    async def _resume(self, msg: ResumeRequest) -> None:
        if self._stream is not None:
            await self._finish_stream()  # like any protocol error: keep what was accepted
            raise ProtocolError("'resume' while a stream is running on this socket",
                                WSCloseCode.POLICY_VIOLATION)
        held = self._deps.resumables.take(msg.resume_token, self.endpoint, msg.last_seq)
        assert held.core is not None
        self.log = SessionLog(log, {"session": self.id, "trace": trace_id_hex(held.core.span)})
        self._stream = StreamIO.resume(self._deps, held, msg.last_seq, self._break, self.log)
        self._flight = self._stream.flight

    # ---- endings ------------------------------------------------------------------------
    def _drop_connection(self) -> None:
        """A client that does not read cannot be sent a close frame either: cut the TCP."""
        self._outbox.gone = True
        self._cut_off = True
        if self._transport is not None:
            self._transport.abort()
        if self._receiving is not None:
            self._receiving.cancel()

    def _break(self, message: str) -> None:
        """From a callback, when the stream cannot go on: close 1011 (from a task, while the
        reader may be waiting), then cut the connection so the reader ends too."""
        if self._breaking is None:
            self._breaking = asyncio.ensure_future(
                self._outbox.close(WSCloseCode.INTERNAL_ERROR, message, error=True))
            self._breaking.add_done_callback(lambda _: self._drop_connection())

    async def _timed_out(self, waited: float) -> None:
        if self._stream is None:
            since = "after the last stream" if self._streams else "of connecting"
            raise ProtocolError(f"no 'start' within {waited:g} s {since}")
        await self._finish_stream()
        raise ProtocolError(f"no audio or control message for {waited:g} s")

    async def shutdown(self) -> None:
        """Server shutdown: deliver what the stream already sent, then close 1001."""
        self._shutting_down = True
        if self._receiving is not None:
            self._receiving.cancel()
