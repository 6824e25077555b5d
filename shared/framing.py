"""Length-prefixed frames cut out of a byte stream, for both ends of a worker's stream.

The gateway's asyncio transport and the worker's blocking socket both read straight into one
buffer here (``room`` then ``filled``) and take whole frames out of it (``next``): one read
usually brings a frame's length and body together, and a frame is handed on as a view of the
buffer, not a copy (a request carries tens of KB of audio; its decoder copies what it keeps).
The buffer grows only for a frame larger than it and shrinks back once that frame is read.
"""

from __future__ import annotations

from streamer.errors import WireError
from streamer.wire import HEADER

MAX_FRAME = 64 << 20  # no message comes near this; a larger length is a broken stream
BUFFER = 64 << 10     # the buffer's usual size: many results, or one request, fit in it
MIN_READ = 4 << 10    # room offered to each read at least (the buffer is compacted for it)


class FrameBuffer:
    def __init__(self) -> None:
        self._buf = bytearray(BUFFER)
        self._view = memoryview(self._buf)
        self._start = 0  # the first byte not yet handed on
        self._end = 0    # the end of the bytes read so far
        self._need = HEADER.size  # bytes from _start that the next frame needs

    def room(self) -> memoryview:
        """Where the next read goes: at least what the next frame still lacks, or
        ``MIN_READ``."""
        if len(self._buf) - self._end < max(MIN_READ, self._need - (self._end - self._start)):
            self._make_room()
        return self._view[self._end:]

    def filled(self, nbytes: int) -> None:
        """``nbytes`` were read into the last ``room``."""
        self._end += nbytes

    def next(self) -> memoryview | None:
        """The next whole frame, or None until more bytes come. The view is good until the next
        ``room``: decode it before reading again. Raises ``WireError`` for a length no frame
        can have: the stream is out of step and nothing after it can be read."""
        start = self._start
        if self._end - start < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self._buf, start)
        if not 0 <= size <= MAX_FRAME:
            raise WireError(f"frame length {size} is not supported")
        body = start + HEADER.size
        if self._end - body < size:
            self._need = HEADER.size + size
            return None
        self._start = end = body + size
        self._need = HEADER.size
        data = self._view[body:end]
        if end == self._end:
            self._rewind()
        return data

    def clear(self) -> None:
        """Forget what is buffered."""
        self._need = HEADER.size
        self._rewind()

    def _rewind(self) -> None:
        """Nothing is pending: the next read starts at the front, and a buffer grown for a
        large frame gives its memory back (a new one: views of the old stay valid)."""
        self._start = self._end = 0
        if len(self._buf) > BUFFER:
            self._buf = bytearray(BUFFER)
            self._view = memoryview(self._buf)

    def _make_room(self) -> None:
        """Move the unread bytes to the front, into a larger buffer if the next frame needs one
        (a new buffer: a transport may still hold a view of the old one)."""
        pending = self._end - self._start
        size = max(len(self._buf), self._need + MIN_READ)
        if size > len(self._buf):
            buf = bytearray(size)
            buf[:pending] = self._view[self._start:self._end]
            self._buf, self._view = buf, memoryview(buf)
        elif self._start:
            self._view[:pending] = self._view[self._start:self._end]
        self._start, self._end = 0, pending
