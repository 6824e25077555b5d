#!/usr/bin/env python
"""Run every benchmark, then write the figures into doc/07_performance.md and doc/img/.

Each benchmark runs in its own process (so one's workers cannot disturb the next) and writes its
results as JSON; this collects them into ``doc/img/bench_results.json``, draws
``doc/img/performance.png`` and replaces the block between the ``results`` markers of
``doc/07_performance.md`` with fresh tables and the machine they ran on.

With ``--only``, the other benchmarks' figures are kept from the last full run.

Usage: scripts/bench_all [--quick] [--only decode,overhead,loop_lag,capacity,nats,streaming]
    [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench_capacity
import bench_decode
import bench_loop_lag
import bench_nats
import bench_overhead
import bench_streaming
from bench_common import ROOT, machine

BENCHES = {"decode": bench_decode, "overhead": bench_overhead, "loop_lag": bench_loop_lag,
           "capacity": bench_capacity, "nats": bench_nats, "streaming": bench_streaming}
TITLES = {"decode": "Decode + resample throughput",
          "overhead": "Gateway overhead per segment",
          "loop_lag": "Event-loop lag and health-route latency under full model load",
          "capacity": "Capacity",
          "nats": "The NATS transport: a segment's round trip, loop lag, two gateways",
          "streaming": "Live transcription: embedded workers against a thread pool"}
DOC = ROOT / "doc" / "07_performance.md"
IMG = ROOT / "doc" / "img"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def run_bench(name: str, quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}.json"
        cmd = [sys.executable, str(ROOT / "scripts" / f"bench_{name}.py"), "--json", str(out)]
        if quick:
            cmd.append("--quick")
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, timeout=3600)
        print(f"== {name} took {time.perf_counter() - t0:.0f} s\n", flush=True)
        result: dict[str, Any] = json.loads(out.read_text())
    return result


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    fig.suptitle(f"streamer performance ({results['machine']['cores']} cores, "
                 f"{results['machine']['cpu']})", fontsize=11)

    ax = axes[0][0]
    if "loop_lag" in results:
        runs = results["loop_lag"]["runs"]
        names = [bench_loop_lag.LABELS.get(r["pool"], r["pool"]).replace(" (", "\n(")
                 .replace(", ", ",\n") for r in runs]
        lag = [r["lag"]["p99"] * 1e3 for r in runs]
        health = [r["health"]["p99"] * 1e3 for r in runs]
        x = range(len(runs))
        ax.bar([i - 0.2 for i in x], lag, 0.4, label="loop lag p99")
        ax.bar([i + 0.2 for i in x], health, 0.4, label="/health p99")
        ax.axhline(bench_loop_lag.TARGET_P99 * 1e3, color="red", ls="--", lw=1,
                   label="target 5 ms")
        ax.set_yscale("log")
        ax.set_xticks(list(x), names, fontsize=7)
        ax.set_ylabel("ms (log)")
        ax.legend(fontsize=7)
    ax.set_title("Event-loop lag under full model load", fontsize=10)

    ax = axes[0][1]
    if "overhead" in results:
        segs = results["overhead"]["segments"]
        labels = [k.replace(" (default)", "").replace(", ", "\n") for k in segs]
        x = range(len(segs))
        for off, key, label in ((-0.27, "pipe", "raw Pipe round trip"),
                                (0.0, "asyncio_socketpair", "socketpair, BufferedProtocol"),
                                (0.27, "gateway", "gateway overhead")):
            ax.bar([i + off for i in x], [r[key]["p50"] * 1e6 for r in segs.values()], 0.27,
                   label=label)
        ax.set_xticks(list(x), labels, fontsize=7)
        ax.set_ylabel("p50 us")
        ax.legend(fontsize=7)
    ax.set_title("Per-segment overhead (p50)", fontsize=10)

    ax = axes[1][0]
    if "decode" in results:
        fmts = results["decode"]["formats"]
        names = [k.replace(" (no resampling)", "\n(no resampling)") for k in fmts]
        ax.barh(names, [r["x_realtime_cpu"] for r in fmts.values()])
        ax.axvline(bench_decode.TARGET_X, color="red", ls="--", lw=1, label="target 1000x")
        ax.set_xscale("log")
        ax.set_xlabel("x real time, one core (log)")
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=7)
    ax.set_title("Decode + resample to 16 kHz", fontsize=10)

    ax = axes[1][1]
    if "capacity" in results:
        cap = results["capacity"]
        for r in cap["runs"]:
            pts = sorted((p["sessions"], (p["finalization_p99"] or 0) * 1e3)
                         for p in r["probes"])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=4,
                    label=f"{bench_capacity.LABELS.get(r['pool'], r['pool'])}: {r['capacity']}")
        ax.axhline(bench_capacity.TARGET_P99_MS, color="red", ls="--", lw=1,
                   label="p99 target 1 s")
        ax.axvline(cap["theoretical"], color="gray", ls=":", lw=1,
                   label=f"cores / cost = {cap['theoretical']:g}")
        ax.axvline(cap["theoretical"] * bench_capacity.TARGET_SHARE, color="green", ls=":",
                   lw=1, label="85 % of it")
        ax.set_yscale("log")
        ax.set_xlabel("concurrent real-time sessions")
        ax.set_ylabel("finalization p99, ms (log)")
        ax.legend(fontsize=7)
    ax.set_title("Capacity search (model 0.1 x real time)", fontsize=10)

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_section(m: dict[str, Any], when: str, commit: str) -> str:
    return (f"Ran {when} on: {m['cpu']}, {m['cores']} cores (a shared, noisy VM), "
            f"{m['system']}, Python {m['python']}, numpy {m['numpy']}, soxr {m['soxr']}, "
            f"aiohttp {m['aiohttp']}, msgspec {m.get('msgspec', '?')}"
            + (f", OPENBLAS_CORETYPE={m['openblas_coretype']}" if m["openblas_coretype"] else "")
            + (f", idle: {m['idle']}" if m.get("idle") else "")
            + f"; commit {commit}.")


def render(results: dict[str, Any], commit: str) -> str:
    parts = [START, "", machine_section(results["machine"], results["when"], commit), ""]
    for name, mod in BENCHES.items():
        if name in results:
            parts += [f"### {TITLES[name]}", "", mod.markdown(results[name]), ""]
    parts += ["![benchmarks](img/performance.png)", "", END]
    return "\n".join(parts)


def update_doc(block: str) -> None:
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        raise SystemExit(f"{DOC} lacks the {START} ... {END} markers")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(head + block + tail)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (checks the machinery)")
    p.add_argument("--only", help="comma-separated subset of " + ",".join(BENCHES))
    p.add_argument("--no-doc", action="store_true", help="do not touch doc/")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHES)
    unknown = set(names) - set(BENCHES)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {}
    saved = IMG / "bench_results.json"
    if args.only and saved.exists() and not args.no_doc:
        results = json.loads(saved.read_text())  # rerun a subset, keep the other figures
    results.update({"machine": machine(),
                    "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")})
    for name in names:
        results[name] = run_bench(name, args.quick)
    if args.no_doc:
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "?"
    IMG.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, IMG / "performance.png")
    update_doc(render(results, commit))
    print(f"wrote {IMG / 'bench_results.json'}, {IMG / 'performance.png'} and the results "
          f"block of {DOC}")


if __name__ == "__main__":
    main()
