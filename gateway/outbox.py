"""The one way out for a session's events: in order, each send bounded by ``send_timeout``.

Every event leaves through :meth:`Outbox.put`, the single place where a later layer can number
events or keep them for a client that reconnects; the close frame leaves after them.

A send almost always completes without waiting (the socket's buffer has room), so the deadline
is not a timer per event: one watchdog timer, armed while sends happen, looks at the send in
progress when it fires and cancels the sender only if that same send has run ``send_timeout``.
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
        self._sends = 0                       # sends started so far
        self._started: float | None = None    # when the send in progress started
        self._watchdog: asyncio.TimerHandle | None = None
        self._expired = False                 # the watchdog cancelled the sender

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
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        try:
            while True:
                out = await self._queue.get()
                sent_at = None
                try:
                    if not self.gone:
                        await self._send(out, task, loop)
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
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None

    async def _send(self, out: Outgoing, task: asyncio.Task[None],
                    loop: asyncio.AbstractEventLoop) -> None:
        """One event (and its notice), or TimeoutError once it has taken ``send_timeout``."""
        self._sends += 1
        self._started = loop.time()
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._started + self.send_timeout, self._check,
                                          task, loop, self._sends)
        try:
            if out.notice is not None:
                await self.ws.send_str(out.notice)
            await self.ws.send_str(out.text)
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                if task.uncancel() == 0:  # only the watchdog cancelled: the deadline passed
                    raise TimeoutError from None
            raise
        finally:
            self._started = None

    def _check(self, task: asyncio.Task[None], loop: asyncio.AbstractEventLoop,
               send: int) -> None:
        """The watchdog: cut off the send it was armed for if still running, else follow the
        send in progress (or rest until the next send arms it again)."""
        self._watchdog = None
        if self._started is None:
            return
        if self._sends == send:
            self._expired = True
            task.cancel()
            return
        self._watchdog = loop.call_at(self._started + self.send_timeout, self._check, task,
                                      loop, self._sends)
