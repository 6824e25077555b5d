import json

import pytest

from streamer.errors import ProtocolError
from streamer.protocol import (
    ActivityEvent,
    AudioFormat,
    ErrorEvent,
    SegmentEvent,
    StartRequest,
    StoppedEvent,
    StopRequest,
    encode_event,
    parse_client_message,
    parse_server_event,
)


def test_upstream_start_message_parses():
    msg = parse_client_message(json.dumps({
        "request": "start", "trace_id": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        "interim_results": True,
        "format": {"channels": 2, "sample_rate": 44100, "bit_depth": 16, "is_float": False}}))
    assert msg == StartRequest(AudioFormat(2, 44100, 16, False),
                               "00-" + "a" * 32 + "-" + "b" * 16 + "-01", True)


def test_start_defaults_and_stop_defaults():
    assert parse_client_message('{"request": "start"}') == StartRequest()
    assert parse_client_message('{"request": "stop"}') == StopRequest(disconnect=False)
    assert parse_client_message('{"request": "stop", "disconnect": true}') == StopRequest(True)


def test_round_trip_of_client_messages():
    start = StartRequest(AudioFormat(1, 48000, 32, True), None, False)
    assert parse_client_message(start.to_json()) == start
    assert parse_client_message(StopRequest(True).to_json()) == StopRequest(True)


@pytest.mark.parametrize("text, code, words", [
    ("{nope", 1007, "not valid JSON"),
    ("[1, 2]", 1007, "must be a JSON object, got an array"),
    ('{"request": "pause"}', 1007, 'unknown request "pause"'),
    ('{"disconnect": true}', 1007, "needs a 'request' field"),
    ('{"request": "start", "format": {"channels": "2"}}', 1007,
     "'format.channels' must be an integer, got a string"),
    ('{"request": "start", "format": {"channels": 0}}', 1003, "channels must be 1 to 8, got 0"),
    ('{"request": "start", "format": {"channels": 9}}', 1003, "got 9"),
    ('{"request": "start", "format": {"sample_rate": 0}}', 1003, "sample_rate must be"),
    ('{"request": "start", "format": {"sample_rate": -44100}}', 1003, "got -44100"),
    ('{"request": "start", "format": {"bit_depth": 24}}', 1003, "bit_depth 24"),
    ('{"request": "start", "format": {"bit_depth": 16, "is_float": true}}', 1003,
     "with is_float true"),
    ('{"request": "start", "format": 5}', 1007, "'format' must be an object"),
    ('{"request": "start", "trace_id": 7}', 1007, "'trace_id' must be a string"),
    ('{"request": "start", "interim_results": "yes"}', 1007, "must be true or false"),
    ('{"request": "start", "colour": "red"}', 1007, "unknown field(s) in 'start': colour"),
    ('{"request": "stop", "disconnect": 1}', 1007, "must be true or false, got a number"),
])
def test_bad_control_messages_say_what_is_wrong(text, code, words):
    with pytest.raises(ProtocolError) as info:
        parse_client_message(text)
    assert info.value.close_code == code
    assert words in info.value.message


def test_huge_trace_id_is_refused_with_its_size():
    with pytest.raises(ProtocolError, match="'trace_id' is 10000 characters"):
        parse_client_message(json.dumps({"request": "start", "trace_id": "x" * 10000}))


def test_events_encode_like_upstream_and_parse_back():
    seg = SegmentEvent(1, 0.5, 1.0, {"count": 8000})
    assert json.loads(encode_event(seg)) == {"type": "segment", "channel": 1, "start_time": 0.5,
                                             "end_time": 1.0, "count": 8000}
    final = SegmentEvent(0, 0.0, 0.5, {"count": 1}, is_final=True)
    assert json.loads(encode_event(final))["is_final"] is True
    err = ErrorEvent(0, "inference failed: x", 0.0, 0.5)
    assert json.loads(encode_event(err)) == {"type": "error", "channel": 0,
                                             "message": "inference failed: x",
                                             "start_time": 0.0, "end_time": 0.5}
    for event in (seg, final, err, ActivityEvent("active", 0, 1.23), StoppedEvent(0, 3.0)):
        assert parse_server_event(encode_event(event)) == event


def test_model_output_cannot_overwrite_event_fields():
    seg = SegmentEvent(0, 0.0, 0.5, {"channel": 9, "type": "x", "count": 3})
    assert json.loads(encode_event(seg))["channel"] == 0
    assert json.loads(encode_event(seg))["type"] == "segment"


def test_non_finite_model_output_becomes_null_not_invalid_json():
    text = encode_event(SegmentEvent(0, 0.0, 0.5, {"pitch": float("nan"),
                                                   "levels": [1.0, float("inf")]}))
    assert json.loads(text)["pitch"] is None and json.loads(text)["levels"] == [1.0, None]
    assert "NaN" not in text and "Infinity" not in text
