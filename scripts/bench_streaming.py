#!/usr/bin/env python
"""Live transcription under load: a streaming model (``transcribe``, or ``vosk`` with ``--model``)
in worker processes against the same model in a thread pool inside the gateway (the usual Python
server's design), one run.

Every placement runs the same pipeline: the gateway (in this process, its loop timed) segments
with the chosen detector (silero by default) and feeds each open speech segment to the stream's
recogniser every ``session.feed_interval`` while it is spoken; the thread placement runs those
pieces on a ``ThreadPoolExecutor`` in the gateway process, one stream's pieces in order, and
Silero's network on the loop (everything in one process, as the usual peer does). ``embedded``
runs Silero's network in the gateway's detector process (``pool.vad_workers`` 1);
``embedded-vad-on-loop`` is the same with the network on the event loop (``pool.vad_workers``
0), to show what moving it off the loop buys. Load
comes from ``streamer-loadtest`` in another process: N sessions each streaming an espeak-ng
speech fixture in real time, ``--clips`` times over: the English one for ``transcribe`` (6.25 s
per clip), the Korean one for ``vosk`` (7.26 s; its bundled model is Korean).

pocketsphinx holds the GIL while it decodes, so its thread pool decodes one stream at a time;
vosk releases it, so there the comparison is of two designs that both run in parallel.

Per placement and session count it reports the finalization latency (arrival of a final result
minus the time the frame holding its last sample was sent: it includes the detector's
``min_silence`` wait, 0.5 s by default), the gateway's event-loop lag, and the CPU of the gateway
and its workers per second of audio. The ladder stops at the first count whose finalization p99
reaches the target (1 s) or that loses a session. ``--cpu`` then compares CPU per audio second
with interim results on and off (embedded workers). For vosk each gateway first serves one
unrecorded pass (``--warm``): its recognisers decode several times cheaper once warm, and the
model keeps the recognisers of ended streams for the next ones, as a serving worker's are.

Usage (from the repository root): .venv/bin/python scripts/bench_streaming.py [--quick]
    [--model transcribe|vosk] [--sessions 1,2,4,6]
    [--placements embedded,embedded-vad-on-loop,thread]
    [--detector silero|energy] [--json FILE] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from pathlib import Path
from typing import Any

import psutil
from bench_common import (
    ROOT,
    LagMonitor,
    fmt_ms,
    loadtest,
    machine,
    markdown_table,
    percentiles,
    serve,
    table,
    write_json,
)

from streamer.config import Config, load_config

SPEECH = {"transcribe": ROOT / "tests" / "data" / "speech_3_sentences.wav",
          "vosk": ROOT / "tests" / "data" / "speech_ko_3_sentences.wav"}
TARGET = 1.0  # finalization p99, seconds
WORKERS = 2


VAD_ON_LOOP = "embedded-vad-on-loop"


def pool_kind(placement: str) -> str:
    return "embedded" if placement == VAD_ON_LOOP else placement


def make_config(placement: str, sessions: int, detector: str, model: str) -> Config:
    per_worker = sessions if placement == "thread" else math.ceil(sessions / WORKERS)
    vad_workers = 1 if placement == "embedded" else 0
    # transcribe: a decoder for every stream a worker holds (no replays after an eviction);
    # vosk: as many warm recognisers kept between one level's sessions and the next's
    sized = {"model.decoders": per_worker + 1} if model == "transcribe" else \
        {"model.spare": per_worker}
    return load_config(env={}, overrides={
        "pool.workers": WORKERS, "pool.worker_nice": 0, "server.heartbeat": 0,
        "server.log_level": "ERROR", "model.name": model, **sized, "vad.detector": detector,
        "pool.vad_workers": vad_workers})


def cpu_seconds(proc: psutil.Process) -> tuple[float, float]:
    """CPU time of this process (the gateway) and of its children (the workers)."""
    own = proc.cpu_times()
    children = 0.0
    for child in proc.children(recursive=True):
        try:
            t = child.cpu_times()
            children += t.user + t.system
        except psutil.Error:
            pass
    return own.user + own.system, children


async def level(url: str, sessions: int, clips: int, interims: bool,
                speech: Path) -> dict[str, Any]:
    """One load test against a running gateway; its report and what this process measured."""
    me = psutil.Process()
    monitor = LagMonitor()
    monitor.start()
    gw0, workers0 = cpu_seconds(me)
    t0 = time.perf_counter()
    args = ["-i", str(speech), "--endpoint", "segmented", "--real-time", "-n", str(sessions),
            "--streams", str(clips), "--ramp-up", "1.0", "--drain-timeout", "20"]
    if interims:
        args.append("--interim-results")
    report = await loadtest(url, *args, limit=clips * 7 * 3 + 60)
    t1 = time.perf_counter()
    gw1, workers1 = cpu_seconds(me)
    await monitor.stop()
    audio = report["audio_seconds"] or 1.0
    fin = report["finalization"]
    return {
        "sessions": sessions, "interims": interims, "audio_seconds": report["audio_seconds"],
        "finalization_p50": fin["p50"], "finalization_p99": fin["p99"],
        "finals": report["results"], "interim_results": report["interim_results"],
        "failed": report["failed"] + report["refused"], "errors": report["errors"],
        "lag": percentiles(monitor.between(t0, t1)),
        "gateway_cpu_per_audio_s": (gw1 - gw0) / audio,
        "workers_cpu_per_audio_s": (workers1 - workers0) / audio,
        "machine_busy_cores": report.get("machine_busy_cores"),
        "held": (report["failed"] + report["refused"] == 0 and fin["p99"] is not None
                 and fin["p99"] < TARGET)}


async def warm_up(url: str, sessions: int, model: str) -> None:
    """One unrecorded pass of ``sessions`` sessions and one clip: a vosk recogniser decodes
    several times cheaper once it has explored its decoding graph, and a serving worker's
    recognisers are warm."""
    row = await level(url, sessions, 1, False, SPEECH[model])
    print(f"  (warm-up pass, {sessions} sessions: finalization p99 "
          f"{fmt_ms(row['finalization_p99'], 0)} ms)", flush=True)


async def ladder(placement: str, counts: list[int], clips: int, detector: str,
                 interims: bool, model: str, warm: bool) -> list[dict[str, Any]]:
    rows = []
    config = make_config(placement, max(counts), detector, model)
    async with serve(config, pool_kind(placement)) as gw:
        url = f"{gw.url}/api/v1/segmented"
        if warm:
            await warm_up(url, max(counts), model)
        for n in counts:
            row = await level(url, n, clips, interims, SPEECH[model])
            row["placement"] = placement
            rows.append(row)
            print(f"  {placement:20} {n:2} sessions: finalization p99 "
                  f"{fmt_ms(row['finalization_p99'], 0)} ms, lag p99 "
                  f"{fmt_ms(row['lag']['p99'])} ms", flush=True)
            if not row["held"]:
                break
    return rows


async def cpu_ratio(sessions: int, clips: int, detector: str, model: str,
                    warm: bool) -> list[dict[str, Any]]:
    rows = []
    async with serve(make_config("embedded", sessions, detector, model), "embedded") as gw:
        url = f"{gw.url}/api/v1/segmented"
        if warm:
            await warm_up(url, sessions, model)
        for interims in (False, True, False, True):  # interleaved: the machine's load drifts
            row = await level(url, sessions, clips, interims, SPEECH[model])
            rows.append(row)
            print(f"  interims {'on ' if interims else 'off'}: workers "
                  f"{row['workers_cpu_per_audio_s']:.3f} CPU s per audio s", flush=True)
    return rows


def capacity(rows: list[dict[str, Any]]) -> int:
    return max((r["sessions"] for r in rows if r["held"]), default=0)


HEADERS = ["placement", "sessions", "finalization p50 ms", "finalization p99 ms", "held (< 1 s)",
           "loop lag p99 ms", "loop lag max ms", "gateway CPU s / audio s",
           "workers CPU s / audio s", "interim results"]


def row_cells(r: dict[str, Any]) -> list[object]:
    return [r["placement"], r["sessions"], fmt_ms(r["finalization_p50"], 0),
            fmt_ms(r["finalization_p99"], 0), "yes" if r["held"] else "no",
            fmt_ms(r["lag"]["p99"]), fmt_ms(r["lag"]["max"]),
            f"{r['gateway_cpu_per_audio_s']:.3f}", f"{r['workers_cpu_per_audio_s']:.3f}",
            r["interim_results"]]


def summary(result: dict[str, Any]) -> list[list[object]]:
    out: list[list[object]] = []
    caps = {p: capacity(rows) for p, rows in result["ladders"].items()}
    for p, n in caps.items():
        out.append([f"sessions held, {p}", n])
    one = {p: rows[0]["finalization_p99"] for p, rows in result["ladders"].items() if rows}
    if "embedded" in one and "thread" in one and one["thread"]:
        out.append(["finalization p99 at 1 session, embedded / thread",
                    f"{one['embedded'] / one['thread']:.2f}x"])
    lag = {p: {r["sessions"]: r["lag"]["p99"] for r in rows}
           for p, rows in result["ladders"].items()}
    if "embedded" in lag and VAD_ON_LOOP in lag:
        for n in sorted(set(lag["embedded"]) & set(lag[VAD_ON_LOOP])):
            out.append([f"loop lag p99 at {n} sessions, silero in its process / on the loop",
                        f"{fmt_ms(lag['embedded'][n])} / {fmt_ms(lag[VAD_ON_LOOP][n])} ms"])
    cpu = result.get("cpu") or []
    on = [r["workers_cpu_per_audio_s"] for r in cpu if r["interims"]]
    off = [r["workers_cpu_per_audio_s"] for r in cpu if not r["interims"]]
    if on and off:
        out.append(["workers CPU per audio s, interims on / off",
                    f"{sum(on) / len(on):.3f} / {sum(off) / len(off):.3f} = "
                    f"{(sum(on) / len(on)) / (sum(off) / len(off)):.2f}x"])
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    counts = [int(n) for n in args.sessions.split(",")]
    warm = args.model == "vosk" if args.warm is None else args.warm
    result: dict[str, Any] = {"machine": machine(), "model": args.model, "clips": args.clips,
                              "warm_up_pass": warm,
                              "detector": args.detector, "ladders": {}}
    for placement in args.placements.split(","):
        print(f"{placement}:", flush=True)
        result["ladders"][placement] = await ladder(placement, counts, args.clips,
                                                    args.detector, args.interims, args.model,
                                                    warm)
    if args.cpu:
        print("CPU, interim results on and off:", flush=True)
        result["cpu"] = await cpu_ratio(args.cpu, args.clips, args.detector, args.model, warm)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,2,3,4,6,8")
    parser.add_argument("--placements", default=f"embedded,{VAD_ON_LOOP},thread")
    parser.add_argument("--model", default="transcribe", choices=sorted(SPEECH),
                        help="the streaming model (vosk needs the vosk extra)")
    parser.add_argument("--warm", action=argparse.BooleanOptionalAction, default=None,
                        help="an unrecorded pass at the top session count before measuring "
                        "(default: for vosk only)")
    parser.add_argument("--clips", type=int, default=2,
                        help="clips per session (6.25 s each; 7.26 s for vosk)")
    parser.add_argument("--detector", default="silero", choices=["silero", "energy"])
    parser.add_argument("--interims", action=argparse.BooleanOptionalAction, default=True,
                        help="ask for interim results in the ladders")
    parser.add_argument("--cpu", type=int, default=2, metavar="SESSIONS",
                        help="sessions for the interims on/off CPU comparison (0: skip)")
    parser.add_argument("--quick", action="store_true", help="1 clip, sessions 1,2,4")
    parser.add_argument("--json")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.sessions = 1, "1,2,4"
    result = asyncio.run(run(args))
    print()
    if args.markdown:
        print(markdown(result))
    else:
        print(table(HEADERS, all_rows(result)))
        print()
        print(table(["", ""], summary(result)))
    write_json(args.json, result)


def all_rows(result: dict[str, Any]) -> list[list[object]]:
    rows = [row_cells(r) for rows in result["ladders"].values() for r in rows]
    return rows + [row_cells(dict(r, placement="embedded, cpu")) for r in result.get("cpu", [])]


def markdown(result: dict[str, Any]) -> str:
    """The ladders and the summary as markdown (``scripts/bench_report.py``'s section)."""
    return (markdown_table(HEADERS, all_rows(result)) + "\n\n"
            + markdown_table(["summary", "value"], summary(result)))


if __name__ == "__main__":
    main()
