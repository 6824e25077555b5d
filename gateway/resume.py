"""Streams that outlive their socket, found again by an unguessable token.

Every stream is registered when it starts. When its socket drops without a ``stop`` it is
*detached*: its jobs keep running, its results are numbered and kept (:class:`Replay`), and a
timer ends it after ``session.resume_window``. A new socket that presents the token *attaches* it
again; one socket at a time. A detached stream also ends early when its kept results outgrow
their bound, since a resume could no longer be lossless.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import WSCloseCode

from streamer.errors import ProtocolError
from streamer.gateway.flight import Flight
from streamer.gateway.ledger import Outgoing
from streamer.gateway.replay import Replay, ReplayGap
from streamer.gateway.stream import StreamCore

log = logging.getLogger(__name__)

TOKEN_BYTES = 32  # 256 random bits, URL-safe base64


def refused(message: str) -> ProtocolError:
    return ProtocolError(message, WSCloseCode.POLICY_VIOLATION)


@dataclass(eq=False)
class Resumable:
    """One stream as the registry holds it, with or without a socket."""

    endpoint: str
    replay: Replay
    core: StreamCore | None = None
    flight: Flight | None = None
    stream_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(TOKEN_BYTES))
    audio_bytes: int = 0      # audio accepted from the client, the byte a resume goes on from
    acked_seconds: float = 0.0  # the stream's duration at the last audio_acked
    acked_bytes: int = -1     # audio_bytes at the last audio_acked (-1: none sent yet)
    attached: bool = True
    detached_seq: int = 0     # the last event numbered while a socket was attached
    expiry: asyncio.Handle | None = None


class Resumables:
    """The gateway's resumable streams, by token."""

    def __init__(self, window: float, release: Callable[[str], None]) -> None:
        self.window = window
        self._release = release  # the pool's: drop a model state
        self._streams: dict[str, Resumable] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def __iter__(self) -> Iterator[Resumable]:
        return iter(list(self._streams.values()))

    @property
    def detached(self) -> int:
        return sum(not r.attached for r in self._streams.values())

    def add(self, held: Resumable) -> None:
        self._streams[held.token] = held

    def end(self, held: Resumable) -> None:
        """The stream is over (stopped, failed, or ended by its session)."""
        self._streams.pop(held.token, None)
        if held.expiry is not None:
            held.expiry.cancel()
            held.expiry = None

    def detach(self, held: Resumable) -> bool:
        """The socket dropped without ``stop``: keep the stream running for the window. False
        when it cannot be kept (resuming is off, or it is not a running stream)."""
        if self.window <= 0 or held.core is None or held.flight is None \
                or held.token not in self._streams:
            return False
        held.attached = False
        held.detached_seq = held.replay.seq
        flight = held.flight

        def unsent(out: Outgoing) -> None:
            flight.sent(out, None)
            if held.replay.first_kept > held.detached_seq + 1 and held.expiry is not None:
                held.expiry.cancel()  # a result nobody received was dropped: end it now
                held.expiry = asyncio.get_running_loop().call_soon(
                    self._expire, held, "its held results outgrew the bound")

        held.replay.detach(unsent)
        held.expiry = asyncio.get_running_loop().call_later(
            self.window, self._expire, held, f"no resume within {self.window:g} s")
        return True

    def take(self, token: str, endpoint: str, last_seq: int) -> Resumable:
        """The stream a ``resume`` names, now attached to the caller; refused (1008) when the
        token is unknown or expired, the stream is attached elsewhere, or on another path."""
        held = self._find(token)
        if held is None:
            raise refused("unknown or expired resume token")
        if held.attached:
            raise refused("this stream is attached to another socket; one socket at a time")
        if held.endpoint != endpoint:
            raise refused(f"this stream runs on {held.endpoint}, not {endpoint}")
        if last_seq > held.replay.seq:
            raise refused(f"'last_seq' {last_seq} is past the stream's last event "
                          f"({held.replay.seq})")
        if last_seq + 1 < held.replay.first_kept:
            raise refused(f"events {last_seq + 1} to {held.replay.first_kept - 1} are no "
                          "longer held; the stream cannot be resumed without a gap")
        if held.expiry is not None:
            held.expiry.cancel()
            held.expiry = None
        held.attached = True
        return held

    def attach(self, held: Resumable, sink: Callable[[Outgoing], None], last_seq: int) -> None:
        try:
            held.replay.attach(sink, last_seq)
        except ReplayGap as exc:  # checked in take(); kept for a caller that skipped it
            raise refused(str(exc)) from None

    def close(self) -> None:
        """Server shutdown: every detached stream ends now."""
        for held in [r for r in self._streams.values() if not r.attached]:
            self._expire(held, "the server is shutting down")

    def _find(self, token: str) -> Resumable | None:
        held = self._streams.get(token)
        # compare anyway: the time a lookup takes says nothing about a near miss
        if held is None or not hmac.compare_digest(held.token, token):
            return None
        return held

    def _expire(self, held: Resumable, why: str) -> None:
        if held.attached or held.token not in self._streams:
            return
        self.end(held)
        log.info("stream %s ended while detached: %s", held.stream_id, why)
        if held.flight is not None:
            held.flight.withdraw()
        if held.core is not None:
            for key in held.core.close("stream.expired", True):
                self._release(key)
