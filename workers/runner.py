"""The pure core of a worker: requests in, results out. No sockets, no signals.

A model's exception or unusable output (see ``outputs.py``) is an error result for that segment;
the worker goes on and the gateway never retries it.

Each segment's model call is an ``inference`` span, a child of the gateway's ``dispatch`` span
named by the request's trace context. Without a tracer provider (the process did not set up
tracing) no span is made at all: even a no-op span costs parsing the trace context and building
its attributes on every segment."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace

from streamer.errors import ModelError, OutputError
from streamer.tracing import context_from_carrier
from streamer.wire import InferenceRequest, InferenceResult
from streamer.workers.models.base import Model, SegmentInfo
from streamer.workers.outputs import to_json_like

log = logging.getLogger(__name__)
tracer = trace.get_tracer("streamer.worker")


class Runner:
    def __init__(self, model: Model, worker_id: int) -> None:
        self.model = model
        self.worker_id = worker_id

    def run(self, req: InferenceRequest, received: float) -> InferenceResult:
        span = self._span(req) if tracing() else None
        started = time.perf_counter()
        output: Any
        try:
            output = self._step(req) if req.step else self.model.infer(req.samples, _info(req))
        except Exception as exc:  # a model bug must cost one segment, not the worker
            output = exc
        return self._result(req, received, output, time.perf_counter() - started, 1, span)

    def run_batch(self, batch: list[tuple[InferenceRequest, float]]
                  ) -> Iterator[InferenceResult]:
        """Answer requests taken together (each with the time it was received). A model that
        batches runs them in one call and each result carries ``batch_size`` and its share of
        the time; any other model runs them one by one, each result yielded as soon as it is
        ready, so batching never delays an answer for nothing."""
        if len(batch) == 1 or not self.model.batches() or any(r.step for r, _ in batch):
            for req, received in batch:
                yield self.run(req, received)
            return
        traced = tracing()
        spans = [self._span(req) if traced else None for req, _ in batch]
        started = time.perf_counter()
        outputs: list[dict[str, Any] | Exception]
        try:
            outputs = self.model.infer_batch([(req.samples, _info(req)) for req, _ in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(f"infer_batch returned {len(outputs)} outputs for "
                                   f"{len(batch)} segments")
        except Exception as exc:
            outputs = [exc] * len(batch)
        share = (time.perf_counter() - started) / len(batch)
        results = [self._result(req, received, output, share, len(batch), span)
                   for (req, received), output, span in zip(batch, outputs, spans, strict=True)]
        yield from results

    def _step(self, req: InferenceRequest) -> dict[str, Any]:
        """A piece of an open segment for a streaming model: feed it, then answer as asked
        (a ``feed`` answers an empty output, which the gateway does not send)."""
        model = self.model
        if not model.streaming():
            raise ModelError(f"the model is not a streaming model; cannot {req.step!r}")
        key = req.stateful_key or f"{req.session_id}/{req.channel}"
        info = _info(req)
        samples = req.samples
        if len(samples) or req.step == "feed":
            model.feed(key, samples, info)
        if req.step == "partial":
            return model.partial(key, info)
        if req.step == "finish":
            return model.finish(key, info)
        return {}

    def _span(self, req: InferenceRequest) -> trace.Span:
        return tracer.start_span("inference", context=context_from_carrier(req.trace),
                                 attributes={"session.id": req.session_id,
                                             "audio.channel": req.channel,
                                             "segment.start_time": req.start_time,
                                             "segment.end_time": req.end_time,
                                             "worker.id": self.worker_id,
                                             "request.attempt": req.attempt})

    def _result(self, req: InferenceRequest, received: float,
                output: Any, inference_time: float,
                batch_size: int, span: trace.Span | None) -> InferenceResult:
        queue_wait = max(0.0, received - req.sent_at) if req.sent_at else 0.0
        result: dict[str, Any] | None = None
        error = None
        if isinstance(output, dict):
            try:
                output = to_json_like(output)
            except OutputError as exc:
                output = exc
        elif not isinstance(output, Exception):
            output = OutputError(f"the model returned {type(output).__name__}, not a dict")
        if isinstance(output, OutputError):
            log.error("unusable output for request %d: %s", req.request_id, output)
            error = f"inference failed: unusable model output: {output}"
        elif isinstance(output, ModelError):
            error = f"inference failed: {output}"
        elif isinstance(output, Exception):
            log.error("model raised on request %d", req.request_id, exc_info=output)
            error = f"inference failed: {type(output).__name__}: {output}"
        else:
            result = output
        if span is not None:
            span.set_attribute("worker.batch_size", batch_size)
            span.set_attribute("worker.queue_wait_seconds", queue_wait)
            span.set_attribute("worker.inference_seconds", inference_time)
            if error is not None:
                span.set_status(trace.StatusCode.ERROR, error)
            span.end()
        return InferenceResult(request_id=req.request_id, worker_id=self.worker_id,
                               output=result, error=error, queue_wait=queue_wait,
                               inference_time=inference_time, batch_size=batch_size,
                               trace=req.trace)


def tracing() -> bool:
    """Whether spans go anywhere: a tracer provider was installed in this process (until then
    the API's provider is a placeholder whose spans record nothing). A provider is installed
    at most once, so a yes is kept."""
    global _traced
    if not _traced:
        _traced = not isinstance(trace.get_tracer_provider(), _PLACEHOLDERS)
    return _traced


_traced = False
_PLACEHOLDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


def _info(req: InferenceRequest) -> SegmentInfo:
    return SegmentInfo(req.session_id, req.channel, req.start_time, req.end_time, req.is_final,
                       req.stateful_key)
