"""The pure core of a worker: request bytes in, result bytes out. No sockets, no signals."""

from __future__ import annotations

import logging
import time

from shared.errors import ModelError, WireError
from shared.wire import EndSession, InferenceRequest, InferenceResult, from_wire
from workers.models.base import Model, SegmentInfo

log = logging.getLogger(__name__)


class Runner:
    def __init__(self, model: Model, worker_id: int) -> None:
        self.model = model
        self.worker_id = worker_id

    def handle(self, data: bytes) -> bytes | None:
        """Answer one envelope; ``None`` for messages that need no answer."""
        received = time.time()
        try:
            msg = from_wire(data)
        except WireError as exc:
            log.error("worker %d dropped an undecodable envelope: %s", self.worker_id, exc)
            return None
        if isinstance(msg, EndSession):
            self.model.end_stream(msg.stateful_key)
            return None
        if not isinstance(msg, InferenceRequest):
            log.error("worker %d got an unexpected %s envelope", self.worker_id, msg.KIND)
            return None
        return self.run(msg, received).to_wire()

    def run(self, req: InferenceRequest, received: float) -> InferenceResult:
        info = SegmentInfo(req.session_id, req.channel, req.start_time, req.end_time,
                           req.is_final, req.stateful_key)
        queue_wait = max(0.0, received - req.sent_at) if req.sent_at else 0.0
        started = time.perf_counter()
        output = error = None
        try:
            output = self.model.infer(req.samples, info)
        except ModelError as exc:
            error = f"inference failed: {exc}"
        except Exception as exc:  # a model bug must cost one segment, not the worker
            log.exception("model raised on request %d", req.request_id)
            error = f"inference failed: {type(exc).__name__}: {exc}"
        return InferenceResult(request_id=req.request_id, worker_id=self.worker_id,
                               output=output, error=error, queue_wait=queue_wait,
                               inference_time=time.perf_counter() - started, trace=req.trace)
