"""The transcribe model and its streaming recogniser, on espeak-ng sentences (tests/data)."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.errors import ConfigError
from streamer.workers.models import make_model
from streamer.workers.models.base import SegmentInfo
from streamer.workers.models.speech import DecoderPool, StreamingRecognizer, Transcript
from streamer.workers.models.transcribe import TranscribeModel
from tests.signals import DATA, RATE, n_samples, read_wav

GRAMMAR = str(DATA / "sentences.gram")
# (file, [(first second, last second, words)]), spans known from the synthesis
FIXTURES = [
    ("speech_3_sentences.wav", [(0.300, 2.245, "the brown fox jumps over the dog"),
                                (2.945, 4.415, "please call me back tomorrow"),
                                (5.115, 5.948, "have a nice day")]),
    ("speech_3_more_sentences.wav", [(0.300, 2.006, "the red cat runs over the fence"),
                                     (2.706, 4.289, "please text me later tonight"),
                                     (4.989, 5.874, "have a great day")]),
]
CASES = [(name, *span) for name, spans in FIXTURES for span in spans]
MARGIN = 0.2  # seconds of audio kept around each sentence, as the VAD's pre-roll would


def sentence(name: str, a: float, b: float) -> tuple[np.ndarray, float]:
    x = read_wav(DATA / name)
    start = max(0.0, a - MARGIN)
    return x[n_samples(start):n_samples(b + MARGIN)], start


@pytest.fixture(scope="module")
def grammar_model() -> TranscribeModel:
    model = make_model("transcribe", {"grammar": GRAMMAR, "decoders": 2})
    assert isinstance(model, TranscribeModel)
    model.warmup()
    return model


@pytest.fixture(scope="module")
def open_model() -> TranscribeModel:
    model = make_model("transcribe", {"decoders": 1})
    assert isinstance(model, TranscribeModel)
    model.warmup()
    return model


def info(key: str | None, start: float, audio: np.ndarray,
         is_final: bool | None = True) -> SegmentInfo:
    return SegmentInfo("s", 0, start, start + len(audio) / RATE, is_final, key)


@pytest.mark.parametrize(("name", "a", "b", "words"), CASES)
def test_grammar_decodes_each_sentence_word_for_word_with_times_in_order(
        grammar_model: TranscribeModel, name: str, a: float, b: float, words: str) -> None:
    audio, start = sentence(name, a, b)
    out = grammar_model.infer(audio, info(f"k-{name}-{a}", start, audio))
    assert out["text"] == words
    got = out["words"]
    assert [w["word"] for w in got] == words.split()
    end = start + len(audio) / RATE
    previous = start
    for w in got:
        assert previous <= w["start_time"] < w["end_time"] <= end, got
        assert 0.0 <= w["confidence"] <= 1.0
        previous = w["end_time"]
    # the words lie on the sentence, not on the silence before it; they reach its end
    assert abs(got[0]["start_time"] - a) <= 0.1 and got[-1]["end_time"] >= b - 0.1, got


def test_open_vocabulary_returns_text(open_model: TranscribeModel) -> None:
    name, spans = FIXTURES[0]
    for a, b, _ in spans:
        audio, start = sentence(name, a, b)
        out = open_model.infer(audio, info("open", start, audio))
        assert out["text"].strip(), out
        assert out["text"] == " ".join(w["word"] for w in out["words"])


# ---- the incremental API -------------------------------------------------------------------

def feed_in_pieces(rec: StreamingRecognizer, audio: np.ndarray, start: float,
                   piece: int) -> tuple[list[str], Transcript]:
    rec.begin(start)
    partials = []
    for i in range(0, len(audio), piece):
        rec.feed(audio[i:i + piece])
        partials.append(rec.partial())
    return partials, rec.finish()


def test_partials_grow_and_the_final_equals_a_decode_of_the_whole(
        grammar_model: TranscribeModel) -> None:
    audio, start = sentence(*CASES[0][:3])
    whole = StreamingRecognizer(grammar_model.pool)
    whole.begin(start)
    whole.feed(audio)
    want = whole.finish()
    assert want.text == CASES[0][3]
    for piece in (n_samples(0.1), n_samples(0.25), 1234):
        partials, got = feed_in_pieces(StreamingRecognizer(grammar_model.pool), audio, start,
                                       piece)
        assert got.text == want.text
        assert [(w.word, w.start_time, w.end_time) for w in got.words] == \
            [(w.word, w.start_time, w.end_time) for w in want.words]
        for g, w in zip(got.words, want.words, strict=True):
            assert g.confidence == pytest.approx(w.confidence, abs=0.01)
        counts = [len(p.split()) for p in partials]
        assert counts == sorted(counts) and counts[-1] >= 5, partials  # grows, word by word
        assert partials[0] == "" or want.text.startswith(partials[0].split()[0])


def test_reset_drops_the_open_utterance(grammar_model: TranscribeModel) -> None:
    first, _ = sentence(*CASES[0][:3])
    second, start = sentence(*CASES[2][:3])
    rec = StreamingRecognizer(grammar_model.pool)
    rec.feed(first[:len(first) // 2])
    assert rec.partial()
    rec.reset()
    assert rec.partial() == "" and rec.samples == 0 and rec.start_time is None
    assert grammar_model.pool.in_use == 0  # its decoder went back
    rec.begin(start)
    rec.feed(second)
    assert rec.finish().text == CASES[2][3]
    assert rec.finish() == Transcript("")  # nothing open any more


def test_two_streams_interleaved_never_mix_even_with_one_decoder(
        grammar_model: TranscribeModel) -> None:
    """Two open utterances on a pool of one decoder take turns, replaying their audio: each
    gives exactly the partials and final it gives alone."""
    pool = DecoderPool(grammar_model.make_decoder, 1)
    (a_audio, a_start), (b_audio, b_start) = sentence(*CASES[1][:3]), sentence(*CASES[3][:3])
    piece = n_samples(0.2)
    alone = [feed_in_pieces(StreamingRecognizer(pool), x, t, piece)
             for x, t in ((a_audio, a_start), (b_audio, b_start))]
    assert pool.evictions == 0
    a, b = StreamingRecognizer(pool), StreamingRecognizer(pool)
    a.begin(a_start)
    b.begin(b_start)
    partials: tuple[list[str], list[str]] = ([], [])
    for i in range(0, max(len(a_audio), len(b_audio)), piece):
        for rec, x, out in ((a, a_audio, partials[0]), (b, b_audio, partials[1])):
            if i < len(x):
                rec.feed(x[i:i + piece])
                out.append(rec.partial())
    finals = a.finish(), b.finish()
    assert pool.evictions > 0 and pool.in_use == 0
    assert [f.text for f in finals] == [CASES[1][3], CASES[3][3]]
    for (want_partials, want), got_partials, got in zip(alone, partials, finals, strict=True):
        assert got_partials == want_partials
        assert [(w.word, w.start_time, w.end_time) for w in got.words] == \
            [(w.word, w.start_time, w.end_time) for w in want.words]


def test_interims_through_the_model_decode_only_the_new_audio(
        grammar_model: TranscribeModel) -> None:
    """Today's interface re-sends the segment so far; the model feeds the recogniser the tail."""
    audio, start = sentence(*CASES[0][:3])
    key = "interims"
    texts = []
    for end in range(n_samples(0.5), len(audio), n_samples(0.5)):
        texts.append(grammar_model.infer(audio[:end], info(key, start, audio[:end], False))
                     ["text"])
        assert grammar_model.recognizer(key).samples == end  # kept, not re-decoded
    final = grammar_model.infer(audio, info(key, start, audio))
    assert final["text"] == CASES[0][3]
    assert [len(t.split()) for t in texts] == sorted(len(t.split()) for t in texts)
    held = grammar_model.streams
    grammar_model.end_stream(key)
    assert grammar_model.streams == held - 1  # the stream's state is dropped at its end


def test_without_a_stateful_key_each_call_stands_alone(grammar_model: TranscribeModel) -> None:
    audio, start = sentence(*CASES[2][:3])
    half = audio[:len(audio) // 2]
    assert grammar_model.infer(half, info(None, start, half, False))["text"]
    assert grammar_model.pool.in_use == 0  # nothing kept, the decoder went back
    assert grammar_model.infer(audio, info(None, start, audio))["text"] == CASES[2][3]


def test_non_finite_samples_do_not_break_decoding(grammar_model: TranscribeModel) -> None:
    audio, start = sentence(*CASES[2][:3])
    bad = audio.copy()
    bad[100:110] = np.nan
    bad[200] = np.inf
    out = grammar_model.infer(bad, info("nan", start, bad))
    assert out["text"] == CASES[2][3]
    grammar_model.end_stream("nan")


def test_a_chunk_of_simple_is_decoded_on_its_own(grammar_model: TranscribeModel) -> None:
    audio, start = sentence(*CASES[2][:3])
    out = grammar_model.infer(audio, info("simple", start, audio, is_final=None))
    assert out["text"] == CASES[2][3] and out["words"]


# ---- options -------------------------------------------------------------------------------

@pytest.mark.parametrize(("params", "words"), [
    ({"grammar": "/nonexistent.gram"}, ["model.grammar", "no such file"]),
    ({"grammar": GRAMMAR, "keywords": GRAMMAR}, ["exclude each other"]),
    ({"language_model": GRAMMAR, "grammar": GRAMMAR}, ["model.language_model", "model.grammar"]),
    ({"acoustic_model": "/nonexistent"}, ["model.acoustic_model", "no such directory"]),
    ({"decoders": 0}, ["model.decoders"]),
    ({"grammer": GRAMMAR}, ["grammer", "known:"]),
])
def test_bad_options_are_config_errors_naming_the_setting(params: dict[str, object],
                                                          words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        make_model("transcribe", params)
    for word in words:
        assert word in str(err.value)


def test_a_broken_grammar_or_empty_keyword_list_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.gram"
    bad.write_text("#JSGF V1.0;\ngrammar x;\npublic <s> = hello ( world ;\n")
    with pytest.raises(ConfigError, match="not a valid JSGF"):
        make_model("transcribe", {"grammar": str(bad)})
    empty = tmp_path / "none.txt"
    empty.write_text("\n\n")
    with pytest.raises(ConfigError, match="no key phrase"):
        make_model("transcribe", {"keywords": str(empty)})


def test_a_word_missing_from_the_dictionary_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    oov = tmp_path / "oov.gram"
    oov.write_text("#JSGF V1.0;\ngrammar x;\n// a comment\n"
                   "public <s> = hello (world | zzqxworld) [<more>];\n<more> = please;\n")
    model = make_model("transcribe", {"grammar": str(oov), "decoders": 1})
    with pytest.raises(ConfigError, match=r"model.grammar: not in the dictionary: zzqxworld$"):
        model.warmup()


def test_keyword_spotting_finds_a_phrase(tmp_path) -> None:  # type: ignore[no-untyped-def]
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("tomorrow /1e-10/\n")
    model = make_model("transcribe", {"keywords": str(phrases), "decoders": 1})
    audio, start = sentence(*CASES[1][:3])
    out = model.infer(audio, info("kws", start, audio))
    assert "tomorrow" in out["text"].split(), out


def test_pieces_through_the_runner_give_the_words_of_one_whole_decode(
        open_model: TranscribeModel) -> None:
    """feed, partial and finish as the gateway sends them to a streaming model: the final is
    the whole segment's decode, words and times, and a piece after a lost start begins there."""
    from streamer.wire import InferenceRequest
    from streamer.workers.runner import Runner

    assert TranscribeModel.streaming()
    audio, start = sentence(*CASES[0][:3])
    runner = Runner(open_model, worker_id=0)
    step = n_samples(0.2)

    def piece(rid: int, a: int, b: int, kind: str, key: str = "pieces") -> dict[str, object]:
        req = InferenceRequest(rid, "s", 0, rid, start, start + b / RATE,
                               audio[a:b].tobytes(), kind == "finish", key, step=kind)
        result = runner.run(req, 0.0)
        assert result.error is None, result.error
        assert result.output is not None
        return result.output

    partials = []
    fed = 0
    for rid in range(1, len(audio) // step):
        out = piece(rid, fed, fed + step, "partial" if rid % 3 == 0 else "feed")
        fed += step
        if rid % 3:
            assert out == {}  # a feed answers nothing
        else:
            partials.append(out["text"])
    final = piece(99, fed, len(audio), "finish")
    whole = open_model.infer(audio, info("whole", start, audio))
    assert final == whole and final["text"]
    assert partials and all(isinstance(p, str) for p in partials)
    assert open_model.recognizer("pieces").start_time is None  # the utterance is closed
    # A worker that never saw the segment's start: the utterance starts at the piece.
    late = piece(100, step * 4, len(audio), "finish", key="late")
    words = late["words"]
    assert isinstance(words, list) and words
    assert words[0]["start_time"] >= start + 4 * step / RATE
    for key in ("pieces", "whole", "late"):
        open_model.end_stream(key)


def test_a_step_for_a_model_that_does_not_stream_is_an_error_result() -> None:
    from streamer.wire import InferenceRequest
    from streamer.workers.runner import Runner

    runner = Runner(make_model("counter", {}), worker_id=0)
    req = InferenceRequest(1, "s", 0, 1, 0.0, 0.1, np.zeros(1600, np.float32).tobytes(),
                           False, "k", step="feed")
    result = runner.run(req, 0.0)
    assert result.output is None and "not a streaming model" in (result.error or "")
