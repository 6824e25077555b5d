import numpy as np

from shared.wire import EndSession, InferenceRequest, InferenceResult, from_wire
from workers.models import make_model
from workers.runner import Runner


def request(rid: int = 1, n: int = 800) -> InferenceRequest:
    return InferenceRequest(rid, "s", 0, 0, 0.0, n / 16000, np.zeros(n, np.float32).tobytes(),
                            sent_at=1.0, trace={"traceparent": "t"})


def test_request_bytes_in_result_bytes_out():
    runner = Runner(make_model("counter", {}), worker_id=4)
    result = from_wire(runner.handle(request(9).to_wire()))
    assert isinstance(result, InferenceResult)
    assert result.request_id == 9 and result.worker_id == 4
    assert result.output == {"count": 800} and result.error is None
    assert result.trace == {"traceparent": "t"}
    assert result.queue_wait > 0 and result.inference_time >= 0


def test_model_errors_become_error_results():
    runner = Runner(make_model("counter", {"failure_rate": 1.0}), worker_id=0)
    result = from_wire(runner.handle(request().to_wire()))
    assert result.output is None
    assert result.error.startswith("inference failed: counter model failed on purpose")


def test_garbage_and_end_session_need_no_answer():
    runner = Runner(make_model("counter", {}), worker_id=0)
    assert runner.handle(b"\x00garbage") is None
    assert runner.handle(EndSession("k").to_wire()) is None
