#!/usr/bin/env python
"""Worker pool benchmarks: batching (max_batch 1 vs 4 vs 8) and the worker transport.

1. Batching. The real pool (2 embedded workers, the counter model, whose batch pays ``delay``
   once and ``constant_factor`` on all of its audio) under the same load for each max_batch, in
   one run: saturated (a closed loop keeping N segments outstanding: throughput, latency) and
   light (Poisson arrivals at a fraction of the max_batch=1 capacity: the latency cost of
   waiting up to max_wait_ms for a batch to fill). Ratios are against max_batch=1 of this run.
   ``worker_inflight`` is 2 x max_batch, so the next batch is queued while one runs.
2. Transport. Round trip of one segment (64,000 bytes = 1 s of 16 kHz float32, and 32,000)
   through the pool with a zero-cost model: an embedded worker (socketpair), against raw
   ``multiprocessing.connection`` echoes over TCP with and without TCP_NODELAY, measured in the
   same run. ``multiprocessing.connection`` leaves Nagle's algorithm on, and 16-64 KB messages
   then stall ~44 ms per round trip (doc/decisions/0002-worker-transport.md). Workers on other
   machines go through NATS (``scripts/bench_nats.py``).

The model sleeps by default (``--mode sleep``): its cost then does not depend on how busy the
two vCPUs are, and the table shows the pool's mechanics; ``--mode spin`` burns the CPU instead.

Usage: .venv/bin/python scripts/bench_batching.py [--seconds 3] [--quick] [--mode sleep|spin]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamer.config import Config, load_config  # noqa: E402
from streamer.gateway.pool import Job  # noqa: E402
from streamer.gateway.pool.supervisor import WorkerPool  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import echo_replies  # noqa: E402

BIN = Path(sys.executable).parent
KEY = "bench-batching"


def config(workers: int, **settings: Any) -> Config:
    overrides = {"pool.workers": workers, "server.log_level": "WARNING", **settings}
    return load_config(env={}, overrides=overrides)


def request(audio: bytes, seq: int = 0) -> Job:
    return Job("bench", 0, seq, 0.0, len(audio) / 4 / 16000, audio)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ---- 1. batching --------------------------------------------------------------------------
@dataclass
class BatchRow:
    max_batch: int
    inflight: int
    throughput: float
    mean_batch: float
    p50: float
    p99: float
    light_p50: float
    light_p99: float


async def saturate(pool: WorkerPool, audio: bytes, outstanding: int, seconds: float
                   ) -> tuple[float, list[float], list[int]]:
    latencies: list[float] = []
    sizes: list[int] = []
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            result = await pool.submit(request(audio))
            latencies.append(time.perf_counter() - t0)
            sizes.append(result.batch_size)
            assert result.ok, result.error

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(outstanding)))
    return len(latencies) / (time.perf_counter() - t0), latencies, sizes


async def open_loop(pool: WorkerPool, audio: bytes, rate: float, seconds: float) -> list[float]:
    rng = np.random.default_rng(1)
    latencies: list[float] = []
    futures = []
    start = time.perf_counter()
    due = start
    while due < start + seconds:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        sent = time.perf_counter()
        fut = pool.submit(request(audio))
        fut.add_done_callback(lambda f, s=sent: latencies.append(time.perf_counter() - s))
        futures.append(fut)
        due += rng.exponential(1.0 / rate)
    await asyncio.gather(*futures)
    return latencies


async def bench_batching(args: argparse.Namespace) -> list[BatchRow]:
    audio = np.zeros(round(args.segment * 16000), np.float32).tobytes()
    rows = []
    for max_batch in (1, 4, 8):
        inflight = max(2, 2 * max_batch)
        pool = WorkerPool(config(2, **{
            "model.delay": args.delay, "model.constant_factor": args.factor,
            "model.mode": args.mode, "pool.max_batch": max_batch,
            "pool.worker_inflight": inflight, "pool.max_wait_ms": args.max_wait_ms}))
        await pool.start()
        try:
            await saturate(pool, audio, args.outstanding, 0.3)  # warm up, not measured
            rate, lat, sizes = await saturate(pool, audio, args.outstanding, args.seconds)
            light = await open_loop(pool, audio, args.light_rate, args.seconds * 0.7)
        finally:
            await pool.stop()
        rows.append(BatchRow(max_batch, inflight, rate, float(np.mean(sizes)), pct(lat, 50),
                             pct(lat, 99), pct(light, 50), pct(light, 99)))
    return rows


# ---- 2. transport -------------------------------------------------------------------------
def _echo(address: Any, nodelay: bool) -> None:
    conn = Client(address, authkey=KEY.encode())
    if nodelay:
        _nodelay(conn)
    echo_replies(conn, 120)  # about a result envelope


def _nodelay(conn: Connection) -> None:
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.close()


def raw_round_trips(size: int, count: int, nodelay: bool) -> list[float]:
    """Blocking stdlib round trips to an echo process (run before the asyncio part)."""
    with Listener(("127.0.0.1", 0), authkey=KEY.encode()) as listener:
        proc = multiprocessing.get_context("fork").Process(
            target=_echo, args=(listener.address, nodelay), daemon=True)
        proc.start()
        conn = listener.accept()
        if nodelay:
            _nodelay(conn)
        payload = b"\0" * size
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            conn.send_bytes(payload)
            conn.recv_bytes()
            times.append(time.perf_counter() - t0)
        conn.close()
        proc.join(5)
    return times


async def pool_round_trips(pool: WorkerPool, size: int, count: int) -> list[float]:
    audio = b"\0" * size
    for _ in range(20):
        await pool.submit(request(audio))
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        result = await pool.submit(request(audio))
        times.append(time.perf_counter() - t0)
        assert result.ok
    return times


async def with_pool(cfg: Config, body: Callable[[WorkerPool], Awaitable[Any]]) -> Any:
    pool = WorkerPool(cfg)
    await pool.start()
    try:
        deadline = time.monotonic() + 30
        while pool.stats().ready < cfg.pool.workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not become ready")
            await asyncio.sleep(0.05)
        return await body(pool)
    finally:
        await pool.stop()


async def bench_transport(args: argparse.Namespace, raw: dict[tuple[str, int], list[float]]
                          ) -> dict[tuple[str, int], list[float]]:
    out = dict(raw)
    zero = {"model.delay": 0.0, "pool.max_batch": 1}
    name = "pool: embedded (socketpair)"

    async def body(pool: WorkerPool) -> None:
        for size in args.sizes:
            out[(name, size)] = await pool_round_trips(pool, size, args.count)

    await with_pool(config(1, **zero), body)
    return out


# ---- report -------------------------------------------------------------------------------
def print_batching(rows: list[BatchRow], args: argparse.Namespace) -> None:
    one = args.delay + args.factor * args.segment
    print(f"\nBatching: 2 workers, counter model ({args.mode}) delay {args.delay * 1e3:g} ms + "
          f"{args.factor:g} s/s of audio, segments of {args.segment:g} s ({one * 1e3:g} ms "
          f"alone); saturated: {args.outstanding} outstanding for {args.seconds:g} s; light: "
          f"Poisson {args.light_rate:g}/s; max_wait_ms {args.max_wait_ms:g}")
    print("| max_batch | worker_inflight | throughput /s | x batch 1 | mean batch | "
          "p50 ms | p99 ms | p99 x batch 1 | light p50 ms | light p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = rows[0]
    for r in rows:
        print(f"| {r.max_batch} | {r.inflight} | {r.throughput:.0f} | "
              f"{r.throughput / base.throughput:.2f} | {r.mean_batch:.2f} | {r.p50 * 1e3:.1f} | "
              f"{r.p99 * 1e3:.1f} | {r.p99 / base.p99:.2f} | {r.light_p50 * 1e3:.1f} | "
              f"{r.light_p99 * 1e3:.1f} |")


def print_transport(times: dict[tuple[str, int], list[float]], args: argparse.Namespace) -> None:
    print(f"\nRound trip of one segment, {args.count} times per row (model cost 0 in the pool "
          "rows; raw rows echo a 120-byte reply)")
    print("| path | bytes | p50 ms | p99 ms | p50 x embedded |")
    print("|---|---:|---:|---:|---:|")
    names = list(dict.fromkeys(name for name, _ in times))
    for size in args.sizes:
        base = pct(times[("pool: embedded (socketpair)", size)], 50)
        for name in names:
            t = times[(name, size)]
            print(f"| {name} | {size:,} | {pct(t, 50) * 1e3:.3f} | {pct(t, 99) * 1e3:.3f} | "
                  f"{pct(t, 50) / base:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="saturated phase, per row")
    parser.add_argument("--outstanding", type=int, default=32)
    parser.add_argument("--segment", type=float, default=0.25, help="seconds of audio")
    parser.add_argument("--delay", type=float, default=0.010, help="model seconds per call")
    parser.add_argument("--factor", type=float, default=0.02,
                        help="model seconds per second of audio")
    parser.add_argument("--mode", choices=("sleep", "spin"), default="sleep")
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--light-rate", type=float, default=50.0, help="segments per second")
    parser.add_argument("--count", type=int, default=300, help="round trips per transport row")
    parser.add_argument("--quick", action="store_true", help="short run, rough numbers")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.count = 1.0, 60
    args.sizes = (64000, 32000)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    raw = {}
    for size in args.sizes:  # blocking: before the event loop exists
        # the Nagle rows stall ~44 ms each: fewer of them
        raw[("raw mp.connection TCP, Nagle on", size)] = raw_round_trips(
            size, min(args.count, 40), nodelay=False)
        raw[("raw mp.connection TCP, TCP_NODELAY", size)] = raw_round_trips(
            size, args.count, nodelay=True)
    rows = asyncio.run(bench_batching(args))
    times = asyncio.run(bench_transport(args, raw))
    print_batching(rows, args)
    print_transport(times, args)


if __name__ == "__main__":
    main()
