import time

import numpy as np
import pytest

from streamer.errors import ConfigError, ModelError
from streamer.workers.models import SegmentInfo, make_model, model_names

INFO = SegmentInfo("s", 0, 0.0, 0.5, None)


def test_counts_samples():
    model = make_model("counter", {})
    assert model.infer(np.zeros(8000, np.float32), INFO) == {"count": 8000}


def test_cost_model_spins_for_delay_plus_factor_times_audio():
    model = make_model("counter", {"delay": 0.02, "constant_factor": 0.1, "mode": "spin"})
    model.warmup()
    w0, t0 = time.monotonic(), time.thread_time()
    model.infer(np.zeros(8000, np.float32), INFO)  # 0.02 + 0.1 * 0.5 = 0.07 s spinning
    # the spin runs to a wall-clock deadline and never gives the CPU up on purpose: how much
    # CPU it gets meanwhile is the scheduler's business on a shared machine, so only that it
    # burnt some is asserted, and the deadline itself
    assert time.monotonic() - w0 >= 0.07
    assert time.thread_time() - t0 > 0


def test_cpu_mode_burns_exactly_its_cost_in_thread_time():
    model = make_model("counter", {"delay": 0.02, "constant_factor": 0.1, "mode": "cpu"})
    model.warmup()
    t0 = time.thread_time()
    model.infer(np.zeros(8000, np.float32), INFO)
    assert time.thread_time() - t0 >= 0.07


def test_sleep_mode_burns_no_cpu():
    model = make_model("counter", {"delay": 0.05, "mode": "sleep"})
    model.warmup()
    t0 = time.process_time()
    model.infer(np.zeros(10, np.float32), INFO)
    assert time.process_time() - t0 < 0.04


def test_failure_rate_raises_model_error():
    model = make_model("counter", {"failure_rate": 1.0})
    with pytest.raises(ModelError, match="failure_rate"):
        model.infer(np.zeros(10, np.float32), INFO)


def test_warmup_penalty_applies_to_the_first_call_only():
    model = make_model("counter", {"delay": 0.01, "warmup_penalty": 4.0, "mode": "sleep",
                                   "seed": 1})
    assert model._cost(0.0) == pytest.approx(0.05)
    model.warmup()
    assert model._cost(0.0) == pytest.approx(0.01)


@pytest.mark.parametrize("params, words", [
    ({"delay": -1}, "model.delay must be between"),
    ({"mode": "nap"}, "model.mode must be one of spin, cpu, sleep"),
    ({"speed": 2}, "unknown parameter"),
    ({"failure_rate": 2}, "model.failure_rate must be between 0.0 and 1.0"),
])
def test_bad_params_are_named(params, words):
    with pytest.raises(ConfigError, match=words):
        make_model("counter", params)


def test_unknown_model_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'nope'.*counter"):
        make_model("nope", {})
    assert "counter" in model_names()


def test_a_batch_pays_delay_and_jitter_once_so_it_costs_less_than_its_parts():
    model = make_model("counter", {"delay": 0.02, "constant_factor": 0.1, "seed": 1})
    model.warmup()
    spent: list[float] = []
    model._spend = spent.append
    half = np.zeros(8000, np.float32)
    out = model.infer_batch([(half, INFO)] * 4)
    assert out == [{"count": 8000}] * 4
    model.infer(half, INFO)
    assert spent == [pytest.approx(0.02 + 0.1 * 2.0), pytest.approx(0.02 + 0.1 * 0.5)]
    assert spent[0] < 4 * spent[1]


def test_failures_in_a_batch_are_per_segment():
    model = make_model("counter", {"failure_rate": 0.5, "seed": 3})
    out = model.infer_batch([(np.zeros(10, np.float32), INFO)] * 8)
    assert any(isinstance(o, ModelError) for o in out) and any(isinstance(o, dict) for o in out)
    assert model.batches()


def test_stateful_counter_keeps_a_total_per_stream_until_it_ends():
    model = make_model("stateful_counter", {})
    a = SegmentInfo("s", 0, 0.0, 0.5, None, stateful_key="s/1/0")
    b = SegmentInfo("s", 1, 0.0, 0.5, None, stateful_key="s/1/1")
    x = np.zeros(100, np.float32)
    assert [o["total"] for o in model.infer_batch([(x, a), (x, a), (x, b)])] == [100, 200, 100]
    model.end_stream("s/1/0")
    assert model.infer(x, a) == {"count": 100, "total": 100}
    assert model.stateful


def test_cpu_mode_pays_its_cost_in_cpu_time():
    model = make_model("counter", {"delay": 0.03, "mode": "cpu"})
    model.warmup()
    t0 = time.thread_time()
    model.infer(np.zeros(10, np.float32), INFO)
    assert time.thread_time() - t0 >= 0.03  # CPU time: never less, however busy the machine
