import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.gateway.audio import Decoder
from streamer.protocol import AudioFormat
from tests.audio_gen import make_pcm, split


def decode_all(fmt: AudioFormat, chunks: list[bytes]) -> np.ndarray:
    dec = Decoder(fmt)
    parts = [dec.feed(c) for c in chunks] + [dec.flush()]
    return np.concatenate(parts, axis=1)


@pytest.mark.parametrize("fmt", [
    AudioFormat(1, 16000, 16, False), AudioFormat(2, 44100, 16, False),
    AudioFormat(2, 48000, 32, True), AudioFormat(8, 22050, 32, False),
])
def test_flush_gives_duration_times_16k_within_a_millisecond(fmt):
    seconds = 1.37
    out = decode_all(fmt, split(make_pcm(fmt, seconds), 4096))
    assert out.shape[0] == fmt.channels
    assert out.dtype == np.float32
    assert abs(out.shape[1] - seconds * 16000) <= 16


def test_stream_ending_on_a_block_boundary_is_still_flushed():
    fmt = AudioFormat(1, 48000, 16, False)
    data = make_pcm(fmt, 4096 * 3 / 48000)  # exactly three 4096-frame blocks
    dec = Decoder(fmt)
    n = sum(dec.feed(c).shape[1] for c in split(data, 4096 * 2))
    tail = dec.flush().shape[1]
    assert tail > 0
    assert n + tail == 4096  # 12288 frames at 48 kHz -> 4096 at 16 kHz


def test_stereo_resampling_with_a_tail_keeps_per_channel_counts():
    fmt = AudioFormat(2, 44100, 16, False)
    data = make_pcm(fmt, 0.5)[:-4 * 7]  # not a round number of frames
    dec = Decoder(fmt)
    out = np.concatenate([dec.feed(c) for c in split(data, 999)] + [dec.flush()], axis=1)
    assert out.shape[0] == 2
    assert out.shape[1] == dec.samples_out
    assert dec.frames_in == len(data) // 4


def test_one_large_frame_is_decoded_whole():
    fmt = AudioFormat(1, 48000, 16, False)
    dec = Decoder(fmt)
    out = dec.feed(make_pcm(fmt, 10.0))  # 480,000 frames in one message
    assert out.shape[1] > 159_000  # all of it, less the resampler's held-back tail


def test_s16_full_scale_maps_into_minus_one_to_one():
    fmt = AudioFormat(1, 16000, 16, False)
    x = np.array([-32768, 0, 32767], dtype="<i2").tobytes()
    out = Decoder(fmt).feed(x)[0]
    assert out[0] == -1.0 and out[1] == 0.0 and out[2] == pytest.approx(32767 / 32768)


def test_f32_at_16k_passes_through_exactly():
    fmt = AudioFormat(2, 16000, 32, True)
    x = np.random.default_rng(1).uniform(-1, 1, (1000, 2)).astype("<f4")
    out = decode_all(fmt, split(x.tobytes(), 333))
    np.testing.assert_array_equal(out, x.T)


def test_incomplete_last_frame_is_reported():
    fmt = AudioFormat(2, 16000, 16, False)
    dec = Decoder(fmt)
    dec.feed(b"\x00" * 10)  # two frames and 2 bytes
    assert dec.pending_bytes == 2
    assert dec.frames_in == 2


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=9600), max_size=12),
       fmt=st.sampled_from([AudioFormat(2, 44100, 16, False), AudioFormat(1, 48000, 32, True),
                            AudioFormat(3, 16000, 16, False)]))
def test_any_split_decodes_identically(cuts, fmt):
    data = make_pcm(fmt, 0.1, seed=3)
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    whole = decode_all(fmt, [data])
    pieces = decode_all(fmt, chunks)
    np.testing.assert_array_equal(whole, pieces)


def test_non_finite_float_samples_do_not_poison_the_stream():
    fmt = AudioFormat(1, 48000, 32, True)
    x = np.zeros(4800, "<f4")
    x[100], x[200], x[300] = np.nan, np.inf, -np.inf
    dec = Decoder(fmt)
    out = np.concatenate([dec.feed(x.tobytes()), dec.feed(np.zeros(4800, "<f4").tobytes()),
                          dec.flush()], axis=1)
    assert np.isfinite(out).all()
