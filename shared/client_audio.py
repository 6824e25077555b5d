"""Audio files for the client: any file becomes interleaved s16 or f32 PCM plus its format.

The gateway resamples, so a file streams at its own rate and channel count; only the sample
encoding is chosen here: s16 for sources of 16 bits or fewer (nothing is lost), f32 for everything
else (24- and 32-bit integers, floats, lossy codecs). PCM WAV is read with the standard library;
every other file (float WAV, FLAC, OGG, ...) through soundfile, the ``files`` extra.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamer.client_errors import AudioFileError
from streamer.protocol import AudioFormat

SAMPLE_FORMATS = ("s16", "f32")
FILES_EXTRA = "pip install 'streamer-audio-gateway[files]'"
# soundfile subtypes whose samples fit 16 bits without loss: sent as s16, everything else as f32.
_SIXTEEN_BITS_OR_FEWER = frozenset({"PCM_S8", "PCM_U8", "PCM_16", "ULAW", "ALAW", "DWVW_12",
                                    "DWVW_16", "DPCM_8", "DPCM_16", "IMA_ADPCM", "MS_ADPCM",
                                    "GSM610", "VOX_ADPCM", "G721_32", "G723_24", "G723_40"})


@dataclass(frozen=True, slots=True)
class AudioClip:
    """Interleaved little-endian PCM in ``format``."""

    format: AudioFormat
    data: bytes = field(repr=False)

    @property
    def seconds(self) -> float:
        return len(self.data) / (self.format.frame_bytes * self.format.sample_rate)


def sample_format(name: str, channels: int = 1, sample_rate: int = 16_000) -> AudioFormat:
    """``s16`` or ``f32`` as an :class:`AudioFormat`."""
    if name not in SAMPLE_FORMATS:
        raise ValueError(f"sample format must be s16 or f32, got {name!r}")
    is_float = name == "f32"
    return AudioFormat(channels=channels, sample_rate=sample_rate,
                       bit_depth=32 if is_float else 16, is_float=is_float)


def pcm_bytes(samples: np.ndarray, fmt: AudioFormat) -> bytes:
    """Float samples in [-1, 1], shaped (frames, channels), as ``fmt``'s interleaved bytes."""
    x = np.clip(samples, -1.0, 1.0)
    if fmt.is_float:
        return x.astype("<f4").tobytes()
    if fmt.bit_depth == 16:
        return (x * 32767).astype("<i2").tobytes()
    return (x * 2147483647).astype("<i4").tobytes()


def read_audio(path: str | Path, as_format: str | None = None) -> AudioClip:
    """Read a whole audio file. ``as_format`` ("s16" or "f32") forces the sample encoding.

    Raises ``OSError`` when the file cannot be opened and :class:`AudioFileError` when its content
    cannot be read (with what to do about it)."""
    if as_format is not None and as_format not in SAMPLE_FORMATS:
        raise ValueError(f"sample format must be s16 or f32, got {as_format!r}")
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            width, rate, channels = w.getsampwidth(), w.getframerate(), w.getnchannels()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        return _read_with_soundfile(path, as_format, exc)
    if channels < 1 or rate < 1:
        raise AudioFileError(f"{path}: the WAV header says {channels} channels at {rate} Hz")
    raw = raw[:len(raw) - len(raw) % (width * channels)]  # a truncated last frame
    return _from_pcm(raw, width, channels, rate, as_format, path)


def read_wav(path: str | Path) -> tuple[AudioFormat, bytes]:
    """:func:`read_audio` as a (format, bytes) pair."""
    clip = read_audio(path)
    return clip.format, clip.data


def _from_pcm(raw: bytes, width: int, channels: int, rate: int, as_format: str | None,
              path: Path) -> AudioClip:
    """Integer PCM of ``width`` bytes -> s16 (8 and 16 bits) or f32 (24 and 32 bits)."""
    target = as_format or ("s16" if width <= 2 else "f32")
    fmt = sample_format(target, channels, rate)
    if width == 2 and target == "s16":
        return AudioClip(fmt, raw)
    if width == 1:      # unsigned, centred on 128
        ints = (np.frombuffer(raw, np.uint8).astype(np.int32) - 128) << 24
    elif width == 2:
        ints = np.frombuffer(raw, "<i2").astype(np.int32) << 16
    elif width == 3:    # little-endian 24-bit: place the three bytes in the top of an int32
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)
    elif width == 4:
        ints = np.frombuffer(raw, "<i4")
    else:
        raise AudioFileError(f"{path}: {8 * width}-bit integer samples are not a PCM WAV "
                             "layout the client knows")
    if target == "s16":
        return AudioClip(fmt, (ints >> 16).astype("<i2").tobytes())
    return AudioClip(fmt, (ints.astype(np.float64) / 2**31).astype("<f4").tobytes())


def _read_with_soundfile(path: Path, as_format: str | None, why: Exception) -> AudioClip:
    if isinstance(why, EOFError):
        raise AudioFileError(f"{path}: the WAV file is truncated") from None
    try:
        import soundfile
    except (ImportError, OSError):  # not installed, or its libsndfile is missing
        raise AudioFileError(f"{path}: {_what_it_is(path)}; reading it needs soundfile "
                             f"(the 'files' extra: {FILES_EXTRA})") from None
    try:
        info = soundfile.info(str(path))
        target = as_format or ("s16" if info.subtype in _SIXTEEN_BITS_OR_FEWER else "f32")
        dtype = "int16" if target == "s16" else "float32"
        samples, rate = soundfile.read(str(path), dtype=dtype, always_2d=True)
    except (RuntimeError, ValueError) as exc:  # LibsndfileError is a RuntimeError
        raise AudioFileError(f"{path}: not an audio file the client can read "
                             f"({_first_line(exc)})") from None
    fmt = sample_format(target, samples.shape[1], int(rate))
    return AudioClip(fmt, samples.astype(np.dtype(fmt.dtype)).tobytes())


def _what_it_is(path: Path) -> str:
    """A short description of a file the standard library's wave module refused."""
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        head = b""
    if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        return "a WAV file whose samples are not plain integer PCM (e.g. 32-bit float)"
    return "not a WAV file (FLAC, OGG and other formats are read by soundfile)"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
