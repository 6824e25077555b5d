"""Events the client library adds to the gateway's: what happened to the connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamer.protocol import ServerEvent


@dataclass(frozen=True, slots=True)
class Reconnected:
    """Client-side notice, not a gateway event: the connection dropped and the stream was
    resumed on a new one. Events missed meanwhile follow; none is repeated."""

    attempts: int        # connections tried
    offline: float       # seconds from noticing the drop to the gateway's 'resumed'
    audio_bytes: int     # where the audio went on from (the gateway's count)
    resent_bytes: int    # audio sent again because it was not acknowledged
    channel: int = 0
    type: str = "reconnected"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "attempts": self.attempts, "offline": round(self.offline, 3),
                "audio_bytes": self.audio_bytes, "resent_bytes": self.resent_bytes}


StreamEvent = ServerEvent | Reconnected
