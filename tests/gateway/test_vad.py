"""The voice-activity segmenter: boundaries, event order, interims, cuts, flush, chunking."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamer.errors import ConfigError, ProtocolError
from streamer.gateway.segmenters import Activity, Piece, Segment, SegmenterOutput
from streamer.gateway.vad import EnergyVad, SileroVad, VadSegmenter, VadSettings
from tests.signals import (
    DATA,
    RATE,
    bursts,
    click_train,
    concat,
    n_samples,
    noise,
    read_wav,
    silence,
    tone,
    with_background,
)

TOL = n_samples(0.1)  # boundaries within 100 ms
SPANS = [(0.5, 1.5), (2.5, 3.2), (4.0, 5.0)]


def run(x: np.ndarray, settings: VadSettings | None = None, interim: bool = False,
        chunk: int = 320, **kw: object) -> list[SegmenterOutput]:
    seg = VadSegmenter(settings or VadSettings(), interim, **kw)  # type: ignore[arg-type]
    out: list[SegmenterOutput] = []
    for i in range(0, len(x), chunk):
        out += seg.push(x[i:i + chunk])
    return out + seg.flush()


def finals(out: list[SegmenterOutput]) -> list[Segment]:
    return [o for o in out if isinstance(o, Segment) and o.is_final]


def check_order(out: list[SegmenterOutput]) -> None:
    """active, interims (same start, growing), inactive, final; then the next segment."""
    state, onset, last_end, grown = "idle", -1, 0, 0
    for o in out:
        if isinstance(o, Activity) and o.kind == "active":
            assert state == "idle", out
            assert o.at >= last_end  # segments never overlap
            state, onset, grown = "open", o.at, 0
        elif isinstance(o, Segment) and o.is_final is False:
            assert state == "open", "an interim outside an open segment"
            assert o.start == onset and len(o.audio) > grown
            grown = len(o.audio)
        elif isinstance(o, Activity) and o.kind == "inactive":
            assert state == "open"
            state, end = "closing", o.at
        else:
            assert isinstance(o, Segment) and o.is_final is True
            assert state == "closing"
            assert (o.start, o.end) == (onset, end)
            assert grown <= len(o.audio)
            state, last_end = "idle", end
    assert state == "idle"


@pytest.mark.parametrize("kind", ["tone", "noise"])
@pytest.mark.parametrize("background", [None, -60.0, -45.0])
def test_bursts_give_one_segment_each_with_boundaries_within_100ms(
        kind: str, background: float | None) -> None:
    x = bursts(SPANS, 6.0, kind, level_db=-20.0)
    if background is not None:
        x = with_background(x, background)
    settings = VadSettings()
    out = run(x, settings)
    check_order(out)
    got = [(f.start, f.end) for f in finals(out)]
    assert len(got) == len(SPANS), got
    for (start, end), (a, b) in zip(got, SPANS, strict=True):
        assert abs(start - (n_samples(a) - n_samples(settings.pre_roll))) <= TOL
        assert abs(end - n_samples(b)) <= TOL


def test_final_audio_is_exactly_the_input_span() -> None:
    x = with_background(bursts(SPANS, 6.0), -60.0)
    for f in finals(run(x)):
        np.testing.assert_array_equal(f.audio, x[f.start:f.end])
        assert f.audio.dtype == np.float32


def test_silence_steady_noise_and_a_click_are_not_speech() -> None:
    assert run(silence(3.0)) == []
    assert run(noise(3.0, -30.0)) == []
    click = concat(silence(1.0), noise(0.03, -10.0), silence(1.0))  # shorter than min_speech
    assert run(click) == []


def test_pause_shorter_than_min_silence_keeps_one_segment() -> None:
    settings = VadSettings(min_silence=0.5)
    short_gap = bursts([(0.5, 1.0), (1.3, 2.0)], 3.0)
    long_gap = bursts([(0.5, 1.0), (1.7, 2.4)], 3.0)
    assert len(finals(run(short_gap, settings))) == 1
    assert len(finals(run(long_gap, settings))) == 2


def test_interims_come_every_interval_between_active_and_final() -> None:
    settings = VadSettings(interim_interval=0.5)
    out = run(with_background(bursts([(0.5, 2.7)], 4.0), -60.0), settings, interim=True)
    check_order(out)
    interims = [o for o in out if isinstance(o, Segment) and o.is_final is False]
    (final,) = finals(out)
    # 0.2 s pre-roll + 2.2 s of tone: interims at 0.5, 1.0, 1.5, 2.0 s of growth (+ a frame)
    assert [round(len(i.audio) / RATE, 1) for i in interims] == [0.5, 1.0, 1.5, 2.0]
    for i in interims:
        np.testing.assert_array_equal(i.audio, final.audio[:len(i.audio)])
    positions = [k for k, o in enumerate(out) if o is interims[-1] or o is final]
    assert out[positions[0]] is interims[-1] and out[positions[1]] is final


def test_no_interims_unless_asked() -> None:
    out = run(bursts([(0.5, 2.8)], 4.0), interim=False)
    assert all(o.is_final for o in out if isinstance(o, Segment))


def test_long_speech_is_cut_at_max_segment_and_goes_on() -> None:
    settings = VadSettings(max_segment=1.5, pre_roll=0.2)
    x = with_background(bursts([(1.0, 5.0)], 6.0, kind="noise"), -60.0)
    out = run(x, settings, interim=True)
    check_order(out)
    segs = finals(out)
    onset = n_samples(1.0 - 0.2)
    limit = n_samples(1.5)
    assert abs(segs[0].start - onset) <= TOL
    assert [len(s.audio) for s in segs[:-1]] == [limit] * (len(segs) - 1)
    assert len(segs) == 3  # 0.8-2.3, 2.3-3.8, 3.8-5.0
    for a, b in zip(segs, segs[1:], strict=False):
        assert b.start == a.end  # a cut: the next segment starts right at it
    assert abs(segs[-1].end - n_samples(5.0)) <= TOL
    actives = [o.at for o in out if isinstance(o, Activity) and o.kind == "active"]
    assert actives == [s.start for s in segs]


def test_flush_closes_open_speech_at_the_end_of_the_stream() -> None:
    x = concat(silence(1.0), tone(1.03))  # ends mid-speech, on a part-frame
    seg = VadSegmenter(VadSettings())
    out = seg.push(x)
    assert [o.kind for o in out if isinstance(o, Activity)] == ["active"]
    tail = seg.flush()
    assert tail[0] == Activity("inactive", len(x))
    assert isinstance(tail[1], Segment) and tail[1].is_final and tail[1].end == len(x)
    assert seg.flush() == []
    with pytest.raises(RuntimeError):
        seg.push(x)


def test_flush_ends_speech_at_its_last_speech_frame_when_silence_follows() -> None:
    x = concat(silence(1.0), tone(1.0), silence(0.2))  # less silence than min_silence
    (final,) = finals(run(x))
    assert abs(final.end - n_samples(2.0)) <= n_samples(0.02)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_chunking_gives_the_same_result(seed: int) -> None:
    x = with_background(bursts(SPANS, 6.0), -55.0)
    settings = VadSettings(max_segment=1.0)
    want = run(x, settings, interim=True, chunk=len(x))
    rng = np.random.default_rng(seed)
    seg = VadSegmenter(settings, interim=True)
    got: list[SegmenterOutput] = []
    i = 0
    while i < len(x):
        n = int(rng.integers(0, 2000))  # includes empty and one-sample chunks
        got += seg.push(x[i:i + n])
        i += n
    got += seg.flush()
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        if isinstance(w, Activity):
            assert g == w
        else:
            assert isinstance(g, Segment)
            assert (g.start, g.is_final) == (w.start, w.is_final)
            np.testing.assert_array_equal(g.audio, w.audio)


class Scripted:
    """A detector that says what it is told: speech for the frames in ``speech``."""

    frame_samples = 160

    def __init__(self, speech: set[int]) -> None:
        self.speech = speech
        self.seen = 0

    def speech_frames(self, frames: np.ndarray) -> np.ndarray:
        n = len(frames)
        out = np.array([self.seen + i in self.speech for i in range(n)])
        self.seen += n
        return out


def test_a_detector_plugs_in_and_durations_are_in_frames() -> None:
    settings = VadSettings(min_speech=0.05, min_silence=0.1, pre_roll=0.02)
    # 10 ms frames: 5 frames open a segment, 10 silent frames close it.
    speech = set(range(100, 104)) | set(range(200, 230)) | set(range(236, 250))
    det = Scripted(speech)
    out = run(np.zeros(400 * 160, np.float32), settings, detector=det)
    assert det.seen == 400
    # 100-103 is too short; 200-249 is one segment (the 6-frame gap is under min_silence).
    assert out[0] == Activity("active", 200 * 160 - 320)
    assert out[1] == Activity("inactive", 250 * 160)
    assert len(out) == 3


def test_energy_vad_measures_levels() -> None:
    frames = np.stack([tone(0.02, 1000.0, -20.0), np.zeros(320, np.float32),
                       np.full(320, 0.5, np.float32)])
    db = EnergyVad.energy_db(frames)
    assert db[0] == pytest.approx(-20.0, abs=0.2)
    assert db[1:] == pytest.approx([-120.0, -120.0])  # silence and pure DC


def test_speech_wav_splits_into_its_three_sentences() -> None:
    x = read_wav(DATA / "speech_3_sentences.wav")
    sentences = [(0.300, 2.245), (2.945, 4.415), (5.115, 5.948)]  # known from its synthesis
    settings = VadSettings()
    for gain in (1.0, 0.1):  # normal level, and 20 dB quieter
        segs = finals(run(x * np.float32(gain), settings))
        assert len(segs) == 3, [(s.start / RATE, s.end / RATE) for s in segs]
        for s, (a, b) in zip(segs, sentences, strict=True):
            assert abs(s.start - n_samples(a - settings.pre_roll)) <= TOL
            assert abs(s.end - n_samples(b)) <= TOL


# ---- the silero detector ----------------------------------------------------------------

SENTENCES = [(0.300, 2.245), (2.945, 4.415), (5.115, 5.948)]  # speech_3_sentences.wav


def silero(**kw: object) -> VadSettings:
    return VadSettings(detector="silero", **kw)  # type: ignore[arg-type]


def test_the_detector_is_chosen_by_the_settings() -> None:
    assert isinstance(VadSegmenter(VadSettings()).detector, EnergyVad)
    seg = VadSegmenter(silero(speech_probability=0.7))
    assert isinstance(seg.detector, SileroVad) and seg.frame == 512
    assert seg.detector.threshold == 0.7
    assert VadSegmenter(silero()).detector is not seg.detector  # one per channel: it has state


@pytest.mark.parametrize("gain", [1.0, 0.1])
def test_silero_finds_the_three_sentences(gain: float) -> None:
    x = read_wav(DATA / "speech_3_sentences.wav") * np.float32(gain)
    settings = silero()
    out = run(x, settings, interim=True, chunk=1234)
    check_order(out)
    segs = finals(out)
    assert len(segs) == 3, [(s.start / RATE, s.end / RATE) for s in segs]
    for s, (a, b) in zip(segs, SENTENCES, strict=True):
        assert abs(s.start - n_samples(a - settings.pre_roll)) <= TOL
        # Silero's probability decays over a frame or three after the last sound
        assert n_samples(b - 0.05) <= s.end <= n_samples(b + 0.15)


@pytest.mark.parametrize(("name", "make"), [
    ("click train", lambda: click_train(3.0)),
    ("steady noise", lambda: noise(4.0, -30.0)),
])
def test_silero_ignores_clicks_and_noise_the_energy_detector_takes_for_speech(
        name: str, make: object) -> None:
    x = concat(silence(1.0), make(), silence(1.0))  # type: ignore[operator]
    energy = finals(run(x, VadSettings()))
    assert energy, f"the energy detector should mistake the {name} for speech"
    assert abs(energy[0].start - n_samples(1.0 - 0.2)) <= TOL  # it fires at the onset
    assert finals(run(x, silero())) == []


def test_over_steady_noise_silero_keeps_whole_sentences_where_energy_clips_them() -> None:
    x = read_wav(DATA / "speech_3_sentences.wav")
    x = x + noise(len(x) / RATE, -35.0, seed=3)
    energy = finals(run(x, VadSettings()))
    neural = finals(run(x, silero()))
    assert len(energy) == len(neural) == 3
    for s, (a, b) in zip(neural, SENTENCES, strict=True):
        assert s.start <= n_samples(a) and s.end >= n_samples(b)  # each sentence whole
    clipped = [s.start > n_samples(a) or s.end < n_samples(b)
               for s, (a, b) in zip(energy, SENTENCES, strict=True)]
    assert any(clipped), [(s.start / RATE, s.end / RATE) for s in energy]


def test_silero_results_do_not_depend_on_chunking() -> None:
    x = read_wav(DATA / "speech_3_sentences.wav")
    want = [(s.start, s.end) for s in finals(run(x, silero(), chunk=len(x)))]
    assert [(s.start, s.end) for s in finals(run(x, silero(), chunk=333))] == want


def test_silero_threshold_is_a_probability_with_hysteresis() -> None:
    det = SileroVad(0.5)
    frames = read_wav(DATA / "speech_3_sentences.wav")[:512 * 60].reshape(60, 512)
    probs = SileroVad(0.5).probabilities(frames)
    assert ((probs >= 0) & (probs <= 1)).all() and probs.max() > 0.9 and probs.min() < 0.1
    speech = det.speech_frames(frames)
    for i, (p, s) in enumerate(zip(probs.tolist(), speech.tolist(), strict=True)):
        before = bool(speech[i - 1]) if i else False
        assert s == (p >= (0.35 if before else 0.5))


# ---- settings from the start message --------------------------------------------------

def test_options_override_defaults() -> None:
    defaults = VadSettings(threshold=10.0)
    assert VadSettings.from_options(None, defaults) is defaults
    got = VadSettings.from_options(json.loads('{"min_silence": 0.3, "max_segment": 10}'),
                                   defaults)
    assert got == VadSettings(threshold=10.0, min_silence=0.3, max_segment=10.0)
    got = VadSettings.from_options({"detector": "silero", "speech_probability": 0.6}, defaults)
    assert got == VadSettings(threshold=10.0, detector="silero", speech_probability=0.6)
    assert isinstance(got.max_segment, float)


@pytest.mark.parametrize(("raw", "words"), [
    ([1, 2], ["'vad'", "object", "an array"]),
    ({"treshold": 3}, ["unknown", "treshold", "known: threshold"]),
    ({"threshold": "12"}, ["'vad.threshold'", "number", "a string"]),
    ({"min_speech": True}, ["'vad.min_speech'", "a boolean"]),
    ({"min_silence": None}, ["'vad.min_silence'", "null"]),
    ({"max_segment": 600}, ["'vad.max_segment'", "1.0 to 60.0", "600"]),
    ({"threshold": -5}, ["'vad.threshold'", "dB", "-5"]),
    ({"pre_roll": float("nan")}, ["'vad.pre_roll'", "nan"]),
    ({"min_silence": float("inf")}, ["'vad.min_silence'", "inf"]),
    ({"interim_interval": 10**400}, ["'vad.interim_interval'", "got 1000"]),
    ({"max_segment": 1.0, "pre_roll": 1.0, "min_speech": 0.5}, ["max_segment", "pre_roll"]),
    ({"detector": "neural"}, ["'vad.detector'", "'energy', 'silero'", "'neural'"]),
    ({"detector": 1}, ["'vad.detector'", "a number"]),
    ({"detector": None}, ["'vad.detector'", "null"]),
    ({"speech_probability": 1.5}, ["'vad.speech_probability'", "0.05 to 0.95", "1.5"]),
    ({"speech_probability": "high"}, ["'vad.speech_probability'", "probability", "a string"]),
])
def test_bad_options_are_protocol_errors_naming_the_field(raw: object,
                                                          words: list[str]) -> None:
    with pytest.raises(ProtocolError) as err:
        VadSettings.from_options(raw, VadSettings())
    assert err.value.close_code == 1007
    for word in words:
        assert word in err.value.message, err.value.message


def test_inconsistent_settings_are_refused_by_the_segmenter() -> None:
    with pytest.raises(ValueError, match="max_segment"):
        VadSegmenter(VadSettings(max_segment=1.0, pre_roll=1.0))


def test_server_defaults_from_the_config_section() -> None:
    assert VadSettings.from_config({}) == VadSettings()
    assert VadSettings.from_config({"threshold": 9, "min_silence": 0.3}) == VadSettings(
        threshold=9.0, min_silence=0.3)
    assert VadSettings.from_config({"detector": "silero", "speech_probability": 0.6}) == \
        VadSettings(detector="silero", speech_probability=0.6)
    for raw, words in [({"treshold": 9}, "vad.treshold"), ({"threshold": "9"}, "vad.threshold"),
                       ({"max_segment": 100}, "vad.max_segment"),
                       ({"pre_roll": float("nan")}, "vad.pre_roll"),
                       ({"max_segment": 1.0, "pre_roll": 1.0}, "max_segment"),
                       ({"detector": "webrtc"}, "vad.detector"),
                       ({"speech_probability": 0.0}, "vad.speech_probability")]:
        with pytest.raises(ConfigError, match=words):
            VadSettings.from_config(raw)


@pytest.mark.parametrize("seed", range(12))
def test_invariants_hold_for_random_audio_and_settings(seed: int) -> None:
    rng = np.random.default_rng(seed)
    spans, t = [], float(rng.uniform(0.0, 0.5))
    while t < 8.0:
        length = float(rng.uniform(0.01, 2.5))
        spans.append((t, min(t + length, 9.0)))
        t += length + float(rng.uniform(0.02, 1.2))
    x = with_background(bursts(spans, 9.0, kind=["tone", "noise"][seed % 2],
                               level_db=float(rng.uniform(-40, -6))), -65.0, seed)
    settings = VadSettings(threshold=float(rng.uniform(6, 20)),
                           min_speech=float(rng.uniform(0, 0.3)),
                           min_silence=float(rng.uniform(0.05, 1.0)),
                           pre_roll=float(rng.uniform(0, 0.5)),
                           max_segment=float(rng.uniform(1.0, 3.0)),
                           interim_interval=float(rng.uniform(0.1, 1.0)))
    want = run(x, settings, interim=True, chunk=int(rng.integers(1, 5000)))
    check_order(want)
    for f in finals(want):
        assert 0 < len(f.audio) <= n_samples(settings.max_segment)
        np.testing.assert_array_equal(f.audio, x[f.start:f.end])
    got = run(x, settings, interim=True, chunk=len(x))
    assert [(type(o), getattr(o, "start", None), getattr(o, "at", None)) for o in got] == \
        [(type(o), getattr(o, "start", None), getattr(o, "at", None)) for o in want]


def pieces_to_segments(out: list[SegmenterOutput]) -> list[Segment]:
    """Join each segment's pieces (checking they follow on) into the segment they make."""
    joined: list[Segment] = []
    parts: list[np.ndarray] = []
    start = -1
    for o in out:
        if isinstance(o, Piece):
            if not parts:
                start = o.start
            assert o.start == start and o.offset == sum(len(p) for p in parts), out
            parts.append(o.audio)
            if o.step == "finish":
                joined.append(Segment(start, np.concatenate(parts), is_final=True))
                parts = []
        else:
            assert not isinstance(o, Segment), "a whole segment while streaming"
    assert not parts, "a segment never finished"
    return joined


@pytest.mark.parametrize("interim", [False, True])
@pytest.mark.parametrize("chunk", [160, 320, 3200])
def test_streaming_pieces_join_up_to_exactly_the_segments(interim: bool, chunk: int) -> None:
    settings = VadSettings(max_segment=1.5, interim_interval=0.3)
    x = with_background(bursts([(0.5, 1.5), (2.5, 5.0)], 6.0, kind="noise"), -60.0)
    whole = finals(run(x, settings, chunk=chunk))
    out = run(x, settings, interim, chunk=chunk, feed_interval=0.1)
    joined = pieces_to_segments(out)
    assert [(s.start, s.end) for s in joined] == [(s.start, s.end) for s in whole]
    for a, b in zip(joined, whole, strict=True):
        assert np.array_equal(a.audio, b.audio)
    pieces = [o for o in out if isinstance(o, Piece) and o.step != "finish"]
    assert all(len(p.audio) >= n_samples(0.1) or p.step == "partial" for p in pieces)
    partials = [p for p in pieces if p.step == "partial"]
    if interim:  # interims as often as without streaming, now as partial pieces
        assert len(partials) == len([o for o in run(x, settings, True, chunk=chunk)
                                     if isinstance(o, Segment) and o.is_final is False])
    else:
        assert not partials


def test_finalize_closes_open_speech_now_and_speech_that_goes_on_opens_a_new_segment() -> None:
    seg = VadSegmenter(VadSettings(), interim=True)
    x = with_background(concat(silence(0.5), tone(1.5), silence(1.0)))
    cut = n_samples(1.2)
    out = seg.push(x[:cut])
    now = seg.finalize()
    assert [o.kind for o in now if isinstance(o, Activity)] == ["inactive"]
    (closed,) = finals(now)
    assert abs(closed.end - cut) <= seg.frame and closed.start <= n_samples(0.5)
    assert seg.finalize() == []  # nothing open any more
    later = seg.push(x[cut:]) + seg.flush()
    check_order(out + now + later)  # still well formed: one segment closed, the next opened
    (rest,) = finals(later)
    assert rest.start >= closed.end and abs(rest.end - n_samples(2.0)) <= TOL


def test_finalize_in_silence_closes_nothing() -> None:
    seg = VadSegmenter(VadSettings())
    seg.push(with_background(silence(1.0)))
    assert seg.finalize() == []


def test_finalize_while_streaming_finishes_the_open_segment_with_its_last_piece() -> None:
    settings = VadSettings()
    x = with_background(concat(silence(0.5), tone(1.5), silence(1.0)))
    cut = n_samples(1.2)
    seg = VadSegmenter(settings, feed_interval=0.1)
    out = seg.push(x[:cut]) + seg.finalize()
    (closed,) = pieces_to_segments(out)  # the pieces so far join up and finish now
    assert abs(closed.end - cut) <= seg.frame
    later = seg.push(x[cut:]) + seg.flush()
    (rest,) = pieces_to_segments(later)
    assert rest.start >= closed.end and abs(rest.end - n_samples(2.0)) <= TOL
