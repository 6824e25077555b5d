"""Each benchmark runs briefly (``--quick``) and reports sane numbers; the figures themselves
live in doc/07_performance.md, never in assertions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


def run_bench(name: str, tmp: Path, *args: str) -> tuple[str, dict[str, Any]]:
    out = tmp / f"{name}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    proc = subprocess.run([sys.executable, str(SCRIPTS / f"bench_{name}.py"), "--quick",
                           "--json", str(out), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every benchmark once, shared by the checks below."""
    tmp = tmp_path_factory.mktemp("bench")
    return {"decode": run_bench("decode", tmp),
            "overhead": run_bench("overhead", tmp),
            "loop_lag": run_bench("loop_lag", tmp),
            "capacity": run_bench("capacity", tmp, "--pools", "embedded,thread")}


def table_lines(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    rule = next(i for i, line in enumerate(lines) if set(line) <= {"-", " "} and "-" in line)
    return lines[rule + 1:]


def test_decode_reports_throughput_per_format(results):
    stdout, r = results["decode"]
    assert "48 kHz stereo s16" in stdout and "x real time" in stdout
    assert len(r["formats"]) == 4
    for f in r["formats"].values():
        assert f["x_realtime_cpu"] > 1 and f["pieces_x_realtime"] > 1 and f["frames"] > 0
        assert f["convert_cpu"] > 0 and 0 <= f["resample_cpu"] < f["seconds"]


def test_overhead_compares_the_gateway_with_raw_round_trips(results):
    stdout, r = results["overhead"]
    assert "raw Pipe round trip (baseline)" in stdout and "1.0x" in stdout
    assert r["segments"], "no segment sizes measured"
    for seg in r["segments"].values():
        for path in ("pipe", "asyncio_socketpair", "gateway"):
            p = seg[path]
            assert p["n"] > 0 and 0 < p["p50"] <= p["p99"] < 1.0
        assert 0 < seg["gateway_cpu_per_segment"] < 0.1


def test_loop_lag_measures_the_pools_and_the_baselines(results):
    stdout, r = results["loop_lag"]
    pools = [run["pool"] for run in r["runs"]]
    assert pools == ["embedded", "embedded-nice", "thread", "inline"]
    assert len(table_lines(stdout)) == 4
    for run in r["runs"]:
        assert run["lag"]["n"] > 10 and run["lag"]["p99"] >= run["lag"]["p50"] >= 0
        assert run["health"]["n"] > 5 and run["health"]["p50"] > 0
        assert run["results"] > 0 and run["every_segment_came_back"]


def test_capacity_searches_and_accounts_for_cpu(results):
    stdout, r = results["capacity"]
    assert r["theoretical"] == pytest.approx(r["workers"] / r["cost"])
    assert "sessions held" in stdout
    for run in r["runs"]:
        assert run["capacity"] >= 1 and run["probes"]
        assert all(p["finalization_p99"] > 0 for p in run["probes"])
        cpu = run["cpu"]
        assert cpu["passed"] and cpu["gateway"] > 0 and cpu["load_tester"] > 0
    embedded = next(run for run in r["runs"] if run["pool"] == "embedded")
    assert embedded["cpu"]["workers"] > 0


def report_module() -> Any:
    sys.path.insert(0, str(SCRIPTS))
    try:
        import bench_report
    finally:
        sys.path.remove(str(SCRIPTS))
    return bench_report


def section(name: str, result: dict[str, Any]) -> str:
    """The block ``bench_report`` writes into doc/07 for this one benchmark's results."""
    report = report_module()
    block = report.render({name: result, "machine": report.machine(), "when": "now"}, "abc")
    assert f"### {report.TITLES[name]}" in block and name in report.BENCHES
    return str(block)


def test_the_report_renders_tables_and_a_plot(results, tmp_path):
    pytest.importorskip("matplotlib")
    bench_report = report_module()
    merged: dict[str, Any] = {name: r for name, (_, r) in results.items()}
    merged["machine"] = merged["decode"]["machine"]
    merged["when"] = "now"
    block = bench_report.render(merged, "abc1234")
    assert block.startswith(bench_report.START) and block.endswith(bench_report.END)
    assert block.count("| --- |") == 0 and block.count("|---|") >= 5  # 5 markdown tables
    png = tmp_path / "plot.png"
    bench_report.plot(merged, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_vad_bench_compares_the_two_detectors() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_vad.py"), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()
            if line.strip() and line.split()[-1].isdigit()]
    assert len(rows) >= 3
    for row in rows:
        energy, silero, ratio = float(row[-5]), float(row[-4]), float(row[-3])
        assert 0 < energy < silero and ratio > 1  # the network costs more than a mean square


def test_overhead_compares_asyncio_and_uvloop_in_one_run(tmp_path):
    if not os.environ.get("CI"):
        pytest.importorskip("uvloop", reason="uvloop (server extra) is not installed")
    stdout, r = run_bench("overhead", tmp_path, "--loop", "both")
    assert r["loop"] == "both" and list(r["loops"]) == ["asyncio", "uvloop"]
    assert r["segments"] == r["loops"]["asyncio"]
    assert "on uvloop's event loop" in stdout and "Event loops compared (same run)" in stdout
    compared = stdout.split("Event loops compared (same run)")[1]
    for name, segs in r["loops"].items():
        assert segs.keys() == r["segments"].keys()
        assert all(0 < seg["gateway_cpu_per_segment"] < 0.1 for seg in segs.values())
        assert sum(f"  {name}  " in line for line in compared.splitlines()) == len(segs)


def test_nats_bench_compares_the_pool_with_a_bare_request(tmp_path):
    from tests.natsutil import require_nats_binary

    require_nats_binary()
    stdout, r = run_bench("nats", tmp_path)
    assert "bare nats-py request(), same payload (baseline)" in stdout
    for path in ("embedded", "nats", "bare"):
        assert 0 < r[path]["p50"] <= r[path]["p99"] and r[path]["n"] >= 100
    assert r["lag"]["segments_per_s"] > 0 and r["lag"]["n"] > 0
    assert r["one_gateway"] > 0 and r["two_gateways"] > 0
    block = section("nats", r)
    assert "| NATS pool (streamer-worker --nats) |" in block and "2 gateways" in block


def test_streaming_bench_runs_a_placement_and_the_cpu_comparison(tmp_path: Path) -> None:
    out = tmp_path / "streaming.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_streaming.py"), "--sessions", "1",
                           "--clips", "1", "--placements", "thread", "--cpu", "1",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    (row,) = r["ladders"]["thread"]
    assert row["finals"] == 3 and row["failed"] == 0 and row["interim_results"] > 0
    assert row["finalization_p50"] > 0 and row["lag"]["n"] > 0
    assert [c["interims"] for c in r["cpu"]] == [False, True, False, True]
    assert all(c["workers_cpu_per_audio_s"] > 0 and c["finals"] == 3 for c in r["cpu"])
    assert "interims on / off" in proc.stdout
    block = section("streaming", r)
    assert "| thread | 1 |" in block and "workers CPU per audio s, interims on / off" in block


def test_streaming_bench_runs_the_vosk_model(tmp_path: Path) -> None:
    from tests.voskutil import require_vosk

    require_vosk()
    out = tmp_path / "streaming_vosk.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_streaming.py"), "--model", "vosk",
                           "--sessions", "1", "--clips", "1", "--placements", "thread", "--cpu",
                           "0", "--no-warm", "--json", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["model"] == "vosk" and r["warm_up_pass"] is False
    (row,) = r["ladders"]["thread"]
    assert row["finals"] == 3 and row["failed"] == 0 and row["interim_results"] > 0
    assert row["gateway_cpu_per_audio_s"] > 0  # the thread placement decodes in the gateway


def test_wire_bench_times_the_three_codecs_on_both_messages(tmp_path):
    stdout, r = run_bench("wire", tmp_path)
    assert set(r["messages"]) == {"request, 0.5 s audio", "result"}
    for m in r["messages"].values():
        assert list(m["codecs"]) == ["field loop", "compiled", "msgspec (in use)"]
        assert all(0 < t < 1e-3 for c in m["codecs"].values() for t in c.values())
    assert len(table_lines(stdout)) == 6 and "1.00x" in stdout
