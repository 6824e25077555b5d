"""What a session accepts from its client: control messages (size, rate), audio frames (size)
and streams (length). Each breach is a :class:`ProtocolError` with the close code to use."""

from __future__ import annotations

from collections import deque

from aiohttp import WSCloseCode

from streamer.config import Config
from streamer.errors import ProtocolError


class InputLimits:
    def __init__(self, config: Config) -> None:
        self.max_text_bytes = config.session.max_text_bytes
        self.per_second = config.session.max_text_per_second
        self.max_frame = config.server.max_msg_size
        self.max_seconds = config.session.max_stream_seconds
        self._times: deque[float] = deque()

    def text(self, text: str, now: float) -> None:
        size = len(text) if len(text) * 4 <= self.max_text_bytes else len(text.encode())
        if size > self.max_text_bytes:
            raise ProtocolError(f"control message of {size} bytes; at most "
                                f"{self.max_text_bytes} are accepted",
                                WSCloseCode.MESSAGE_TOO_BIG)
        self._times.append(now)
        while self._times and self._times[0] < now - 1.0:
            self._times.popleft()
        if len(self._times) > self.per_second:
            raise ProtocolError(f"more than {self.per_second:g} control messages in one second",
                                WSCloseCode.POLICY_VIOLATION)

    def frame(self, size: int) -> None:
        if size > self.max_frame:
            raise ProtocolError(f"audio frame of {size} bytes; at most {self.max_frame} are "
                                "accepted", WSCloseCode.MESSAGE_TOO_BIG)

    def duration(self, seconds: float) -> None:
        if seconds > self.max_seconds:
            raise ProtocolError(f"stream longer than the maximum of {self.max_seconds:g} s of "
                                "audio")
