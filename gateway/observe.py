"""A session's observations: log lines prefixed with the session and trace, and what the stream
core reports turned into Prometheus samples (label lookups done once per session)."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from streamer.gateway.ledger import Outgoing
from streamer.gateway.metrics import Metrics
from streamer.gateway.stream import Fed, Work
from streamer.wire import InferenceResult


class SessionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line about a session with its id and current trace id."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"[session {extra.get('session')} trace {extra.get('trace', '-')}] {msg}", kwargs


class SessionMetrics:
    def __init__(self, metrics: Metrics, endpoint: str) -> None:
        self.m = metrics
        self.endpoint = endpoint
        stage = "vad" if endpoint.endswith("segmented") else "segment"
        self._media_seconds = metrics.media_seconds.labels(endpoint)
        self._decode_rtf = metrics.rtf.labels("decode")
        self._decode_seconds = metrics.processing_seconds.labels("decode")
        self._segment_rtf = metrics.rtf.labels(stage)
        self._segment_seconds = metrics.processing_seconds.labels(stage)
        self._first_result_for = 0  # the last stream number whose first result was sent

    def stream_started(self) -> None:
        self.m.streams.labels(self.endpoint).inc()

    def drained(self, seconds: float) -> None:
        """From 'stop' to the stream's last event sent."""
        self.m.drain.labels(self.endpoint).observe(seconds)

    def fed(self, fed: Fed) -> None:
        if fed.seconds > 0:
            self._media_seconds.inc(fed.seconds)
            self._decode_rtf.observe(fed.decode_time / fed.seconds)
            self._segment_rtf.observe(fed.segment_time / fed.seconds)
        self._decode_seconds.inc(fed.decode_time)
        self._segment_seconds.inc(fed.segment_time)

    def result(self, work: Work, result: InferenceResult, round_trip: float) -> None:
        """Worker timings of one answer (none when nothing ran: no worker took it, or its
        worker died holding it)."""
        if result.worker_id < 0 or (not result.ok and result.inference_time == 0):
            return
        m = self.m
        m.queue_wait.observe(max(0.0, round_trip - result.inference_time))
        m.inference.observe(result.inference_time)
        m.worker_busy.labels(str(result.worker_id)).inc(result.inference_time)
        if work.job.audio_seconds > 0:
            m.rtf.labels("model").observe(result.inference_time / work.job.audio_seconds)

    def sent(self, out: Outgoing, now: float) -> None:
        if out.segment_seconds is None:
            return
        m = self.m
        m.segments.labels(self.endpoint, "ok" if out.ok else "error").inc()
        if out.audio_ready_at is not None:
            m.finalization.labels(self.endpoint, out.kind).observe(now - out.audio_ready_at)
        if out.audio_started_at is not None and out.segment_seconds > 0:
            m.rtf.labels("end_to_end").observe((now - out.audio_started_at)
                                               / out.segment_seconds)
        if out.stream > self._first_result_for and out.first_audio_at is not None:
            self._first_result_for = out.stream
            m.first_result.labels(self.endpoint).observe(now - out.first_audio_at)
