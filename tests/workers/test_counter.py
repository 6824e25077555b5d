import time

import numpy as np
import pytest

from shared.errors import ConfigError, ModelError
from workers.models import SegmentInfo, make_model, model_names

INFO = SegmentInfo("s", 0, 0.0, 0.5, None)


def test_counts_samples():
    model = make_model("counter", {})
    assert model.infer(np.zeros(8000, np.float32), INFO) == {"count": 8000}


def test_cost_model_spins_for_delay_plus_factor_times_audio():
    model = make_model("counter", {"delay": 0.02, "constant_factor": 0.1, "mode": "spin"})
    model.warmup()
    t0 = time.process_time()
    model.infer(np.zeros(8000, np.float32), INFO)  # 0.02 + 0.1 * 0.5 = 0.07 s of CPU
    assert time.process_time() - t0 >= 0.06


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
    ({"mode": "nap"}, "model.mode must be 'spin' or 'sleep'"),
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
