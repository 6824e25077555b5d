"""The ``features`` and ``smoothed_features`` models."""

from __future__ import annotations

import json
import math

import msgpack
import numpy as np
import pytest

from streamer.errors import ConfigError, ModelError
from streamer.workers.models import SegmentInfo, make_model, model_class, model_names
from streamer.workers.models.features import FEATURES
from tests.signals import DATA, concat, noise, read_wav, silence, sine, tone

INFO = SegmentInfo("s", 0, 0.0, 1.0, True)


def features(x: np.ndarray, **params: object) -> dict[str, object]:
    return make_model("features", params).infer(x, INFO)


def test_registered_with_their_kind() -> None:
    assert {"features", "smoothed_features"} <= set(model_names())
    assert model_class("features").stateful is False
    assert model_class("smoothed_features").stateful is True


@pytest.mark.parametrize("freq", [80.0, 220.0, 440.0])
def test_a_tone_gives_its_pitch(freq: float) -> None:
    out = features(tone(1.0, freq, -20.0))
    assert out["median_pitch_hz"] == pytest.approx(freq, rel=0.01)
    assert out["voiced_ratio"] == pytest.approx(1.0, abs=0.05)


def test_220_hz_in_noise_still_gives_220() -> None:
    out = features(tone(1.0, 220.0, -20.0) + noise(1.0, -40.0))
    assert out["median_pitch_hz"] == pytest.approx(220.0, abs=2.0)


def test_rms_peak_and_zero_crossings_of_a_known_sine() -> None:
    out = features(sine(1.0, 1000.0, 0.5))
    assert out["rms_dbfs"] == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.02)
    assert out["peak_dbfs"] == pytest.approx(20 * math.log10(0.5), abs=0.02)
    assert out["zero_crossing_rate"] == pytest.approx(2000 / 16000, rel=0.01)
    assert out["spectral_centroid_hz"] == pytest.approx(1000.0, rel=0.02)


def test_white_noise_is_unvoiced_and_bright() -> None:
    out = features(noise(2.0, -20.0))
    assert out["voiced_ratio"] < 0.05
    assert out["rms_dbfs"] == pytest.approx(-20.0, abs=0.2)
    assert out["spectral_centroid_hz"] == pytest.approx(4000.0, rel=0.05)  # flat up to 8 kHz
    assert out["zero_crossing_rate"] == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("x", [silence(1.0), np.zeros(0, np.float32), silence(0.01)],
                         ids=["1 s", "empty", "10 ms"])
def test_silence_gives_floors_and_nulls_never_nan(x: np.ndarray) -> None:
    out = features(x)
    assert out == {"rms_dbfs": -120.0, "peak_dbfs": -120.0, "voiced_ratio": 0.0,
                   "median_pitch_hz": None, "spectral_centroid_hz": None,
                   "zero_crossing_rate": 0.0}


def test_outputs_are_plain_json_and_msgpack_values() -> None:
    for x in (tone(0.3), noise(0.3), silence(0.3), read_wav(DATA / "speech_3_sentences.wav")):
        out = features(x)
        assert set(out) == set(FEATURES)
        json.dumps(out, allow_nan=False)
        assert msgpack.unpackb(msgpack.packb(out)) == out
        assert all(v is None or type(v) in (float, int) for v in out.values())


def test_speech_is_partly_voiced_at_a_speaking_pitch() -> None:
    x = read_wav(DATA / "speech_3_sentences.wav")[4800:35900]  # the first sentence
    out = features(x)
    assert 0.2 < out["voiced_ratio"] < 0.9  # type: ignore[operator]
    assert 70.0 < out["median_pitch_hz"] < 250.0  # type: ignore[operator]


def test_pitch_range_is_validated() -> None:
    with pytest.raises(ConfigError, match="pitch_min_hz"):
        make_model("features", {"pitch_min_hz": 400.0, "pitch_max_hz": 300.0})
    with pytest.raises(ConfigError, match="alpha"):
        make_model("smoothed_features", {"alpha": 2})


def test_warmup_runs() -> None:
    make_model("smoothed_features", {}).warmup()


# ---- smoothed_features --------------------------------------------------------------------

def info(key: str | None, is_final: bool | None = True) -> SegmentInfo:
    return SegmentInfo("s", 0, 0.0, 1.0, is_final, key)


def test_smoothing_is_kept_per_stream_and_dropped_at_its_end() -> None:
    model = make_model("smoothed_features", {"alpha": 0.5})
    loud, quiet = tone(0.5, 220.0, -10.0), tone(0.5, 220.0, -30.0)
    a1 = model.infer(loud, info("a"))
    assert a1["smoothed_rms_dbfs"] == a1["rms_dbfs"] == pytest.approx(-10.0, abs=0.05)
    assert a1["segments_seen"] == 1
    b1 = model.infer(quiet, info("b"))  # another stream: its own average
    assert b1["smoothed_rms_dbfs"] == pytest.approx(-30.0, abs=0.05)
    assert b1["segments_seen"] == 1
    a2 = model.infer(quiet, info("a"))
    assert a2["rms_dbfs"] == pytest.approx(-30.0, abs=0.05)
    assert a2["smoothed_rms_dbfs"] == pytest.approx(-20.0, abs=0.05)  # 0.5 * -30 + 0.5 * -10
    assert a2["segments_seen"] == 2
    assert model.streams == 2  # type: ignore[attr-defined]
    model.end_stream("a")
    assert model.streams == 1  # type: ignore[attr-defined]
    a_again = model.infer(quiet, info("a"))
    assert a_again["segments_seen"] == 1
    assert a_again["smoothed_rms_dbfs"] == pytest.approx(-30.0, abs=0.05)
    model.end_stream("a")
    model.end_stream("b")
    model.end_stream("never seen")  # harmless
    assert model.streams == 0  # type: ignore[attr-defined]


def test_interims_preview_without_moving_the_average() -> None:
    model = make_model("smoothed_features", {"alpha": 0.5})
    model.infer(tone(0.5, 220.0, -10.0), info("k"))
    preview = model.infer(tone(0.5, 220.0, -30.0), info("k", is_final=False))
    assert preview["smoothed_rms_dbfs"] == pytest.approx(-20.0, abs=0.05)
    assert preview["segments_seen"] == 2
    final = model.infer(tone(0.5, 220.0, -30.0), info("k", is_final=True))
    assert final["smoothed_rms_dbfs"] == pytest.approx(-20.0, abs=0.05)  # interim not counted
    assert final["segments_seen"] == 2
    simple = model.infer(tone(0.5, 220.0, -30.0), info("k", is_final=None))  # /simple chunks
    assert simple["segments_seen"] == 3


def test_a_missing_pitch_keeps_the_last_average() -> None:
    model = make_model("smoothed_features", {"alpha": 0.5})
    model.infer(tone(0.5, 200.0), info("k"))
    out = model.infer(concat(noise(0.5, -30.0)), info("k"))
    assert out["median_pitch_hz"] is None
    assert out["smoothed_median_pitch_hz"] == pytest.approx(200.0, rel=0.01)
    json.dumps(out, allow_nan=False)


def test_smoothed_needs_a_stateful_key() -> None:
    with pytest.raises(ModelError, match="stateful_key"):
        make_model("smoothed_features", {}).infer(tone(0.2), info(None))
