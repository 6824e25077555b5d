"""The embedded worker process loop (a NATS worker runs the same ``Runner`` on a thread instead,
see ``workers/nats_worker.py``).

On its byte stream (a socketpair from the gateway) a worker says hello, receives the gateway's
config, loads and warms up the model, says ready, then answers requests until the gateway is
gone. Both ends cut the stream into length-prefixed frames with ``streamer.framing``. A
heartbeat thread tells the gateway the worker is alive even while the model holds the main
thread for seconds; the gateway's heartbeats tell the worker the gateway is alive. Requests
already waiting on the stream are taken together, up to ``max_batch`` within ``max_wait``, and
run as one batch when the model batches.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading
import time

from streamer.errors import WireError
from streamer.framing import FrameBuffer
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
    frame,
    from_wire,
    replace,
)
from streamer.workers.models import make_model
from streamer.workers.runner import Runner

log = logging.getLogger("streamer.worker")

GATEWAY_GONE_EXIT_CODE = 0  # the gateway closed the stream, died or went silent
BOOT_FAILED_EXIT_CODE = 3   # the model could not be built or warmed up
CONFIG_TIMEOUT = 30.0       # seconds from hello to the gateway's config


class Channel:
    """The worker's stream socket, shared by the main thread (requests, results) and the
    heartbeat thread. Read straight into a :class:`FrameBuffer`: one read usually brings a
    request's length and body, and requests that came together are taken without reading."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self._frames = FrameBuffer()
        self._send_lock = threading.Lock()
        # one poll object for the socket's life (``select.select`` would build its sets anew
        # for every segment)
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN)

    def send(self, data: bytes) -> None:
        with self._send_lock:  # frames stay whole between the two threads
            self.sock.sendall(frame(data))

    def recv(self, timeout: float | None) -> Message | None:
        """The next message, or ``None`` if none came within ``timeout`` seconds. Raises
        ``EOFError`` when the gateway closed the stream or broke its framing."""
        try:
            data = self._frames.next()
            if data is None:
                if timeout is not None and not self._poller.poll(max(0.0, timeout) * 1000):
                    return None
                data = self._read()
        except WireError as exc:
            log.error("the gateway's stream is out of step (%s); leaving it", exc)
            raise EOFError(f"the gateway's stream is out of step: {exc}") from None
        return from_wire(data)

    def _read(self) -> memoryview:
        """Block until a whole frame is in (the gateway writes each frame at once)."""
        frames = self._frames
        while True:
            n = self.sock.recv_into(frames.room())
            if not n:
                raise EOFError("the gateway closed the stream")
            frames.filled(n)
            data = frames.next()
            if data is not None:
                return data


def run_worker(worker_id: int, sock: socket.socket, log_level: str = "INFO") -> None:
    """Entry point of an embedded worker process (the config comes over ``sock``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway decides when workers stop
    setup_logging(log_level, process=f"worker-{worker_id}")
    start_tracing()
    try:
        code = serve(sock)
    finally:
        sock.close()
        shutdown_tracing()  # a multiprocessing child skips atexit: flush spans here
    if code:
        raise SystemExit(code)


def start_tracing() -> None:
    """Export this worker's spans when the ``OTEL_*`` variables ask for it (else spans are
    no-ops, costing the worker nothing)."""
    if exporter_configured():
        setup_tracing("streamer-worker")


def serve(sock: socket.socket) -> int:
    """Run one worker stream to its end and return the process's exit code."""
    chan = Channel(sock)
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
    beats = threading.Thread(target=_heartbeats, args=(chan, config, stop),
                             name="heartbeat", daemon=True)
    beats.start()
    try:
        return _work(chan, config)
    finally:
        stop.set()


def lower_priority(nice: int) -> None:
    """Workers yield the CPU to the gateway: its loop answers sockets while they compute."""
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) < nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        log.warning("could not lower the worker's priority to nice %d: %s", nice, exc)


def _work(chan: Channel, config: WorkerConfig) -> int:
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


def _heartbeats(chan: Channel, config: WorkerConfig, stop: threading.Event) -> None:
    """Say "alive" every interval. Runs beside a model that holds the GIL: Python hands the
    GIL over every few milliseconds, so beats stop only when the process is really stuck."""
    while not stop.wait(config.heartbeat_interval):
        try:
            chan.send(Heartbeat(worker_id=config.worker_id, sent_at=time.time()).to_wire())
        except OSError:
            return
