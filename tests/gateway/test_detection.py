"""The silero detector with its network elsewhere: decisions from supplied probabilities match
the in-process detector's, and frames with no answer are computed here."""

from __future__ import annotations

import numpy as np

from streamer.config import load_config
from streamer.gateway.detection import Detection, OffloadedSilero
from streamer.gateway.segmenters import Segment, SegmenterOutput
from streamer.gateway.vad import SileroVad, VadSegmenter, VadSettings
from streamer.workers.models.base import SegmentInfo
from streamer.workers.models.silero_vad import FRAME_SAMPLES, SileroNet, SileroVadModel
from tests.signals import DATA, read_wav

SETTINGS = VadSettings(detector="silero")


def finals(out: list[SegmenterOutput]) -> list[tuple[int, int]]:
    return [(o.start, o.end) for o in out if isinstance(o, Segment) and o.is_final]


def segment(x: np.ndarray, chunk: int, detector: SileroVad,
            net: SileroNet | None = None) -> list[SegmenterOutput]:
    """Push ``x`` in chunks; with ``net``, each chunk's frames are classified there first and
    their probabilities supplied, as the session does with the detector processes."""
    seg = VadSegmenter(SETTINGS, detector=detector)
    out: list[SegmenterOutput] = []
    for i in range(0, len(x), chunk):
        piece = x[i:i + chunk]
        if net is not None:
            assert isinstance(detector, OffloadedSilero)
            frames = detector.take(piece)
            assert len(frames) % FRAME_SAMPLES == 0
            detector.supply(net.probabilities(frames.reshape(-1, FRAME_SAMPLES)).tolist())
        out += seg.push(piece)
    return out + seg.flush()


def test_supplied_probabilities_give_the_in_process_segments() -> None:
    x = read_wav(DATA / "speech_3_sentences.wav")
    want = finals(segment(x, 1234, SileroVad()))
    assert len(want) == 3
    for chunk in (333, 1234, 5000):
        assert finals(segment(x, chunk, OffloadedSilero(), SileroNet())) == want


def test_frames_nobody_answered_are_computed_here() -> None:
    x = read_wav(DATA / "speech_3_sentences.wav")
    detector = OffloadedSilero()
    detector.take(x[:4000])  # sent, never answered
    assert finals(segment(x, 1234, detector)) == finals(segment(x, 1234, SileroVad()))


def test_the_model_keeps_part_frames_and_state_per_key() -> None:
    x = read_wav(DATA / "speech_3_sentences.wav")[:16000]
    model = SileroVadModel(SileroVadModel.Params())
    info = SegmentInfo("s", 0, 0.0, 0.0, None, "k")
    whole = SileroNet().probabilities(x[:len(x) // FRAME_SAMPLES * FRAME_SAMPLES]
                                      .reshape(-1, FRAME_SAMPLES))
    got: list[float] = []
    for i in range(0, len(x), 1000):
        got += model.infer(x[i:i + 1000], info)["p"]
    np.testing.assert_allclose(got, whole, atol=1e-5)
    model.end_stream("k")
    assert model.infer(x[:FRAME_SAMPLES], info)["p"][0] == whole[0]  # fresh state again


def test_processes_are_optional() -> None:
    config = load_config(env={}, overrides={"pool.vad_workers": 0})
    detection = Detection(config)
    assert not detection.enabled
    assert type(detection.detector(0.5)) is SileroVad
    assert isinstance(Detection(load_config(env={})).detector(0.5), OffloadedSilero)
