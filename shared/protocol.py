"""The client <-> gateway protocol: JSON control messages and JSON events.

Field names follow the upstream streamer-template so its clients keep working. Parsing is strict
about types and lenient about absent optional fields; every failure is a :class:`ProtocolError`
whose message says what was expected and what came.
"""

from __future__ import annotations

import json
import math
from collections.abc import Set
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode

from streamer.errors import ProtocolError

MAX_CHANNELS = 8
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
MAX_TRACE_ID_LEN = 512
# Websocket subprotocols of an authenticated upgrade: a client offers both, the gateway selects the
# first (a browser fails a handshake whose offered subprotocols are all ignored), the second
# carries a token from POST /api/v1/token, out of the URL.
SUBPROTOCOL = "streamer.v1"
TOKEN_SUBPROTOCOL_PREFIX = "streamer.token."
# (bit_depth, is_float) -> numpy dtype string of the little-endian samples.
SAMPLE_FORMATS: dict[tuple[int, bool], str] = {(16, False): "<i2", (32, False): "<i4",
                                               (32, True): "<f4"}
# Sample encodings: linear PCM, or the 8-bit logarithmic G.711 codes telephony uses.
PCM = "pcm"
G711_ENCODINGS = ("mulaw", "alaw")
ENCODINGS = (PCM, *G711_ENCODINGS)
FORMAT_FIELDS = frozenset({"channels", "sample_rate", "bit_depth", "is_float", "encoding"})


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """How the binary frames of a stream are laid out. ``encoding`` "mulaw" or "alaw" means one
    byte per sample (``bit_depth`` 8), expanded to linear samples by the gateway."""

    channels: int = 1
    sample_rate: int = 16_000
    bit_depth: int = 16
    is_float: bool = False
    encoding: str = PCM

    @property
    def dtype(self) -> str:
        if self.encoding in G711_ENCODINGS:
            return "u1"
        return SAMPLE_FORMATS[(self.bit_depth, self.is_float)]

    @property
    def frame_bytes(self) -> int:
        """Bytes in one frame (one sample of every channel)."""
        return self.channels * self.bit_depth // 8

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"channels": self.channels, "sample_rate": self.sample_rate,
                             "bit_depth": self.bit_depth, "is_float": self.is_float}
        if self.encoding != PCM:  # PCM formats stay exactly what clients sent before encodings
            d["encoding"] = self.encoding
        return d

    @classmethod
    def from_dict(cls, raw: Any) -> AudioFormat:
        if not isinstance(raw, dict):
            raise invalid(f"'format' must be an object, got {json_kind(raw)}")
        unknown = set(raw) - FORMAT_FIELDS
        if unknown:
            raise invalid(f"unknown field(s) in 'format': {', '.join(sorted(unknown))}")
        encoding = raw.get("encoding", PCM)
        if not isinstance(encoding, str):
            raise invalid(f"'format.encoding' must be a string ({', '.join(ENCODINGS)}), "
                          f"got {json_kind(encoding)}")
        fmt = cls(
            channels=_int(raw, "channels", 1, "format."),
            sample_rate=_int(raw, "sample_rate", 16_000, "format."),
            bit_depth=_int(raw, "bit_depth", 8 if encoding in G711_ENCODINGS else 16, "format."),
            is_float=_bool(raw, "is_float", False, "format."),
            encoding=encoding,
        )
        fmt.validate()
        return fmt

    def describe(self) -> str:
        """For logs: ``2 ch, 48000 Hz, 16-bit``."""
        return (f"{self.channels} ch, {self.sample_rate} Hz, {self.bit_depth}-bit"
                f"{' float' if self.is_float else ''}")

    def validate(self) -> None:
        unsupported = WSCloseCode.UNSUPPORTED_DATA
        if not 1 <= self.channels <= MAX_CHANNELS:
            raise ProtocolError(f"unsupported format: channels must be 1 to {MAX_CHANNELS}, "
                                f"got {self.channels}", unsupported)
        if not MIN_SAMPLE_RATE <= self.sample_rate <= MAX_SAMPLE_RATE:
            raise ProtocolError(f"unsupported format: sample_rate must be {MIN_SAMPLE_RATE} to "
                                f"{MAX_SAMPLE_RATE} Hz, got {self.sample_rate}", unsupported)
        if self.encoding not in ENCODINGS:
            raise ProtocolError(f"unsupported format: encoding {json.dumps(self.encoding)[:40]}; "
                                f"supported: {', '.join(ENCODINGS)}", unsupported)
        if self.encoding in G711_ENCODINGS:
            if self.bit_depth != 8 or self.is_float:
                raise ProtocolError(
                    f"unsupported format: encoding {self.encoding} has 8-bit integer samples; "
                    f"got bit_depth {self.bit_depth} with is_float {str(self.is_float).lower()}",
                    unsupported)
            return
        if (self.bit_depth, self.is_float) not in SAMPLE_FORMATS:
            kinds = ", ".join(f"bit_depth {b} with is_float {str(f).lower()}"
                              for b, f in SAMPLE_FORMATS)
            raise ProtocolError(f"unsupported format: bit_depth {self.bit_depth} with is_float "
                                f"{str(self.is_float).lower()}; supported: {kinds}, or "
                                f"encoding {' or '.join(G711_ENCODINGS)} with bit_depth 8",
                                unsupported)


@dataclass(frozen=True, slots=True)
class StartRequest:
    format: AudioFormat = field(default_factory=AudioFormat)
    trace_id: str | None = None
    interim_results: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        msg: dict[str, Any] = {"request": "start", "format": self.format.to_dict(),
                               "interim_results": self.interim_results}
        if self.trace_id is not None:
            msg["trace_id"] = self.trace_id
        msg.update(self.options)
        return json.dumps(msg)


@dataclass(frozen=True, slots=True)
class StopRequest:
    disconnect: bool = False

    def to_json(self) -> str:
        return json.dumps({"request": "stop", "disconnect": self.disconnect})


@dataclass(frozen=True, slots=True)
class KeepAliveRequest:
    """Resets the stream's idle timer without audio (a muted microphone); no reply."""

    def to_json(self) -> str:
        return json.dumps({"request": "keepalive"})


@dataclass(frozen=True, slots=True)
class FinalizeRequest:
    """Closes every channel's open segment now and gets its result; the stream goes on."""

    def to_json(self) -> str:
        return json.dumps({"request": "finalize"})


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """Takes over a stream whose socket dropped: ``resume_token`` from its ``started`` event,
    ``last_seq`` the highest event ``seq`` the client has (0 for none)."""

    resume_token: str
    last_seq: int = 0

    def to_json(self) -> str:
        return json.dumps({"request": "resume", "resume_token": self.resume_token,
                           "last_seq": self.last_seq})


ClientMessage = StartRequest | StopRequest | KeepAliveRequest | FinalizeRequest | ResumeRequest

# Optional start fields that later features read (validated by their owners).
START_OPTION_FIELDS = frozenset({"vad"})
MAX_RESUME_TOKEN_LEN = 256
# Every request the protocol defines, and the ones a session handles unless it says otherwise.
CLIENT_REQUESTS = ("start", "stop", "keepalive", "finalize", "resume")
HANDLED_REQUESTS = frozenset({"start", "stop"})


def parse_client_message(text: str, accept: Set[str] = HANDLED_REQUESTS) -> ClientMessage:
    """Parse one JSON text frame from a client. A request the protocol defines but the caller
    does not handle (not in ``accept``) is refused with close 1007, naming what is accepted."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise invalid(f"control message is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise invalid(f"control message must be a JSON object, got {json_kind(raw)}")
    request = raw.get("request")
    expected = " or ".join(f"'{r}'" for r in CLIENT_REQUESTS if r in accept)
    if request is None:
        raise invalid(f"control message needs a 'request' field ({expected})")
    if not isinstance(request, str) or request not in CLIENT_REQUESTS:
        raise invalid(f"unknown request {json.dumps(request)[:40]}; expected {expected}")
    if request not in accept:
        raise invalid(f"request '{request}' is not supported by this gateway; "
                      f"expected {expected}")
    if request == "start":
        return _parse_start(raw)
    if request == "stop":
        _no_unknown(raw, {"disconnect"}, "stop")
        return StopRequest(disconnect=_bool(raw, "disconnect", False))
    if request == "keepalive":
        _no_unknown(raw, set(), "keepalive")
        return KeepAliveRequest()
    if request == "finalize":
        _no_unknown(raw, set(), "finalize")
        return FinalizeRequest()
    return _parse_resume(raw)


def _no_unknown(raw: dict[str, Any], fields: set[str], name: str) -> None:
    unknown = set(raw) - fields - {"request"}
    if unknown:
        raise invalid(f"unknown field(s) in '{name}': {', '.join(sorted(map(str, unknown)))}")


def _parse_resume(raw: dict[str, Any]) -> ResumeRequest:
    _no_unknown(raw, {"resume_token", "last_seq"}, "resume")
    token = raw.get("resume_token")
    if not isinstance(token, str) or not token:
        got = "an empty string" if token == "" else json_kind(token)
        raise invalid(f"'resume' needs 'resume_token', the token of the 'started' event, "
                      f"got {got if 'resume_token' in raw else 'none'}")
    if len(token) > MAX_RESUME_TOKEN_LEN:
        raise invalid(f"'resume_token' is {len(token)} characters; at most "
                      f"{MAX_RESUME_TOKEN_LEN} are accepted")
    if "last_seq" not in raw:
        raise invalid("'resume' needs 'last_seq', the highest event seq received (0 for none)")
    last_seq = _int(raw, "last_seq", 0)
    if last_seq < 0:
        raise invalid(f"'last_seq' must be 0 or more, got {last_seq}")
    return ResumeRequest(token, last_seq)


def _parse_start(raw: dict[str, Any]) -> StartRequest:
    known = {"request", "trace_id", "interim_results", "format"} | START_OPTION_FIELDS
    unknown = set(raw) - known
    if unknown:
        raise invalid(f"unknown field(s) in 'start': {', '.join(sorted(unknown))}")
    trace_id = raw.get("trace_id")
    if trace_id is not None:
        if not isinstance(trace_id, str):
            raise invalid(f"'trace_id' must be a string, got {json_kind(trace_id)}")
        if len(trace_id) > MAX_TRACE_ID_LEN:
            raise invalid(f"'trace_id' is {len(trace_id)} characters; at most "
                           f"{MAX_TRACE_ID_LEN} are accepted")
    fmt = AudioFormat.from_dict(raw["format"]) if "format" in raw else AudioFormat()
    options = {k: raw[k] for k in START_OPTION_FIELDS if k in raw}
    return StartRequest(format=fmt, trace_id=trace_id,
                        interim_results=_bool(raw, "interim_results", False), options=options)


# ---- events, gateway -> client -------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SegmentEvent:
    channel: int
    start_time: float
    end_time: float
    output: dict[str, Any]
    is_final: bool | None = None
    from_finalize: bool = False  # closed early by a client's 'finalize'
    seq: int | None = None       # set by the gateway's outbox as the event leaves

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "segment", "channel": self.channel,
                             "start_time": round(self.start_time, 6),
                             "end_time": round(self.end_time, 6)}
        if self.is_final is not None:
            d["is_final"] = self.is_final
        if self.from_finalize:
            d["from_finalize"] = True
        _put_seq(d, self.seq)
        for key, value in self.output.items():
            d.setdefault(key, value)
        return d


@dataclass(frozen=True, slots=True)
class ActivityEvent:
    """``active`` when speech starts on a channel, ``inactive`` when it ends."""

    type: str
    channel: int
    time: float
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _put_seq({"type": self.type, "channel": self.channel,
                         "time": round(self.time, 6)}, self.seq)


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    channel: int
    message: str
    start_time: float | None = None
    end_time: float | None = None
    is_final: bool | None = None
    from_finalize: bool = False
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "error", "channel": self.channel, "message": self.message}
        if self.start_time is not None:
            d["start_time"] = round(self.start_time, 6)
        if self.end_time is not None:
            d["end_time"] = round(self.end_time, 6)
        if self.is_final is not None:
            d["is_final"] = self.is_final
        if self.from_finalize:
            d["from_finalize"] = True
        return _put_seq(d, self.seq)


@dataclass(frozen=True, slots=True)
class StoppedEvent:
    """Sent per channel after its last result once a stream ends (an addition to upstream):
    lets a client that keeps the socket open know every result of the stream has arrived."""

    channel: int
    time: float
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _put_seq({"type": "stopped", "channel": self.channel,
                         "time": round(self.time, 6)}, self.seq)


@dataclass(frozen=True, slots=True)
class FinalizedEvent:
    """After a ``finalize``: every result of the channel's audio up to ``time`` was sent."""

    channel: int
    time: float
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _put_seq({"type": "finalized", "channel": self.channel,
                         "time": round(self.time, 6)}, self.seq)


@dataclass(frozen=True, slots=True)
class StartedEvent:
    """The first event of a stream: its id and the token that resumes it after a drop."""

    stream_id: str
    resume_token: str
    channel: int = 0
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _put_seq({"type": "started", "channel": self.channel,
                         "stream_id": self.stream_id, "resume_token": self.resume_token},
                        self.seq)


@dataclass(frozen=True, slots=True)
class AudioAckedEvent:
    """``bytes``: the stream's audio bytes accepted so far (a resumed client sends from here)."""

    bytes: int
    channel: int = 0
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _put_seq({"type": "audio_acked", "channel": self.channel, "bytes": self.bytes},
                        self.seq)


@dataclass(frozen=True, slots=True)
class ResumedEvent:
    """A resume was accepted: the events after the client's ``last_seq`` follow; the client
    continues its audio from byte ``audio_bytes``."""

    stream_id: str
    audio_bytes: int
    channel: int = 0
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _put_seq({"type": "resumed", "channel": self.channel,
                         "stream_id": self.stream_id, "audio_bytes": self.audio_bytes},
                        self.seq)


ServerEvent = (SegmentEvent | ActivityEvent | ErrorEvent | StoppedEvent | FinalizedEvent
               | StartedEvent | AudioAckedEvent | ResumedEvent)


def _put_seq(d: dict[str, Any], seq: int | None) -> dict[str, Any]:
    if seq is not None:
        d["seq"] = seq
    return d


def with_seq(text: str, seq: int) -> str:
    """An encoded event with its stream position added (the outbox numbers events as they
    leave, after they were encoded in stream order)."""
    return f'{text[:-1]}, "seq": {seq}}}'


def encode_event(event: ServerEvent) -> str:
    """Strict JSON: a model's NaN or infinity becomes null (json.dumps would write ``NaN``,
    which is not JSON and breaks strict clients)."""
    d = event.to_dict()
    try:
        return _STRICT_JSON.encode(d)
    except ValueError:
        return _STRICT_JSON.encode(_finite(d))


# Built once: json.dumps with any option builds a new encoder per call, which costs more than
# encoding a small event.
_STRICT_JSON = json.JSONEncoder(allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


MAX_CLOSE_REASON = 123  # bytes: a close frame's payload is at most 125, 2 of them the code


def close_reason(message: str, limit: int = MAX_CLOSE_REASON) -> bytes:
    """``message`` as a close reason: UTF-8, cut to ``limit`` bytes on a character boundary
    (a split character makes the client fail the close with "Invalid UTF-8")."""
    data = message.encode()
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode()


SEGMENT_FIELDS = frozenset({"type", "channel", "start_time", "end_time", "is_final",
                            "from_finalize", "seq"})


def parse_server_event(text: str) -> ServerEvent:
    """Parse an event as a client sees it (used by the client library and tests)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"server sent invalid JSON ({exc})",
                            WSCloseCode.INVALID_TEXT) from None
    if not isinstance(raw, dict) or "type" not in raw or "channel" not in raw:
        raise ProtocolError(f"server event lacks 'type' or 'channel': {text[:80]}")
    kind, channel, seq = raw["type"], raw["channel"], raw.get("seq")
    if kind == "segment":
        output = {k: v for k, v in raw.items() if k not in SEGMENT_FIELDS}
        return SegmentEvent(channel, raw["start_time"], raw["end_time"], output,
                            raw.get("is_final"), bool(raw.get("from_finalize", False)), seq)
    if kind in ("active", "inactive"):
        return ActivityEvent(kind, channel, raw["time"], seq)
    if kind == "error":
        return ErrorEvent(channel, raw["message"], raw.get("start_time"), raw.get("end_time"),
                          raw.get("is_final"), bool(raw.get("from_finalize", False)), seq)
    if kind == "stopped":
        return StoppedEvent(channel, raw["time"], seq)
    if kind == "finalized":
        return FinalizedEvent(channel, raw["time"], seq)
    if kind == "started":
        return StartedEvent(raw["stream_id"], raw["resume_token"], channel, seq)
    if kind == "audio_acked":
        return AudioAckedEvent(raw["bytes"], channel, seq)
    if kind == "resumed":
        return ResumedEvent(raw["stream_id"], raw["audio_bytes"], channel, seq)
    raise ProtocolError(f"server sent an unknown event type {kind!r}")


# ---- field helpers ------------------------------------------------------------------------

def invalid(message: str) -> ProtocolError:
    """A malformed control message: close code 1007 (invalid payload)."""
    return ProtocolError(message, WSCloseCode.INVALID_TEXT)


def json_kind(value: Any) -> str:
    """How a JSON value reads in an error message ("a string", "null")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _int(raw: dict[str, Any], key: str, default: int, prefix: str = "") -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise invalid(f"'{prefix}{key}' must be an integer, got {json_kind(value)}")
    return value


def _bool(raw: dict[str, Any], key: str, default: bool, prefix: str = "") -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise invalid(f"'{prefix}{key}' must be true or false, got {json_kind(value)}")
    return value
