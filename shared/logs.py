"""One log format for every process: text for people, or one JSON object a line for machines.

A text line reads ``2026-05-04T09:12:03.114+00:00 INFO streamer.gateway.app[4242]: message``:
ISO-8601 time with its zone, level, the logger (one component name) and the process id. The
JSON form has the same facts as fields, plus ``process`` (``gateway``, ``worker-3``) and any
context fields (``session``, ``trace``) bound with :func:`bind_log_fields` or passed as
``extra``, so a log pipeline can filter on them without parsing messages.

Worker processes call :func:`setup_logging` too; without an explicit format they take
``STREAMER_LOG_FORMAT`` from their environment, which the gateway sets for its children.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
FORMAT_ENV = "STREAMER_LOG_FORMAT"
CONTEXT_FIELDS = ("session", "trace")  # record attributes the JSON form lifts out as fields

FieldSource = Callable[[], Mapping[str, Any]]
_fields: contextvars.ContextVar[FieldSource | None] = contextvars.ContextVar(
    "streamer_log_fields", default=None)


def bind_log_fields(source: FieldSource) -> contextvars.Token[FieldSource | None]:
    """Attach context fields to every record logged in this task and the tasks it starts.

    ``source`` is called per record, so fields that change (a new stream's trace id) stay
    current. Returns the token for :meth:`contextvars.ContextVar.reset`."""
    return _fields.set(source)


def reset_log_fields(token: contextvars.Token[FieldSource | None]) -> None:
    _fields.reset(token)


class _ContextFilter(logging.Filter):
    """Copies the bound context fields onto each record (an explicit ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        source = _fields.get()
        if source is not None:
            try:
                fields = source()
            except Exception:  # a log line never fails because its context went away
                fields = {}
            for key in CONTEXT_FIELDS:
                if key in fields and not hasattr(record, key):
                    setattr(record, key, fields[key])
        return True


def iso_time(created: float) -> str:
    """``2026-05-04T09:12:03.114+00:00``: milliseconds, local zone offset."""
    return datetime.fromtimestamp(created).astimezone().isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return iso_time(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (tracebacks included, as a field)."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": iso_time(record.created), "level": record.levelname,
                               "logger": record.name, "process": self.process,
                               "pid": record.process, "message": record.getMessage()}
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def setup_logging(level: str = "INFO", process: str = "gateway",
                  log_format: str | None = None) -> None:
    """Route every logger to stderr in one format. ``log_format`` ``text`` or ``json``;
    ``None`` reads ``STREAMER_LOG_FORMAT`` (default text). Unknown values fall back to the
    defaults: a worker must not die over its log settings."""
    level = level.upper()
    if level not in LEVELS:
        level = "INFO"
    fmt = (log_format or os.environ.get(FORMAT_ENV) or "text").lower()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process) if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(max(logging.WARNING, root.level))
