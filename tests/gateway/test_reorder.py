import pytest

from streamer.gateway.reorder import Reorderer


def test_releases_in_sequence_per_channel_whatever_the_arrival_order():
    out = []
    r = Reorderer(lambda ch, item: out.append((ch, item)))
    seqs = {ch: [r.reserve(ch) for _ in range(3)] for ch in (0, 1)}
    assert seqs == {0: [0, 1, 2], 1: [0, 1, 2]}
    r.put(0, 2, "c")
    r.put(1, 0, "x")
    r.put(0, 1, "b")
    assert out == [(1, "x")]
    assert r.waiting == 5
    r.put(0, 0, "a")
    assert out == [(1, "x"), (0, "a"), (0, "b"), (0, "c")]
    r.put(1, 2, "z")
    r.put(1, 1, "y")
    assert [item for ch, item in out if ch == 1] == ["x", "y", "z"]
    assert r.waiting == 0


def test_a_duplicate_is_an_error():
    r = Reorderer(lambda ch, item: None)
    r.reserve(0)
    r.put(0, 0, "a")
    with pytest.raises(ValueError, match="delivered twice"):
        r.put(0, 0, "a")
