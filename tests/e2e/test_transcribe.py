"""Live transcription through the real gateway and workers: espeak-ng speech in, words out."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.client import stream_audio
from streamer.protocol import AudioFormat, ErrorEvent
from tests.signals import DATA, RATE, pcm16, read_wav
from tests.speechutil import segments, sentence_with_interims

SEGMENTED = "/api/v1/segmented"
SIMPLE = "/api/v1/simple"
GRAMMAR = str(DATA / "sentences.gram")
SENTENCES = [(0.300, 2.245, "the brown fox jumps over the dog"),
             (2.945, 4.415, "please call me back tomorrow"),
             (5.115, 5.948, "have a nice day")]



@pytest.mark.parametrize("detector", ["energy", "silero"])
async def test_sentences_come_back_word_for_word_with_times(gateway, detector) -> None:  # type: ignore[no-untyped-def]
    server = await gateway(workers=2, model__name="transcribe", model__grammar=GRAMMAR)
    audio = read_wav(DATA / "speech_3_sentences.wav")
    report = await stream_audio(str(server.make_url(SEGMENTED)), AudioFormat(), pcm16(audio),
                                chunk_size=3200, vad={"detector": detector})
    assert report.close_code == 1000
    assert not [e for e in report.events if isinstance(e, ErrorEvent)]
    finals = segments(report, True)
    assert [f.output["text"] for f in finals] == [text for _, _, text in SENTENCES]
    for f, (a, b, text) in zip(finals, SENTENCES, strict=True):
        words = f.output["words"]
        assert [w["word"] for w in words] == text.split()
        times = [t for w in words for t in (w["start_time"], w["end_time"])]
        assert times == sorted(times), words  # in order, never overlapping
        assert f.start_time <= times[0] and times[-1] <= f.end_time + 1e-6, (f, words)
        assert abs(times[0] - a) <= 0.15 and times[-1] >= b - 0.15, (words, a, b)
        assert all(0.0 <= w["confidence"] <= 1.0 for w in words)


async def test_interim_text_grows_while_the_sentence_is_spoken(gateway) -> None:  # type: ignore[no-untyped-def]
    server = await gateway(workers=1, model__name="transcribe", model__grammar=GRAMMAR)
    audio = read_wav(DATA / "speech_3_sentences.wav")[:int(2.6 * RATE)]  # the first sentence
    final, _ = await sentence_with_interims(str(server.make_url(SEGMENTED)), audio)
    assert final.output["text"] == SENTENCES[0][2]


async def test_open_vocabulary_on_simple_transcribes_each_chunk(gateway) -> None:  # type: ignore[no-untyped-def]
    server = await gateway(workers=1, model__name="transcribe", model__decoders=1,
                           session__chunk_seconds=2.0)
    audio = read_wav(DATA / "speech_3_sentences.wav")
    report = await stream_audio(str(server.make_url(SIMPLE)), AudioFormat(), pcm16(audio))
    assert report.close_code == 1000
    chunks = segments(report, None)
    assert len(chunks) == 4  # 6.25 s in 2 s chunks
    assert all("text" in c.output and "words" in c.output for c in chunks)
    assert sum(len(c.output["words"]) for c in chunks) > 0


@pytest.mark.sends_invalid
async def test_a_bad_detector_is_refused_with_1007(gateway) -> None:  # type: ignore[no-untyped-def]
    server = await gateway(workers=1)
    report = await stream_audio(str(server.make_url(SEGMENTED)), AudioFormat(),
                                pcm16(np.zeros(1600, np.float32)), vad={"detector": "webrtc"})
    assert report.close_code == 1007
    assert isinstance(report.events[0], ErrorEvent)
    assert "'vad.detector' must be one of 'energy', 'silero'" in report.events[0].message
