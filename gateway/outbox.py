"""The one way out for a session's events: in order, each send bounded by ``send_timeout``.

Every event leaves through :meth:`Outbox.put`, the single place where a later layer can number
events or keep them for a client that reconnects; the close frame leaves after them.

A send almost always completes without waiting (the socket's buffer has room), so the common
case costs no task switch and no timer: when the sender task is idle, ``put`` starts the send
itself, and only a send that has to wait (flow control: the client reads slowly) is handed to
the sender task to finish, ahead of anything put later. The deadline is one watchdog timer,
armed while sends wait, which cancels the sender only if the send it was armed for still runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any

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
        self._idle = False         # the sender task waits on an empty queue
        # A send ``put`` started that had to wait: (its event, the send, what it waits on,
        # when it started); the sender task finishes it when it takes that event.
        self._waiting: tuple[Outgoing, Coroutine[Any, Any, None], Any, float] | None = None
        self._sends = 0                       # sends the sender task has waited on
        self._started: float | None = None    # when the send it waits on started
        self._watchdog: asyncio.TimerHandle | None = None
        self._expired = False                 # the watchdog cancelled the sender

    def put(self, out: Outgoing) -> None:
        if self._idle and not self.gone:
            self._send_now(out)
        else:
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
        self._drop_waiting()
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
                self._idle = self._queue.empty()
                out = await self._queue.get()
                self._idle = False
                sent_at = None
                try:
                    waiting = self._waiting
                    if waiting is not None and waiting[0] is out:
                        self._waiting = None
                        if self.gone:
                            waiting[1].close()
                        else:
                            await self._bounded(_Resume(waiting[1], waiting[2]), waiting[3],
                                                task, loop)
                            sent_at = time.monotonic()
                    elif not self.gone:
                        await self._bounded(self._send(out), loop.time(), task, loop)
                        sent_at = time.monotonic()
                except TimeoutError:
                    log.warning("client has not read its results for %.0f s; ending session",
                                self.send_timeout)
                    self.gone = True
                    self._on_stuck()
                except (ConnectionError, RuntimeError) as exc:
                    self._lost(exc)
                finally:
                    self._report(out, sent_at)
                    self._queue.task_done()
        finally:
            self._idle = False
            self._drop_waiting()
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None

    # ---- internals ----------------------------------------------------------------------
    async def _send(self, out: Outgoing) -> None:
        if out.notice is not None:
            await self.ws.send_str(out.notice)
        await self.ws.send_str(out.text)

    def _send_now(self, out: Outgoing) -> None:
        """Send on the caller's turn of the loop; a send that has to wait goes to the sender."""
        send = self._send(out)
        started = asyncio.get_running_loop().time()
        try:
            waits_on = send.send(None)
        except StopIteration:
            self._report(out, time.monotonic())
            return
        except (ConnectionError, RuntimeError) as exc:
            self._lost(exc)
            self._report(out, None)
            return
        self._waiting = (out, send, waits_on, started)
        self._idle = False
        self._queue.put_nowait(out)

    async def _bounded(self, send: Any, started: float, task: asyncio.Task[None],
                       loop: asyncio.AbstractEventLoop) -> None:
        """Await ``send``, or raise TimeoutError once ``send_timeout`` passed since
        ``started``."""
        self._sends += 1
        self._started = started
        if self._watchdog is None:
            self._watchdog = loop.call_at(started + self.send_timeout, self._check, task,
                                          loop, self._sends)
        try:
            await send
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
        send in progress (or rest until a send that waits arms it again)."""
        self._watchdog = None
        if self._started is None:
            return
        if self._sends == send:
            self._expired = True
            task.cancel()
            return
        self._watchdog = loop.call_at(self._started + self.send_timeout, self._check, task,
                                      loop, self._sends)

    def _lost(self, exc: Exception) -> None:
        self.gone = True
        log.info("cannot send to client (%s)", exc)

    def _report(self, out: Outgoing, sent_at: float | None) -> None:
        try:
            self._on_sent(out, sent_at)
        except Exception:  # bookkeeping after a send must never stop the sender
            log.exception("after sending an event")

    def _drop_waiting(self) -> None:
        if self._waiting is not None:
            self._waiting[1].close()
            self._waiting = None


class _Resume:
    """Awaits a coroutine that was started outside any task and stopped at ``waits_on``: the
    awaiting task waits on that, then runs the coroutine on (a cancel is passed into it)."""

    def __init__(self, coro: Coroutine[Any, Any, None], waits_on: Any) -> None:
        self._coro, self._waits_on = coro, waits_on

    def __await__(self) -> Generator[Any, None, None]:
        waits_on = self._waits_on
        while True:
            try:
                yield waits_on
            except BaseException as exc:  # cancelled while waiting: the coroutine cleans up
                try:
                    waits_on = self._coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                waits_on = self._coro.send(None)
            except StopIteration:
                return
