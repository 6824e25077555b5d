"""Limits per API key: concurrent sessions and audio seconds per minute.

Audio is counted in channel-seconds (a stereo second counts twice: the workers run the model on
each channel), over a sliding window of the last 60 s kept as one bucket per second. A session
holds a :class:`Lease` on its key from admission to its end; a token counts against its key.
Metrics carry the key's configured name, never the key.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from streamer.gateway.auth import KeySpec, Refused

WINDOW = 60.0


class KeyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sessions = Gauge("streamer_key_sessions", "Open sessions per API key (by its "
                              "configured name)", ["key"], registry=registry)
        self.audio = Counter("streamer_key_audio_seconds", "Channel-seconds of audio received "
                             "per API key", ["key"], registry=registry)
        self.refused = Counter("streamer_key_refused", "Upgrades refused or streams ended by a "
                               "key's own limits (max_sessions, audio_rate)", ["key", "reason"],
                               registry=registry)


class KeyUsage:
    """One key's open sessions and its audio over the last minute."""

    def __init__(self, spec: KeySpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.sessions = 0
        self._clock = clock
        self._buckets: deque[list[float]] = deque()  # [whole second, channel-seconds]

    def _expire(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] <= now - WINDOW:
            self._buckets.popleft()

    def used(self) -> float:
        """Channel-seconds of audio in the last minute."""
        self._expire(self._clock())
        return sum(b[1] for b in self._buckets)

    def charge(self, seconds: float) -> None:
        now = self._clock()
        self._expire(now)
        second = float(math.floor(now))
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += seconds
        else:
            self._buckets.append([second, seconds])

    def over_rate(self) -> bool:
        limit = self.spec.audio_seconds_per_minute
        return limit > 0 and self.used() >= limit

    def rate_retry_after(self) -> int:
        """Whole seconds until enough audio leaves the window to be under the limit again."""
        now = self._clock()
        self._expire(now)
        excess = sum(b[1] for b in self._buckets) - self.spec.audio_seconds_per_minute
        for second, seconds in self._buckets:
            excess -= seconds
            if excess < 0:
                return max(1, math.ceil(second + WINDOW - now))
        return 1


class Lease:
    """A session's hold on its key: released when the session ends."""

    def __init__(self, usage: KeyUsage, metrics: KeyMetrics) -> None:
        self.usage = usage
        self._metrics = metrics
        self._audio = metrics.audio.labels(usage.spec.name)
        self._released = False
        usage.sessions += 1
        metrics.sessions.labels(usage.spec.name).inc()

    @property
    def key_name(self) -> str:
        return self.usage.spec.name

    def charge(self, seconds: float) -> str | None:
        """Count received audio; a message when the key is now over its audio rate."""
        self.usage.charge(seconds)
        self._audio.inc(seconds)
        if self.usage.over_rate():
            self._metrics.refused.labels(self.key_name, "audio_rate").inc()
            return (f"this API key is over its limit of "
                    f"{self.usage.spec.audio_seconds_per_minute:g} s of audio per minute; "
                    f"retry in {self.usage.rate_retry_after()} s")
        return None

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.usage.sessions -= 1
            self._metrics.sessions.labels(self.key_name).dec()


class KeyLimits:
    """Per-key admission: refuses with 429 and ``Retry-After``, or hands out a lease."""

    def __init__(self, keys: tuple[KeySpec, ...], metrics: KeyMetrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._usage = {spec.name: KeyUsage(spec, clock) for spec in keys}
        self._metrics = metrics
        for spec in keys:  # every configured key shows up in /metrics from the start
            metrics.sessions.labels(spec.name)
            metrics.audio.labels(spec.name)

    def admit(self, spec: KeySpec) -> Lease:
        usage = self._usage[spec.name]
        if spec.max_sessions and usage.sessions >= spec.max_sessions:
            self._metrics.refused.labels(spec.name, "max_sessions").inc()
            raise Refused(429, "key_max_sessions", f"this API key already has "
                          f"{usage.sessions} open sessions, its limit", retry_after=5)
        if usage.over_rate():
            self._metrics.refused.labels(spec.name, "audio_rate").inc()
            raise Refused(429, "key_audio_rate", f"this API key is over its limit of "
                          f"{spec.audio_seconds_per_minute:g} s of audio per minute",
                          retry_after=usage.rate_retry_after())
        return Lease(usage, self._metrics)
