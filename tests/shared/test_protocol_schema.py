"""doc/protocol.schema.json is the protocol: it is a valid draft 2020-12 schema, it accepts what
the gateway and client library produce, and it agrees with the gateway's parser on what a valid
client message is."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from streamer.errors import ProtocolError
from streamer.gateway.vad import DETECTORS, VadSettings
from streamer.protocol import (
    CLIENT_REQUESTS,
    ActivityEvent,
    AudioFormat,
    ErrorEvent,
    FinalizeRequest,
    KeepAliveRequest,
    ResumeRequest,
    SegmentEvent,
    StartRequest,
    StoppedEvent,
    StopRequest,
    encode_event,
    parse_client_message,
)
from tests.schema import is_valid, problems, schema, validator

ALL = frozenset(CLIENT_REQUESTS)


def test_the_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(schema())
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_request_the_parser_knows_is_in_the_schema_and_no_other():
    assert schema()["$defs"]["ClientMessage"]["properties"]["request"]["enum"] == \
        list(CLIENT_REQUESTS)


@pytest.mark.parametrize("msg", [
    StartRequest(),
    StartRequest(AudioFormat(2, 44100, 16, False), "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
                 True),
    StartRequest(AudioFormat(8, 48000, 32, True)),
    StartRequest(AudioFormat(1, 8000, 32, False)),
    StartRequest(AudioFormat(1, 8000, 8, False, "mulaw")),
    StartRequest(AudioFormat(2, 8000, 8, False, "alaw")),
    StartRequest(options={"vad": {"min_silence": 0.3, "threshold": 20}}),
    StopRequest(), StopRequest(True), KeepAliveRequest(), FinalizeRequest(),
    ResumeRequest("token", 0), ResumeRequest("t" * 256, 99),
], ids=repr)
def test_what_the_client_library_sends_is_valid(msg):
    assert problems("ClientMessage", msg.to_json()) == []
    assert is_valid("ClientMessage", json.loads(msg.to_json()))


@pytest.mark.parametrize("raw", [
    {"request": "pause"},
    {"disconnect": True},
    {"type": "segment", "channel": 0, "start_time": 0, "end_time": 1},
    {"request": "start", "language": "en"},
    {"request": "start", "format": {"encoding": "mulaw", "bit_depth": 16}},
    {"request": "start", "format": {"is_float": True}},
    {"request": "start", "format": {"bit_depth": 8}},
    {"request": "start", "vad": {"detector": "neural"}},
    {"request": "keepalive", "at": 1},
    {"request": "resume", "resume_token": "t"},
    {"request": "resume", "resume_token": "", "last_seq": 0},
    [], "start", None,
], ids=json.dumps)
def test_wrong_client_messages_fail(raw):
    assert not is_valid("ClientMessage", raw)


def test_vad_detector_names_are_allowed():
    for name in ("energy", "silero"):
        assert is_valid("ClientMessage", {"request": "start", "vad": {"detector": name}})


def test_vad_ranges_match_the_gateway_settings():
    properties = schema()["$defs"]["VadOptions"]["properties"]
    assert set(properties) == {f.name for f in dataclasses.fields(VadSettings)}
    assert properties["detector"]["enum"] == list(DETECTORS)
    for f in dataclasses.fields(VadSettings):
        if f.metadata.get("min") is not None:  # a number with a range, not the detector's name
            assert properties[f.name]["minimum"] == f.metadata["min"], f.name
            assert properties[f.name]["maximum"] == f.metadata["max"], f.name


@pytest.mark.parametrize("event", [
    SegmentEvent(0, 0.0, 0.5, {"count": 8000}),
    SegmentEvent(7, 1.5, 2.0, {"text": "hi", "words": [{"w": "hi", "p": 0.9}], "score": None},
                 is_final=True),
    SegmentEvent(0, 0.0, 0.5, {"pitch": float("nan")}),
    ActivityEvent("active", 0, 0.1), ActivityEvent("inactive", 3, 2.26),
    ErrorEvent(0, "got 'stop' but no stream is running; send 'start' first"),
    ErrorEvent(1, "inference failed: x", 0.0, 0.5, False),
    StoppedEvent(0, 0.6),
], ids=repr)
def test_what_the_gateway_sends_is_valid(event):
    assert problems("ServerEvent", encode_event(event)) == []


@pytest.mark.parametrize("raw", [
    {"type": "started", "stream_id": "s1", "resume_token": "abc", "seq": 1},
    {"type": "audio_acked", "bytes": 16000, "seq": 2},
    {"type": "resumed", "stream_id": "s1", "audio_bytes": 32000, "seq": 9},
    {"type": "finalized", "channel": 0, "time": 1.25, "seq": 4},
    {"type": "segment", "channel": 0, "start_time": 0.0, "end_time": 0.5, "seq": 3,
     "from_finalize": True, "is_final": True, "count": 8000},
    {"type": "error", "channel": 0, "message": "m", "start_time": 0, "end_time": 1,
     "from_finalize": True, "seq": 5},
], ids=json.dumps)
def test_events_of_resumable_streams_are_valid(raw):
    assert validator("ServerEvent").is_valid(raw), problems("ServerEvent", json.dumps(raw))


@pytest.mark.parametrize("raw", [
    {"type": "transcript", "channel": 0},
    {"channel": 0, "start_time": 0, "end_time": 1},
    {"type": "segment", "channel": 0, "start_time": 0.0},
    {"type": "segment", "channel": -1, "start_time": 0.0, "end_time": 0.5},
    {"type": "segment", "channel": 0, "start_time": 0.0, "end_time": 0.5, "seq": 0},
    {"type": "active", "channel": 0, "time": 1, "is_final": True},
    {"type": "error", "channel": 0},
    {"type": "error", "channel": 0, "message": "m", "start_time": 0.5},
    {"type": "stopped", "channel": 0},
    {"type": "started", "stream_id": "s"},
    {"type": "audio_acked", "bytes": -1},
    {"type": "resumed", "stream_id": "s"},
    {"type": "finalized", "channel": 0},
    {"request": "stop"},
], ids=json.dumps)
def test_wrong_events_fail(raw):
    assert not is_valid("ServerEvent", raw)


# ---- the schema and the gateway's parser agree ---------------------------------------------

values = (st.none() | st.booleans() | st.integers(-10, 400_000)
          | st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from([1.0, 2.0, 8.0, 16.0, 32.0])
          | st.text(max_size=6) | st.sampled_from(["pcm", "mulaw", "alaw", "x" * 600]))
fmt_values = st.dictionaries(
    st.sampled_from(["channels", "sample_rate", "bit_depth", "is_float", "encoding", "extra"]),
    values | st.sampled_from([1, 2, 8, 9, 8000, 16000, 16, 32, True, False]), max_size=5)
vad_names = [f.name for f in dataclasses.fields(VadSettings)] + ["extra"]
vad_values = st.dictionaries(st.sampled_from(vad_names), values | st.floats(0, 70), max_size=3)
messages = st.fixed_dictionaries(
    {"request": st.sampled_from([*CLIENT_REQUESTS, "other"])},
    optional={"format": fmt_values | values, "trace_id": values, "interim_results": values,
              "disconnect": values, "vad": vad_values | values, "resume_token": values,
              "last_seq": values | st.integers(-3, 3)})


def gateway_accepts(raw: dict[str, object]) -> bool | None:
    """The parser's verdict, the vad object included (None: a rule JSON Schema cannot state)."""
    try:
        msg = parse_client_message(json.dumps(raw), ALL)
        if isinstance(msg, StartRequest) and "vad" in msg.options:
            VadSettings.from_options(msg.options["vad"])
    except ProtocolError as exc:
        if "must be longer than 'pre_roll'" in exc.message:  # one field against two others
            return None
        return False
    return True


@settings(max_examples=1500, deadline=None)
@given(messages)
@example({"request": "start", "vad": None, "trace_id": None, "format": {"is_float": True}})
@example({"request": "start", "format": {"is_float": True, "bit_depth": 32.0}})
@example({"request": "start", "format": {"encoding": "mulaw", "sample_rate": 8000.0}})
@example({"request": "start", "format": {"encoding": "alaw", "bit_depth": 8, "is_float": True}})
@example({"request": "start", "format": {"encoding": "pcm", "bit_depth": 8}})
@example({"request": "start", "vad": {"threshold": 60.000001}})
@example({"request": "start", "vad": {"min_silence": True}})
@example({"request": "resume", "resume_token": "t", "last_seq": 2.0})
@example({"request": "resume", "resume_token": "t", "last_seq": 2.5})
@example({"request": "stop", "disconnect": None})
def test_schema_and_parser_agree_on_client_messages(raw):
    verdict = gateway_accepts(raw)
    if verdict is not None:
        assert is_valid("ClientMessage", raw) == verdict, problems("ClientMessage",
                                                                   json.dumps(raw))
