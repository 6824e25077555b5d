"""Audio files as the client reads them: every file soundfile reads streams as s16 or f32, PCM WAV
works without soundfile, and what cannot be read says why and what to do."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import soundfile

from streamer.client_audio import read_audio, read_wav
from streamer.client_errors import AudioFileError
from streamer.protocol import AudioFormat
from tests.audio_gen import write_pcm_wav

S16 = dict(bit_depth=16, is_float=False)
F32 = dict(bit_depth=32, is_float=True)


@pytest.fixture
def without_soundfile(monkeypatch):
    """The base install: no soundfile (an import of it fails)."""
    monkeypatch.setitem(sys.modules, "soundfile", None)


def samples(data: bytes, fmt: AudioFormat) -> np.ndarray:
    return np.frombuffer(data, fmt.dtype).reshape(-1, fmt.channels)


def test_16_bit_pcm_is_sent_as_it_is(tmp_path):
    frames = np.array([[1, -2], [32767, -32768]], "<i2").tobytes()
    clip = read_audio(write_pcm_wav(tmp_path / "a.wav", 2, 2, 44100, frames))
    assert clip.format == AudioFormat(2, 44100, **S16) and clip.data == frames
    assert read_wav(tmp_path / "a.wav") == (clip.format, frames)


@pytest.mark.usefixtures("without_soundfile")
def test_every_integer_pcm_width_reads_without_soundfile(tmp_path):
    u8 = read_audio(write_pcm_wav(tmp_path / "u8.wav", 1, 1, 8000, bytes([0x80, 0xFF, 0x00])))
    assert u8.format == AudioFormat(1, 8000, **S16)  # 8 bits fit s16 without loss
    assert samples(u8.data, u8.format)[:, 0].tolist() == [0, 127 << 8, -32768]
    s24 = bytes([0, 0, 0x40, 0, 0, 0x80, 0xFF, 0xFF, 0xFF])  # 2**22, -2**23, -1
    c24 = read_audio(write_pcm_wav(tmp_path / "s24.wav", 1, 3, 48000, s24))
    assert c24.format == AudioFormat(1, 48000, **F32)
    np.testing.assert_allclose(samples(c24.data, c24.format)[:, 0], [0.5, -1.0, -2.0**-23])
    s32 = np.array([2**30, -2**31], "<i4").tobytes()
    c32 = read_audio(write_pcm_wav(tmp_path / "s32.wav", 1, 4, 16000, s32))
    assert c32.format == AudioFormat(1, 16000, **F32)
    np.testing.assert_array_equal(samples(c32.data, c32.format)[:, 0], [0.5, -1.0])


def test_the_sample_format_can_be_forced(tmp_path):
    frames = np.array([16384, -32768], "<i2").tobytes()
    path = write_pcm_wav(tmp_path / "a.wav", 1, 2, 16000, frames)
    f32 = read_audio(path, "f32")
    assert f32.format.is_float
    np.testing.assert_array_equal(samples(f32.data, f32.format)[:, 0], [0.5, -1.0])
    s24 = bytes([0, 0, 0x40, 0xFF, 0xFF, 0xFF])
    s16 = read_audio(write_pcm_wav(tmp_path / "b.wav", 1, 3, 16000, s24), "s16")
    assert samples(s16.data, s16.format)[:, 0].tolist() == [16384, -1]
    with pytest.raises(ValueError, match="s16 or f32"):
        read_audio(path, "s24")


@pytest.mark.parametrize(("fmt", "subtype", "expect"), [
    ("WAV", "FLOAT", F32), ("WAV", "DOUBLE", F32), ("WAV", "PCM_24", F32),
    ("FLAC", "PCM_16", S16), ("FLAC", "PCM_24", F32), ("FLAC", "PCM_S8", S16),
    ("OGG", "VORBIS", F32), ("WAV", "ULAW", S16),
])
def test_files_soundfile_reads_stream_as_s16_or_f32(tmp_path, fmt, subtype, expect):
    rate = 22050
    t = np.arange(rate // 2) / rate
    x = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 660 * t)], 1)
    path = tmp_path / f"a.{fmt.lower()}"
    soundfile.write(str(path), x, rate, format=fmt, subtype=subtype)
    clip = read_audio(path)
    assert clip.format == AudioFormat(2, rate, **expect)
    got = samples(clip.data, clip.format).astype(np.float64)
    if not clip.format.is_float:
        got /= 32768
    assert got.shape[1] == 2 and abs(len(got) - len(x)) < rate // 20
    n = min(len(got), len(x))
    lossy = subtype in ("VORBIS", "ULAW", "PCM_S8")
    assert np.max(np.abs(got[:n] - x[:n])) < (0.2 if lossy else 1e-3)


@pytest.mark.usefixtures("without_soundfile")
def test_without_soundfile_other_files_name_the_extra(tmp_path):
    path = tmp_path / "f.wav"
    path.write_bytes(_float_wav_bytes())
    with pytest.raises(AudioFileError) as info:
        read_audio(path)
    message = str(info.value)
    assert "not plain integer PCM" in message and "'files' extra" in message
    assert "streamer-audio-gateway[files]" in message
    flac = tmp_path / "a.flac"
    flac.write_bytes(b"fLaC" + bytes(100))
    with pytest.raises(AudioFileError, match=r"not a WAV file .*'files' extra"):
        read_audio(flac)


def _float_wav_bytes() -> bytes:
    """A minimal 32-bit float WAV (format tag 3), written by hand."""
    import struct

    data = np.array([0.5, -0.5], "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 16000 * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + \
        struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_a_float_wav_written_by_hand_reads_with_soundfile(tmp_path):
    path = tmp_path / "f.wav"
    path.write_bytes(_float_wav_bytes())
    clip = read_audio(path)
    assert clip.format == AudioFormat(1, 16000, **F32)
    np.testing.assert_array_equal(samples(clip.data, clip.format)[:, 0], [0.5, -0.5])


def test_unreadable_files_say_so_in_one_line(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all, just some words")
    with pytest.raises(AudioFileError, match="not an audio file the client can read") as info:
        read_audio(junk)
    assert "\n" not in str(info.value)
    short = tmp_path / "short.wav"
    short.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00")
    with pytest.raises(AudioFileError, match="truncated"):
        read_audio(short)
    with pytest.raises(FileNotFoundError):
        read_audio(tmp_path / "missing.wav")
