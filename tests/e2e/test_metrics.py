"""/metrics after real sessions: the metrics exist and their values match what was streamed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

import streamer
from streamer.client import stream_audio
from streamer.protocol import AudioFormat, SegmentEvent
from tests.audio_gen import make_pcm


async def scrape_text(server) -> str:
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/metrics")) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return await r.text()


async def scrape(server) -> dict[tuple[str, tuple], float]:
    text = await scrape_text(server)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_metrics_after_sessions_match_what_was_streamed(gateway):
    server = await gateway(workers=2, model__delay=0.02, model__mode="spin")
    url = str(server.make_url("/api/v1/simple"))
    fmt = AudioFormat(2, 48000, 16, False)
    reports = [await stream_audio(url, fmt, make_pcm(fmt, 2.2), chunk_size=3840,
                                  real_time=True) for _ in range(2)]
    results = sum(isinstance(e, SegmentEvent) for r in reports for e in r.events)
    assert results == 2 * 2 * 5  # 2 sessions x 2 channels x 5 chunks
    m = await scrape(server)
    simple = "/api/v1/simple"
    assert abs(value(m, "streamer_media_seconds_total", endpoint=simple) - 4.4) < 0.002
    assert value(m, "streamer_segments_total", endpoint=simple, outcome="ok") == results
    assert value(m, "streamer_streams_total", endpoint=simple) == 2
    assert value(m, "streamer_active_sessions", endpoint=simple) == 0
    assert value(m, "streamer_inference_seconds_count") == results
    assert value(m, "streamer_inference_seconds_sum") >= 0.01 * results
    assert value(m, "streamer_queue_wait_seconds_count") == results
    assert value(m, "streamer_real_time_factor_ratio_count", stage="model") == results
    assert value(m, "streamer_real_time_factor_ratio_count", stage="decode") > 0
    # paced in real time: a result follows its audio by about the model's cost, far below 1 s
    lat_count = value(m, "streamer_result_latency_seconds_count", endpoint=simple, kind="final")
    assert lat_count == results
    assert value(m, "streamer_result_latency_seconds_sum", endpoint=simple,
                 kind="final") / lat_count < 0.5
    assert value(m, "streamer_first_result_latency_seconds_count", endpoint=simple) == 2
    assert value(m, "streamer_drain_seconds_count", endpoint=simple) == 2
    assert value(m, "streamer_event_loop_lag_seconds_count") > 0
    assert value(m, "streamer_workers_ready") == 2
    assert value(m, "streamer_queue_depth") == 0
    busy = sum(v for (name, _), v in m.items() if name == "streamer_worker_busy_seconds_total")
    assert abs(busy - value(m, "streamer_inference_seconds_sum")) < 1e-6
    cpu = [v for (name, _), v in m.items() if name == "streamer_worker_cpu_seconds_total"]
    rss = [v for (name, _), v in m.items() if name == "streamer_worker_memory_bytes"]
    assert len(cpu) == 2 and all(v > 0 for v in cpu)
    assert len(rss) == 2 and all(v > 10e6 for v in rss)
    # counters stay cumulative across scrapes
    again = await scrape(server)
    assert value(again, "streamer_segments_total", endpoint=simple, outcome="ok") == results


async def test_refusals_and_errors_are_counted(gateway):
    server = await gateway(workers=1, model__failure_rate=1.0, server__max_sessions=1)
    url = str(server.make_url("/api/v1/simple"))
    await stream_audio(url, AudioFormat(), make_pcm(AudioFormat(), 1.0))
    async with (aiohttp.ClientSession() as http, http.ws_connect(url),
                http.get(url) as refused):  # a second session while one is open
        assert refused.status == 503
    m = await scrape(server)
    assert value(m, "streamer_segments_total", endpoint="/api/v1/simple", outcome="error") == 2
    assert value(m, "streamer_sessions_refused_total", reason="max_sessions") == 1


ROOT = Path(__file__).resolve().parents[2]
# Prometheus base units a name may end in (before _total, _bucket, _sum, _count, _info)
UNITS = ("_seconds", "_bytes", "_ratio")


async def test_metrics_follow_prometheus_conventions_and_include_the_process(gateway):
    server = await gateway(workers=1)
    url = str(server.make_url("/api/v1/simple"))
    await stream_audio(url, AudioFormat(), make_pcm(AudioFormat(), 1.0))
    text = await scrape_text(server)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {s.name for f in families.values() for s in f.samples}
    assert not [name for name in samples if name.endswith("_created")]
    # the gateway's own process, and the interpreter it runs on
    m = await scrape(server)
    assert value(m, "process_cpu_seconds_total") > 0
    assert value(m, "process_resident_memory_bytes") > 10e6
    assert value(m, "process_open_fds") > 0
    python = [k for k in m if k[0] == "python_info"]
    assert len(python) == 1 and dict(python[0][1])["implementation"] == "CPython"
    assert any(name.startswith("python_gc_") for name in samples)
    build = [k for k in m if k[0] == "streamer_build_info"]
    assert [dict(k[1])["version"] for k in build] == [streamer.__version__]
    ours = {name: f for name, f in families.items() if name.startswith("streamer_")}
    assert "streamer_real_time_factor_ratio" in ours  # a ratio says so
    for name, family in ours.items():
        assert family.documentation, name
        if family.type == "counter":  # the parser strips _total from a counter family's name
            assert all(s.name == name + "_total" for s in family.samples), name
        if family.type == "histogram":
            assert name.endswith(UNITS), f"{name}: a histogram's name ends in its unit"
        if "seconds" in name or "bytes" in name or "ratio" in name:
            assert name.endswith(UNITS), f"{name}: the unit goes last"
    # the Grafana dashboard in deploy/ asks only for series the gateway exports
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    wanted = {re.sub(r"_bucket$", "", n) for e in exprs
              for n in re.findall(r"\b(?:streamer|process)_[a-z_]+\b", e)}
    assert len(exprs) >= 10 and "streamer_event_loop_lag_seconds" in wanted
    exported = samples | set(families) | {name + "_total" for name in families}  # no sample
    assert sorted(wanted - exported) == []  # yet: a labelled counter before its first event
