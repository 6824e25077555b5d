"""Every message that crosses the gateway <-> worker boundary, and its msgpack encoding.

Only bytes cross the boundary: each message is one msgpack map with a schema version ``v`` and a
``kind``. Audio travels as raw little-endian float32 bytes and is read back with ``np.frombuffer``
(no copy). ``from_wire`` validates and raises :class:`WireError`; callers never index raw dicts.
Frames on a byte stream are length-prefixed like ``multiprocessing.connection`` (4-byte big-endian
signed length), so a worker can use ``Connection.recv_bytes`` while the gateway reads with asyncio.

A worker connection goes: ``hello`` (worker) -> ``config`` (gateway) -> ``ready`` (worker, after
warm-up); then ``request``/``end_session`` one way, ``result`` the other, ``heartbeat`` both ways.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack
import numpy as np

from streamer.errors import WireError

SCHEMA_VERSION = 1
HEADER = struct.Struct("!i")

_packer = msgpack.Packer(use_bin_type=True)


def _pack(obj: dict[str, Any]) -> bytes:
    return _packer.pack(obj)


def _unpack(data: bytes) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types for corrupt input
        raise WireError(f"undecodable envelope: {exc}") from None
    if not isinstance(obj, dict):
        raise WireError(f"envelope must be a map, got {type(obj).__name__}")
    version = obj.get("v")
    if version != SCHEMA_VERSION:
        raise WireError(f"envelope schema version {version!r}, expected {SCHEMA_VERSION}")
    return obj


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    try:
        value = obj[name]
    except KeyError:
        raise WireError(f"{obj.get('kind')} envelope lacks '{name}'") from None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise WireError(f"{obj.get('kind')} envelope field '{name}' has type "
                        f"{type(value).__name__}")
    return value


def frame(payload: bytes) -> bytes:
    """Length-prefix one encoded message for a byte stream."""
    return HEADER.pack(len(payload)) + payload


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """One segment of one channel of one session, to run through the model."""

    KIND: ClassVar[str] = "request"
    request_id: int
    session_id: str
    channel: int
    seq: int
    start_time: float
    end_time: float
    audio: bytes
    is_final: bool | None = None
    stateful_key: str | None = None
    attempt: int = 0
    sent_at: float = 0.0
    trace: dict[str, str] = field(default_factory=dict)

    @property
    def samples(self) -> np.ndarray:
        return np.frombuffer(self.audio, dtype="<f4")

    def to_wire(self, sent_at: float | None = None) -> bytes:
        """``sent_at`` stamps the dispatch time without building a new frozen request."""
        return _pack({"v": SCHEMA_VERSION, "kind": self.KIND, "request_id": self.request_id,
                      "session_id": self.session_id, "channel": self.channel, "seq": self.seq,
                      "start_time": self.start_time, "end_time": self.end_time,
                      "audio": self.audio, "is_final": self.is_final,
                      "stateful_key": self.stateful_key, "attempt": self.attempt,
                      "sent_at": self.sent_at if sent_at is None else sent_at,
                      "trace": self.trace})

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> InferenceRequest:
        is_final = o.get("is_final")
        key = o.get("stateful_key")
        if is_final is not None and not isinstance(is_final, bool):
            raise WireError("request envelope field 'is_final' must be bool or nil")
        if key is not None and not isinstance(key, str):
            raise WireError("request envelope field 'stateful_key' must be str or nil")
        audio = _field(o, "audio", bytes)
        if len(audio) % 4:
            raise WireError(f"request audio is {len(audio)} bytes, not whole float32 samples")
        return cls(request_id=_field(o, "request_id", int), session_id=_field(o, "session_id", str),
                   channel=_field(o, "channel", int), seq=_field(o, "seq", int),
                   start_time=_field(o, "start_time", (int, float)),
                   end_time=_field(o, "end_time", (int, float)), audio=audio,
                   is_final=is_final, stateful_key=key, attempt=_field(o, "attempt", int),
                   sent_at=_field(o, "sent_at", (int, float)), trace=_trace(o))


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """The model's output for one request, or the reason there is none."""

    KIND: ClassVar[str] = "result"
    request_id: int
    worker_id: int
    output: dict[str, Any] | None = None
    error: str | None = None
    queue_wait: float = 0.0
    inference_time: float = 0.0  # this segment's share: the model call's time / batch_size
    batch_size: int = 1
    # Set by the gateway (never by a worker) on the first answer for a stateful stream after the
    # worker holding its model state died: that answer comes from fresh state.
    state_lost: bool = False
    trace: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_wire(self) -> bytes:
        return _pack({"v": SCHEMA_VERSION, "kind": self.KIND, "request_id": self.request_id,
                      "worker_id": self.worker_id, "output": self.output, "error": self.error,
                      "queue_wait": self.queue_wait, "inference_time": self.inference_time,
                      "batch_size": self.batch_size, "state_lost": self.state_lost,
                      "trace": self.trace})

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> InferenceResult:
        output, error = o.get("output"), o.get("error")
        state_lost = o.get("state_lost", False)
        if not isinstance(state_lost, bool):
            raise WireError("result envelope field 'state_lost' must be bool")
        if output is not None and not isinstance(output, dict):
            raise WireError("result envelope field 'output' must be a map or nil")
        if error is not None and not isinstance(error, str):
            raise WireError("result envelope field 'error' must be str or nil")
        if (output is None) == (error is None):
            raise WireError("result envelope needs exactly one of 'output' and 'error'")
        return cls(request_id=_field(o, "request_id", int), worker_id=_field(o, "worker_id", int),
                   output=output, error=error,
                   queue_wait=_field(o, "queue_wait", (int, float)),
                   inference_time=_field(o, "inference_time", (int, float)),
                   batch_size=_field(o, "batch_size", int), state_lost=state_lost,
                   trace=_trace(o))


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """A worker has loaded and warmed up its model and takes work from now on."""

    KIND: ClassVar[str] = "ready"
    worker_id: int
    pid: int
    model: str
    warmup_time: float = 0.0
    trace: dict[str, str] = field(default_factory=dict)

    def to_wire(self) -> bytes:
        return _pack({"v": SCHEMA_VERSION, "kind": self.KIND, "worker_id": self.worker_id,
                      "pid": self.pid, "model": self.model, "warmup_time": self.warmup_time,
                      "trace": self.trace})

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> WorkerReady:
        return cls(worker_id=_field(o, "worker_id", int), pid=_field(o, "pid", int),
                   model=_field(o, "model", str),
                   warmup_time=_field(o, "warmup_time", (int, float)), trace=_trace(o))


@dataclass(frozen=True, slots=True)
class EndSession:
    """Tells a worker that a stateful stream ended, so it can drop that state."""

    KIND: ClassVar[str] = "end_session"
    stateful_key: str
    trace: dict[str, str] = field(default_factory=dict)

    def to_wire(self) -> bytes:
        return _pack({"v": SCHEMA_VERSION, "kind": self.KIND, "stateful_key": self.stateful_key,
                      "trace": self.trace})

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> EndSession:
        return cls(stateful_key=_field(o, "stateful_key", str), trace=_trace(o))


@dataclass(frozen=True, slots=True)
class WorkerHello:
    """A worker's first message on a new connection: who it is, so logs and stats can say."""

    KIND: ClassVar[str] = "hello"
    pid: int
    host: str
    trace: dict[str, str] = field(default_factory=dict)

    def to_wire(self) -> bytes:
        return _pack({"v": SCHEMA_VERSION, "kind": self.KIND, "pid": self.pid,
                      "host": self.host, "trace": self.trace})

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> WorkerHello:
        return cls(pid=_field(o, "pid", int), host=_field(o, "host", str), trace=_trace(o))


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """The gateway's answer to a hello: the worker's id and the gateway's model settings, so every
    worker (embedded or attached from another host) runs the same configuration."""

    KIND: ClassVar[str] = "config"
    worker_id: int
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    max_batch: int = 1
    max_wait: float = 0.0            # seconds a worker waits for a batch to fill
    heartbeat_interval: float = 1.0  # seconds between heartbeats, each way
    heartbeat_timeout: float = 10.0  # silence after which either side gives the other up
    nice: int = 0                    # the worker process's scheduling niceness
    trace: dict[str, str] = field(default_factory=dict)

    def to_wire(self) -> bytes:
        return _pack({"v": SCHEMA_VERSION, "kind": self.KIND, "worker_id": self.worker_id,
                      "model": self.model, "params": self.params, "max_batch": self.max_batch,
                      "max_wait": self.max_wait, "heartbeat_interval": self.heartbeat_interval,
                      "heartbeat_timeout": self.heartbeat_timeout, "nice": self.nice,
                      "trace": self.trace})

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> WorkerConfig:
        params = _field(o, "params", dict)
        if not all(isinstance(k, str) for k in params):
            raise WireError("config envelope field 'params' must have text keys")
        max_batch = _field(o, "max_batch", int)
        if max_batch < 1:
            raise WireError(f"config envelope field 'max_batch' must be at least 1, "
                            f"got {max_batch}")
        return cls(worker_id=_field(o, "worker_id", int), model=_field(o, "model", str),
                   params=params, max_batch=max_batch,
                   max_wait=_field(o, "max_wait", (int, float)),
                   heartbeat_interval=_field(o, "heartbeat_interval", (int, float)),
                   heartbeat_timeout=_field(o, "heartbeat_timeout", (int, float)),
                   nice=_field(o, "nice", int), trace=_trace(o))


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sent both ways every ``heartbeat_interval``: silence longer than ``heartbeat_timeout``
    means the other side is hung or unreachable, even while the TCP connection looks open."""

    KIND: ClassVar[str] = "heartbeat"
    worker_id: int
    sent_at: float
    trace: dict[str, str] = field(default_factory=dict)

    def to_wire(self) -> bytes:
        return _pack({"v": SCHEMA_VERSION, "kind": self.KIND, "worker_id": self.worker_id,
                      "sent_at": self.sent_at, "trace": self.trace})

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> Heartbeat:
        return cls(worker_id=_field(o, "worker_id", int),
                   sent_at=_field(o, "sent_at", (int, float)), trace=_trace(o))


Message = (InferenceRequest | InferenceResult | WorkerReady | EndSession | WorkerHello
           | WorkerConfig | Heartbeat)
_KINDS: dict[str, Any] = {c.KIND: c for c in (InferenceRequest, InferenceResult, WorkerReady,
                                              EndSession, WorkerHello, WorkerConfig, Heartbeat)}


def from_wire(data: bytes) -> Message:
    """Decode and validate any envelope."""
    obj = _unpack(data)
    cls = _KINDS.get(obj.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise WireError(f"unknown envelope kind {obj.get('kind')!r}")
    return cls.from_obj(obj)  # type: ignore[no-any-return]


def _trace(o: dict[str, Any]) -> dict[str, str]:
    trace = o.get("trace", {})
    if not isinstance(trace, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in trace.items()):
        raise WireError("envelope field 'trace' must map strings to strings")
    return trace
