"""The worker process: load the model, say ready, then answer requests until the gateway is gone.

The byte stream to the gateway is a socket wrapped in ``multiprocessing.connection.Connection``,
whose length-prefixed framing the gateway reads with asyncio. End of stream means the gateway
died or is shutting down: the worker exits, so no orphan outlives its gateway.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from shared.logs import setup_logging
from shared.wire import WorkerReady
from workers.models import make_model
from workers.runner import Runner

log = logging.getLogger("streamer.worker")

BOOT_FAILED_EXIT_CODE = 3


def run_worker(worker_id: int, sock: socket.socket, model_name: str,
               model_params: Mapping[str, Any], log_level: str = "INFO") -> None:
    """Entry point of an embedded worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway decides when workers stop
    setup_logging(log_level, process=f"worker-{worker_id}")
    conn = Connection(sock.detach())
    try:
        serve(conn, worker_id, model_name, model_params)
    finally:
        conn.close()


def serve(conn: Connection, worker_id: int, model_name: str,
          model_params: Mapping[str, Any]) -> None:
    started = time.perf_counter()
    try:
        model = make_model(model_name, model_params)
        model.warmup()
    except Exception:
        log.exception("worker %d could not load model %r", worker_id, model_name)
        sys.exit(BOOT_FAILED_EXIT_CODE)
    ready = WorkerReady(worker_id=worker_id, pid=os.getpid(), model=model_name,
                        warmup_time=time.perf_counter() - started)
    try:
        conn.send_bytes(ready.to_wire())
    except OSError:
        return
    log.debug("worker %d ready in %.3f s", worker_id, ready.warmup_time)
    runner = Runner(model, worker_id)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the gateway closed our stream or died
        reply = runner.handle(data)
        if reply is not None:
            try:
                conn.send_bytes(reply)
            except OSError:
                return
