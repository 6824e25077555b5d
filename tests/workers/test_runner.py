import numpy as np
import pytest

from streamer.wire import InferenceRequest, from_wire
from streamer.workers.models import make_model
from streamer.workers.models.counter import CounterModel
from streamer.workers.runner import Runner


def request(rid: int = 1, n: int = 800) -> InferenceRequest:
    return InferenceRequest(rid, "s", 0, 0, 0.0, n / 16000, np.zeros(n, np.float32).tobytes(),
                            sent_at=1.0, trace={"traceparent": "t"})


def test_a_request_in_a_result_out():
    runner = Runner(make_model("counter", {}), worker_id=4)
    result = runner.run(request(9), received=1.25)
    assert result.request_id == 9 and result.worker_id == 4
    assert result.output == {"count": 800} and result.error is None
    assert result.trace == {"traceparent": "t"}
    assert result.queue_wait == 0.25  # received at 1.25, sent at 1.0
    assert result.inference_time >= 0
    assert from_wire(result.to_wire()) == result


def test_model_errors_become_error_results():
    runner = Runner(make_model("counter", {"failure_rate": 1.0}), worker_id=0)
    result = runner.run(request(), received=1.0)
    assert result.output is None
    assert result.error.startswith("inference failed: counter model failed on purpose")


class Returns(CounterModel):
    """Answers every segment with ``value``."""

    value: object = None

    def infer(self, audio, info):
        return self.value


@pytest.mark.parametrize("value, expected", [
    ({"score": np.float32(0.5)}, {"score": 0.5}),
    ({"n": np.int64(3), "ok": np.bool_(True)}, {"n": 3, "ok": True}),
    ({"grid": np.arange(4, dtype=np.float32).reshape(2, 2)}, {"grid": [[0.0, 1.0], [2.0, 3.0]]}),
    ({"nested": [{"a": (np.float64(1.5), 2)}]}, {"nested": [{"a": [1.5, 2]}]}),
])
def test_numpy_outputs_are_converted_and_survive_the_wire(value, expected):
    model = Returns(CounterModel.Params())
    model.value = value
    result = Runner(model, worker_id=0).run(request(), received=1.0)
    assert result.output == expected
    assert from_wire(result.to_wire()).output == expected
    assert all(type(v) is not np.float32 for v in result.output.values())


@pytest.mark.parametrize("value, words", [
    ({"blob": b"\x00\x01"}, "output.blob is of type bytes"),
    ({"tags": {"a", "b"}}, "output.tags is of type set"),
    ({"obj": object()}, "output.obj is of type object"),
    ({1: "x"}, "key of type int"),
    ({"s": np.array(["a"])}, "only numbers are sent"),
    ([1, 2], "returned list, not a dict"),
])
def test_unusable_outputs_are_an_error_for_that_segment(value, words):
    model = Returns(CounterModel.Params())
    model.value = value
    result = Runner(model, worker_id=0).run(request(), received=1.0)
    assert result.output is None
    assert "unusable model output" in result.error and words in result.error
    assert from_wire(result.to_wire()).error == result.error


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


def test_one_respawn_policy_backs_off_only_for_workers_that_never_answered():
    from streamer.config import PoolConfig
    from streamer.workers.respawn import Backoff

    policy = Backoff.from_config(PoolConfig(restart_backoff=0.5))
    assert [policy.delay(n) for n in (0, 1, 2, 3)] == [0.0, 0.5, 1.0, 2.0]
    assert policy.delay(100) == 32.0  # capped at 2**6 times the first wait
    assert policy.next_idle_deaths(3, answered=True) == 0
    assert policy.next_idle_deaths(3, answered=False) == 4


SPANS_SCRIPT = """
import numpy as np
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from streamer.wire import InferenceRequest
from streamer.workers import runner as mod
from streamer.workers.models import make_model

class Counting:
    made = 0
    def __init__(self, real):
        self.real = real
    def start_span(self, *args, **kwargs):
        Counting.made += 1
        return self.real.start_span(*args, **kwargs)

mod.tracer = Counting(mod.tracer)
req = InferenceRequest(1, "s", 0, 0, 0.0, 0.05, np.zeros(800, np.float32).tobytes(),
                       trace={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
runner = mod.Runner(make_model("counter", {}), worker_id=3)
assert runner.run(req, 1.0).ok and not mod.tracing() and Counting.made == 0
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
assert runner.run(req, 1.0).ok and mod.tracing() and Counting.made == 1
(span,) = exporter.get_finished_spans()
assert span.name == "inference" and span.attributes["worker.id"] == 3
assert format(span.context.trace_id, "032x") == "a" * 32
print("ok")
"""


def test_no_span_is_made_until_a_tracer_provider_is_installed():
    """In a fresh interpreter: the process-wide provider cannot be taken back."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", SPANS_SCRIPT], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
