"""Prometheus metrics of the streaming pipeline, one registry per app.

Latency is measured on the audio's own timeline: for a result, the clock starts when the audio at
its ``end_time`` reached the gateway, which is what a user of a streaming API waits for. Worker
timings (queue wait, inference time) arrive in the result envelopes; pool state, restarts and each
worker's CPU and memory are read at scrape time, so counters stay cumulative without re-adding.

Names follow Prometheus conventions: base units in the name (``_seconds``, ``_bytes``, ``_ratio``
for the real-time factor), ``_total`` on counters. The registry also carries prometheus-client's
process, platform and GC collectors (the gateway's own CPU, memory, file descriptors, Python
version), and no ``_created`` series, which only double the series count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psutil
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from streamer import __version__
from streamer.gateway.pool.base import PoolStats

# Real-time factors: dense around 1.0, where "keeps up" turns into "falls behind".
RTF_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0,
               1.05, 1.1, 1.2, 1.5, 2.0, 5.0, 10.0)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
                   0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class Metrics:
    def __init__(self, pool_stats: Callable[[], PoolStats] | None = None) -> None:
        disable_created_metrics()  # process-wide in prometheus-client; the gateway owns it
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)  # registers itself only on CPython
        Info("streamer_build", "The gateway's version", registry=r).info(
            {"version": __version__})
        self.rtf = Histogram("streamer_real_time_factor_ratio", "Processing time over media "
                             "time, per stage (decode, segment or vad, model, end_to_end)",
                             ["stage"], buckets=RTF_BUCKETS, registry=r)
        self.media_seconds = Counter("streamer_media_seconds", "Seconds of audio decoded "
                                     "(per channel)", ["endpoint"], registry=r)
        self.processing_seconds = Counter("streamer_processing_seconds", "Wall time spent per "
                                          "stage", ["stage"], registry=r)
        self.first_result = Histogram("streamer_first_result_latency_seconds", "From a stream's "
                                      "first audio frame to its first result sent", ["endpoint"],
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.finalization = Histogram("streamer_result_latency_seconds", "From the arrival of "
                                      "the audio at a result's end_time to the result sent "
                                      "(kind: final, interim)", ["endpoint", "kind"],
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.drain = Histogram("streamer_drain_seconds", "From 'stop' to the stream's last "
                               "result sent", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("streamer_queue_wait_seconds", "Time a segment waited "
                                    "for a worker: from submission to the pool to the answer, "
                                    "less the model's compute time", buckets=LATENCY_BUCKETS,
                                    registry=r)
        self.inference = Histogram("streamer_inference_seconds", "Model compute time per segment",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.segments = Counter("streamer_segments", "Segment answers sent, by outcome (ok, "
                                "error)", ["endpoint", "outcome"], registry=r)
        self.worker_busy = Counter("streamer_worker_busy_seconds", "Model compute time per "
                                   "worker", ["worker"], registry=r)
        self.loop_lag = Histogram("streamer_event_loop_lag_seconds", "How late the gateway's "
                                  "event loop ran a periodic timer", buckets=LAG_BUCKETS,
                                  registry=r)
        self.sessions = Gauge("streamer_active_sessions", "Open websocket sessions", ["endpoint"],
                              registry=r)
        self.streams = Counter("streamer_streams", "Streams started", ["endpoint"], registry=r)
        self.refused = Counter("streamer_sessions_refused", "Sessions refused by admission "
                               "control, by reason", ["reason"], registry=r)
        if pool_stats is not None:
            r.register(_PoolCollector(pool_stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def totals(self) -> tuple[int, int]:
        """(streams started, segment answers sent) since start, for the exit log line."""
        return (round(_sum_samples(self.streams, "_total")),
                round(_sum_samples(self.segments, "_total")))


def _sum_samples(metric: Counter, suffix: str) -> float:
    return sum(s.value for family in metric.collect() for s in family.samples
               if s.name.endswith(suffix))


class _PoolCollector(Collector):
    """Pool state and per-worker CPU and memory, read when Prometheus scrapes."""

    def __init__(self, stats: Callable[[], PoolStats]) -> None:
        self._stats = stats
        self._procs: dict[int, psutil.Process] = {}

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self._stats()
        yield GaugeMetricFamily("streamer_queue_depth", "Segments waiting for a free worker",
                                value=s.queued)
        yield GaugeMetricFamily("streamer_inflight_segments", "Segments handed to workers, "
                                "not yet answered", value=s.inflight)
        yield GaugeMetricFamily("streamer_workers", "Worker slots", value=s.size)
        yield GaugeMetricFamily("streamer_workers_ready", "Workers ready for work",
                                value=s.ready)
        yield CounterMetricFamily("streamer_worker_restarts", "Embedded worker processes "
                                  "respawned", value=s.restarts)
        yield CounterMetricFamily("streamer_workers_lost", "Worker connections lost while "
                                  "running (crash, kill, hang, a NATS worker leaving)",
                                  value=s.lost)
        yield CounterMetricFamily("streamer_segments_redispatched", "Segments sent again "
                                  "after their worker died", value=s.redispatched)
        yield CounterMetricFamily("streamer_poison_segments", "Segments answered with an error "
                                  "because every worker that held them died (never sent again)",
                                  value=s.poisoned)
        cpu = CounterMetricFamily("streamer_worker_cpu_seconds", "CPU time of each worker "
                                  "process", labels=["worker"])
        rss = GaugeMetricFamily("streamer_worker_memory_bytes", "Resident memory of each "
                                "worker process", labels=["worker"])
        alive: set[int] = set()
        for w in s.workers:
            if w.pid is None:
                continue
            alive.add(w.pid)
            try:
                proc = self._procs.setdefault(w.pid, psutil.Process(w.pid))
                times = proc.cpu_times()
                cpu.add_metric([str(w.worker_id)], times.user + times.system)
                rss.add_metric([str(w.worker_id)], proc.memory_info().rss)
            except psutil.Error:
                continue
        for pid in set(self._procs) - alive:
            del self._procs[pid]
        yield cpu
        yield rss
