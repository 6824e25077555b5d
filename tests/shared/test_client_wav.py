import wave

import numpy as np
import pytest
import soundfile

from shared.client import read_wav
from shared.protocol import AudioFormat


def test_pcm16_wav(tmp_path):
    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(b"\x01\x00\x02\x00" * 10)
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
    path = tmp_path / "u8.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(b"\x80" * 10)
    with pytest.raises(ValueError, match="8-bit samples; use 16- or 32-bit PCM"):
        read_wav(path)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav at all")
    with pytest.raises(ValueError, match="not a WAV file the client can read"):
        read_wav(junk)
