"""The vosk model on Korean espeak-ng sentences (tests/data/speech_ko_3_sentences.wav).

On synthetic speech the bundled small Korean model gets most words wrong, so these tests hold
what must be true of any decode: text while the sentence is spoken, a final with words in order
inside the segment, near the sentence, and streams that never mix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from streamer.errors import ConfigError
from streamer.workers.models import make_model
from streamer.workers.models.base import SegmentInfo
from tests.signals import RATE, n_samples, read_wav, silence
from tests.voskutil import KOREAN, PHRASES, SENTENCES, require_vosk

MARGIN = 0.2  # seconds of audio kept around each sentence, as the VAD's pre-roll would
PIECE = n_samples(0.2)  # session.feed_interval's default


@pytest.fixture(scope="module")
def model() -> Iterator[object]:
    require_vosk()
    from streamer.workers.models.vosk_model import VoskModel
    m = make_model("vosk", {})
    assert isinstance(m, VoskModel) and VoskModel.streaming()
    m.warmup()
    yield m


@pytest.fixture(scope="module")
def phrase_model() -> object:
    require_vosk()
    m = make_model("vosk", {"phrases": str(PHRASES)})
    m.warmup()
    return m


def sentence(i: int) -> tuple[np.ndarray, float]:
    a, b = SENTENCES[i]
    x = read_wav(KOREAN)
    start = a - MARGIN
    return x[n_samples(start):n_samples(b + MARGIN)], start


def info(key: str | None, start: float, end: float, is_final: bool | None = True) -> SegmentInfo:
    return SegmentInfo("s", 0, start, end, is_final, key)


def stream_segment(model, key: str, audio: np.ndarray, start: float,  # type: ignore[no-untyped-def]
                   piece: int = PIECE) -> tuple[list[str], dict]:
    """Feed a segment piece by piece as the gateway does, asking for a partial after each."""
    partials = []
    for i in range(0, len(audio), piece):
        end = start + min(len(audio), i + piece) / RATE
        model.feed(key, audio[i:i + piece], info(key, start, end, False))
        partials.append(model.partial(key, info(key, start, end, False))["text"])
    return partials, model.finish(key, info(key, start, start + len(audio) / RATE))


def check_words(out: dict, start: float, end: float) -> list[dict]:
    words = out["words"]
    assert out["text"] and words, out
    assert out["text"] == " ".join(w["word"] for w in words)
    previous = start
    for w in words:
        assert previous <= w["start_time"] <= w["end_time"] <= end + 1e-9, words
        assert 0.0 <= w["confidence"] <= 1.0
        previous = w["end_time"]
    return words


def test_partials_grow_and_the_final_has_ordered_words_inside_each_segment(model) -> None:  # type: ignore[no-untyped-def]
    """The three sentences on one stream, one segment each: word times land on the stream's
    timeline (vosk's own clock runs on across utterances), near each sentence."""
    for i, (a, b) in enumerate(SENTENCES):
        audio, start = sentence(i)
        partials, final = stream_segment(model, "one", audio, start)
        assert partials[0] == ""  # the margin before the sentence holds no words
        spoken = [p for p in partials if p]
        assert len(spoken) >= 3, partials
        assert len(spoken[-1].split()) > len(spoken[0].split()), partials  # text grows
        words = check_words(final, start, start + len(audio) / RATE)
        # on the sentence, over most of it (a misheard syllable at either end may be dropped)
        assert a - 0.2 <= words[0]["start_time"] and words[-1]["end_time"] <= b + 0.2, words
        assert words[-1]["end_time"] - words[0]["start_time"] >= (b - a) / 2, words
        assert model.partial("one", info("one", start, b))["text"] == ""  # closed
    held = model.streams
    model.end_stream("one")
    assert model.streams == held - 1  # the stream's recogniser is dropped at its end


def test_ended_streams_leave_up_to_spare_recognisers_for_the_next_ones(model) -> None:  # type: ignore[no-untyped-def]
    audio, start = sentence(2)
    end = start + len(audio) / RATE
    idle = model.idle
    assert 1 <= idle <= model.params.spare  # the warm-up's and the ended streams' recognisers
    taken = model.recognizer("a")
    assert model.idle == idle - 1
    model.infer(audio[:len(audio) // 2], info("a", start, end, False))  # left open
    model.end_stream("a")
    assert model.idle == idle
    again = model.recognizer("c")
    assert again is taken and again.start_time is None and again.samples == 0  # cleared
    check_words(model.infer(audio, info("c", start, end)), start, end)
    model.end_stream("c")
    none = make_model("vosk", {"spare": 0})  # the loaded model is shared: no second load
    none.warmup()
    none.recognizer("x")
    none.end_stream("x")
    assert (none.streams, none.idle) == (0, 0)


def test_two_streams_interleaved_never_mix(model) -> None:  # type: ignore[no-untyped-def]
    """Two streams fed piece by piece in turn each decode their own sentence. (vosk is not
    bit-for-bit repeatable within a process: a close call between two words can go either way
    from one decode to the next, so the check is on the words, not on equality.)"""
    (x, xs), (y, ys) = sentence(0), sentence(2)
    alone = [set(stream_segment(model, k, a, s)[1]["text"].split())
             for k, a, s in (("alone-x", x, xs), ("alone-y", y, ys))]
    assert not alone[0] & alone[1]  # the two sentences share no word
    model.end_stream("alone-x")
    model.end_stream("alone-y")  # x and y take their (warm) recognisers
    for i in range(0, max(len(x), len(y)), PIECE):
        for key, audio, start in (("x", x, xs), ("y", y, ys)):
            if i < len(audio):
                end = start + min(len(audio), i + PIECE) / RATE
                model.feed(key, audio[i:i + PIECE], info(key, start, end, False))
                model.partial(key, info(key, start, end, False))
    finals = [model.finish(k, info(k, s, s + len(a) / RATE)) for k, a, s in
              (("x", x, xs), ("y", y, ys))]
    for final, own, other, (start, audio) in zip(finals, alone, alone[::-1],
                                                 ((xs, x), (ys, y)), strict=True):
        words = {w["word"] for w in check_words(final, start, start + len(audio) / RATE)}
        assert len(words & own) >= len(own) / 2 and not words & other, (final, own)
    for key in ("x", "y"):
        model.end_stream(key)


def test_a_pause_inside_a_segment_keeps_the_words_before_it(model) -> None:  # type: ignore[no-untyped-def]
    """vosk closes an utterance by itself after 0.5 s of silence; the segment still gets one
    final holding the words on both sides of the pause."""
    (x, xs), (y, _) = sentence(0), sentence(2)
    gap = silence(1.0)
    audio = np.concatenate([x, gap, y])
    partials, final = stream_segment(model, "pause", audio, xs)
    words = check_words(final, xs, xs + len(audio) / RATE)
    pause_start, pause_end = xs + len(x) / RATE, xs + (len(x) + len(gap)) / RATE
    assert any(w["end_time"] <= pause_start for w in words), words
    assert any(w["start_time"] >= pause_end for w in words), words
    assert partials[-1].startswith(partials[len(x) // PIECE + 4])  # the first part stays
    model.end_stream("pause")


def test_a_piece_for_a_stream_never_seen_starts_the_segment_there(model) -> None:  # type: ignore[no-untyped-def]
    """After a worker died holding the segment's start, the next worker hears only the rest."""
    audio, start = sentence(1)
    skip = n_samples(0.6)
    partials, final = stream_segment(model, "late", audio[skip:], start + skip / RATE)
    words = check_words(final, start + skip / RATE, start + len(audio) / RATE)
    assert words[0]["start_time"] >= start + skip / RATE
    model.end_stream("late")


def test_infer_decodes_whole_segments(model) -> None:  # type: ignore[no-untyped-def]
    audio, start = sentence(2)
    end = start + len(audio) / RATE
    bad = audio.copy()
    bad[100:110] = np.nan
    bad[200] = np.inf
    check_words(model.infer(bad, info("simple", start, end, None)), start, end)
    model.end_stream("simple")
    half = audio[:len(audio) // 2]  # no stateful key: a one-off decode
    interim = model.infer(half, info(None, start, start + len(half) / RATE, False))
    assert set(interim) == {"text"} and interim["text"]
    assert model.streams == 0


def test_phrases_keep_the_words_to_the_list(model, phrase_model) -> None:  # type: ignore[no-untyped-def]
    listed = set(PHRASES.read_text(encoding="utf-8").split())
    for i in range(len(SENTENCES)):
        audio, start = sentence(i)
        end = start + len(audio) / RATE
        words = check_words(phrase_model.infer(audio, info("p", start, end)), start, end)
        assert {w["word"] for w in words} <= listed, words
    audio, start = sentence(0)
    unlisted = model.infer(audio, info("o", start, start + len(audio) / RATE))["words"]
    assert {w["word"] for w in unlisted} - listed  # without the list: other words too
    for key in ("p", "o"):
        model.end_stream(key)


# ---- options -------------------------------------------------------------------------------

def test_bad_options_are_config_errors_naming_the_setting(tmp_path: Path) -> None:
    require_vosk()
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    for params, words in [
        ({"model_path": "/nonexistent"}, ["model.model_path", "no such directory"]),
        ({"model_path": str(tmp_path)}, ["model.model_path", "not a vosk model"]),
        ({"phrases": "/nonexistent.txt"}, ["model.phrases", "cannot read"]),
        ({"phrases": str(empty)}, ["model.phrases", "no phrase"]),
        ({"grammar": str(PHRASES)}, ["grammar", "known:"]),
    ]:
        with pytest.raises(ConfigError) as err:
            make_model("vosk", params)
        for word in words:
            assert word in str(err.value), (params, err.value)


def test_a_phrase_word_missing_from_the_vocabulary_is_named(tmp_path: Path) -> None:
    require_vosk()
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("커피 한 잔 주세요\n반갑습니다 zzqx\n", encoding="utf-8")
    model = make_model("vosk", {"phrases": str(phrases)})
    with pytest.raises(ConfigError, match=r"^model.phrases: not in the model's vocabulary: "
                                          r"zzqx, 반갑습니다$"):
        model.warmup()
