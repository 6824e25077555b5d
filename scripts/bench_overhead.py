#!/usr/bin/env python
"""Gateway overhead per segment over the bare model time, against raw round trips of the payload.

One segment at a time (latency, not throughput) through the gateway's real path minus the
websocket: ``seg.audio.tobytes()`` into a ``Job``, the embedded pool (dispatcher, msgpack
envelope, length-prefixed frames on a socketpair read by a ``BufferedProtocol``, the worker's
loop and runner), the result back, the event encoded as JSON and released by the ``Reorderer``.
Overhead = that wall time minus the model's own ``inference_time`` (the counter model with no
cost). Baselines, same payload bytes, same run: a blocking ``multiprocessing.Pipe`` round trip to
an echo process (the floor) and the same echo over a socketpair whose transport reads into a
``BufferedProtocol`` cutting the frames (the transport the pool uses, without envelope or
dispatch).

Round trips between two processes cost very different amounts depending on whether they share a
core (a cheap switch on one CPU) or not (a cross-CPU wake-up, slow in a VM), and the scheduler
picks one at random per run; so every path is measured under both placements, pinned with
``sched_setaffinity``, and compared only with its baseline under the same placement. Paths run in
alternating rounds so drift in the shared vCPU's speed hits them alike.

Target (doc/07_performance.md): overhead p50 under 0.5 ms, and within 3x of the raw Pipe round
trip under the same placement.

The gateway side runs on the loop the server would choose (``--loop auto``, like
``server.event_loop``: uvloop's when it is installed); ``--loop asyncio`` or ``uvloop`` picks
one, and ``--loop both`` runs asyncio's, then uvloop's, in the same process, and adds a table
comparing the two.

Usage: .venv/bin/python scripts/bench_overhead.py [--count 3000] [--json out.json] [--quick]
       [--loop auto|asyncio|uvloop|both]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from bench_common import (
    echo_replies,
    fmt_us,
    machine,
    make_config,
    markdown_table,
    percentiles,
    ratio,
    table,
    write_json,
)

from streamer.errors import WireError
from streamer.gateway.event_loop import LoopChoice, choose_loop
from streamer.gateway.pool import Job, Pool, make_pool
from streamer.gateway.pool.link import FrameProtocol
from streamer.gateway.reorder import Reorderer
from streamer.protocol import SegmentEvent, encode_event
from streamer.wire import InferenceRequest, InferenceResult, frame

TARGET_P50 = 0.5e-3   # the target: p50 under 0.5 ms ...
TARGET_RATIO = 3.0    # ... and within 3x of a raw pipe round trip
SEGMENTS = {"0.1 s segment": 1600, "0.5 s segment (default)": 8000}


def sample_request(samples: int) -> InferenceRequest:
    return InferenceRequest(request_id=1, session_id="0123456789ab", channel=0, seq=0,
                            start_time=0.0, end_time=samples / 16000,
                            audio=np.zeros(samples, np.float32).tobytes(), sent_at=time.time())


def result_size() -> int:
    return len(InferenceResult(request_id=1, worker_id=0, output={"count": 8000},
                               queue_wait=1e-5, inference_time=1e-5).to_wire())


class PipePeer:
    """A blocking ``multiprocessing.Pipe`` to an echo process: the floor for one round trip."""

    def __init__(self, cpu: int) -> None:
        ctx = multiprocessing.get_context("forkserver")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=echo_replies, args=(child, result_size()), daemon=True)
        self.proc.start()
        child.close()
        assert self.proc.pid is not None
        os.sched_setaffinity(self.proc.pid, {cpu})

    def round_trips(self, payload: bytes, count: int) -> list[float]:
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            self.conn.send_bytes(payload)
            self.conn.recv_bytes()
            times.append(time.perf_counter() - t0)
        return times

    def close(self) -> None:
        self.conn.close()
        self.proc.join(5)


class EchoReader(FrameProtocol):
    """Each echoed frame resolves the round trip waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiter: asyncio.Future[int] | None = None

    def frame_received(self, data: memoryview) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(len(data))

    def frame_error(self, exc: WireError) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.frame_error(WireError("the echo process closed its socket"))


class SocketPeer:
    """The same echo over a socketpair whose transport reads into a ``BufferedProtocol`` that
    cuts the frames, like the embedded pool's link (without envelope or dispatch)."""

    async def start(self, cpu: int) -> None:
        ctx = multiprocessing.get_context("forkserver")
        ours, theirs = socket.socketpair()
        self.proc = ctx.Process(target=_echo_socket, args=(theirs, result_size()), daemon=True)
        self.proc.start()
        theirs.close()
        assert self.proc.pid is not None
        os.sched_setaffinity(self.proc.pid, {cpu})
        self.reader = EchoReader()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_unix_connection(lambda: self.reader, sock=ours)
        self.transport = transport

    async def round_trips(self, payload: bytes, count: int) -> list[float]:
        framed = frame(payload)
        loop = asyncio.get_running_loop()
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            self.reader.waiter = waiter = loop.create_future()
            self.transport.write(framed)
            await waiter
            times.append(time.perf_counter() - t0)
        return times

    async def close(self) -> None:
        self.transport.close()
        await asyncio.get_running_loop().run_in_executor(None, self.proc.join, 5)


def _echo_socket(sock: socket.socket, reply_size: int) -> None:
    echo_replies(Connection(sock.detach()), reply_size)


class PoolPath:
    """The gateway's path, one segment at a time; overhead = wall - model inference time."""

    async def start(self, cpu: int) -> None:
        self.pool: Pool = make_pool(make_config(1, **{"model.name": "counter"}), "embedded")
        await self.pool.start()
        for worker in self.pool.stats().workers:
            assert worker.pid is not None
            os.sched_setaffinity(worker.pid, {cpu})
        self.released: list[float] = []
        self.reorder: Reorderer[str] = Reorderer(
            lambda ch, item: self.released.append(time.perf_counter()))

    async def round_trips(self, samples: int, count: int) -> tuple[list[float], float]:
        """Overheads, and the gateway process's CPU seconds per segment."""
        audio = np.zeros(samples, np.float32)
        overheads = []
        c0 = time.process_time()
        for _ in range(count):
            t0 = time.perf_counter()
            seq = self.reorder.reserve(0)
            req = Job(session_id="0123456789ab", channel=0, seq=seq,
                      start_time=seq * samples / 16000, end_time=(seq + 1) * samples / 16000,
                      audio=audio.tobytes())
            result = await self.pool.submit(req)
            assert result.output is not None, result.error
            event = SegmentEvent(0, req.start_time, req.end_time, result.output, None)
            self.reorder.put(0, seq, encode_event(event))
            overheads.append(self.released[-1] - t0 - result.inference_time)
        return overheads, (time.process_time() - c0) / count

    async def close(self) -> None:
        await self.pool.stop()


async def run(count: int, rounds: int = 5) -> dict[str, Any]:
    """Every (placement, segment size): the three paths in alternating rounds."""
    cpus = sorted(os.sched_getaffinity(0))
    placements = {"same core": (cpus[0], cpus[0])}
    if len(cpus) > 1:
        placements["cross core"] = (cpus[0], cpus[1])
    original = os.sched_getaffinity(0)
    out: dict[str, Any] = {}
    try:
        for placement, (mine, peer) in placements.items():
            os.sched_setaffinity(0, {mine})
            pipe, sock, path = PipePeer(peer), SocketPeer(), PoolPath()
            await sock.start(peer)
            await path.start(peer)
            try:
                for name, samples in SEGMENTS.items():
                    payload = sample_request(samples).to_wire()
                    per = max(1, count // rounds)
                    pipe.round_trips(payload, per // 5)  # warm up
                    await sock.round_trips(payload, per // 5)
                    await path.round_trips(samples, per // 5)
                    t_pipe: list[float] = []
                    t_sock: list[float] = []
                    t_path: list[float] = []
                    cpu = 0.0
                    for _ in range(rounds):
                        # on the loop's own (pinned) thread: nothing else runs meanwhile
                        t_pipe += pipe.round_trips(payload, per)
                        t_sock += await sock.round_trips(payload, per)
                        overheads, c = await path.round_trips(samples, per)
                        t_path += overheads
                        cpu += c / rounds
                    out[f"{name}, {placement}"] = {
                        "segment": name, "placement": placement,
                        "payload_bytes": len(payload), "pipe": percentiles(t_pipe),
                        "asyncio_socketpair": percentiles(t_sock),
                        "gateway": percentiles(t_path), "gateway_cpu_per_segment": cpu}
            finally:
                pipe.close()
                await sock.close()
                await path.close()
    finally:
        os.sched_setaffinity(0, original)
    return out


HEADERS = ["segment, placement", "payload", "path", "p50 us", "p90 us", "p99 us", "p50 vs pipe",
           "target"]


def rows(result: dict[str, Any]) -> list[list[object]]:
    out: list[list[object]] = []
    for name, r in result["segments"].items():
        base = r["pipe"]["p50"]
        for key, label in (("pipe", "raw Pipe round trip (baseline)"),
                           ("asyncio_socketpair", "socketpair, BufferedProtocol, no envelope"),
                           ("gateway", "gateway overhead (wall - model)")):
            p = r[key]
            target = ""
            if key == "gateway":
                met = p["p50"] < TARGET_P50 and p["p50"] / base <= TARGET_RATIO
                target = (f"p50 < {TARGET_P50 * 1e3:.1f} ms and <= {TARGET_RATIO:.0f}x: "
                          f"{'met' if met else 'NOT met'}")
            out.append([name, f"{r['payload_bytes']} B", label, fmt_us(p["p50"]),
                        fmt_us(p["p90"]), fmt_us(p["p99"]), ratio(p["p50"], base), target])
        out.append([name, "", "gateway CPU per segment (gateway process only)",
                    fmt_us(r["gateway_cpu_per_segment"]), "", "", "", ""])
    return out


def markdown(result: dict[str, Any]) -> str:
    loop = result.get("loop", "asyncio")
    loop = "asyncio" if loop == "both" else loop  # "segments" holds the first loop's figures
    return (f"The gateway side on {loop}'s event loop.\n\n"
            + markdown_table(HEADERS, rows(result)))


LOOP_HEADERS = ["segment, placement", "loop", "gateway CPU per segment us", "vs asyncio",
                "gateway overhead p50 us", "p50 vs pipe"]


def loop_rows(loops: dict[str, dict[str, Any]]) -> list[list[object]]:
    """Gateway CPU and overhead per segment, one row per loop under each placement."""
    out: list[list[object]] = []
    base = loops.get("asyncio", {})
    for name in next(iter(loops.values())):
        for loop, segs in loops.items():
            r = segs[name]
            ref = base.get(name, r)["gateway_cpu_per_segment"]
            out.append([name, loop, fmt_us(r["gateway_cpu_per_segment"]),
                        ratio(r["gateway_cpu_per_segment"], ref), fmt_us(r["gateway"]["p50"]),
                        ratio(r["gateway"]["p50"], r["pipe"]["p50"])])
    return out


def run_on(loop: LoopChoice, count: int) -> dict[str, Any]:
    with asyncio.Runner(loop_factory=loop.factory) as runner:
        return runner.run(run(count))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=3000, help="segments per path and size")
    p.add_argument("--quick", action="store_true", help="a few hundred segments, for tests")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop", "both"), default="auto",
                   help="the gateway side's event loop (auto: the server's choice, uvloop's "
                   "when installed); both: asyncio's, then uvloop's")
    args = p.parse_args()
    count = 200 if args.quick else args.count
    choices = [choose_loop(name) for name in
               (("asyncio", "uvloop") if args.loop == "both" else (args.loop,))]
    loops = {choice.name: run_on(choice, count) for choice in choices}
    result = {"benchmark": "overhead", "machine": machine(), "count": count,
              "loop": "both" if len(loops) > 1 else next(iter(loops)),
              "segments": next(iter(loops.values())), "loops": loops}
    for name, segs in loops.items():
        print(f"Gateway overhead per segment on {name}'s event loop, {count} segments one at "
              "a time per path, 1 worker, counter model at no cost; gateway and peer pinned to "
              "one core or two")
        print(table(HEADERS, rows({"segments": segs})))
    if len(loops) > 1:
        print("Event loops compared (same run)")
        print(table(LOOP_HEADERS, loop_rows(loops)))
    write_json(args.json, result)


if __name__ == "__main__":
    main()
