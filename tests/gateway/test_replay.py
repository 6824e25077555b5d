"""Numbered events kept for a client that reconnects: order, what is sent again, the bound."""

import json

import pytest

from streamer.gateway.ledger import Outgoing
from streamer.gateway.replay import KEPT_OVERHEAD, Replay, ReplayGap
from streamer.protocol import StoppedEvent, encode_event


def event(i: int) -> Outgoing:
    return Outgoing(encode_event(StoppedEvent(0, float(i))))


def test_events_are_numbered_as_they_leave_and_a_notice_comes_first():
    sent: list[Outgoing] = []
    replay = Replay(100, 1 << 20, sent.append)
    replay.put(event(1))
    with_notice = event(2)
    with_notice.notice = encode_event(StoppedEvent(1, 9.0))
    replay.put(with_notice)
    assert [json.loads(o.text)["seq"] for o in sent] == [1, 3]
    assert json.loads(sent[1].notice or "")["seq"] == 2


def test_attach_sends_again_what_follows_last_seq_then_the_new_ones():
    first: list[Outgoing] = []
    replay = Replay(100, 1 << 20, first.append)
    for i in range(5):
        replay.put(event(i))
    again: list[Outgoing] = []
    replay.attach(again.append, 3)
    replay.put(event(5))
    assert [json.loads(o.text)["seq"] for o in again] == [4, 5, 6]
    assert all(o.segment_seconds is None for o in again[:2])  # not counted as results twice
    with pytest.raises(ReplayGap, match="past the stream's last event"):
        replay.attach(again.append, 7)


@pytest.mark.parametrize(("max_events", "max_bytes"), [(16, 1 << 20), (10_000, 8192)])
def test_kept_events_stay_within_their_count_and_bytes(max_events, max_bytes):
    replay = Replay(max_events, max_bytes, lambda out: None)
    for i in range(5000):
        replay.put(event(i))
        assert replay.kept <= max_events and replay.bytes <= max_bytes
    size = len(encode_event(StoppedEvent(0, 4999.0))) + len(', "seq": 5000') + KEPT_OVERHEAD
    assert replay.kept >= min(max_events, max_bytes // size)  # the budget is used, not wasted
    assert replay.first_kept == 5001 - replay.kept
    with pytest.raises(ReplayGap, match="no longer held"):
        replay.attach(lambda out: None, 10)
    replay.attach(lambda out: None, 5000 - replay.kept)  # the oldest kept one onwards
