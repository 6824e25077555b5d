"""A streaming model through the real gateway: the open segment is fed while it is spoken."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np

from streamer.client import stream_audio
from streamer.gateway.state import POOL
from streamer.protocol import AudioFormat, ErrorEvent, SegmentEvent, ServerEvent
from streamer.workers.models.base import SegmentInfo
from streamer.workers.models.transcribe import TranscribeModel
from tests.conftest import wait_until
from tests.e2e.test_transcribe import GRAMMAR, SEGMENTED, SENTENCES, pcm16, segments
from tests.signals import DATA, RATE, read_wav

FIRST = int(2.6 * RATE)  # the first sentence of the fixture and the pause after it


def as_sent(audio: np.ndarray) -> np.ndarray:
    """The samples the gateway decodes from what :func:`pcm16` sends."""
    return np.frombuffer(pcm16(audio), "<i2").astype(np.float32) / 32768.0


def decode_whole(audio: np.ndarray, start: float, end: float) -> dict:  # type: ignore[type-arg]
    """The same model, in this process, given the segment in one piece."""
    model = TranscribeModel(TranscribeModel.Params(decoders=1))
    segment = audio[round(start * RATE):round(end * RATE)]
    return model.infer(segment, SegmentInfo("s", 0, start, end, True))


async def test_interims_grow_and_the_final_equals_a_decode_of_the_whole_segment(gateway) -> None:  # type: ignore[no-untyped-def]
    server = await gateway(workers=1, model__name="transcribe", model__decoders=1,
                           session__feed_interval=0.1)
    audio = read_wav(DATA / "speech_3_sentences.wav")[:FIRST]
    report = await stream_audio(str(server.make_url(SEGMENTED)), AudioFormat(), pcm16(audio),
                                chunk_size=3200, interim_results=True,
                                vad={"interim_interval": 0.3})
    assert report.close_code == 1000
    assert not [e for e in report.events if isinstance(e, ErrorEvent)]
    (final,) = segments(report, True)
    interims = segments(report, False)
    assert len(interims) >= 4
    assert {i.start_time for i in interims} == {final.start_time}
    ends = [i.end_time for i in interims]
    assert ends == sorted(set(ends)) and ends[-1] <= final.end_time  # each covers more
    assert all(set(i.output) == {"text"} for i in interims)
    assert len(interims[-1].output["text"].split()) >= 3
    assert report.events.index(final) > report.events.index(interims[-1])  # none after it
    # Fed in pieces of 0.1 s, the words and their times are those of one decode of it all.
    whole = await asyncio.to_thread(decode_whole, as_sent(audio), final.start_time,
                                    final.end_time)
    assert final.output == whole
    assert final.output["text"]
    # The worker was fed while the sentence was spoken: more answers than events.
    pieces = (final.end_time - final.start_time) / 0.1
    answered = server.app[POOL].stats().workers[0].answered
    assert answered >= max(pieces / 2, len(interims) + 4)


async def test_a_grammar_decodes_word_for_word_while_fed_in_pieces(gateway) -> None:  # type: ignore[no-untyped-def]
    server = await gateway(workers=1, model__name="transcribe", model__grammar=GRAMMAR)
    audio = read_wav(DATA / "speech_3_sentences.wav")
    report = await stream_audio(str(server.make_url(SEGMENTED)), AudioFormat(), pcm16(audio),
                                chunk_size=1600, interim_results=True)
    assert report.close_code == 1000
    finals = segments(report, True)
    assert [f.output["text"] for f in finals] == [text for _, _, text in SENTENCES]
    for f in finals:  # interims of a sentence: words of that sentence, never of another
        own = [i for i in segments(report, False) if i.start_time == f.start_time]
        assert own and all(set(i.output["text"].split()) <= set(f.output["text"].split())
                           for i in own)


async def test_two_concurrent_streams_never_mix_their_text(gateway) -> None:  # type: ignore[no-untyped-def]
    server = await gateway(workers=1, model__name="transcribe", model__grammar=GRAMMAR,
                           model__decoders=1)  # the two streams even take turns on one decoder
    url = str(server.make_url(SEGMENTED))
    first = read_wav(DATA / "speech_3_sentences.wav")
    second = read_wav(DATA / "speech_3_more_sentences.wav")
    alone = [await stream_audio(url, AudioFormat(), pcm16(x), chunk_size=1600) for x in
             (first, second)]
    together = await asyncio.gather(*(
        stream_audio(url, AudioFormat(), pcm16(x), chunk_size=1600, interim_results=True)
        for x in (first, second)))
    texts = [[f.output for f in segments(r, True)] for r in alone]
    assert texts[0] != texts[1] and all(len(t) == 3 for t in texts)
    assert [[f.output for f in segments(r, True)] for r in together] == texts
    for report, own in zip(together, texts, strict=True):
        words = {w for t in own for w in t["text"].split()}
        assert all(set(i.output["text"].split()) <= words for i in segments(report, False))


async def test_a_streams_state_is_dropped_at_its_end(gateway) -> None:  # type: ignore[no-untyped-def]
    server = await gateway(pool="inline", model__name="transcribe", model__grammar=GRAMMAR)
    model = server.app[POOL]._runner.model
    held: list[int] = []
    audio = read_wav(DATA / "speech_3_sentences.wav")
    report = await stream_audio(str(server.make_url(SEGMENTED)), AudioFormat(), pcm16(audio),
                                chunk_size=3200, interim_results=True,
                                on_event=lambda e: held.append(model.streams))
    assert len(segments(report, True)) == 3
    assert max(held) == 1  # held while the stream ran
    assert model.streams == 0 and not model._segments
    assert model.pool.in_use == 0  # its decoder went back


async def test_a_worker_killed_mid_utterance_gives_the_state_loss_notice_first(gateway) -> None:  # type: ignore[no-untyped-def]
    server = await gateway(workers=1, model__name="transcribe", model__grammar=GRAMMAR,
                           model__decoders=1)
    pool = server.app[POOL]
    audio = read_wav(DATA / "speech_3_sentences.wav")[:FIRST]
    killed: list[int] = []
    seen: list[ServerEvent] = []

    def kill_at_the_first_interim(event: ServerEvent) -> None:
        seen.append(event)
        if isinstance(event, SegmentEvent) and event.is_final is False and not killed:
            pid = pool.stats().workers[0].pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed.append(len(seen))

    report = await stream_audio(str(server.make_url(SEGMENTED)), AudioFormat(), pcm16(audio),
                                chunk_size=1600, real_time=True, interim_results=True,
                                on_event=kill_at_the_first_interim)
    assert killed and report.close_code == 1000
    after = report.events[killed[0]:]
    lost = [e for e in after if isinstance(e, ErrorEvent)]
    assert len(lost) == 1 and "state for this stream was lost" in lost[0].message
    answers = [e for e in after if isinstance(e, SegmentEvent)]
    assert answers and after.index(lost[0]) < after.index(answers[0])  # told first
    assert answers[-1].is_final is True


async def test_pieces_go_through_nats_workers_too(gateway, nats_server, nats_workers) -> None:  # type: ignore[no-untyped-def]
    nats_workers("transcribe", model__grammar=GRAMMAR)
    server = await gateway(workers=0, pool__nats_url=nats_server.url,
                           model__name="transcribe", model__grammar=GRAMMAR)
    pool = server.app[POOL]
    await wait_until(lambda: pool.stats().ready == 1, within=60,
                     what="a transcribe worker heard through NATS")
    audio = read_wav(DATA / "speech_3_sentences.wav")
    report = await stream_audio(str(server.make_url(SEGMENTED)), AudioFormat(), pcm16(audio),
                                chunk_size=1600, interim_results=True)
    assert report.close_code == 1000
    assert [f.output["text"] for f in segments(report, True)] == [t for _, _, t in SENTENCES]
    assert segments(report, False)
    answered = pool.stats().workers[0].answered
    assert answered > len(segments(report, True)) + len(segments(report, False))  # and feeds
