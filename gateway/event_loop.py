"""Which event loop ``streamer-gateway`` runs on: asyncio's own or uvloop's.

uvloop's loop costs the gateway less CPU per segment (``scripts/bench_overhead.py --loop
both``); ``auto`` takes it when it is installed (the ``server`` extra brings it) and falls back
to asyncio's otherwise, so a bare install still runs.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from streamer.config import EVENT_LOOPS as CHOICES
from streamer.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LoopChoice:
    """The loop to run: its name for the log, and a factory for ``asyncio.Runner``."""

    name: str
    factory: Callable[[], asyncio.AbstractEventLoop] | None  # None: asyncio's default


def choose_loop(setting: str) -> LoopChoice:
    """Resolve ``server.event_loop``; an explicit ``uvloop`` that is not installed is an error."""
    if setting not in CHOICES:
        raise ConfigError(f"server.event_loop must be one of {', '.join(CHOICES)}, "
                          f"got {setting!r}")
    if setting == "asyncio":
        return LoopChoice("asyncio", None)
    if importlib.util.find_spec("uvloop") is None:
        if setting == "uvloop":
            raise ConfigError("server.event_loop is 'uvloop' but uvloop is not installed "
                              "(pip install 'streamer-audio-gateway[server]')")
        return LoopChoice("asyncio", None)
    import uvloop

    return LoopChoice("uvloop", uvloop.new_event_loop)
