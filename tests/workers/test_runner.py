import numpy as np

from streamer.wire import EndSession, InferenceRequest, InferenceResult, from_wire
from streamer.workers.models import make_model
from streamer.workers.models.counter import CounterModel
from streamer.workers.runner import Runner


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


def test_a_batch_gives_each_segment_its_share_of_the_time_and_the_batch_size():
    runner = Runner(make_model("counter", {"delay": 0.01, "mode": "sleep"}), worker_id=2)
    results = list(runner.run_batch([(request(i, 100 * i), 5.0) for i in (1, 2, 3)]))
    assert [r.output for r in results] == [{"count": 100}, {"count": 200}, {"count": 300}]
    assert {r.batch_size for r in results} == {3}
    assert len({r.inference_time for r in results}) == 1  # one call, shared evenly
    assert results[0].queue_wait == 4.0  # received at 5.0, sent at 1.0


def test_a_batch_call_that_raises_or_miscounts_fails_every_segment_of_it():
    class Broken(CounterModel):
        def infer_batch(self, items):
            if len(items) == 2:
                return [{"count": 1}]
            raise RuntimeError("boom")

    runner = Runner(Broken(CounterModel.Params()), worker_id=0)
    three = list(runner.run_batch([(request(i), 0.0) for i in (1, 2, 3)]))
    assert [r.error for r in three] == ["inference failed: RuntimeError: boom"] * 3
    two = list(runner.run_batch([(request(i), 0.0) for i in (1, 2)]))
    assert all("returned 1 outputs for 2 segments" in r.error for r in two)
