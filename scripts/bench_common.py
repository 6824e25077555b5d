"""What the benchmarks share: an in-process gateway, a loop-lag timer, subprocess helpers, tables.

The gateway runs in the benchmark's own process (so its event loop can be timed) while load comes
from separate processes (``streamer-loadtest``), keeping client CPU off the gateway's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from streamer.config import Config, load_config  # noqa: E402
from streamer.gateway.app import create_app  # noqa: E402
from streamer.gateway.looplag import LoopLagMonitor  # noqa: E402
from streamer.gateway.pool import make_pool  # noqa: E402
from streamer.gateway.state import POOL  # noqa: E402

# The model every load benchmark runs: the counter paying its cost in CPU time (``mode="cpu"``).
# With a wall-clock spin, a preempted worker or a thread waiting for the GIL still finishes "on
# time": two GIL-bound threads then look like two cores, and CPU taken by the gateway or the load
# generator costs the workers nothing. Real inference is paid in CPU time.
BENCH_MODEL = "counter"
BENCH_MODE = "cpu"


def make_config(workers: int, **settings: Any) -> Config:
    """Config from dotted settings, ignoring STREAMER_* variables so runs are comparable."""
    overrides: dict[str, Any] = {"pool.workers": workers, "server.heartbeat": 0,
                                 "server.log_level": "ERROR", "model.name": BENCH_MODEL,
                                 "model.mode": BENCH_MODE, "pool.worker_nice": 0}
    overrides.update(settings)
    return load_config(env={}, overrides=overrides)


@dataclass(frozen=True, slots=True)
class Gateway:
    url: str  # ws://127.0.0.1:PORT
    app: web.Application

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self.app[POOL].stats().workers if w.pid is not None]


@contextlib.asynccontextmanager
async def serve(config: Config, pool_kind: str = "embedded") -> AsyncIterator[Gateway]:
    """A started gateway on 127.0.0.1 (port 0) in this process."""
    logging.getLogger("streamer.gateway").setLevel(logging.ERROR)  # lag warnings are the point here
    # Worker processes learn the bench model by re-importing the main module (a bench script,
    # which imports this one). Run from the repository root: Python 3.11's forkserver resolves
    # its preloaded modules from its working directory, not from this process's sys.path.
    app = create_app(config, make_pool(config, pool_kind))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield Gateway(f"ws://{host}:{port}", app)
    finally:
        await runner.cleanup()


class LagMonitor(LoopLagMonitor):
    """The gateway's own loop-lag timer, every 10 ms, keeping each sample with its time so a
    benchmark can take the lags of one phase of its run."""

    def __init__(self, interval: float = 0.01) -> None:
        self.samples: list[tuple[float, float]] = []  # (perf_counter, lag in seconds)
        super().__init__(lambda lag: self.samples.append((time.perf_counter(), lag)),
                         interval=interval, warn_above=math.inf)

    def between(self, t0: float, t1: float) -> list[float]:
        return [lag for t, lag in self.samples if t0 <= t <= t1]


def echo_replies(conn: Connection, reply_size: int) -> None:
    """A peer process for round trips: answer every message with ``reply_size`` bytes."""
    reply = b"r" * reply_size
    while True:
        try:
            conn.recv_bytes()
        except EOFError:
            return
        conn.send_bytes(reply)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"n": len(a), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "max": float(a.max())}


async def run_python(*args: str, limit: float) -> str:
    """Run ``python ARGS`` from the repository root without blocking the loop; its stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={k: v for k, v in os.environ.items()
                                             if not k.startswith("STREAMER_")})
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"python {' '.join(args)} ran over {limit:.0f} s") from None
    if proc.returncode not in (0, 1):  # 1: the load test saw failures, still a report
        raise RuntimeError(f"python {' '.join(args)} exited {proc.returncode}: "
                           f"{err.decode()[-2000:]}")
    return out.decode()


async def loadtest(url: str, *args: str, limit: float) -> dict[str, Any]:
    """``streamer-loadtest --json`` in a separate process; its parsed report."""
    out = await run_python("-m", "streamer.loadtest", "--addr", url, "--json", "--no-progress",
                           *args, limit=limit)
    result: dict[str, Any] = json.loads(out)
    return result


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned table for the terminal (first column left, the rest right)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = ["| " + " | ".join(str(h) for h in headers) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def fmt_ms(seconds: float | None, digits: int = 2) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.{digits}f}"


def fmt_us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.0f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.1f}x"


def machine() -> dict[str, Any]:
    """What the figures ran on."""
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import aiohttp
    import msgpack
    import msgspec
    import soxr

    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}",
            "numpy": np.__version__, "soxr": soxr.__version__, "aiohttp": aiohttp.__version__,
            "msgpack": ".".join(map(str, msgpack.version)), "msgspec": msgspec.__version__,
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"), "idle": idle_policy()}


def idle_policy() -> str:
    """How an idle CPU waits, which sets the cost of waking it (cross-core round trips): the
    cpuidle driver, and for a VM guest's haltpoll driver how long it polls before halting."""
    cpuidle = Path("/sys/devices/system/cpu/cpuidle/current_driver")
    poll = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
    driver = cpuidle.read_text().strip() if cpuidle.exists() else "?"
    if driver == "haltpoll" and poll.exists():
        return f"cpuidle {driver}, guest_halt_poll_ns {poll.read_text().strip()}"
    return f"cpuidle {driver}"


def write_json(path: str | None, obj: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(obj, indent=2) + "\n")
