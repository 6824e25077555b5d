"""Configuration: defaults < file (JSON or TOML) < ``STREAMER_*`` environment < CLI flags.

The file has one table per section (``server``, ``pool``, ``session``, ``model``, ``vad``,
``auth``); the upstream ``config.json`` shape (``{"model": {"delay": 0.5, ...}}``) is a valid
file. The ``model``
section holds ``name`` plus that model's own parameters, which the model validates when it is
built; ``vad`` holds the server's voice-activity defaults and ``auth`` who may connect, both
validated by the gateway.
Environment variables name a setting as ``STREAMER_<SECTION>__<KEY>`` (``STREAMER_POOL__WORKERS=4``,
``STREAMER_MODEL__DELAY=0.1``); a few common ones have short forms (``STREAMER_PORT``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamer.errors import ConfigError
from streamer.logs import FORMATS as LOG_FORMATS
from streamer.logs import LEVELS as LOG_LEVELS

EVENT_LOOPS = ("auto", "asyncio", "uvloop")  # server.event_loop; the gateway resolves "auto"


def setting(default: Any, lo: float | None = None, hi: float | None = None, doc: str = "") -> Any:
    return field(default=default, metadata={"min": lo, "max": hi, "doc": doc})


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = setting("127.0.0.1", doc="address the gateway listens on")
    port: int = setting(8080, 0, 65535, "port the gateway listens on (0: any free port)")
    max_msg_size: int = setting(1 << 20, 1024, 64 << 20, "largest websocket frame accepted, bytes")
    heartbeat: float = setting(20.0, 0.0, 3600.0, "websocket ping interval, seconds (0: off)")
    log_level: str = setting("INFO", doc="DEBUG, INFO, WARNING or ERROR")
    log_format: str = setting("text", doc="'text' (one line a record for people) or 'json' "
                              "(one JSON object a line, with session and trace ids as fields)")
    max_sessions: int = setting(200, 1, 100_000, "concurrent sessions before new ones are "
                                "refused")
    max_memory_mb: float = setting(0.0, 0.0, 1e7, "refuse sessions while the gateway and its "
                                   "workers use more resident memory than this (0: no limit)")
    max_backlog_seconds: float = setting(10.0, 0.1, 3600.0, "refuse sessions while the audio "
                                         "awaiting results exceeds this many seconds per "
                                         "ready worker")
    event_loop: str = setting("auto", doc="'auto' (uvloop's event loop when installed, "
                              "else asyncio's), 'asyncio' or 'uvloop'")
    loop_lag_warning: float = setting(0.1, 0.001, 60.0, "log a warning when the event loop "
                                      "runs a timer this many seconds late")
    drain_timeout: float = setting(10.0, 0.0, 3600.0, "at shutdown, seconds a streaming "
                                   "session gets to receive its results before close 1001")
    tls_cert: str = setting("", doc="PEM certificate (chain) file: serve https/wss (with "
                            "tls_key); empty: plain http/ws")
    tls_key: str = setting("", doc="PEM private key file for tls_cert")
    metrics_address: str = setting("", doc="HOST:PORT (a bare PORT binds 127.0.0.1) where "
                                   "/metrics is served instead of the main port; empty: the "
                                   "main port")
    trace_ui_url: str = setting("", doc="address of a trace viewer with {trace_id} where the "
                                "32-hex-digit trace id goes; the browser page links each "
                                "stream's trace there (empty: no link)")

    def __post_init__(self) -> None:
        url = self.trace_ui_url
        if url and ("{trace_id}" not in url or not url.startswith(("http://", "https://"))):
            raise ConfigError("server.trace_ui_url must be an http(s) address containing "
                              f"{{trace_id}}, where the trace id goes; got {url!r}")


@dataclass(frozen=True, slots=True)
class PoolConfig:
    workers: int = setting(os.cpu_count() or 1, 0, 256, "worker processes the gateway starts "
                           "(0 with pool.nats_url: only the NATS server's workers)")
    worker_inflight: int = setting(2, 1, 64, "requests handed to one worker before it answers "
                                   "(at least max_batch; 2 x max_batch keeps a batch queued "
                                   "while one runs)")
    max_retries: int = setting(1, 0, 10, "times a segment is re-sent after its worker died "
                               "(then it is answered with an error: a poison segment)")
    start_timeout: float = setting(60.0, 1.0, 3600.0, "seconds a worker may take to become ready")
    restart_backoff: float = setting(0.5, 0.0, 60.0, "first delay before respawning a worker "
                                     "that died soon after starting, s (doubles each time)")
    max_boot_failures: int = setting(5, 1, 1000, "failed boots in a row before a slot gives up")
    heartbeat_interval: float = setting(1.0, 0.01, 60.0, "seconds between heartbeats on a "
                                        "worker connection, both ways")
    worker_nice: int = setting(10, 0, 19, "scheduling niceness of worker processes: with every "
                               "core busy computing, the gateway's event loop still runs first")
    heartbeat_timeout: float = setting(10.0, 0.05, 3600.0, "seconds of silence after which a "
                                       "worker is dropped as hung (and a worker drops its "
                                       "gateway)")
    max_batch: int = setting(1, 1, 64, "segments a worker may run as one batch, if its model "
                             "batches (at most worker_inflight)")
    max_wait_ms: float = setting(2.0, 0.0, 1000.0, "milliseconds a worker waits for a batch to "
                                 "fill before running what it has (max_batch > 1 only)")
    nats_url: str = setting("", doc="nats://HOST:PORT of a NATS server: the gateway dispatches to "
                            "the workers that announce themselves there (streamer-worker --nats) "
                            "instead of starting its own; credentials come from "
                            "STREAMER_NATS_TOKEN or STREAMER_NATS_USER/STREAMER_NATS_PASSWORD; "
                            "empty: no NATS")
    nats_subject: str = setting("streamer", doc="first token of every NATS subject this "
                                "deployment uses (separate fleets on one NATS server)")
    vad_workers: int = setting(1, 0, 64, "processes the gateway starts, when a stream first "
                               "asks for it, to run the silero voice-activity detector off its "
                               "event loop; 0: on the loop (adds 1-2 ms per 32 ms frame and "
                               "channel to the loop's lag)")
    nats_outage_grace: float = setting(5.0, 0.0, 3600.0, "seconds a gateway keeps segments "
                                       "sent before the NATS connection dropped, waiting for it "
                                       "to come back, before answering them with errors")

    def __post_init__(self) -> None:
        if self.max_batch > self.worker_inflight:
            raise ConfigError(f"pool.max_batch ({self.max_batch}) exceeds pool.worker_inflight "
                              f"({self.worker_inflight}): a worker never holds more than "
                              f"worker_inflight segments, so no batch could be that large; set "
                              f"pool.worker_inflight to {2 * self.max_batch} (2 x max_batch)")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ConfigError(f"pool.heartbeat_timeout ({self.heartbeat_timeout:g} s) must be "
                              f"longer than pool.heartbeat_interval "
                              f"({self.heartbeat_interval:g} s)")


@dataclass(frozen=True, slots=True)
class SessionConfig:
    chunk_seconds: float = setting(0.5, 0.01, 60.0, "segment length on /api/v1/simple, seconds")
    max_inflight: int = setting(16, 1, 4096, "segments of one session awaiting results before "
                                          "the gateway stops reading its socket")
    start_timeout: float = setting(10.0, 0.1, 3600.0, "seconds a new socket may take to send "
                                   "'start'")
    idle_timeout: float = setting(30.0, 0.1, 86400.0, "seconds a stream may go without a frame")
    max_stream_seconds: float = setting(4 * 3600.0, 1.0, 7 * 86400.0, "longest stream, in "
                                        "seconds of audio")
    send_timeout: float = setting(15.0, 0.1, 3600.0, "seconds a result may wait for a client "
                                  "that does not read before its session is ended")
    max_text_bytes: int = setting(16384, 256, 1 << 20, "largest control message, bytes")
    max_text_per_second: float = setting(50.0, 1.0, 100_000.0, "control messages per second "
                                         "before a session is closed as a flood")
    feed_interval: float = setting(0.2, 0.02, 5.0, "seconds of speech between the pieces of "
                                   "an open segment sent to a streaming model on "
                                   "/api/v1/segmented")
    resume_window: float = setting(30.0, 0.0, 3600.0, "seconds a stream whose socket dropped "
                                   "is kept for a 'resume' (0: not kept)")
    resume_max_events: int = setting(2048, 16, 1_000_000, "events of a stream kept for a "
                                     "client that resumes")
    resume_max_bytes: int = setting(1 << 20, 4096, 1 << 30, "bytes of events of a stream kept "
                                    "for a client that resumes")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str = "counter"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # Voice-activity defaults for /api/v1/segmented, validated by the gateway (gateway/vad.py).
    vad: Mapping[str, Any] = field(default_factory=dict)
    # Who may connect (keys, tokens, origins), validated by the gateway (gateway/auth.py).
    auth: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for sec in ("server", "pool", "session"):
            out[sec] = dataclasses.asdict(getattr(self, sec))
        out["model"] = {"name": self.model.name, **self.model.params}
        out["vad"] = dict(self.vad)
        out["auth"] = {k: ("<secret>" if k == "token_secret" and v else v)
                       for k, v in self.auth.items()}
        return out


_SECTIONS: dict[str, type] = {"server": ServerConfig, "pool": PoolConfig,
                              "session": SessionConfig}
ENV_PREFIX = "STREAMER_"
# Short environment names for the settings people change most.
ENV_ALIASES = {"HOST": "server.host", "PORT": "server.port", "WORKERS": "pool.workers",
               "MODEL": "model.name", "LOG_LEVEL": "server.log_level",
               "LOG_FORMAT": "server.log_format"}
# Environment variables with a meaning of their own, not settings.
ENV_RESERVED = {"CONFIG", "NATS_TOKEN", "NATS_USER", "NATS_PASSWORD"}


def load_config(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Build a validated config from a file, the environment and dotted CLI overrides."""
    env = os.environ if env is None else env
    raw: dict[str, dict[str, Any]] = {name: {} for name in (*_SECTIONS, "model", "vad", "auth")}
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = env[ENV_PREFIX + "CONFIG"]
    if path is not None:
        _merge(raw, read_config_file(path), f"config file {path}")
    _merge(raw, _from_env(env), "environment")
    if overrides:
        _merge(raw, _nest(overrides, "command line"), "command line")
    return _build(raw)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "TOML" if p.suffix == ".toml" else "JSON"
        raise ConfigError(f"config file {p} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold an object of sections")
    return data


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):]
        if key in ENV_RESERVED:
            continue
        if key in ENV_ALIASES:
            dotted = ENV_ALIASES[key]
        elif "__" in key:
            section, _, setting = key.partition("__")
            dotted = f"{section.lower()}.{setting.lower()}"
        else:
            raise ConfigError(f"unknown environment setting {name}; use STREAMER_<SECTION>__<KEY>"
                              f" or one of {', '.join(ENV_PREFIX + a for a in ENV_ALIASES)}")
        flat[dotted] = _scalar(value)
    return _nest(flat, "environment")


def _scalar(text: str) -> Any:
    """Environment and ``--set`` values: JSON where it parses (numbers, booleans), else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignment(text: str) -> tuple[str, Any]:
    """``section.key=value`` from the command line."""
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise ConfigError(f"expected SECTION.KEY=VALUE, got {text!r}")
    return key.strip(), _scalar(value)


def _nest(flat: Mapping[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    for dotted, value in flat.items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"{source}: setting {dotted!r} needs a section, like server.port")
        out.setdefault(section, {})[key] = value
    return out


def _merge(raw: dict[str, dict[str, Any]], new: Mapping[str, Any], source: str) -> None:
    for section, values in new.items():
        if section not in raw:
            raise ConfigError(f"{source}: unknown section {section!r} "
                              f"(known: {', '.join(raw)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a table of settings")
        raw[section].update(values)


def _build(raw: dict[str, dict[str, Any]]) -> Config:
    sections = {name: build_section(name, cls, raw[name]) for name, cls in _SECTIONS.items()}
    level = sections["server"].log_level
    if level.upper() not in LOG_LEVELS:
        raise ConfigError(f"server.log_level must be one of {', '.join(LOG_LEVELS)}, "
                          f"got {level!r}")
    if sections["server"].log_format not in LOG_FORMATS:
        raise ConfigError(f"server.log_format must be one of {', '.join(LOG_FORMATS)}, "
                          f"got {sections['server'].log_format!r}")
    if sections["server"].event_loop not in EVENT_LOOPS:
        raise ConfigError(f"server.event_loop must be one of {', '.join(EVENT_LOOPS)}, "
                          f"got {sections['server'].event_loop!r}")
    model = dict(raw["model"])
    name = model.pop("name", "counter")
    if not isinstance(name, str) or not name:
        raise ConfigError("model.name must be a model's name, like 'counter'")
    return Config(model=ModelConfig(name=name, params=model), vad=dict(raw["vad"]),
                  auth=dict(raw["auth"]), **sections)


def build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    """A settings dataclass from raw values, each checked by :func:`coerce`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        f = fields.get(key)
        if f is None:
            raise ConfigError(f"unknown setting {name}.{key} (known: {', '.join(fields)})")
        kwargs[key] = coerce(f"{name}.{key}", value, type(f.default), f.metadata)
    return cls(**kwargs)


def coerce(where: str, value: Any, kind: type, meta: Mapping[str, Any] | None = None) -> Any:
    """Check one value against its type and bounds, with a message that names the setting."""
    meta = meta or {}
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        value = int(value)
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        value = float(value)
    elif kind is str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # STREAMER_POOL__WORKER_ADDRESS=8765 parses as a number
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be text, got {value!r}")
        return value
    lo, hi = meta.get("min"), meta.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{where} must be between {lo} and {hi}, got {value!r}")
    return value


def describe_settings() -> list[tuple[str, Any, str]]:
    """(dotted name, default, doc) for every setting, for docs and ``--help``."""
    rows = []
    for name, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append((f"{name}.{f.name}", f.default, f.metadata.get("doc", "")))
    return rows
