"""One running stream's I/O, between a session's socket and its :class:`StreamCore`.

Frames go through the core (decode), the detector processes when a channel's detector runs
there, the core again (segment) and into the pool; ``audio_acked`` follows the accepted audio;
at the end the stream drains, and its model and detector states are released. A stream whose
socket drops is handed to the resume registry; a ``resume`` on another socket builds a new
:class:`StreamIO` around the same core. The session owns the socket and the control flow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamer.config import SessionConfig
from streamer.errors import ProtocolError
from streamer.gateway.detection import Detection
from streamer.gateway.flight import Flight
from streamer.gateway.ledger import Outgoing
from streamer.gateway.limits import InputLimits
from streamer.gateway.observe import SessionMetrics
from streamer.gateway.outbox import Outbox
from streamer.gateway.replay import Replay
from streamer.gateway.resume import Resumable, Resumables
from streamer.gateway.stream import Fed, StreamCore
from streamer.protocol import AudioAckedEvent, ResumedEvent, StartedEvent, encode_event

ACK_EVERY = 0.5  # seconds of audio between two audio_acked events


@dataclass(slots=True)
class StreamDeps:
    """What every stream of one session uses."""

    observe: SessionMetrics
    detection: Detection
    release: Callable[[str], None]  # drops a model or detector state
    limits: InputLimits
    resumables: Resumables
    outbox: Outbox
    on_media: Callable[[float], str | None] | None  # told channel-seconds; a message ends it


class StreamIO:
    def __init__(self, deps: StreamDeps, held: Resumable, log: logging.LoggerAdapter) -> None:  # type: ignore[type-arg]
        assert held.core is not None and held.flight is not None
        self.deps, self.held, self.log = deps, held, log
        self.core: StreamCore = held.core
        self.flight: Flight = held.flight

    @classmethod
    def open(cls, deps: StreamDeps, endpoint: str, cfg: SessionConfig, flight: Flight,
             log: logging.LoggerAdapter,  # type: ignore[type-arg]
             make_core: Callable[[Callable[[Outgoing], None]], StreamCore]) -> StreamIO:
        """A new stream: registered for resuming, its ``started`` event first in its order.
        ``make_core`` builds the core around the callable its events go out through."""
        held = Resumable(endpoint, Replay(cfg.resume_max_events, cfg.resume_max_bytes,
                                          deps.outbox.put))
        held.core, held.flight = make_core(held.replay.put), flight
        deps.resumables.add(held)
        held.replay.put(Outgoing(encode_event(StartedEvent(held.stream_id, held.token))))
        deps.observe.stream_started()
        return cls(deps, held, log)

    @classmethod
    def resume(cls, deps: StreamDeps, held: Resumable, last_seq: int,
               on_break: Callable[[str], None],
               log: logging.LoggerAdapter) -> StreamIO:  # type: ignore[type-arg]
        """A held stream taken over by a new socket: its failures close that socket now,
        ``resumed`` goes out, then the events after ``last_seq`` are replayed."""
        stream = cls(deps, held, log)
        stream.flight.adopt(on_break)
        log.info("stream %s resumed after event %d; %d bytes of audio held",
                 held.stream_id, last_seq, held.audio_bytes)
        deps.outbox.event(ResumedEvent(held.stream_id, held.audio_bytes))
        deps.resumables.attach(held, deps.outbox.put, last_seq)
        return stream

    async def audio(self, data: bytes) -> None:
        """A binary frame: through the pipeline, then acknowledged. Raises
        :class:`ProtocolError` for a frame or a rate the stream may not have."""
        core, deps = self.core, self.deps
        deps.limits.frame(len(data))
        now = time.monotonic()
        fed = core.decode(data, now)
        if core.offloaded:
            await deps.detection.run(core, fed.audio)
        await self._submit(core.segment(fed, now))
        self.accepted(len(data))
        deps.limits.duration(core.duration)
        over = deps.on_media(fed.seconds * core.channels) if deps.on_media else None
        if over is not None:
            raise ProtocolError(over)  # a key's audio rate: 1008

    async def finalize(self) -> None:
        """Close every channel's open segment now; results follow as they come, in order."""
        await self._submit(self.core.finalize(time.monotonic()))

    async def finish(self, drain_timeout: float | None) -> None:
        """Flush everything through the pipeline and wait until every result is sent."""
        core = self.core
        stopped_at = time.monotonic()
        self.accepted(0, force=True)  # before 'stopped', which may be released at once
        tail = core.decode_tail(stopped_at)
        if core.offloaded:
            await self.deps.detection.run(core, tail.audio)
        fed = core.finish(stopped_at, tail)
        self.deps.observe.fed(fed)
        try:
            async with asyncio.timeout(drain_timeout):
                await self.flight.submit(core, fed.work)
                await self.flight.settled(core)
                await self.deps.outbox.join()
        except TimeoutError:
            self.log.warning("results still pending after %.1f s drain; closing", drain_timeout)
        self.deps.observe.drained(time.monotonic() - stopped_at)
        self.log.info("stream %d finished, %.2f s of audio", core.number, core.duration)
        self.close("audio.duration_seconds", core.duration)

    def close(self, attribute: str, value: float | bool) -> None:
        """The stream is over: workers drop its model and detector states, its span ends."""
        self.deps.resumables.end(self.held)
        for key in self.core.close(attribute, value):
            self.deps.release(key)

    def accepted(self, nbytes: int, force: bool = False) -> None:
        """``nbytes`` more of the stream's audio are in the pipeline; acknowledge every
        ``ACK_EVERY`` seconds of audio and at the end."""
        held, core = self.held, self.core
        held.audio_bytes += nbytes
        if (force and held.acked_bytes != held.audio_bytes) \
                or core.duration - held.acked_seconds >= ACK_EVERY:
            held.acked_seconds, held.acked_bytes = core.duration, held.audio_bytes
            held.replay.put(Outgoing(encode_event(AudioAckedEvent(held.audio_bytes))))

    def keep_for_resume(self) -> bool:
        """The socket dropped mid-stream without ``stop``: hand the stream to the registry,
        which keeps it running for the resume window. False when it ends here."""
        if not self.deps.resumables.detach(self.held):
            return False
        self.log.info("socket dropped mid-stream; stream %s kept %g s for a resume",
                      self.held.stream_id, self.deps.resumables.window)
        return True

    async def _submit(self, fed: Fed) -> None:
        self.deps.observe.fed(fed)
        await self.flight.submit(self.core, fed.work)
