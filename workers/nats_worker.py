"""``streamer-worker --nats``: one model process served to every gateway through NATS.

The process that talks to NATS runs an asyncio loop and never computes: the model runs in a
child process over a socketpair, with exactly the loop an embedded worker runs (``loop.py``),
so the model holds a core while this process keeps answering NATS (heartbeats, ``busy``).
This process is that child's gateway: it sends the config (from this worker's own settings),
heartbeats and requests, and reads results.

It announces itself on its model's subject every ``pool.heartbeat_interval`` with its own
subject, its capacity (``pool.worker_inflight``) and its free room. Requests come from any
number of gateways; it admits at most its capacity at once and answers ``busy`` to the rest,
so no worker is flooded however many gateways share it. Request ids are the gateways': each
is mapped to a local id for the model process and back. Model state of a stateful stream is
dropped when its gateway says so (``end_session``) or when that gateway's heartbeats stop for
``pool.heartbeat_timeout`` (it died). When the model process dies this process announces
``gone`` (gateways re-dispatch at once) and exits; its supervisor starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import socket
import time

from nats.aio.client import Client
from nats.aio.msg import Msg

from streamer.bus import (
    CredentialsRefused,
    connect,
    gateways_subject,
    is_auth_error,
    new_id,
    redact,
)
from streamer.bus import workers_subject as announce_subject
from streamer.config import Config
from streamer.errors import WireError
from streamer.link import WorkerLink
from streamer.logs import setup_logging
from streamer.wire import (
    Busy,
    EndSession,
    GatewayBeat,
    Heartbeat,
    InferenceRequest,
    InferenceResult,
    WorkerAnnounce,
    WorkerConfig,
    from_wire,
)
from streamer.workers.loop import Counter, run_worker

log = logging.getLogger("streamer.worker")

REFUSED_EXIT_CODE = 4  # the NATS server refused the credentials: retrying won't help
MODEL_DIED_EXIT_CODE = 1


class NatsWorker:
    def __init__(self, config: Config, link: WorkerLink, model_pid: int,
                 answered: Counter | None) -> None:
        self.config = config
        self.link = link
        self.model_pid = model_pid
        self.answered = answered
        pool = config.pool
        self.name = new_id()
        self.subject = f"{pool.nats_subject}.worker.{self.name}"
        self.capacity = pool.worker_inflight
        self._held: dict[int, tuple[str, int]] = {}  # local id -> (reply subject, its id)
        self._ids = itertools.count(1)
        self._keys: dict[str, str] = {}        # stateful key -> the gateway that uses it
        self._gateways: dict[str, float] = {}  # gateway -> when it was last heard
        self._nc: Client | None = None
        self._out: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    def announcement(self, gone: bool = False) -> bytes:
        return WorkerAnnounce(worker=self.name, subject=self.subject,
                              model=self.config.model.name, capacity=self.capacity,
                              free=max(0, self.capacity - len(self._held)),
                              host=socket.gethostname(), pid=self.model_pid,
                              sent_at=time.time(), gone=gone).to_wire()

    async def run(self) -> int:
        pool = self.config.pool
        where = redact(pool.nats_url)
        try:
            self._nc = await connect(pool.nats_url, f"streamer-worker@{socket.gethostname()}",
                                     self._on_error)
        except Exception as exc:
            if isinstance(exc, CredentialsRefused):
                log.error("the NATS server at %s refused this worker's credentials "
                          "(STREAMER_NATS_TOKEN, or STREAMER_NATS_USER and "
                          "STREAMER_NATS_PASSWORD)", where)
                return REFUSED_EXIT_CODE
            log.warning("cannot reach the NATS server at %s (%s)", where,
                        exc or type(exc).__name__)
            return MODEL_DIED_EXIT_CODE
        nc = self._nc
        await nc.subscribe(self.subject, cb=self._on_request)
        await nc.subscribe(gateways_subject(pool.nats_subject, self.config.model.name),
                           cb=self._on_gateway)
        beats = asyncio.create_task(self._beat())
        sender = asyncio.create_task(self._sender())
        log.info("worker %s serving model %s over NATS at %s (capacity %d)", self.name,
                 self.config.model.name, where, self.capacity)
        try:
            await self.link.run(self._on_result)
            log.error("the model process %d exited; leaving", self.model_pid)
            return MODEL_DIED_EXIT_CODE
        finally:
            beats.cancel()
            sender.cancel()
            with contextlib.suppress(Exception):
                await nc.publish(announce_subject(pool.nats_subject, self.config.model.name),
                                 self.announcement(gone=True))
                await asyncio.wait_for(nc.drain(), 2)

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
        if isinstance(note, EndSession):
            self._keys.pop(note.stateful_key, None)
            self.link.send(msg.data)
            return
        if not isinstance(note, InferenceRequest) or not msg.reply:
            return
        gateway = msg.reply.rpartition(".")[0]
        self._gateways[gateway] = time.monotonic()
        if len(self._held) >= self.capacity:
            self._out.put_nowait((msg.reply, Busy(request_id=note.request_id).to_wire()))
            return
        local = next(self._ids)
        self._held[local] = (msg.reply, note.request_id)
        if note.stateful_key is not None:
            self._keys[note.stateful_key] = gateway
        self.link.send(note.to_wire(request_id=local))

    def _on_result(self, result: InferenceResult, worker_id: int) -> None:
        held = self._held.pop(result.request_id, None)
        if held is None:
            return
        reply, rid = held
        if self.answered is not None:
            self.answered.value += 1
        self._out.put_nowait((reply, result.to_wire(request_id=rid)))

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
        """Announce, keep the model process's gateway-heartbeat fed, and drop the model state
        of streams whose gateway went silent."""
        assert self._nc is not None
        pool = self.config.pool
        subject = announce_subject(pool.nats_subject, self.config.model.name)
        while True:
            if self._nc.is_connected:
                with contextlib.suppress(Exception):
                    await self._nc.publish(subject, self.announcement())
                now = time.monotonic()
                gone = {g for g, t in self._gateways.items() if now - t > pool.heartbeat_timeout}
                for key in [k for k, g in self._keys.items() if g in gone]:
                    del self._keys[key]
                    self.link.send(EndSession(stateful_key=key).to_wire())
                for g in gone:
                    del self._gateways[g]
                    log.info("gateway %s went silent; dropped its streams' state", g)
            silent = time.monotonic() - self.link.last_heard
            if silent > pool.heartbeat_timeout:  # stuck: leave, so gateways re-dispatch
                log.error("the model process %d sent nothing for %.1f s; dropping it as hung",
                          self.model_pid, silent)
                self.link.abort("stopped responding")
            self.link.send(Heartbeat(worker_id=0, sent_at=time.time()).to_wire())
            await asyncio.sleep(pool.heartbeat_interval)


def worker_config(config: Config) -> WorkerConfig:
    pool = config.pool
    return WorkerConfig(worker_id=0, model=config.model.name, params=dict(config.model.params),
                        max_batch=pool.max_batch, max_wait=pool.max_wait_ms / 1000.0,
                        heartbeat_interval=pool.heartbeat_interval,
                        heartbeat_timeout=pool.heartbeat_timeout, nice=pool.worker_nice)


async def _serve(config: Config, sock: socket.socket, model_pid: int,
                 answered: Counter | None) -> int:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await _serve_model(config, sock, model_pid, answered)
    except asyncio.CancelledError:
        return 0  # stopped: the announcement of leaving went out on the way


async def _serve_model(config: Config, sock: socket.socket, model_pid: int,
                       answered: Counter | None) -> int:
    reader, writer = await asyncio.open_connection(sock=sock)
    link = WorkerLink(0, "nats", reader, writer)
    try:
        ready = await link.handshake(worker_config(config), config.pool.start_timeout)
    except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, WireError) as exc:
        log.error("the model process did not become ready: %s", exc or type(exc).__name__)
        return MODEL_DIED_EXIT_CODE
    log.info("model %s ready after %.2f s warm-up", config.model.name, ready.warmup_time)
    try:
        return await NatsWorker(config, link, model_pid, answered).run()
    finally:
        link.close()


def run_nats(config: Config, log_level: str, parent_pid: int,
             answered: Counter | None = None) -> None:
    """The child of ``streamer-worker``'s supervisor: start the model process, then serve it
    over NATS until it dies (exit 1) or the server refuses the credentials (exit 4)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    setup_logging(log_level, process=f"worker[{os.getpid()}]")
    ours, theirs = socket.socketpair()
    model = multiprocessing.get_context("fork").Process(
        target=_model_main, args=(ours, theirs, log_level), name="streamer-worker-model",
        daemon=True)
    model.start()  # before any thread or event loop exists here: fork is safe
    theirs.close()
    try:
        code = asyncio.run(_serve(config, ours, model.pid or 0, answered))
    finally:
        if model.exitcode is None:
            model.terminate()
            model.join(5)
    raise SystemExit(code)


def _model_main(ours: socket.socket, theirs: socket.socket, log_level: str) -> None:
    ours.close()  # else the model never sees end of stream when this process dies
    run_worker(0, theirs, log_level)
