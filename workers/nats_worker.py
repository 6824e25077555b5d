"""``streamer-worker --nats``: one model served to every gateway through NATS.

One process holds both the NATS connection and the model. Its asyncio loop (the main thread)
only talks to NATS: requests in, results and ``busy`` out, announcements. The model runs on a
thread of its own (:class:`ModelThread`), fed through a queue and answering through
``call_soon_threadsafe``, so a request crosses no process boundary between the broker and the
model. (A model process behind a socketpair added about half of the broker's own round trip to
every segment.) Python hands the GIL to the loop every few milliseconds while the model
computes, the way the heartbeat thread of an embedded worker gets it; on Linux the model thread
alone is niced (``pool.worker_nice``), so the loop keeps its priority.

It announces itself on its model's subject every ``pool.heartbeat_interval`` with its own
subject, its capacity (``pool.worker_inflight``) and its free room. Requests come from any
number of gateways; it admits at most its capacity at once and answers ``busy`` to the rest,
so no worker is flooded however many gateways share it. Request ids are the gateways' own, so
each admitted request is held under a local token with the subject its answer goes to. Model
state of a stateful stream is dropped when its gateway says so (``end_session``) or when that
gateway's heartbeats stop for ``pool.heartbeat_timeout`` (it died).

Liveness is its supervisor's job (``__main__``), which cannot be stopped by what stops this
process: the loop stamps :attr:`Vitals.alive` every beat; a stale stamp (the process is stopped,
or something holds the GIL for seconds) gets it killed and replaced. The replacement announces
its predecessor ``gone`` as soon as it reaches NATS, so gateways re-dispatch what that one held
at once instead of after their heartbeat timeout; a worker that stops on SIGTERM announces
itself ``gone`` on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg

from streamer.bus import (
    CredentialsRefused,
    connect,
    gateways_subject,
    is_auth_error,
    redact,
)
from streamer.bus import workers_subject as announce_subject
from streamer.config import Config, PoolConfig
from streamer.errors import WireError
from streamer.logs import setup_logging
from streamer.tracing import shutdown_tracing
from streamer.wire import (
    Busy,
    EndSession,
    GatewayBeat,
    InferenceRequest,
    WorkerAnnounce,
    from_wire,
)
from streamer.workers.loop import encode_result, lower_priority, start_tracing
from streamer.workers.models import make_model
from streamer.workers.models.base import Model
from streamer.workers.runner import Runner

log = logging.getLogger("streamer.worker")

REFUSED_EXIT_CODE = 4  # the NATS server refused the credentials: retrying won't help
FAILED_EXIT_CODE = 1   # no NATS server, or the model failed to load or its thread died


class Counter(Protocol):
    """Shared memory holding a count (a ``RawValue("q")``)."""

    value: int


class Clock(Protocol):
    """Shared memory holding a ``time.monotonic()`` reading (a ``RawValue("d")``)."""

    value: float


@dataclass(frozen=True, slots=True)
class Vitals:
    """What a worker process shares with its supervisor, which reads it to decide about
    restarts (``answered``) and hangs (``alive``: 0 until the model is ready)."""

    answered: Counter
    alive: Clock


Item = tuple[int, InferenceRequest] | EndSession | None


class ModelThread:
    """The model on a thread of its own: requests in through a queue, in order with the ends of
    stateful streams; each result, encoded here, handed to ``deliver`` on the event loop."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop,
                 deliver: Callable[[int, bytes], None]) -> None:
        self.config = config
        self.loop = loop
        self.deliver = deliver
        self.ready: asyncio.Future[float | None] = loop.create_future()  # warm-up s, or failed
        self.ended: asyncio.Future[None] = loop.create_future()
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, token: int, request: InferenceRequest) -> None:
        self._queue.put((token, request))

    def end_stream(self, key: str) -> None:
        self._queue.put(EndSession(stateful_key=key))

    def stop(self) -> None:
        self._queue.put(None)

    def _main(self) -> None:
        try:
            model = self._load()
            if model is not None:
                self._serve(model)
        except Exception:
            log.exception("the model thread failed")
        finally:
            self._call(_settle, self.ended, None)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is leaving
            self.loop.call_soon_threadsafe(fn, *args)

    def _load(self) -> Model | None:
        lower_priority(self.config.pool.worker_nice)  # this thread only, on Linux
        started = time.perf_counter()
        try:
            model = make_model(self.config.model.name, dict(self.config.model.params))
            model.warmup()
        except Exception:
            log.exception("could not load model %r", self.config.model.name)
            self._call(_settle, self.ready, None)
            return None
        self._call(_settle, self.ready, time.perf_counter() - started)
        return model

    def _serve(self, model: Model) -> None:
        pool = self.config.pool
        runner = Runner(model, 0)
        batching = pool.max_batch > 1 and model.batches()
        held: Item = None
        while True:
            item, held = held or self._queue.get(), None
            if item is None:
                return
            if isinstance(item, EndSession):
                model.end_stream(item.stateful_key)
                continue
            batch = [(item, time.time())]
            if batching:
                held = self._fill(batch, pool)
            results = runner.run_batch([(request, at) for (_, request), at in batch])
            for ((token, _), _), result in zip(batch, results, strict=True):
                self._call(self.deliver, token, encode_result(result))

    def _fill(self, batch: list[tuple[tuple[int, InferenceRequest], float]],
              pool: PoolConfig) -> Item:
        """Add requests arriving within ``max_wait`` to ``batch``; return a control item that
        came in between, to handle after the batch (it may end the batch's own stream)."""
        deadline = time.perf_counter() + pool.max_wait_ms / 1000.0
        while len(batch) < pool.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                return None
            if not isinstance(item, tuple):
                return item
            batch.append((item, time.time()))
        return None


async def _first(*futures: asyncio.Future[Any]) -> None:
    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)


def _settle(future: asyncio.Future[object], outcome: object) -> None:
    if not future.done():
        future.set_result(outcome)


class NatsWorker:
    def __init__(self, config: Config, vitals: Vitals, parent_pid: int, name: str,
                 predecessor: str | None) -> None:
        self.config = config
        self.vitals = vitals
        self.parent_pid = parent_pid
        self.predecessor = predecessor
        pool = config.pool
        self.name = name
        self.subject = f"{pool.nats_subject}.worker.{self.name}"
        self.capacity = pool.worker_inflight
        self.stop = asyncio.Event()
        self._announce = announce_subject(pool.nats_subject, config.model.name)
        self._held: dict[int, str] = {}  # token -> the reply subject of its gateway
        self._tokens = itertools.count(1)
        self._keys: dict[str, str] = {}        # stateful key -> the gateway that uses it
        self._gateways: dict[str, float] = {}  # gateway -> when it was last heard
        self._nc: Client | None = None
        self._model: ModelThread | None = None
        self._out: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    def announcement(self, gone: bool = False, name: str | None = None) -> bytes:
        name = name or self.name
        return WorkerAnnounce(worker=name, subject=f"{self.config.pool.nats_subject}.worker."
                                                   f"{name}",
                              model=self.config.model.name, capacity=self.capacity,
                              free=max(0, self.capacity - len(self._held)),
                              host=socket.gethostname(), pid=os.getpid(),
                              sent_at=time.time(), gone=gone).to_wire()

    async def run(self) -> int:
        pool = self.config.pool
        where = redact(pool.nats_url)
        try:
            self._nc = nc = await connect(pool.nats_url,
                                          f"streamer-worker@{socket.gethostname()}",
                                          self._on_error)
        except Exception as exc:
            if isinstance(exc, CredentialsRefused):
                log.error("the NATS server at %s refused this worker's credentials "
                          "(STREAMER_NATS_TOKEN, or STREAMER_NATS_USER and "
                          "STREAMER_NATS_PASSWORD)", where)
                return REFUSED_EXIT_CODE
            log.warning("cannot reach the NATS server at %s (%s)", where,
                        exc or type(exc).__name__)
            return FAILED_EXIT_CODE
        tasks: list[asyncio.Task[None]] = []
        try:
            if self.predecessor is not None:  # died or was killed: what it held goes now
                with contextlib.suppress(Exception):
                    await nc.publish(self._announce,
                                     self.announcement(gone=True, name=self.predecessor))
            tasks.append(asyncio.create_task(self._beat(), name="beat"))
            return await self._serve(nc, tasks, where)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._model is not None:
                self._model.stop()
            await self._leave(nc)

    async def _serve(self, nc: Client, tasks: list[asyncio.Task[None]], where: str) -> int:
        pool = self.config.pool
        self._model = model = ModelThread(self.config, asyncio.get_running_loop(),
                                          self._on_result)
        model.start()
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            await _first(model.ready, stopping)
            if not model.ready.done():
                return 0
            warmup = model.ready.result()
            if warmup is None:
                return FAILED_EXIT_CODE
            log.info("model %s ready after %.2f s warm-up", self.config.model.name, warmup)
            self.vitals.alive.value = time.monotonic()
            await nc.subscribe(self.subject, cb=self._on_request)
            await nc.subscribe(gateways_subject(pool.nats_subject, self.config.model.name),
                               cb=self._on_gateway)
            tasks.append(asyncio.create_task(self._sender(), name="send"))
            await nc.publish(self._announce, self.announcement())
            log.info("worker %s serving model %s over NATS at %s (capacity %d)", self.name,
                     self.config.model.name, where, self.capacity)
            await _first(model.ended, stopping)
            if model.ended.done():
                log.error("the model thread ended; leaving")
                return FAILED_EXIT_CODE
            return 0
        finally:
            stopping.cancel()

    async def _leave(self, nc: Client) -> None:
        """Say ``gone`` (gateways re-dispatch at once), send what is pending, close."""
        with contextlib.suppress(Exception):
            if nc.is_connected:
                await nc.publish(self._announce, self.announcement(gone=True))
                await nc.flush(timeout=2)
        try:
            await asyncio.wait_for(nc.close(), 5)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this worker is being cancelled: let it through
            # else nats-py cancelled its own wait for the socket to close: it is closed
        except Exception:
            pass

    async def _on_error(self, exc: Exception) -> None:
        if is_auth_error(exc):
            log.error("the NATS server refused this worker's credentials")
        else:
            log.debug("NATS: %s", exc)

    async def _on_request(self, msg: Msg) -> None:
        try:
            note = from_wire(msg.data)
        except WireError as exc:
            log.warning("ignoring a malformed request: %s", exc)
            return
        assert self._model is not None and self._nc is not None
        if isinstance(note, EndSession):
            self._keys.pop(note.stateful_key, None)
            self._model.end_stream(note.stateful_key)
            return
        if not isinstance(note, InferenceRequest) or not msg.reply:
            return
        gateway = msg.reply.rpartition(".")[0]
        self._gateways[gateway] = time.monotonic()
        if len(self._held) >= self.capacity:
            with contextlib.suppress(Exception):  # the gateway re-sends after an outage
                await self._nc.publish(msg.reply, Busy(request_id=note.request_id).to_wire())
            return
        token = next(self._tokens)
        self._held[token] = msg.reply
        if note.stateful_key is not None:
            self._keys[note.stateful_key] = gateway
        self._model.submit(token, note)

    def _on_result(self, token: int, payload: bytes) -> None:
        reply = self._held.pop(token, None)
        if reply is None:
            return
        self.vitals.answered.value += 1
        self._out.put_nowait((reply, payload))

    async def _sender(self) -> None:
        assert self._nc is not None
        while True:
            subject, payload = await self._out.get()
            try:
                await self._nc.publish(subject, payload)
            except Exception as exc:  # noqa: BLE001 - the gateway re-sends after an outage
                log.debug("publish to %s failed: %s", subject, exc)

    async def _on_gateway(self, msg: Msg) -> None:
        with contextlib.suppress(WireError):
            note = from_wire(msg.data)
            if isinstance(note, GatewayBeat):
                self._gateways[note.reply] = time.monotonic()

    async def _beat(self) -> None:
        """Show the supervisor this loop runs, announce, and drop the model state of streams
        whose gateway went silent."""
        assert self._nc is not None
        pool = self.config.pool
        while True:
            if os.getppid() != self.parent_pid:
                log.error("the worker's supervisor (pid %d) is gone; leaving", self.parent_pid)
                self.stop.set()
                return
            if self.vitals.alive.value:
                self.vitals.alive.value = time.monotonic()
            if self._nc.is_connected and self._model is not None and self._model.ready.done():
                with contextlib.suppress(Exception):
                    await self._nc.publish(self._announce, self.announcement())
                self._forget_silent_gateways(pool.heartbeat_timeout)
            await asyncio.sleep(pool.heartbeat_interval)

    def _forget_silent_gateways(self, timeout: float) -> None:
        assert self._model is not None
        now = time.monotonic()
        gone = {g for g, t in self._gateways.items() if now - t > timeout}
        for key in [k for k, g in self._keys.items() if g in gone]:
            del self._keys[key]
            self._model.end_stream(key)
        for g in gone:
            del self._gateways[g]
            log.info("gateway %s went silent; dropped its streams' state", g)


async def _serve(config: Config, vitals: Vitals, parent_pid: int, name: str,
                 predecessor: str | None) -> int:
    worker = NatsWorker(config, vitals, parent_pid, name, predecessor)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.stop.set)  # a second one changes nothing
    return await worker.run()


def run_nats(config: Config, log_level: str, parent_pid: int, vitals: Vitals, name: str,
             predecessor: str | None = None) -> None:
    """The child of ``streamer-worker``'s supervisor: serve the model over NATS as worker
    ``name`` until told to stop (exit 0), the model fails (exit 1) or the server refuses the
    credentials (exit 4). ``predecessor``: the worker this one replaces, announced gone."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    setup_logging(log_level, process=f"worker[{os.getpid()}]")
    start_tracing()
    try:
        code = asyncio.run(_serve(config, vitals, parent_pid, name, predecessor))
    finally:
        shutdown_tracing()
    raise SystemExit(code)
