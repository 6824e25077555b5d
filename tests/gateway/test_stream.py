"""The stream core without sockets or processes: bytes in, jobs out; results in, events out."""

import json

import numpy as np
import pytest

from streamer.gateway.ledger import Outgoing
from streamer.gateway.segmenters import FixedSegmenter
from streamer.gateway.stream import StreamCore, Work
from streamer.protocol import AudioFormat, StartRequest
from streamer.wire import InferenceResult

FMT = AudioFormat(channels=2, sample_rate=16000)


def pcm(seconds: float, channels: int = 2) -> bytes:
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    one = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    return np.repeat(one[:, None], channels, axis=1).tobytes()


class Harness:
    def __init__(self, stateful: bool = False, chunk: float = 0.5) -> None:
        self.sent: list[Outgoing] = []
        segmenters = [FixedSegmenter(int(chunk * 16000)) for _ in range(FMT.channels)]
        self.core = StreamCore("sess", 1, StartRequest(format=FMT), segmenters, stateful,
                               self.sent.append)

    def events(self) -> list[dict]:
        return [json.loads(o.text) for o in self.sent]


def ok(work: Work, **output) -> InferenceResult:
    return InferenceResult(request_id=1, worker_id=0, output=output or {"n": work.job.seq})


def test_frames_become_jobs_with_sequence_numbers_per_channel():
    h = Harness()
    fed = h.core.feed(pcm(1.2), now=10.0)
    assert [(w.job.channel, w.job.seq, w.job.start_time, w.job.end_time) for w in fed.work] == [
        (0, 0, 0.0, 0.5), (0, 1, 0.5, 1.0), (1, 0, 0.0, 0.5), (1, 1, 0.5, 1.0)]
    assert len(fed.work[0].job.audio) == 8000 * 4  # float32 samples
    assert fed.seconds == pytest.approx(1.2)
    assert h.core.open == 4 and h.core.backlog_seconds == pytest.approx(2.0)
    assert all(w.job.stateful_key is None for w in fed.work)


def test_results_in_any_order_come_out_in_stream_order():
    h = Harness()
    work = h.core.feed(pcm(1.0), now=0.0).work
    for w in reversed(work):
        h.core.settle(w, ok(w))
    events = h.events()
    assert [(e["channel"], e["start_time"]) for e in events] == [(1, 0.0), (1, 0.5), (0, 0.0),
                                                                 (0, 0.5)]
    assert all(o.segment_seconds == 0.5 and o.ok for o in h.sent)


def test_finish_flushes_the_tail_and_plans_stopped_after_every_result():
    h = Harness()
    h.core.feed(pcm(0.75), now=0.0)
    work = h.core.finish(now=1.0).work
    assert h.sent == []  # the first chunks are still open: stopped waits behind them
    assert [(w.job.start_time, w.job.end_time) for w in work] == [(0.5, 0.75), (0.5, 0.75)]
    assert h.core.open == 4


def test_an_output_json_cannot_carry_is_an_error_event_naming_the_segment():
    h = Harness(chunk=1.0)
    work = h.core.feed(pcm(1.0, channels=2), now=0.0).work
    h.core.settle(work[0], InferenceResult(1, 0, output={"blob": b"\x00"}))
    h.core.settle(work[1], ok(work[1]))
    first, second = h.events()
    assert first["type"] == "error" and first["start_time"] == 0.0 and first["end_time"] == 1.0
    assert "could not be sent as JSON" in first["message"]
    assert second["type"] == "segment" and h.core.open == 0


def test_an_error_result_and_a_withdrawn_job():
    h = Harness(chunk=1.0)
    work = h.core.feed(pcm(1.0), now=0.0).work
    h.core.settle(work[0], InferenceResult(1, 0, error="inference failed: boom"))
    h.core.settle(work[1], None)  # withdrawn: nothing to send, nothing held
    assert [e["message"] for e in h.events()] == ["inference failed: boom"]
    assert h.core.open == 0


def test_state_lost_sends_a_notice_before_the_answer():
    h = Harness(stateful=True, chunk=1.0)
    work = h.core.feed(pcm(1.0), now=0.0).work
    assert [w.job.stateful_key for w in work] == ["sess/1/0", "sess/1/1"]
    h.core.settle(work[0], InferenceResult(1, 0, output={"a": 1}, state_lost=True))
    assert "state for this stream was lost" in json.loads(h.sent[0].notice)["message"]
    assert h.core.close("audio.duration_seconds", 1.0) == ["sess/1/0", "sess/1/1"]


def test_a_partial_frame_at_the_end_is_reported():
    h = Harness(chunk=1.0)
    h.core.feed(pcm(0.5) + b"\x01", now=0.0)
    work = h.core.finish(now=1.0).work
    for w in work:
        h.core.settle(w, ok(w))
    messages = [e.get("message", "") for e in h.events()]
    assert any("ended inside an audio frame" in m for m in messages)
    assert [e["type"] for e in h.events()].count("stopped") == 2


def test_closing_drops_open_outputs_and_late_results():
    h = Harness(chunk=1.0)
    work = h.core.feed(pcm(1.0), now=0.0).work
    h.core.close("session.abandoned", True)
    h.core.settle(work[0], ok(work[0]))
    assert h.sent == [] and h.core.open == 0


def test_results_are_dated_by_when_their_audio_arrived():
    h = Harness(chunk=0.5)
    h.core.feed(pcm(0.25), now=100.0)
    work = h.core.feed(pcm(0.25), now=101.0).work
    assert work[0].audio_ready_at == 101.0 and work[0].audio_started_at == 100.0


def test_finalize_closes_every_channel_and_plans_finalized_after_its_results():
    h = Harness()
    for w in h.core.feed(pcm(0.7), now=0.0).work:
        h.core.settle(w, ok(w))
    fed = h.core.finalize(now=1.0)
    assert [(w.job.channel, w.job.start_time, w.job.end_time, w.from_finalize)
            for w in fed.work] == [(0, 0.5, 0.7, True), (1, 0.5, 0.7, True)]
    assert [e["type"] for e in h.events()] == ["segment"] * 2  # finalized waits behind them
    for w in reversed(fed.work):
        h.core.settle(w, ok(w))
    tail = h.events()[2:]
    assert [(e["type"], e["channel"], e.get("from_finalize"), e.get("time")) for e in tail] == [
        ("segment", 1, True, None), ("finalized", 1, None, 0.7),
        ("segment", 0, True, None), ("finalized", 0, None, 0.7)]
    later = h.core.feed(pcm(0.5), now=2.0).work  # the same timeline goes on
    assert [(w.job.start_time, w.job.end_time, w.from_finalize) for w in later] == [
        (0.7, 1.2, False), (0.7, 1.2, False)]
