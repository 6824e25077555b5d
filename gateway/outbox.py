"""The one way out for a session's events: in order, each send bounded by ``send_timeout``.

Every event leaves through :meth:`Outbox.put`, the single place where a later layer can number
events or keep them for a client that reconnects; the close frame leaves after them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiohttp import web

from streamer.gateway.ledger import Outgoing
from streamer.protocol import ErrorEvent, ServerEvent, close_reason, encode_event

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, ws: web.WebSocketResponse, send_timeout: float,
                 on_sent: Callable[[Outgoing, float | None], None],
                 on_stuck: Callable[[], None]) -> None:
        self.ws = ws
        self.send_timeout = send_timeout
        self.gone = False  # the client cannot be sent anything any more
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue()
        self._on_sent = on_sent    # (event, when it was sent or None if dropped)
        self._on_stuck = on_stuck  # the client has not read for send_timeout

    def put(self, out: Outgoing) -> None:
        self._queue.put_nowait(out)

    def event(self, event: ServerEvent) -> None:
        """An event outside any stream's order (session-level errors)."""
        self.put(Outgoing(encode_event(event)))

    async def close(self, code: int, reason: str, error: bool = False) -> None:
        """Close the socket after what was put so far (with ``error``: after an error event
        that says ``reason``); nothing to do when the client is gone."""
        if self.ws.closed or self.gone:
            return
        if error:
            self.event(ErrorEvent(0, reason))
        await self.join()  # bounded: the sender gives up after send_timeout
        await self.ws.close(code=code, message=close_reason(reason))

    def discard(self) -> None:
        """The socket is gone and the sender stopped: what is still queued was never sent."""
        while not self._queue.empty():
            out = self._queue.get_nowait()
            try:
                self._on_sent(out, None)
            finally:
                self._queue.task_done()

    async def join(self) -> None:
        """Until everything put so far was sent or dropped (bounded by the send timeout)."""
        await self._queue.join()

    async def run(self) -> None:
        while True:
            out = await self._queue.get()
            sent_at = None
            try:
                if not self.gone:
                    async with asyncio.timeout(self.send_timeout):
                        if out.notice is not None:
                            await self.ws.send_str(out.notice)
                        await self.ws.send_str(out.text)
                    sent_at = time.monotonic()
            except TimeoutError:
                log.warning("client has not read its results for %.0f s; ending session",
                            self.send_timeout)
                self.gone = True
                self._on_stuck()
            except (ConnectionError, RuntimeError) as exc:
                self.gone = True
                log.info("cannot send to client (%s)", exc)
            finally:
                try:
                    self._on_sent(out, sent_at)
                except Exception:  # bookkeeping after a send must never stop the sender
                    log.exception("after sending an event")
                finally:
                    self._queue.task_done()
