import numpy as np

from streamer.gateway.segmenters import FixedSegmenter, Segment


def test_fixed_chunks_are_contiguous_and_lose_nothing():
    seg = FixedSegmenter(8000)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(8000 * 3 + 1234).astype(np.float32)
    out = []
    for i in range(0, len(x), 777):
        out += seg.push(x[i:i + 777])
    out += seg.flush()
    assert all(isinstance(s, Segment) for s in out)
    assert [s.start for s in out] == [0, 8000, 16000, 24000]
    assert [len(s.audio) for s in out] == [8000, 8000, 8000, 1234]
    np.testing.assert_array_equal(np.concatenate([s.audio for s in out]), x)


def test_flush_of_nothing_is_nothing():
    assert FixedSegmenter(100).flush() == []


def test_fixed_finalize_sends_the_partial_chunk_and_keeps_the_timeline() -> None:
    seg = FixedSegmenter(8000)
    assert seg.push(np.ones(3000, np.float32)) == []
    (part,) = seg.finalize()
    assert isinstance(part, Segment) and (part.start, part.end) == (0, 3000)
    assert seg.finalize() == []
    (chunk,) = seg.push(np.ones(8000, np.float32))
    assert isinstance(chunk, Segment) and (chunk.start, chunk.end) == (3000, 11000)
