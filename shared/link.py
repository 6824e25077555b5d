"""The gateway's end of one worker's byte stream: an embedded worker's socketpair, and a NATS
worker's own model process (the same frames, the same handshake).

Length-prefixed msgpack frames read and written through asyncio, so the event loop never makes
a blocking call. The handshake (hello -> config -> ready) makes a worker run the gateway's model
settings and marks it ready only once its model is warmed up; after that the link reads results
and heartbeats until the stream ends, and remembers when it last heard from the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from streamer.errors import WireError
from streamer.wire import (
    HEADER,
    Heartbeat,
    InferenceResult,
    Message,
    WorkerConfig,
    WorkerHello,
    WorkerReady,
    frame,
    from_wire,
)

log = logging.getLogger(__name__)

MAX_FRAME = 64 << 20  # no worker message comes near this; a larger length is a broken stream


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if not 0 <= size <= MAX_FRAME:
        raise WireError(f"frame length {size} is not supported")
    return await reader.readexactly(size)


class WorkerLink:
    def __init__(self, worker_id: int, kind: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer: str = "") -> None:
        self.worker_id = worker_id
        self.kind = kind  # "embedded" or "nats"
        self.peer = peer
        self.pid: int | None = None
        self.host = ""
        self.ready = False
        self.answered = 0  # results received: a worker that answered something was working
        self.last_heard = time.monotonic()
        self.abort_reason: str | None = None
        self._reader = reader
        self._writer = writer

    def __repr__(self) -> str:
        where = f" from {self.peer}" if self.peer else ""
        return f"<{self.kind} worker {self.worker_id}{where} pid {self.pid}>"

    async def handshake(self, config: WorkerConfig, within: float) -> WorkerReady:
        """Hello in, config out, then wait for ready (the model loaded and warmed up)."""
        async with asyncio.timeout(within):
            hello = await self._read()
            if not isinstance(hello, WorkerHello):
                raise WireError(f"expected a hello message, got {hello.KIND}")
            self.pid, self.host = hello.pid, hello.host
            self.send(config.to_wire())
            while True:
                msg = await self._read()
                if isinstance(msg, WorkerReady):
                    self.ready = True
                    return msg
                if not isinstance(msg, Heartbeat):  # heartbeats flow during warm-up
                    raise WireError(f"expected a ready message, got {msg.KIND}")

    async def run(self, on_result: Callable[[InferenceResult, int], None]) -> str | None:
        """Hand results to ``on_result`` until the stream ends. Returns why the link was
        aborted, or None when the worker closed it (it exited or crashed)."""
        try:
            while True:
                msg = await self._read()
                if self.abort_reason is not None:
                    break  # given up: nothing it says counts any more
                if isinstance(msg, InferenceResult):
                    self.answered += 1
                    on_result(msg, self.worker_id)
                elif not isinstance(msg, Heartbeat):
                    log.warning("worker %d sent an unexpected %s message", self.worker_id,
                                msg.KIND)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except WireError as exc:
            self.abort(f"sent a bad frame ({exc})")
        self.ready = False
        self.close()
        return self.abort_reason

    def send(self, payload: bytes) -> None:
        if not self._writer.is_closing():
            self._writer.write(frame(payload))

    def abort(self, reason: str) -> None:
        """Give the worker up now: drop the connection without waiting for anything."""
        if self.abort_reason is None:
            self.abort_reason = reason
        self.ready = False
        self._writer.transport.abort()

    def close(self) -> None:
        """End of stream for the worker: it finishes nothing more and exits by itself."""
        self._writer.close()

    @property
    def closed(self) -> bool:
        return self._writer.is_closing()

    async def _read(self) -> Message:
        data = await read_frame(self._reader)
        self.last_heard = time.monotonic()
        return from_wire(data)
