"""Puts each channel's outputs back in stream order, whatever order workers finish in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Reorderer(Generic[T]):
    """Every output of a channel takes the next sequence number when it is *planned* (a segment
    sent to a worker, an activity event); ``put`` files it when it is *ready*, and ``release``
    gets each item as soon as all items before it on that channel are released."""

    def __init__(self, release: Callable[[int, T], None]) -> None:
        self._release = release
        self._next_seq: dict[int, int] = {}   # next number to hand out, per channel
        self._next_out: dict[int, int] = {}   # next number to release, per channel
        self._held: dict[tuple[int, int], T] = {}

    def reserve(self, channel: int) -> int:
        seq = self._next_seq.get(channel, 0)
        self._next_seq[channel] = seq + 1
        return seq

    def put(self, channel: int, seq: int, item: T) -> None:
        key = (channel, seq)
        if key in self._held or seq < self._next_out.get(channel, 0):
            raise ValueError(f"channel {channel} sequence {seq} delivered twice")
        self._held[key] = item
        nxt = self._next_out.get(channel, 0)
        while (channel, nxt) in self._held:
            self._release(channel, self._held.pop((channel, nxt)))
            nxt += 1
        self._next_out[channel] = nxt

    @property
    def waiting(self) -> int:
        """Outputs planned but not yet released, over all channels."""
        return sum(self._next_seq.values()) - sum(self._next_out.values())
