"""The G.711 tables against the standard's properties, an independent decoder (libsndfile) and a
companding round trip through the streaming decoder."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile

from streamer.gateway.audio import Decoder
from streamer.gateway.g711 import ALAW_TO_LINEAR, MULAW_TO_LINEAR, TABLES
from streamer.protocol import AudioFormat
from tests.audio_gen import split
from tests.g711_ref import ENCODERS, quantization_bound

CODES = np.arange(256, dtype=np.uint8)


def test_mulaw_zero_codes_and_endpoints():
    assert MULAW_TO_LINEAR[0xFF] == 0 and MULAW_TO_LINEAR[0x7F] == 0  # +0 and -0
    assert MULAW_TO_LINEAR[0x80] == 32124 and MULAW_TO_LINEAR[0x00] == -32124
    assert MULAW_TO_LINEAR.max() == 32124 and MULAW_TO_LINEAR.min() == -32124


def test_alaw_smallest_steps_and_endpoints():
    assert ALAW_TO_LINEAR[0xD5] == 8 and ALAW_TO_LINEAR[0x55] == -8  # no zero code in A-law
    assert ALAW_TO_LINEAR[0xAA] == 32256 and ALAW_TO_LINEAR[0x2A] == -32256
    assert ALAW_TO_LINEAR.max() == 32256 and ALAW_TO_LINEAR.min() == -32256
    assert not (ALAW_TO_LINEAR == 0).any()


@pytest.mark.parametrize("table", [MULAW_TO_LINEAR, ALAW_TO_LINEAR], ids=["mulaw", "alaw"])
def test_sign_bit_mirrors_the_value(table):
    assert np.array_equal(table[CODES ^ 0x80], -table[CODES].astype(np.int32))


def magnitude_order(encoding: str) -> np.ndarray:
    """Positive code words from the smallest magnitude to the largest, per the bit layout."""
    if encoding == "mulaw":  # sent inverted: 0xFF is the smallest, 0x80 the largest
        return np.arange(0xFF, 0x7F, -1)
    return np.arange(0x80, 0x100) ^ 0x55  # segment and step ascending, even bits inverted


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
def test_magnitude_grows_with_segment_and_step_and_steps_double_per_segment(encoding):
    values = TABLES[encoding][magnitude_order(encoding)].astype(np.int64)
    assert (values > 0).sum() >= 127 and (np.diff(values) > 0).all()
    steps = np.diff(values).reshape(-1)
    # 16 steps per segment; within one segment the step is constant, the next is twice as wide
    per_segment = [set(steps[s * 16:(s + 1) * 16 - 1].tolist()) for s in range(8)]
    assert all(len(s) == 1 for s in per_segment)
    widths = [s.pop() for s in per_segment]
    first_doubling = 0 if encoding == "mulaw" else 1  # A-law segment 0 is as fine as segment 1
    assert widths[0] == (8 if encoding == "mulaw" else 16)
    for s in range(first_doubling, 7):
        assert widths[s + 1] == 2 * widths[s]


@pytest.mark.parametrize("encoding, subtype", [("mulaw", "ULAW"), ("alaw", "ALAW")])
def test_tables_agree_with_libsndfile(encoding, subtype):
    decoded, _ = soundfile.read(io.BytesIO(CODES.tobytes()), format="RAW", subtype=subtype,
                                samplerate=8000, channels=1, dtype="int16")
    assert np.array_equal(decoded, TABLES[encoding])


def telephone_speechlike(seconds: float, rate: int = 8000, seed: int = 3) -> np.ndarray:
    """int16: a sweep over the whole dynamic range (quiet to near full scale) plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = np.geomspace(0.001, 0.95, t.size)
    x = envelope * np.sin(2 * np.pi * 300 * t * (1 + t)) + 0.002 * rng.standard_normal(t.size)
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
def test_every_int16_round_trips_within_half_a_step(encoding):
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    decoded = TABLES[encoding][ENCODERS[encoding](pcm)].astype(np.float64)
    error = np.abs(decoded - pcm)
    assert (error <= quantization_bound(pcm)).all()
    assert error.max() > 100  # the bound is not vacuous: loud samples do lose precision


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
@pytest.mark.parametrize("chunk", [1, 7, 160, 100_000])
def test_decoder_turns_companded_audio_back_into_the_pcm_it_was_made_from(encoding, chunk):
    pcm = telephone_speechlike(1.0)
    codes = ENCODERS[encoding](pcm).tobytes()
    dec = Decoder(AudioFormat(1, 8000, 8, False, encoding), target_rate=8000)
    out = np.concatenate([dec.feed(c) for c in split(codes, chunk)] + [dec.flush()], axis=1)
    assert out.shape == (1, pcm.size) and out.dtype == np.float32
    error = np.abs(out[0].astype(np.float64) * 32768 - pcm)
    assert (error <= quantization_bound(pcm)).all()


def wav_data(path: Path) -> tuple[int, bytes]:
    """(format tag, samples) of a RIFF/WAVE file: what a client sends for a G.711 WAV."""
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    pos, tag, data = 12, -1, b""
    while pos + 8 <= len(raw):
        kind, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        body = raw[pos + 8:pos + 8 + size]
        if kind == b"fmt ":
            tag = struct.unpack("<H", body[:2])[0]
        elif kind == b"data":
            data = body
        pos += 8 + size + (size & 1)
    return tag, data


@pytest.mark.parametrize("encoding, subtype, tag", [("mulaw", "ULAW", 7), ("alaw", "ALAW", 6)])
def test_a_g711_wav_made_by_libsndfile_decodes_to_its_source_at_16k(tmp_path, encoding, subtype,
                                                                   tag):
    """An independent encoder's file through the gateway decoder, resampled to the model rate."""
    pcm = telephone_speechlike(1.5)
    path = tmp_path / f"{encoding}.wav"
    soundfile.write(path, pcm, 8000, subtype=subtype, format="WAV")
    found_tag, codes = wav_data(path)
    assert found_tag == tag and len(codes) == pcm.size
    direct = Decoder(AudioFormat(1, 8000, 8, False, encoding), target_rate=8000)
    error = np.abs(direct.feed(codes)[0].astype(np.float64) * 32768 - pcm)
    assert (error <= quantization_bound(pcm)).all()

    dec = Decoder(AudioFormat(1, 8000, 8, False, encoding))
    out = np.concatenate([dec.feed(c) for c in split(codes, 160)] + [dec.flush()], axis=1)
    reference = Decoder(AudioFormat(1, 8000, 16, False))
    linear = pcm.astype("<i2").tobytes()
    expected = np.concatenate([reference.feed(linear), reference.flush()], axis=1)
    assert out.shape == expected.shape == (1, 2 * pcm.size)
    # resampling is linear, so the 16 kHz error stays at G.711's relative quantization level
    noise = np.sqrt(np.mean((out - expected) ** 2))
    assert noise < 0.02 * np.sqrt(np.mean(expected ** 2))


def test_stereo_g711_deinterleaves():
    left, right = telephone_speechlike(0.2, seed=1), telephone_speechlike(0.2, seed=2) // 4
    codes = np.stack([ENCODERS["alaw"](left), ENCODERS["alaw"](right)], axis=1).tobytes()
    dec = Decoder(AudioFormat(2, 8000, 8, False, "alaw"), target_rate=8000)
    out = np.concatenate([dec.feed(codes[:3]), dec.feed(codes[3:])], axis=1)
    for channel, pcm in enumerate((left, right)):
        error = np.abs(out[channel].astype(np.float64) * 32768 - pcm)
        assert (error <= quantization_bound(pcm)).all()
