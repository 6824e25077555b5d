"""The log format: ISO-8601 times with a zone, one component name, and a JSON form whose
context fields (session, trace) are fields of their own."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from streamer import logs
from streamer.logs import bind_log_fields, reset_log_fields

ROOT = Path(__file__).resolve().parents[2]
TEXT_LINE = re.compile(r"^(\S+) (DEBUG|INFO|WARNING|ERROR) (\S+)\[(\d+)\]: (.*)$")


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Whatever setup_logging writes, with the root logger restored afterwards. (pytest puts
    its own sys.stderr back for each test phase, so setup_logging is patched instead.)"""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buf = io.StringIO()
    real = logs.setup_logging

    def to_buffer(*args: Any, **kwargs: Any) -> None:
        with monkeypatch.context() as m:
            m.setattr("sys.stderr", buf)
            real(*args, **kwargs)

    monkeypatch.setattr(logs, "setup_logging", to_buffer)
    yield buf
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def test_a_text_line_has_an_iso_time_with_zone_and_one_component(stderr):
    logs.setup_logging("INFO", process="gateway", log_format="text")
    logging.getLogger("streamer.gateway.app").info("listening on %s", "here")
    logging.getLogger("streamer.gateway.app").debug("not at INFO")
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1
    match = TEXT_LINE.match(lines[0])
    assert match, lines[0]
    when = datetime.fromisoformat(match[1])
    assert when.tzinfo is not None and re.search(r"\.\d{3}[+-]\d{2}:\d{2}$", match[1])
    assert match[3] == "streamer.gateway.app" and match[5] == "listening on here"
    assert lines[0].count("gateway") == 1  # the component once, not as a label and a name


def test_json_is_one_object_a_line_with_context_fields(stderr):
    logs.setup_logging("DEBUG", process="worker-3", log_format="json")
    log = logging.getLogger("streamer.worker")
    log.info("plain")
    log.warning("with %s\nand a second line", "args", extra={"session": 7, "trace": "ab" * 16})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 3  # the newline and the traceback stay inside their objects
    plain, warned, failed = (json.loads(line) for line in lines)
    assert plain["message"] == "plain" and plain["level"] == "INFO"
    assert plain["logger"] == "streamer.worker" and plain["process"] == "worker-3"
    assert isinstance(plain["pid"], int) and datetime.fromisoformat(plain["time"]).tzinfo
    assert "session" not in plain and "trace" not in plain
    assert warned["message"] == "with args\nand a second line"
    assert (warned["session"], warned["trace"]) == (7, "ab" * 16)
    assert failed["level"] == "ERROR" and "ValueError: boom" in failed["exception"]


async def test_bound_fields_reach_every_record_of_a_task_and_its_children(stderr):
    logs.setup_logging("INFO", log_format="json")
    log = logging.getLogger("streamer.gateway.session")
    state = {"session": 1, "trace": "-"}

    async def session() -> None:
        token = bind_log_fields(lambda: state)
        try:
            log.info("socket open")
            state["trace"] = "cd" * 16  # a stream starts: its trace id from now on
            await asyncio.create_task(child())
        finally:
            reset_log_fields(token)
        log.info("after the session")

    async def child() -> None:
        log.info("in a task the session started")

    await asyncio.gather(session(), asyncio.create_task(other()))
    records = [json.loads(line) for line in stderr.getvalue().splitlines()]
    by_message = {r["message"]: r for r in records}
    assert by_message["socket open"]["trace"] == "-"
    assert by_message["in a task the session started"]["trace"] == "cd" * 16
    assert by_message["in a task the session started"]["session"] == 1
    assert "session" not in by_message["after the session"]
    assert "session" not in by_message["another task"]


async def other() -> None:
    logging.getLogger("streamer.gateway").info("another task")


def test_unknown_level_and_format_fall_back_and_the_environment_picks_json(stderr,
                                                                           monkeypatch):
    monkeypatch.setenv("STREAMER_LOG_FORMAT", "json")
    logs.setup_logging("LOUD", process="worker-0")  # a worker takes the gateway's format
    logging.getLogger("streamer.worker").info("hello")
    assert json.loads(stderr.getvalue())["message"] == "hello"
    assert logging.getLogger().level == logging.INFO
    logs.setup_logging("INFO", log_format="xml")
    logging.getLogger("streamer").info("text again")
    assert TEXT_LINE.match(stderr.getvalue().splitlines()[-1])


def test_every_logger_in_the_package_is_under_streamer():
    """Filtering on ``streamer.`` must catch every line the project logs."""
    names = []
    for path in sorted(p for folder in ("shared", "gateway", "workers")
                       for p in (ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "getLogger" and node.args):
                arg = node.args[0]
                if isinstance(arg, ast.Name) and arg.id == "__name__":
                    continue  # modules install under streamer.
                if path.name == "logs.py":
                    continue  # where other libraries' loggers are set up
                assert isinstance(arg, ast.Constant), f"{path}: a computed logger name"
                names.append((path.name, arg.value))
    assert names  # the check looked at something
    assert [n for n in names if not str(n[1]).startswith("streamer.")] == []
