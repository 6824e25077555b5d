import numpy as np
import pytest
import soundfile

from streamer.client import read_wav
from streamer.protocol import AudioFormat
from tests.audio_gen import write_pcm_wav


def test_pcm16_wav(tmp_path):
    path = write_pcm_wav(tmp_path / "a.wav", 2, 2, 44100, b"\x01\x00\x02\x00" * 10)
    fmt, data = read_wav(path)
    assert fmt == AudioFormat(2, 44100, 16, False) and data == b"\x01\x00\x02\x00" * 10


def test_float_wav(tmp_path):
    path = tmp_path / "f.wav"
    x = np.linspace(-1, 1, 200, dtype=np.float32).reshape(100, 2)
    soundfile.write(str(path), x, 48000, subtype="FLOAT")
    fmt, data = read_wav(path)
    assert fmt == AudioFormat(2, 48000, 32, True)
    np.testing.assert_array_equal(np.frombuffer(data, "<f4").reshape(100, 2), x)


def test_unsupported_files_say_what_to_do(tmp_path):
    path = write_pcm_wav(tmp_path / "u8.wav", 1, 1, 8000, b"\x80" * 10)
    with pytest.raises(ValueError, match="8-bit samples; use 16- or 32-bit PCM"):
        read_wav(path)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav at all")
    with pytest.raises(ValueError, match="not a WAV file the client can read"):
        read_wav(junk)
