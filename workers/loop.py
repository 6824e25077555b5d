"""The embedded worker process loop (a NATS worker runs the same ``Runner`` on a thread instead,
see ``workers/nats_worker.py``).

On its byte stream (a socketpair from the gateway) a worker says hello, receives the gateway's
config, loads and warms up the model, says ready, then answers requests until the gateway is
gone. The stream is wrapped in ``multiprocessing.connection.Connection``, whose length-prefixed
framing the gateway reads with asyncio. A heartbeat thread tells the gateway the worker is alive
even while the model holds the main thread for seconds; the gateway's heartbeats tell the worker
the gateway is alive. Requests already waiting on the connection are taken together, up to
``max_batch`` within ``max_wait``, and run as one batch when the model batches.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading
import time
from multiprocessing.connection import Connection
from typing import Protocol

from streamer.errors import WireError
from streamer.logs import setup_logging
from streamer.tracing import exporter_configured, setup_tracing, shutdown_tracing
from streamer.wire import (
    EndSession,
    Heartbeat,
    InferenceRequest,
    InferenceResult,
    Message,
    WorkerConfig,
    WorkerHello,
    WorkerReady,
    from_wire,
    replace,
)
from streamer.workers.models import make_model
from streamer.workers.runner import Runner

log = logging.getLogger("streamer.worker")

GATEWAY_GONE_EXIT_CODE = 0  # the gateway closed the stream, died or went silent
BOOT_FAILED_EXIT_CODE = 3   # the model could not be built or warmed up
CONFIG_TIMEOUT = 30.0       # seconds from hello to the gateway's config


class Counter(Protocol):
    """Shared memory the worker's supervisor reads (a ``multiprocessing.RawValue``)."""

    value: int


class Channel:
    """A connection shared by the main thread (requests, results) and the heartbeat thread."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._send_lock = threading.Lock()
        # one poll object for the connection's life: ``Connection.poll`` builds a selector on
        # every call, which a worker would pay once per segment
        self._poller = select.poll()
        self._poller.register(conn.fileno(), select.POLLIN)

    def send(self, data: bytes) -> None:
        with self._send_lock:  # a frame is two writes when large: keep frames whole
            self.conn.send_bytes(data)

    def recv(self, timeout: float | None) -> Message | None:
        """The next message, or ``None`` if none came within ``timeout`` seconds."""
        if timeout is not None and not self._poller.poll(max(0.0, timeout) * 1000):
            return None
        return from_wire(self.conn.recv_bytes())


def run_worker(worker_id: int, sock: socket.socket, log_level: str = "INFO") -> None:
    """Entry point of an embedded worker process (the config comes over ``sock``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway decides when workers stop
    setup_logging(log_level, process=f"worker-{worker_id}")
    start_tracing()
    conn = Connection(sock.detach())
    try:
        code = serve(conn)
    finally:
        conn.close()
        shutdown_tracing()  # a multiprocessing child skips atexit: flush spans here
    if code:
        raise SystemExit(code)


def start_tracing() -> None:
    """Export this worker's spans when the ``OTEL_*`` variables ask for it (else spans are
    no-ops, costing the worker nothing)."""
    if exporter_configured():
        setup_tracing("streamer-worker")


def serve(conn: Connection, parent_pid: int | None = None,
          answered: Counter | None = None) -> int:
    """Run one worker connection to its end and return the process's exit code. With
    ``parent_pid``, exit as soon as that process (the worker's supervisor) is gone; with
    ``answered``, count the results sent there (a supervisor backs off only for children that
    die without answering anything)."""
    chan = Channel(conn)
    try:
        chan.send(WorkerHello(pid=os.getpid(), host=socket.gethostname()).to_wire())
        config = chan.recv(CONFIG_TIMEOUT)
    except (EOFError, OSError) as exc:
        log.info("the gateway closed the connection before sending a config (%s)", exc)
        return GATEWAY_GONE_EXIT_CODE
    except WireError as exc:
        log.error("the gateway sent a config this worker cannot read: %s", exc)
        return BOOT_FAILED_EXIT_CODE
    if not isinstance(config, WorkerConfig):
        got = "nothing" if config is None else f"a {config.KIND} message"
        log.error("expected a config from the gateway within %.0f s, got %s", CONFIG_TIMEOUT, got)
        return BOOT_FAILED_EXIT_CODE
    lower_priority(config.nice)
    stop = threading.Event()
    beats = threading.Thread(target=_heartbeats, args=(chan, config, stop, parent_pid),
                             name="heartbeat", daemon=True)
    beats.start()
    try:
        return _work(chan, config, answered)
    finally:
        stop.set()


def lower_priority(nice: int) -> None:
    """Workers yield the CPU to the gateway: its loop answers sockets while they compute."""
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) < nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        log.warning("could not lower the worker's priority to nice %d: %s", nice, exc)


def _work(chan: Channel, config: WorkerConfig, answered: Counter | None) -> int:
    wid = config.worker_id
    started = time.perf_counter()
    try:
        model = make_model(config.model, config.params)
        model.warmup()
    except Exception:
        log.exception("worker %d could not load model %r", wid, config.model)
        return BOOT_FAILED_EXIT_CODE
    ready = WorkerReady(worker_id=wid, pid=os.getpid(), model=config.model,
                        warmup_time=time.perf_counter() - started)
    batching = config.max_batch > 1 and model.batches()
    runner = Runner(model, wid)
    try:
        chan.send(ready.to_wire())
        log.debug("worker %d ready in %.3f s (batches of up to %d: %s)", wid, ready.warmup_time,
                  config.max_batch, batching)
        held: Message | None = None
        while True:
            try:
                msg, held = held or chan.recv(config.heartbeat_timeout), None
            except WireError as exc:  # the frame was read whole: the stream is still in step
                log.error("worker %d dropped a frame it cannot read: %s", wid, exc)
                continue
            if msg is None:
                log.warning("worker %d: no word from the gateway for %.1f s; giving it up", wid,
                            config.heartbeat_timeout)
                return GATEWAY_GONE_EXIT_CODE
            if isinstance(msg, InferenceRequest):
                batch = [(msg, time.time())]
                if batching:
                    held = _fill(chan, batch, config)
                for result in runner.run_batch(batch):
                    chan.send(encode_result(result))
                    if answered is not None:
                        answered.value += 1
            elif isinstance(msg, EndSession):
                model.end_stream(msg.stateful_key)
            elif not isinstance(msg, Heartbeat):
                log.error("worker %d got an unexpected %s message", wid, msg.KIND)
    except (EOFError, OSError):
        return GATEWAY_GONE_EXIT_CODE  # the gateway closed our stream or died


def encode_result(result: InferenceResult) -> bytes:
    """The result's envelope; if the output still cannot be packed, an error result instead,
    so one segment's output never costs the worker."""
    try:
        return result.to_wire()
    except Exception as exc:  # msgspec raises TypeError, OverflowError, ValueError
        log.error("worker %d cannot encode the result of request %d: %s", result.worker_id,
                  result.request_id, exc)
        return replace(result, output=None, error=(
            f"inference failed: unusable model output: {type(exc).__name__}: {exc}")).to_wire()


def _fill(chan: Channel, batch: list[tuple[InferenceRequest, float]],
          config: WorkerConfig) -> Message | None:
    """Add requests that arrive within ``max_wait`` to ``batch``, up to ``max_batch``. Returns
    a control message that came in between, to handle after the batch (it may concern the
    batch's own stream, like the end of a stateful session)."""
    deadline = time.perf_counter() + config.max_wait
    while len(batch) < config.max_batch:
        try:
            msg = chan.recv(max(0.0, deadline - time.perf_counter()))
        except WireError as exc:
            log.error("worker %d dropped a frame it cannot read: %s", config.worker_id, exc)
            continue
        if msg is None:
            return None
        if isinstance(msg, InferenceRequest):
            batch.append((msg, time.time()))
        elif not isinstance(msg, Heartbeat):
            return msg
    return None


def _heartbeats(chan: Channel, config: WorkerConfig, stop: threading.Event,
                parent_pid: int | None) -> None:
    """Say "alive" every interval. Runs beside a model that holds the GIL: Python hands the
    GIL over every few milliseconds, so beats stop only when the process is really stuck."""
    while not stop.wait(config.heartbeat_interval):
        if parent_pid is not None and os.getppid() != parent_pid:
            log.error("worker %d: its supervisor (pid %d) is gone; exiting", config.worker_id,
                      parent_pid)
            os._exit(GATEWAY_GONE_EXIT_CODE)  # the gateway sees the stream close
        try:
            chan.send(Heartbeat(worker_id=config.worker_id, sent_at=time.time()).to_wire())
        except OSError:
            return
