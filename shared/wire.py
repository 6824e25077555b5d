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

import dataclasses
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import msgpack
import numpy as np

from streamer.errors import WireError

SCHEMA_VERSION = 1
HEADER = struct.Struct("!i")

# One packer per thread: a worker's heartbeat thread and its main thread both encode, and a
# msgpack Packer keeps an internal buffer that two threads must not share.
_local = threading.local()


def _pack(obj: dict[str, Any]) -> bytes:
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(obj)  # type: ignore[no-any-return]


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


def frame(payload: bytes) -> bytes:
    """Length-prefix one encoded message for a byte stream."""
    return HEADER.pack(len(payload)) + payload


# ---- encoding and decoding derived from each message's dataclass fields ---------------------
# annotation -> (accepted types, what the error message says is expected)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "int"), "float": ((int, float), "number"), "str": ((str,), "str"),
    "bytes": ((bytes,), "bytes"), "bool": ((bool,), "bool"),
    "dict[str, Any]": ((dict,), "a map with text keys"),
    "dict[str, str]": ((dict,), "a map of strings to strings"),
}


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    types: tuple[type, ...]
    expect: str
    optional: bool    # may be nil
    required: bool    # must be present (no default)
    no_bool: bool     # a number field: True/False are not numbers here
    text_keys: bool   # a map whose keys must be text
    text_values: bool  # ... and whose values must be text too

    def valid(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if not isinstance(value, self.types) or (self.no_bool and isinstance(value, bool)):
            return False
        if self.text_keys:
            mapping: dict[Any, Any] = value  # type: ignore[assignment]
            if self.text_values:
                return all(type(k) is str and type(v) is str for k, v in mapping.items())
            return all(type(k) is str for k in mapping)
        return True


def _schema(cls: type) -> tuple[_Field, ...]:
    """Each field's check, read from its annotation (``int``, ``float | None``, ...)."""
    out = []
    for f in dataclasses.fields(cls):
        text = str(f.type).replace(" ", "")
        optional = text.endswith("|None")
        base = text.removesuffix("|None").replace(",", ", ")
        types, expect = _TYPES[base]
        required = (f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING)
        out.append(_Field(f.name, types, expect + (" or nil" if optional else ""), optional,
                          required, base in ("int", "float"), base.startswith("dict"),
                          base == "dict[str, str]"))
    return tuple(out)


class _Envelope:
    """Base of every wire message: ``to_wire`` and ``from_obj`` from the dataclass fields, so a
    field is named once (in its class) and validated by its annotation."""

    __slots__ = ()
    KIND: ClassVar[str]
    _SCHEMA: ClassVar[tuple[_Field, ...]]
    _NAMES: ClassVar[tuple[str, ...]]

    def to_wire(self, **stamp: Any) -> bytes:
        """The msgpack envelope; ``stamp`` overrides fields (a request's ``sent_at`` at
        dispatch) without building a new frozen message."""
        obj = {"v": SCHEMA_VERSION, "kind": self.KIND}
        for name in self._NAMES:
            obj[name] = getattr(self, name)
        if stamp:
            obj.update(stamp)
        return _pack(obj)

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> Any:
        values: dict[str, Any] = {}
        for f in cls._SCHEMA:
            try:
                value = o[f.name]
            except KeyError:
                if f.required:
                    raise WireError(f"{cls.KIND} envelope lacks '{f.name}'") from None
                continue
            if not f.valid(value):
                raise WireError(f"{cls.KIND} envelope field '{f.name}' has type "
                                f"{type(value).__name__}, expected {f.expect}")
            values[f.name] = value
        msg = cls(**values)
        msg.validate()
        return msg

    def validate(self) -> None:
        """Checks across fields, beyond each field's type."""


_E = TypeVar("_E", bound=_Envelope)


def _envelope(cls: type[_E]) -> type[_E]:
    cls._SCHEMA = _schema(cls)
    cls._NAMES = tuple(f.name for f in cls._SCHEMA)
    return cls


STEPS = ("", "feed", "partial", "finish")


@_envelope
@dataclass(frozen=True, slots=True)
class InferenceRequest(_Envelope):
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


@_envelope
@dataclass(frozen=True, slots=True)
class InferenceResult(_Envelope):
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

    def validate(self) -> None:
        if (self.output is None) == (self.error is None):
            raise WireError("result envelope needs exactly one of 'output' and 'error'")


@_envelope
@dataclass(frozen=True, slots=True)
class WorkerReady(_Envelope):
    """A worker has loaded and warmed up its model and takes work from now on."""

    KIND: ClassVar[str] = "ready"
    worker_id: int
    pid: int
    model: str
    warmup_time: float = 0.0
    trace: dict[str, str] = field(default_factory=dict)


@_envelope
@dataclass(frozen=True, slots=True)
class EndSession(_Envelope):
    """Tells a worker that a stateful stream ended, so it can drop that state."""

    KIND: ClassVar[str] = "end_session"
    stateful_key: str
    trace: dict[str, str] = field(default_factory=dict)


@_envelope
@dataclass(frozen=True, slots=True)
class WorkerHello(_Envelope):
    """A worker's first message on a new connection: who it is, so logs and stats can say."""

    KIND: ClassVar[str] = "hello"
    pid: int
    host: str
    trace: dict[str, str] = field(default_factory=dict)


@_envelope
@dataclass(frozen=True, slots=True)
class WorkerConfig(_Envelope):
    """The answer to a hello: the worker's id and the model settings, so every embedded worker
    runs the gateway's configuration (a NATS worker's process sends its own to its model)."""

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

    def validate(self) -> None:
        if self.max_batch < 1:
            raise WireError(f"config envelope field 'max_batch' must be at least 1, "
                            f"got {self.max_batch}")


@_envelope
@dataclass(frozen=True, slots=True)
class Heartbeat(_Envelope):
    """Sent both ways every ``heartbeat_interval``: silence longer than ``heartbeat_timeout``
    means the other side is hung or unreachable, even while the TCP connection looks open."""

    KIND: ClassVar[str] = "heartbeat"
    worker_id: int
    sent_at: float
    trace: dict[str, str] = field(default_factory=dict)


@_envelope
@dataclass(frozen=True, slots=True)
class WorkerAnnounce(_Envelope):
    """A NATS worker's heartbeat on its model's subject: where to send it work (``subject``),
    how much it admits at once and how much of that is free now. ``gone``: it is leaving, so
    gateways re-dispatch what it held at once instead of waiting for the heartbeat timeout."""

    KIND: ClassVar[str] = "announce"
    worker: str      # unique per worker process run
    subject: str
    model: str
    capacity: int
    free: int
    host: str
    pid: int
    sent_at: float
    gone: bool = False
    trace: dict[str, str] = field(default_factory=dict)


@_envelope
@dataclass(frozen=True, slots=True)
class Busy(_Envelope):
    """A NATS worker's answer to a request beyond its capacity (other gateways filled it): the
    gateway queues the request again; nothing ran."""

    KIND: ClassVar[str] = "busy"
    request_id: int
    free: int = 0
    trace: dict[str, str] = field(default_factory=dict)


@_envelope
@dataclass(frozen=True, slots=True)
class GatewayBeat(_Envelope):
    """A gateway's heartbeat on its model's subject, naming its reply subject: workers drop
    the model state of streams whose gateway has been silent too long (it died)."""

    KIND: ClassVar[str] = "gateway"
    reply: str
    sent_at: float
    trace: dict[str, str] = field(default_factory=dict)


Message = (InferenceRequest | InferenceResult | WorkerReady | EndSession | WorkerHello
           | WorkerConfig | Heartbeat | WorkerAnnounce | Busy | GatewayBeat)
_KINDS: dict[str, Any] = {c.KIND: c for c in (InferenceRequest, InferenceResult, WorkerReady,
                                              EndSession, WorkerHello, WorkerConfig, Heartbeat,
                                              WorkerAnnounce, Busy, GatewayBeat)}



def from_wire(data: bytes) -> Message:
    """Decode and validate any envelope."""
    obj = _unpack(data)
    cls = _KINDS.get(obj.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise WireError(f"unknown envelope kind {obj.get('kind')!r}")
    return cls.from_obj(obj)  # type: ignore[no-any-return]

