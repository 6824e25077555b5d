"""``streamer-worker --nats nats://HOST:4222``: a model worker serving every gateway of a NATS
server (see ``nats_worker.py``).

This process is a small supervisor: it runs the worker in a child process and starts a new child
when that one dies (a crash, ``panic_rate``, kill -9): at once if the child had answered
something, with backoff while children keep dying without answering. It also kills a child
that hangs: one not ready within ``pool.start_timeout``, or whose event loop stopped stamping
its liveness for ``pool.heartbeat_timeout`` (stopped, or the GIL held that long); nothing in the
child itself can see that. Each child learns the name of the one it replaces and announces it
gone. It never exits on its own for those reasons, because honcho stops the whole group when
one process exits. It exits on SIGTERM/SIGINT, and when the NATS server refuses the credentials
(retrying cannot fix that; the message says so).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from streamer import __version__
from streamer.bus import connect_options, new_id, redact
from streamer.config import Config, PoolConfig, load_config
from streamer.errors import ConfigError
from streamer.logs import FORMAT_ENV, FORMATS, setup_logging
from streamer.workers.models import model_class
from streamer.workers.models.base import parse_params
from streamer.workers.nats_worker import REFUSED_EXIT_CODE, Vitals, run_nats
from streamer.workers.respawn import Backoff

log = logging.getLogger("streamer.worker")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer-worker",
        description="Run a model worker for every gateway of a NATS server. Credentials come "
                    "from STREAMER_NATS_TOKEN, or STREAMER_NATS_USER and "
                    "STREAMER_NATS_PASSWORD; the model and its settings from --model, "
                    "--config or STREAMER_MODEL__*.")
    parser.add_argument("--nats", metavar="URL",
                        help="the NATS server, nats://HOST:PORT or tls://HOST:PORT (default: "
                             "pool.nats_url, e.g. from $STREAMER_POOL__NATS_URL)")
    parser.add_argument("--model", help="the model to serve (default: model.name)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: "
                        "server.log_level)")
    parser.add_argument("--log-format", choices=FORMATS,
                        help="text or json (one object a line; default: server.log_format, "
                             "e.g. from $STREAMER_LOG_FORMAT)")
    parser.add_argument("--config", help="JSON or TOML config file (model.*, pool.nats_url, "
                        "pool.worker_inflight, pool.max_batch, pool.heartbeat_*, "
                        "pool.restart_backoff, server.log_level, server.log_format)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"streamer-worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    level = config.server.log_level
    os.environ[FORMAT_ENV] = config.server.log_format  # the processes it forks log alike
    setup_logging(level, process="worker-supervisor", log_format=config.server.log_format)
    where = redact(config.pool.nats_url)
    code = Supervisor(where, Backoff.from_config(config.pool), run_nats, (config, level),
                      REFUSED_EXIT_CODE, Watchdog.from_config(config.pool)).run()
    if code == 2:
        print(f"streamer-worker: the NATS server at {where} refused this worker's credentials "
              "(STREAMER_NATS_TOKEN, or STREAMER_NATS_USER and STREAMER_NATS_PASSWORD); not "
              "retrying", file=sys.stderr)
    raise SystemExit(code)


def _config(args: argparse.Namespace) -> Config:
    overrides: dict[str, str] = {}
    for flag, dotted in (("nats", "pool.nats_url"), ("model", "model.name"),
                         ("log_level", "server.log_level"), ("log_format", "server.log_format")):
        if getattr(args, flag):
            overrides[dotted] = getattr(args, flag)
    config = load_config(args.config, overrides=overrides)
    if not config.pool.nats_url:
        raise ConfigError("--nats nats://HOST:PORT is required (or pool.nats_url)")
    connect_options(config.pool.nats_url, "")  # a malformed URL fails here
    parse_params(model_class(config.model.name), config.model.params, config.model.name)
    return config


@dataclass(frozen=True, slots=True)
class Watchdog:
    """How long a worker process may take to become ready, then how long its liveness stamp
    may go stale, before its supervisor kills it as hung."""

    start_timeout: float
    timeout: float

    @classmethod
    def from_config(cls, pool: PoolConfig) -> Watchdog:
        return cls(pool.start_timeout, pool.heartbeat_timeout)

    def verdict(self, vitals: Vitals, started: float, now: float) -> str | None:
        """Why the child counts as hung, or None."""
        if not vitals.alive.value:
            if now - started > self.start_timeout:
                return f"was not ready within {self.start_timeout:g} s"
            return None
        silent = now - vitals.alive.value
        if silent > self.timeout:
            return f"showed no sign of life for {silent:.1f} s; dropping it as hung"
        return None


class Supervisor:
    """Runs the worker process, restarts it, and stops it on a signal (gunicorn's arbiter in
    miniature: signal handlers only set a flag; a self-pipe wakes the waiting loop)."""

    def __init__(self, where: str, backoff: Backoff, target: Callable[..., None],
                 args: tuple[object, ...], refused: int, watchdog: Watchdog) -> None:
        self.where = where
        self.target = target
        self.args = args
        self.refused = refused
        self.backoff = backoff
        self.watchdog = watchdog
        self.stopping = False
        self._ctx = multiprocessing.get_context("fork")  # no threads here: fork is safe, fast

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        idle_deaths = 0
        child: BaseProcess | None = None
        previous: str | None = None
        check = min(1.0, self.watchdog.timeout / 4)
        try:
            while not self.stopping:
                vitals = Vitals(answered=self._ctx.RawValue("q", 0),  # shared memory
                                alive=self._ctx.RawValue("d", 0.0))
                name = new_id()
                child = self._ctx.Process(target=self.target, name="streamer-worker-model",
                                          args=(*self.args, os.getpid(), vitals, name, previous))
                child.start()
                previous = name
                started = time.monotonic()
                while child.exitcode is None and not self.stopping:
                    wait([child.sentinel, wake_r], check)
                    _drain(wake_r)
                    why = self.watchdog.verdict(vitals, started, time.monotonic())
                    if why is not None and child.exitcode is None:
                        log.error("worker process %d %s", child.pid, why)
                        child.kill()
                        child.join()
                if self.stopping:
                    break
                code = child.exitcode
                answered = vitals.answered
                if code == self.refused:
                    return 2
                if code == 0:
                    log.info("the worker process left (NATS at %s); starting another",
                             self.where)
                    idle_deaths = 0
                    continue
                idle_deaths = self.backoff.next_idle_deaths(idle_deaths, bool(answered.value))
                delay = self.backoff.delay(idle_deaths)
                log.warning("worker process %d exited with %s after %.1f s and %d answers; "
                            "restarting%s", child.pid, _exit_text(code),
                            time.monotonic() - started, answered.value,
                            f" in {delay:.1f} s" if delay else "")
                deadline = time.monotonic() + delay
                while not self.stopping and time.monotonic() < deadline:
                    wait([wake_r], deadline - time.monotonic())
                    _drain(wake_r)
            return 0
        finally:
            if child is not None and child.pid is not None and child.exitcode is None:
                child.terminate()
                child.join(5.0)
                if child.exitcode is None:
                    child.kill()
                    child.join()
            signal.set_wakeup_fd(-1)
            os.close(wake_r)
            os.close(wake_w)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


if __name__ == "__main__":
    main()
