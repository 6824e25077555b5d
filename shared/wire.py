"""Every message that crosses the gateway <-> worker boundary, and its msgpack encoding.

Only bytes cross the boundary: each message is one msgpack map with a schema version ``v`` and a
``kind``. Audio travels as raw little-endian float32 bytes and is read back with ``np.frombuffer``
(no copy). ``from_wire`` validates and raises :class:`WireError`; callers never index raw dicts.
Frames on a byte stream carry a 4-byte big-endian signed length first (``frame``); both ends
cut them out with ``streamer.framing``.

The messages are ``msgspec`` Structs: msgspec encodes them and checks every field against its
annotation natively, several times faster than Python code walking the fields
(``scripts/bench_wire.py``), and every segment pays the codec four times (a request and a result,
each encoded on one side and decoded on the other).

A worker connection goes: ``hello`` (worker) -> ``config`` (gateway) -> ``ready`` (worker, after
warm-up); then ``request``/``end_session`` one way, ``result`` the other, ``heartbeat`` both ways.
"""

from __future__ import annotations

import struct
import threading
from typing import Any, ClassVar, TypeVar

import msgspec
import numpy as np

from streamer.errors import WireError

SCHEMA_VERSION = 1
HEADER = struct.Struct("!i")

# One encoder per thread: a worker's heartbeat thread and its main thread both encode, and an
# encoder may keep its output buffer between calls. (Decoders keep no state between calls.)
_local = threading.local()


def _encode(msg: Any) -> bytes:
    try:
        encode = _local.encode
    except AttributeError:
        encode = _local.encode = msgspec.msgpack.Encoder().encode
    return encode(msg)  # type: ignore[no-any-return]


def frame(payload: bytes) -> bytes:
    """Length-prefix one encoded message for a byte stream."""
    return HEADER.pack(len(payload)) + payload


class _Envelope(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Base of every wire message. ``kind`` is the Struct's tag; ``v``, keyword-only so that it
    sorts after each message's own fields, is written on every envelope and checked first."""

    KIND: ClassVar[str]  # the tag, set on each message class below
    v: int = SCHEMA_VERSION

    def to_wire(self, **stamp: Any) -> bytes:
        """The msgpack envelope; ``stamp`` replaces fields (a request's ``sent_at`` at
        dispatch) in a copy."""
        return _encode(msgspec.structs.replace(self, **stamp) if stamp else self)

    def validate(self) -> None:
        """Checks across fields, beyond each field's type (run on every decoded message)."""


_E = TypeVar("_E", bound=_Envelope)


def replace(msg: _E, **changes: Any) -> _E:
    """A copy of ``msg`` with ``changes`` (the messages are frozen)."""
    return msgspec.structs.replace(msg, **changes)


STEPS = ("", "feed", "partial", "finish")


class InferenceRequest(_Envelope, frozen=True, tag="request"):
    """One segment of one channel of one session, to run through the model."""

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
    trace: dict[str, str] = msgspec.field(default_factory=dict)
    step: str = ""  # "" a whole segment; "feed", "partial", "finish": a streaming model's piece

    @property
    def samples(self) -> np.ndarray:
        return np.frombuffer(self.audio, dtype="<f4")

    def validate(self) -> None:
        if len(self.audio) % 4:
            raise WireError(f"request audio is {len(self.audio)} bytes, not whole float32 "
                            "samples")
        if self.step not in STEPS:
            raise WireError(f"request step {self.step!r} is not one of {STEPS}")


class InferenceResult(_Envelope, frozen=True, tag="result"):
    """The model's output for one request, or the reason there is none."""

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
    trace: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def validate(self) -> None:
        if (self.output is None) == (self.error is None):
            raise WireError("result envelope needs exactly one of 'output' and 'error'")


class WorkerReady(_Envelope, frozen=True, tag="ready"):
    """A worker has loaded and warmed up its model and takes work from now on."""

    worker_id: int
    pid: int
    model: str
    warmup_time: float = 0.0
    trace: dict[str, str] = msgspec.field(default_factory=dict)


class EndSession(_Envelope, frozen=True, tag="end_session"):
    """Tells a worker that a stateful stream ended, so it can drop that state."""

    stateful_key: str
    trace: dict[str, str] = msgspec.field(default_factory=dict)


class WorkerHello(_Envelope, frozen=True, tag="hello"):
    """A worker's first message on a new connection: who it is, so logs and stats can say."""

    pid: int
    host: str
    trace: dict[str, str] = msgspec.field(default_factory=dict)


class WorkerConfig(_Envelope, frozen=True, tag="config"):
    """The answer to a hello: the worker's id and the model settings, so every embedded worker
    runs the gateway's configuration (a NATS worker's process sends its own to its model)."""

    worker_id: int
    model: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    max_batch: int = 1
    max_wait: float = 0.0            # seconds a worker waits for a batch to fill
    heartbeat_interval: float = 1.0  # seconds between heartbeats, each way
    heartbeat_timeout: float = 10.0  # silence after which either side gives the other up
    nice: int = 0                    # the worker process's scheduling niceness
    trace: dict[str, str] = msgspec.field(default_factory=dict)

    def validate(self) -> None:
        if self.max_batch < 1:
            raise WireError(f"config envelope field 'max_batch' must be at least 1, "
                            f"got {self.max_batch}")


class Heartbeat(_Envelope, frozen=True, tag="heartbeat"):
    """Sent both ways every ``heartbeat_interval``: silence longer than ``heartbeat_timeout``
    means the other side is hung or unreachable, even while the TCP connection looks open."""

    worker_id: int
    sent_at: float
    trace: dict[str, str] = msgspec.field(default_factory=dict)


class WorkerAnnounce(_Envelope, frozen=True, tag="announce"):
    """A NATS worker's heartbeat on its model's subject: where to send it work (``subject``),
    how much it admits at once and how much of that is free now. ``gone``: it is leaving, so
    gateways re-dispatch what it held at once instead of waiting for the heartbeat timeout."""

    worker: str      # unique per worker process run
    subject: str
    model: str
    capacity: int
    free: int
    host: str
    pid: int
    sent_at: float
    gone: bool = False
    trace: dict[str, str] = msgspec.field(default_factory=dict)


class Busy(_Envelope, frozen=True, tag="busy"):
    """A NATS worker's answer to a request beyond its capacity (other gateways filled it): the
    gateway queues the request again; nothing ran."""

    request_id: int
    free: int = 0
    trace: dict[str, str] = msgspec.field(default_factory=dict)


class GatewayBeat(_Envelope, frozen=True, tag="gateway"):
    """A gateway's heartbeat on its model's subject, naming its reply subject: workers drop
    the model state of streams whose gateway has been silent too long (it died)."""

    reply: str
    sent_at: float
    trace: dict[str, str] = msgspec.field(default_factory=dict)


Message = (InferenceRequest | InferenceResult | WorkerReady | EndSession | WorkerHello
           | WorkerConfig | Heartbeat | WorkerAnnounce | Busy | GatewayBeat)


class _Head(msgspec.Struct):
    """What every envelope starts with, read before its kind's fields are."""

    v: Any = None
    kind: Any = None


_MESSAGES: tuple[type[_Envelope], ...] = (
    InferenceRequest, InferenceResult, WorkerReady, EndSession, WorkerHello, WorkerConfig,
    Heartbeat, WorkerAnnounce, Busy, GatewayBeat)
for _cls in _MESSAGES:
    _cls.KIND = str(_cls.__struct_config__.tag)
_read_head = msgspec.msgpack.Decoder(_Head).decode
_DECODERS: dict[str, Any] = {c.KIND: msgspec.msgpack.Decoder(c).decode for c in _MESSAGES}


def from_wire(data: bytes | memoryview) -> Message:
    """Decode and validate any envelope: its version and kind first, then its kind's fields."""
    try:
        head = _read_head(data)
    except msgspec.ValidationError:  # not a map, or not only one msgpack value: say which
        try:
            obj = msgspec.msgpack.decode(data)
        except msgspec.DecodeError as exc:
            raise WireError(f"undecodable envelope: {exc}") from None
        raise WireError(f"envelope must be a map, got {type(obj).__name__}") from None
    except msgspec.DecodeError as exc:
        raise WireError(f"undecodable envelope: {exc}") from None
    if head.v != SCHEMA_VERSION:
        raise WireError(f"envelope schema version {head.v!r}, expected {SCHEMA_VERSION}")
    decode = _DECODERS.get(head.kind) if type(head.kind) is str else None
    if decode is None:
        raise WireError(f"unknown envelope kind {head.kind!r}")
    try:
        msg: Message = decode(data)
    except msgspec.MsgspecError as exc:
        raise WireError(f"{head.kind} envelope: {exc}") from None
    msg.validate()
    return msg
