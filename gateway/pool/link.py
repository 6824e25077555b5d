"""The gateway's end of one embedded worker's byte stream (its socketpair).

Length-prefixed msgpack frames read and written through asyncio, so the event loop never makes
a blocking call. The handshake (hello -> config -> ready) makes a worker run the gateway's model
settings and marks it ready only once its model is warmed up; after that the link reads results
and heartbeats until the stream ends, and remembers when it last heard from the worker.

:func:`open_link` connects a socket straight to the link: the transport reads into the link's
buffer and every whole frame is handled in that same callback (a result goes to the dispatcher
there and then), with no reader task and no future per frame.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import cast

from streamer.errors import WireError
from streamer.framing import FrameBuffer
from streamer.wire import (
    HEADER,
    Heartbeat,
    InferenceResult,
    Message,
    WorkerConfig,
    WorkerHello,
    WorkerReady,
    from_wire,
)

log = logging.getLogger(__name__)


class FrameProtocol(asyncio.BufferedProtocol):
    """Hands each length-prefixed frame to :meth:`frame_received` in the callback that read its
    last byte; the transport reads straight into the :class:`FrameBuffer`."""

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self._frames = FrameBuffer()
        self._stopped = False

    def frame_received(self, data: memoryview) -> None:
        """A whole frame: a view of the read buffer, good until this callback returns."""
        raise NotImplementedError

    def frame_error(self, exc: WireError) -> None:
        """The stream is out of step (a length no frame can have): nothing after it is read."""
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._frames.room()

    def buffer_updated(self, nbytes: int) -> None:
        frames = self._frames
        frames.filled(nbytes)
        while not self._stopped:
            try:
                data = frames.next()
            except WireError as exc:
                self._stopped = True
                self.frame_error(exc)
                break
            if data is None:
                return
            self.frame_received(data)
        frames.clear()  # what comes after a broken frame or an abort is not read

    def stop_reading_frames(self) -> None:
        """Hand on nothing more, even what is already in the buffer."""
        self._stopped = True


class WorkerLink(FrameProtocol):
    """One worker's connection: the handshake, then results to ``on_result`` as they arrive;
    the protocol of a connection :func:`open_link` makes, read by the transport."""

    def __init__(self, worker_id: int, kind: str, peer: str = "") -> None:
        super().__init__()
        self.worker_id = worker_id
        self.kind = kind  # "embedded" or "nats"
        self.peer = peer
        self.pid: int | None = None
        self.host = ""
        self.ready = False
        self.answered = 0  # results received: a worker that answered something was working
        self.last_heard = time.monotonic()
        self.abort_reason: str | None = None
        self._on_result: Callable[[InferenceResult, int], None] | None = None
        self._inbox: deque[Message] = deque()  # read before run(): the handshake takes them
        self._failure: Exception | None = None  # why nothing more will come
        self._waiter: asyncio.Future[None] | None = None  # the handshake waits for a message
        self._ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        where = f" from {self.peer}" if self.peer else ""
        return f"<{self.kind} worker {self.worker_id}{where} pid {self.pid}>"

    async def handshake(self, config: WorkerConfig, within: float) -> WorkerReady:
        """Hello in, config out, then wait for ready (the model loaded and warmed up)."""
        async with asyncio.timeout(within):
            hello = await self._next()
            if not isinstance(hello, WorkerHello):
                raise WireError(f"expected a hello message, got {hello.KIND}")
            self.pid, self.host = hello.pid, hello.host
            self.send(config.to_wire())
            while True:
                msg = await self._next()
                if isinstance(msg, WorkerReady):
                    self.ready = True
                    return msg
                if not isinstance(msg, Heartbeat):  # heartbeats flow during warm-up
                    raise WireError(f"expected a ready message, got {msg.KIND}")

    async def run(self, on_result: Callable[[InferenceResult, int], None]) -> str | None:
        """Hand results to ``on_result`` until the stream ends. Returns why the link was
        aborted, or None when the worker closed it (it exited or crashed)."""
        self._on_result = on_result
        while self._inbox and self.abort_reason is None:
            self._handle(self._inbox.popleft())
        if isinstance(self._failure, WireError):  # a bad frame came before run()
            self.abort(f"sent a bad frame ({self._failure})")
        if not self._ended.done():
            await self._ended
        self.ready = False
        self.close()
        return self.abort_reason

    def send(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            # length and body as two buffers: uvloop writes them with one writev, without
            # copying tens of KB of audio into a new frame first
            self.transport.writelines((HEADER.pack(len(payload)), payload))

    def abort(self, reason: str) -> None:
        """Give the worker up now: drop the connection without waiting for anything."""
        if self.abort_reason is None:
            self.abort_reason = reason
        self.ready = False
        self.stop_reading_frames()
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """End of stream for the worker: it finishes nothing more and exits by itself."""
        if self.transport is not None:
            self.transport.close()

    @property
    def closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    # ---- frames in ----------------------------------------------------------------------
    def frame_received(self, data: memoryview) -> None:
        self.last_heard = time.monotonic()
        if self._stopped:  # given up or broken
            return
        try:
            msg = from_wire(data)
        except WireError as exc:
            self.frame_error(exc)
            return
        if self._on_result is None:
            self._inbox.append(msg)
            self._wake()
        else:
            self._handle(msg)

    def frame_error(self, exc: WireError) -> None:
        self.stop_reading_frames()
        if self._on_result is not None:
            self.abort(f"sent a bad frame ({exc})")
        elif self._failure is None:  # the handshake (or run, when it starts) raises it
            self._failure = exc
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ready = False
        self.stop_reading_frames()
        if self._failure is None:
            self._failure = ConnectionResetError("the worker closed its connection")
        self._wake()
        if not self._ended.done():
            self._ended.set_result(None)

    def _handle(self, msg: Message) -> None:
        if type(msg) is InferenceResult:
            self.answered += 1
            assert self._on_result is not None
            try:
                self._on_result(msg, self.worker_id)
            except Exception:  # a bug in the receiver must not end the worker's stream
                log.exception("worker %d: handling result %d failed", self.worker_id,
                              msg.request_id)
        elif not isinstance(msg, Heartbeat):
            log.warning("worker %d sent an unexpected %s message", self.worker_id, msg.KIND)

    async def _next(self) -> Message:
        while not self._inbox:
            if self._failure is not None:
                raise self._failure
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._inbox.popleft()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


async def open_link(sock: socket.socket, worker_id: int, kind: str,
                    peer: str = "") -> WorkerLink:
    """A link whose connected ``sock`` is read by the event loop's transport straight into it."""
    link = WorkerLink(worker_id, kind, peer=peer)
    await asyncio.get_running_loop().create_unix_connection(lambda: link, sock=sock)
    return link
