"""Live transcription with the vosk model through the real gateway and its worker processes:
Korean espeak-ng speech in, text and words out.

Loading the model takes each worker seconds and hundreds of MB, so the module shares one gateway
(two embedded workers) on a module-wide event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from streamer.client import stream_audio
from streamer.gateway.app import create_app
from streamer.gateway.pool import make_pool
from streamer.protocol import AudioFormat, ErrorEvent
from tests.conftest import make_config
from tests.signals import RATE, pcm16, read_wav
from tests.speechutil import segments, sentence_with_interims
from tests.voskutil import KOREAN, SENTENCES, require_vosk

pytestmark = pytest.mark.asyncio(loop_scope="module")
SEGMENTED = "/api/v1/segmented"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[TestServer]:
    require_vosk()
    config = make_config(2, model__name="vosk")
    srv = TestServer(create_app(config, make_pool(config, "embedded")), host="127.0.0.1")
    await srv.start_server()  # returns once both workers loaded the model
    try:
        yield srv
    finally:
        await srv.close()



async def test_two_sessions_get_each_sentence_as_text_with_words(server: TestServer) -> None:
    audio = pcm16(read_wav(KOREAN))
    reports = await asyncio.gather(*(
        stream_audio(str(server.make_url(SEGMENTED)), AudioFormat(), audio, chunk_size=3200)
        for _ in range(2)))
    for report in reports:
        assert report.close_code == 1000
        assert not [e for e in report.events if isinstance(e, ErrorEvent)]
        finals = segments(report, True)
        assert len(finals) == len(SENTENCES), [(f.start_time, f.end_time) for f in finals]
        for f, (a, b) in zip(finals, SENTENCES, strict=True):
            words = f.output["words"]
            assert f.output["text"] and words, f
            assert f.output["text"] == " ".join(w["word"] for w in words)
            times = [t for w in words for t in (w["start_time"], w["end_time"])]
            assert times == sorted(times), words  # in order, never overlapping
            assert f.start_time <= times[0] and times[-1] <= f.end_time + 1e-6, (f, words)
            # on the sentence, over most of it (a misheard first or last syllable may be
            # dropped: synthetic Korean is hard on the small model)
            assert a - 0.2 <= times[0] and times[-1] <= b + 0.2, (words, a, b)
            assert times[-1] - times[0] >= (b - a) / 2, (words, a, b)
            assert all(0.0 <= w["confidence"] <= 1.0 for w in words)


async def test_interim_text_while_the_sentence_is_spoken(server: TestServer) -> None:
    audio = read_wav(KOREAN)[:int(2.9 * RATE)]  # the first sentence
    final, _ = await sentence_with_interims(str(server.make_url(SEGMENTED)), audio)
    assert final.output["text"] and final.output["words"]
