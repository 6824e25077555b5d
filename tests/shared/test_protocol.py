import json

import pytest

from streamer.errors import ProtocolError
from streamer.protocol import (
    CLIENT_REQUESTS,
    ActivityEvent,
    AudioAckedEvent,
    AudioFormat,
    ErrorEvent,
    FinalizedEvent,
    FinalizeRequest,
    KeepAliveRequest,
    ResumedEvent,
    ResumeRequest,
    SegmentEvent,
    StartedEvent,
    StartRequest,
    StoppedEvent,
    StopRequest,
    encode_event,
    parse_client_message,
    parse_server_event,
    with_seq,
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


def test_g711_encodings_default_to_8_bit_and_keep_pcm_messages_unchanged():
    mulaw = parse_client_message(
        '{"request": "start", "format": {"sample_rate": 8000, "encoding": "mulaw"}}')
    assert isinstance(mulaw, StartRequest)
    assert mulaw.format == AudioFormat(1, 8000, 8, False, "mulaw")
    assert mulaw.format.frame_bytes == 1 and mulaw.format.dtype == "u1"
    stereo = AudioFormat(2, 8000, 8, False, "alaw")
    assert parse_client_message(StartRequest(stereo).to_json()) == StartRequest(stereo)
    assert stereo.frame_bytes == 2
    assert "encoding" not in AudioFormat().to_dict()  # what PCM clients always sent
    assert parse_client_message(
        '{"request": "start", "format": {"encoding": "pcm"}}') == StartRequest()


@pytest.mark.parametrize("fmt, code, words", [
    ({"encoding": "mulaw", "bit_depth": 16}, 1003,
     "encoding mulaw has 8-bit integer samples; got bit_depth 16 with is_float false"),
    ({"encoding": "alaw", "is_float": True}, 1003, "got bit_depth 8 with is_float true"),
    ({"encoding": "opus"}, 1003, 'encoding "opus"; supported: pcm, mulaw, alaw'),
    ({"encoding": "MULAW"}, 1003, 'encoding "MULAW"'),
    ({"encoding": 7}, 1007, "'format.encoding' must be a string (pcm, mulaw, alaw), got a number"),
    ({"encoding": None}, 1007, "got null"),
    ({"bit_depth": 8}, 1003, "or encoding mulaw or alaw with bit_depth 8"),
])
def test_bad_encodings_are_refused_like_other_formats(fmt, code, words):
    with pytest.raises(ProtocolError) as info:
        parse_client_message(json.dumps({"request": "start", "format": fmt}))
    assert info.value.close_code == code
    assert words in info.value.message


ALL = frozenset(CLIENT_REQUESTS)


def test_keepalive_finalize_and_resume_parse_and_round_trip():
    assert parse_client_message('{"request": "keepalive"}', ALL) == KeepAliveRequest()
    assert parse_client_message('{"request": "finalize"}', ALL) == FinalizeRequest()
    resume = parse_client_message(
        '{"request": "resume", "resume_token": "tok", "last_seq": 12}', ALL)
    assert resume == ResumeRequest("tok", 12)
    assert parse_client_message('{"request": "resume", "resume_token": "t", "last_seq": 3.0}',
                                ALL) == ResumeRequest("t", 3)
    for msg in (KeepAliveRequest(), FinalizeRequest(), ResumeRequest("x" * 256, 0)):
        assert parse_client_message(msg.to_json(), ALL) == msg


def test_requests_a_gateway_does_not_handle_yet_are_refused_by_default():
    with pytest.raises(ProtocolError) as info:
        parse_client_message('{"request": "keepalive"}')
    assert info.value.close_code == 1007
    assert info.value.message == ("request 'keepalive' is not supported by this gateway; "
                                  "expected 'start' or 'stop'")
    with pytest.raises(ProtocolError, match="expected 'start' or 'stop' or 'keepalive' or "
                                            "'finalize' or 'resume'"):
        parse_client_message('{"request": "pause"}', ALL)


@pytest.mark.parametrize("raw, words", [
    ({"request": "keepalive", "now": True}, "unknown field(s) in 'keepalive': now"),
    ({"request": "finalize", "channel": 0}, "unknown field(s) in 'finalize': channel"),
    ({"request": "resume", "last_seq": 0}, "needs 'resume_token', the token of the 'started' "
                                           "event, got none"),
    ({"request": "resume", "resume_token": "", "last_seq": 0}, "got an empty string"),
    ({"request": "resume", "resume_token": 5, "last_seq": 0}, "got a number"),
    ({"request": "resume", "resume_token": "x" * 257, "last_seq": 0},
     "'resume_token' is 257 characters; at most 256"),
    ({"request": "resume", "resume_token": "t"}, "needs 'last_seq'"),
    ({"request": "resume", "resume_token": "t", "last_seq": -1}, "'last_seq' must be 0 or more"),
    ({"request": "resume", "resume_token": "t", "last_seq": "7"},
     "'last_seq' must be an integer, got a string"),
    ({"request": "resume", "resume_token": "t", "last_seq": 1, "from": 3},
     "unknown field(s) in 'resume': from"),
])
def test_bad_new_requests_say_what_is_wrong(raw, words):
    with pytest.raises(ProtocolError) as info:
        parse_client_message(json.dumps(raw), ALL)
    assert info.value.close_code == 1007
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


def test_continuity_events_carry_seq_and_parse_back():
    events = [SegmentEvent(0, 0.0, 0.3, {"count": 4800}, True, from_finalize=True, seq=4),
              ErrorEvent(1, "x", 0.0, 0.3, True, from_finalize=True, seq=5),
              FinalizedEvent(0, 0.3, seq=6), StartedEvent("abc", "tok", seq=1),
              AudioAckedEvent(3200, seq=2), ResumedEvent("abc", 3200),
              StoppedEvent(0, 1.0, seq=9), ActivityEvent("active", 0, 0.1, seq=3)]
    for e in events:
        assert parse_server_event(encode_event(e)) == e
    seg = json.loads(encode_event(events[0]))
    assert seg["from_finalize"] is True and seg["seq"] == 4 and seg["count"] == 4800
    assert "from_finalize" not in json.loads(encode_event(SegmentEvent(0, 0.0, 0.5, {})))
    assert json.loads(with_seq(encode_event(FinalizedEvent(0, 0.3)), 7))["seq"] == 7
