"""Async client library: connect, start, send audio, read events, stop.

    async with await StreamerClient.connect("ws://127.0.0.1:8080/api/v1/simple") as client:
        await client.start(AudioFormat(channels=1, sample_rate=16000))
        await client.send_audio(pcm_bytes)
        await client.stop()
        async for event in client.events():
            print(event)

``events()`` ends when every channel of the stream has reported ``stopped`` or the socket closed.
:func:`stream_wav` does all of it for a WAV file, sending and receiving at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import wave
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import numpy as np

from streamer.protocol import (
    AudioFormat,
    ErrorEvent,
    SegmentEvent,
    ServerEvent,
    StartRequest,
    StoppedEvent,
    StopRequest,
    parse_server_event,
)
from streamer.tracing import current_traceparent


class StreamerClient:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse,
                 owns_session: bool) -> None:
        self._session = session
        self.ws = ws
        self._owns_session = owns_session
        self._streams: deque[int] = deque()  # channel counts of streams not yet read to the end

    @classmethod
    async def connect(cls, url: str, *, session: aiohttp.ClientSession | None = None,
                      headers: dict[str, str] | None = None,
                      close_timeout: float = 10.0) -> StreamerClient:
        owns = session is None
        session = session or aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, headers=headers, max_msg_size=0,
                                          timeout=aiohttp.ClientWSTimeout(ws_close=close_timeout))
        except BaseException:
            if owns:
                await session.close()
            raise
        return cls(session, ws, owns)

    async def __aenter__(self) -> StreamerClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def start(self, fmt: AudioFormat, *, interim_results: bool = False,
                    trace_id: str | None = None, **options: Any) -> None:
        self._streams.append(fmt.channels)
        if trace_id is None:
            trace_id = current_traceparent()  # the caller's span becomes the stream's parent
        await self.ws.send_str(StartRequest(fmt, trace_id, interim_results, options).to_json())

    async def send_audio(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def stop(self, disconnect: bool = False) -> None:
        await self.ws.send_str(StopRequest(disconnect).to_json())

    async def events(self) -> AsyncIterator[ServerEvent]:
        """Events of the oldest stream not yet read to its end: until all its channels stopped,
        or the socket closed (``close_code`` then says why)."""
        channels = self._streams[0] if self._streams else 1
        stopped: set[int] = set()
        while len(stopped) < channels:
            msg = await self.ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                return
            event = parse_server_event(msg.data)
            if isinstance(event, StoppedEvent):
                stopped.add(event.channel)
            yield event
        if self._streams:
            self._streams.popleft()

    async def close(self) -> None:
        await self.ws.close()
        if self._owns_session:
            await self._session.close()


@dataclass(slots=True)
class StreamReport:
    """What came back for one streamed file."""

    events: list[ServerEvent] = field(default_factory=list)
    close_code: int | None = None
    first_result_latency: float | None = None  # seconds from the first audio sent
    total_time: float = 0.0
    audio_seconds: float = 0.0


def pcm_bytes(samples: np.ndarray, fmt: AudioFormat) -> bytes:
    """Float samples in [-1, 1], shaped (frames, channels), as ``fmt``'s interleaved bytes."""
    x = np.clip(samples, -1.0, 1.0)
    if fmt.is_float:
        return x.astype("<f4").tobytes()
    if fmt.bit_depth == 16:
        return (x * 32767).astype("<i2").tobytes()
    return (x * 2147483647).astype("<i4").tobytes()


def read_wav(path: str | Path) -> tuple[AudioFormat, bytes]:
    """A WAV file -> format and interleaved little-endian bytes: 16- or 32-bit integer PCM through
    the standard library, 32-bit float through soundfile."""
    try:
        with wave.open(str(path), "rb") as w:
            width, rate, channels = w.getsampwidth(), w.getframerate(), w.getnchannels()
            data = w.readframes(w.getnframes())
    except wave.Error:
        return _read_float_wav(path)
    except EOFError:
        raise ValueError(f"{path}: the WAV file is truncated") from None
    if width not in (2, 4):
        raise ValueError(f"{path}: {8 * width}-bit samples; use 16- or 32-bit PCM "
                         "(e.g. sox in.wav -b 16 out.wav)")
    return AudioFormat(channels=channels, sample_rate=rate, bit_depth=8 * width), data


def _read_float_wav(path: str | Path) -> tuple[AudioFormat, bytes]:
    import soundfile

    try:
        info = soundfile.info(str(path))
        if info.subtype != "FLOAT":
            raise ValueError(f"{path}: {info.subtype} samples are not supported; use 16- or "
                             "32-bit PCM or 32-bit float (e.g. sox in.wav -b 16 out.wav)")
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as exc:
        raise ValueError(f"{path}: not a WAV file the client can read ({exc})") from None
    fmt = AudioFormat(channels=samples.shape[1], sample_rate=rate, bit_depth=32, is_float=True)
    return fmt, samples.astype("<f4").tobytes()


async def stream_audio(url: str, fmt: AudioFormat, data: bytes, *, chunk_size: int = 8192,
                       real_time: bool = False, interim_results: bool = False,
                       disconnect: bool = True, trace_id: str | None = None,
                       on_event: Callable[[ServerEvent], None] | None = None,
                       **options: Any) -> StreamReport:
    """Send ``data`` in chunks (paced to real time if asked) while collecting every event."""
    report = StreamReport(audio_seconds=len(data) / (fmt.frame_bytes * fmt.sample_rate))
    bytes_per_second = fmt.frame_bytes * fmt.sample_rate
    async with await StreamerClient.connect(url) as client:
        await client.start(fmt, interim_results=interim_results, trace_id=trace_id, **options)
        t0 = time.perf_counter()

        async def send() -> None:
            for offset in range(0, len(data), chunk_size):
                if real_time:
                    due = t0 + offset / bytes_per_second
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await client.send_audio(data[offset:offset + chunk_size])
            await client.stop(disconnect=disconnect)

        sender = asyncio.create_task(send())
        try:
            async for event in client.events():
                if report.first_result_latency is None and isinstance(event, SegmentEvent
                                                                      | ErrorEvent):
                    report.first_result_latency = time.perf_counter() - t0
                report.events.append(event)
                if on_event is not None:
                    on_event(event)
        finally:
            if not sender.done():
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
        if disconnect:
            await client.ws.receive()  # the server's close frame
        report.close_code = client.close_code
        report.total_time = time.perf_counter() - t0
    return report
