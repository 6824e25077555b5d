"""The silero detector in processes beside the gateway, through the real gateway: the same
segments as on the event loop, and a detector process killed mid-stream costs no segment."""

from __future__ import annotations

import os
import signal

from streamer.client import stream_audio
from streamer.gateway.state import DETECTION
from streamer.protocol import ActivityEvent, AudioFormat, ErrorEvent, SegmentEvent, ServerEvent
from tests.conftest import wait_until
from tests.signals import DATA, RATE, pcm16, read_wav

SEGMENTED = "/api/v1/segmented"
SILERO = {"detector": "silero"}



def finals(events: list[ServerEvent]) -> list[tuple[float, float]]:
    return [(e.start_time, e.end_time) for e in events
            if isinstance(e, SegmentEvent) and e.is_final]


async def test_silero_in_its_own_process_finds_what_it_finds_on_the_loop(gateway) -> None:  # type: ignore[no-untyped-def]
    audio = pcm16(read_wav(DATA / "speech_3_sentences.wav"))
    found = {}
    for workers in (0, 1):
        server = await gateway(workers=1, model__name="features", pool__vad_workers=workers)
        report = await stream_audio(str(server.make_url(SEGMENTED)), AudioFormat(), audio,
                                    chunk_size=3200, vad=SILERO)
        assert report.close_code == 1000
        assert not [e for e in report.events if isinstance(e, ErrorEvent)]
        found[workers] = finals(report.events)
        stats = server.app[DETECTION].stats()
        if workers == 0:
            assert stats is None  # nothing started: the loop ran the network
        else:
            assert stats is not None and stats.workers[0].answered > 0
            assert stats.workers[0].pid not in (None, os.getpid())
    assert len(found[0]) == 3
    assert found[1] == found[0]


async def test_energy_streams_start_no_detector_process(gateway) -> None:  # type: ignore[no-untyped-def]
    server = await gateway(workers=1, model__name="features")
    report = await stream_audio(str(server.make_url(SEGMENTED)), AudioFormat(),
                                pcm16(read_wav(DATA / "speech_3_sentences.wav")),
                                chunk_size=3200)
    assert len(finals(report.events)) == 3
    assert server.app[DETECTION].stats() is None


async def test_a_detector_process_killed_mid_stream_costs_no_segment(gateway) -> None:  # type: ignore[no-untyped-def]
    # the server's default detector is silero: its process starts with the gateway
    server = await gateway(workers=1, model__name="features", vad__detector="silero")
    detection = server.app[DETECTION]
    stats = await wait_until(lambda: (s := detection.stats()) and s.ready and s,
                             what="the detector process to start")
    pid = stats.workers[0].pid
    killed = []

    def kill_at_first_speech(event: ServerEvent) -> None:
        if isinstance(event, ActivityEvent) and not killed:
            os.kill(pid, signal.SIGKILL)
            killed.append(event)

    audio = read_wav(DATA / "speech_3_sentences.wav")[:int(4.7 * RATE)]  # two sentences
    report = await stream_audio(str(server.make_url(SEGMENTED)), AudioFormat(), pcm16(audio),
                                chunk_size=3200, real_time=True, on_event=kill_at_first_speech)
    assert killed and report.close_code == 1000
    assert not [e for e in report.events if isinstance(e, ErrorEvent)]
    assert len(finals(report.events)) == 2
    after = await wait_until(lambda: (s := detection.stats()) and s.ready and s,
                             what="the detector process to come back")
    assert after.restarts >= 1 and after.workers[0].pid != pid
