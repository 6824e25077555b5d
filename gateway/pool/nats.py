"""Workers reached through a NATS server, shared by any number of gateways.

Each worker (``streamer-worker --nats``) announces itself on its model's subject every
heartbeat interval with the subject that reaches it alone and its free capacity. A gateway
tracks the workers it hears (readiness is exactly that set) and makes each one a worker of its
:class:`Dispatcher`, so every guarantee of the local pool holds unchanged: the FIFO, the
per-worker in-flight limit, affinity of a stateful stream to the worker holding its state,
re-dispatch of what a dead worker held (a ``gone`` announcement, or silence longer than
``pool.heartbeat_timeout``), poison segments and the state-loss notice.

Requests go to a worker's own subject, not a queue group, because the Dispatcher must know who
holds what. Several gateways share a worker, so its limit is enforced where it is known: the
worker admits at most its capacity and answers ``busy`` beyond that; the gateway queues that
request again, first, and sends that worker nothing more until it finishes one or announces
free room. The broker: while the connection is down the gateway is not ready (admission
refuses new sessions); what workers held is kept for ``pool.nats_outage_grace`` seconds and
sent again on reconnect (messages in flight may have been lost), else answered with errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from streamer.bus import (
    CredentialsRefused,
    connect,
    connect_options,
    gateways_subject,
    is_auth_error,
    new_id,
    redact,
    workers_subject,
)
from streamer.config import Config
from streamer.errors import PoolUnavailable, WireError
from streamer.gateway.dispatch import Dispatcher
from streamer.gateway.pool.base import Job, PoolStats, WorkerInfo, heartbeat_ticks
from streamer.wire import Busy, GatewayBeat, InferenceResult, WorkerAnnounce, from_wire
from streamer.workers.models import model_class
from streamer.workers.models.base import parse_params

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Remote:
    local_id: int
    name: str
    subject: str
    host: str
    pid: int
    capacity: int
    last_heard: float
    answered: int = 0


class NatsPool:
    kind = "nats"

    def __init__(self, config: Config) -> None:
        self.config = config
        cls = model_class(config.model.name)
        parse_params(cls, config.model.params, config.model.name)
        self._stateful = cls.stateful
        pool = config.pool
        self.url = pool.nats_url
        connect_options(self.url, "")  # a bad URL fails here, before anything starts
        self._name = f"streamer-gateway@{socket.gethostname()}"
        self.gateway_id = new_id()
        self.inbox = f"{pool.nats_subject}.gateway.{self.gateway_id}"
        self._announce_subject = workers_subject(pool.nats_subject, config.model.name)
        self._beat_subject = gateways_subject(pool.nats_subject, config.model.name)
        self._dispatch = Dispatcher(pool.worker_inflight, pool.max_retries)
        self._remotes: dict[str, _Remote] = {}
        self._by_local: dict[int, _Remote] = {}
        self._ids = itertools.count(1)
        self._nc: Client | None = None
        self._out: deque[tuple[str, bytes, str]] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._down_since: float | None = None  # the broker connection dropped at
        self._outage_failed = False  # what was held in this outage got its errors
        self.lost = 0
        self.outages = 0
        self.joined = asyncio.Event()  # a worker has been heard: the gateway can be ready

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        where = redact(self.url)
        try:
            self._nc = await connect(self.url, self._name, self._on_error,
                                     disconnected_cb=self._on_disconnected,
                                     reconnected_cb=self._on_reconnected)
        except Exception as exc:
            if isinstance(exc, CredentialsRefused):
                raise PoolUnavailable(f"the NATS server at {where} refused this gateway's "
                                      "credentials (STREAMER_NATS_TOKEN, or STREAMER_NATS_USER "
                                      "and STREAMER_NATS_PASSWORD)") from None
            raise PoolUnavailable(f"cannot reach the NATS server at {where}: "
                                  f"{exc or type(exc).__name__}") from None
        await self._nc.subscribe(f"{self.inbox}.*", cb=self._on_reply)
        await self._nc.subscribe(self._announce_subject, cb=self._on_announce)
        await self._nc.flush(timeout=5)
        self._tasks = [asyncio.create_task(self._sender(), name="nats-send"),
                       asyncio.create_task(self._watch(), name="nats-heartbeats")]
        log.info("dispatching over NATS at %s (model %s, gateway %s); waiting for workers",
                 where, self.config.model.name, self.gateway_id)

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._dispatch.fail_all("the gateway is shutting down")
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 5)

    # ---- the broker ---------------------------------------------------------------------
    async def _on_error(self, exc: Exception) -> None:
        if is_auth_error(exc):
            log.error("the NATS server at %s refused this gateway's credentials",
                      redact(self.url))
        else:
            log.debug("NATS: %s", exc)

    async def _on_disconnected(self) -> None:
        if self._down_since is None and not self._stopping:
            self._down_since = time.monotonic()
            self.outages += 1
            log.warning("lost the NATS server at %s: not ready; keeping %d segments for %g s",
                        redact(self.url), self._dispatch.stats().inflight,
                        self.config.pool.nats_outage_grace)

    async def _on_reconnected(self) -> None:
        down = time.monotonic() - (self._down_since or time.monotonic())
        self._down_since = None
        self._outage_failed = False
        now = time.monotonic()
        for remote in self._remotes.values():
            remote.last_heard = now  # silence during the outage was the broker's
            self._dispatch.resend(remote.local_id)
        self._wake.set()
        log.info("NATS server at %s is back after %.1f s", redact(self.url), down)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected and self._down_since is None

    def _outage_expired(self) -> None:
        """The broker stayed away past the grace: every worker is out of reach."""
        for name in list(self._remotes):
            self._drop(name, "is unreachable (the NATS server is down)")
        self._dispatch.fail_all("the message broker is unreachable")

    # ---- workers ------------------------------------------------------------------------
    async def _on_announce(self, msg: Msg) -> None:
        try:
            note = from_wire(msg.data)
        except WireError as exc:
            log.warning("ignoring a malformed worker announcement: %s", exc)
            return
        if not isinstance(note, WorkerAnnounce) or note.model != self.config.model.name:
            return
        remote = self._remotes.get(note.worker)
        if note.gone:
            if remote is not None:
                self._drop(note.worker, "disconnected (it left, or its process died)")
            return
        if remote is None:
            remote = _Remote(next(self._ids), note.worker, note.subject, note.host, note.pid,
                             note.capacity, time.monotonic())
            self._remotes[note.worker] = remote
            self._by_local[remote.local_id] = remote
            self._dispatch.add_worker(remote.local_id, partial(
                self._send, note.subject, f"{self.inbox}.{remote.local_id}"))
            log.info("worker %s (host %s, pid %d, capacity %d) joined over NATS", note.worker,
                     note.host, note.pid, note.capacity)
            self.joined.set()
        remote.last_heard = time.monotonic()
        remote.pid = note.pid
        if note.free > 0:
            self._dispatch.has_room(remote.local_id)

    def _drop(self, name: str, reason: str) -> None:
        remote = self._remotes.pop(name, None)
        if remote is None:
            return
        self._by_local.pop(remote.local_id, None)
        if not self._stopping:
            self.lost += 1
        log.warning("worker %s (host %s, pid %d) %s", name, remote.host, remote.pid, reason)
        self._dispatch.remove_worker(remote.local_id, f"worker {name} {reason}")

    async def _on_reply(self, msg: Msg) -> None:
        try:
            note = from_wire(msg.data)
        except WireError as exc:
            log.warning("ignoring a malformed reply: %s", exc)
            return
        _, _, local = msg.subject.rpartition(".")  # the reply subject names the worker
        remote = self._by_local.get(int(local)) if local.isdigit() else None
        if remote is None:
            return  # a worker already given up: what it held went elsewhere
        if isinstance(note, InferenceResult):
            remote.answered += 1
            self._dispatch.on_result(note, remote.local_id)
        elif isinstance(note, Busy):
            self._dispatch.busy(remote.local_id, note.request_id)

    def _send(self, subject: str, reply: str, payload: bytes) -> None:
        self._out.append((subject, payload, reply))
        self._wake.set()

    async def _sender(self) -> None:
        """Publish in order from one task (the Dispatcher's send is synchronous)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            nc = self._nc
            while self._out and nc is not None and self.connected:
                subject, payload, reply = self._out.popleft()
                try:
                    await nc.publish(subject, payload, reply=reply)
                except Exception as exc:  # noqa: BLE001 - the outage logic re-sends
                    log.debug("publish to %s failed: %s", subject, exc)

    async def _watch(self) -> None:
        """Beat, drop silent workers, end an outage that lasts too long."""
        pool = self.config.pool
        async for now, late in heartbeat_ticks(pool.heartbeat_interval):
            if self._down_since is not None:
                self._out.clear()  # sent again on reconnect
                if (not self._outage_failed
                        and now - self._down_since > pool.nats_outage_grace):
                    self._outage_failed = True
                    log.error("the NATS server has been away for %.1f s: answering the "
                              "segments in flight with errors", now - self._down_since)
                    self._outage_expired()
                continue
            if self._nc is None or not self._nc.is_connected:
                continue
            for remote in list(self._remotes.values()):
                silent = now - remote.last_heard
                if silent > pool.heartbeat_timeout and not late:
                    self._drop(remote.name, f"stopped responding ({silent:.1f} s without a "
                                            "heartbeat)")
            with contextlib.suppress(Exception):
                await self._nc.publish(self._beat_subject,
                                       GatewayBeat(reply=self.inbox, sent_at=time.time()).to_wire())

    # ---- the Pool interface -------------------------------------------------------------
    @property
    def stateful(self) -> bool:
        return self._stateful

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def available(self) -> bool:
        """Workers may always join through the broker, and the broker may come back."""
        return not self._stopping

    def submit(self, job: Job) -> asyncio.Future[InferenceResult]:
        if self._stopping:
            raise PoolUnavailable("the gateway is shutting down")
        if self._down_since is not None and (time.monotonic() - self._down_since
                                             > self.config.pool.nats_outage_grace):
            raise PoolUnavailable("the message broker is unreachable; try again later")
        return self._dispatch.submit(job)

    def release(self, stateful_key: str) -> None:
        self._dispatch.release(stateful_key)

    def stats(self) -> PoolStats:
        d = self._dispatch.stats()
        here = socket.gethostname()
        up = self.connected
        workers = [WorkerInfo(r.local_id, r.pid if r.host == here else None, up,
                              d.per_worker.get(r.local_id, 0), 0, kind="nats",
                              address=f"{r.host}/{r.name}", answered=r.answered)
                   for r in self._remotes.values()]
        return PoolStats(kind=self.kind, size=len(workers),
                         ready=sum(1 for w in workers if w.ready), queued=d.queued,
                         inflight=d.inflight, restarts=0, redispatched=d.redispatched,
                         poisoned=d.poisoned, available=self.available, workers=workers,
                         lost=self.lost)

    def fleet(self) -> str:
        """The workers heard, for a log line: how many, their capacity, on how many hosts."""
        remotes = list(self._remotes.values())
        hosts = len({r.host for r in remotes})
        return (f"{len(remotes)} worker{'s' * (len(remotes) != 1)} through NATS at "
                f"{redact(self.url)} (capacity {sum(r.capacity for r in remotes)}, on "
                f"{hosts} host{'s' * (hosts != 1)})")

    def describe(self) -> dict[str, Any]:
        return {"url": redact(self.url), "connected": self.connected, "outages": self.outages}
