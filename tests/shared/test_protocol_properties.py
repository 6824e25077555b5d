"""Whatever a client sends as a control message, the parser answers with a message or a
ProtocolError, never another exception."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.errors import ProtocolError
from streamer.protocol import CLIENT_REQUESTS, ClientMessage, StartRequest, parse_client_message

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=20)

start_like = st.fixed_dictionaries(
    {"request": st.sampled_from([*CLIENT_REQUESTS, "other"])},
    optional={"format": st.dictionaries(st.sampled_from(["channels", "sample_rate", "bit_depth",
                                                         "is_float", "encoding", "extra"]),
                                        json_values | st.sampled_from(["mulaw", "alaw", "pcm"])),
              "trace_id": json_values, "interim_results": json_values,
              "disconnect": json_values, "vad": json_values, "resume_token": json_values,
              "last_seq": json_values})


def parse_or_error(text: str, accept: frozenset[str] = frozenset(CLIENT_REQUESTS)):
    try:
        msg = parse_client_message(text, accept)
    except ProtocolError as exc:
        assert exc.message and exc.close_code in (1003, 1007, 1008, 1009)
        return None
    assert isinstance(msg, ClientMessage)
    assert msg.to_json() and isinstance(json.loads(msg.to_json()), dict)
    return msg


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text(text):
    parse_or_error(text)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value(value):
    parse_or_error(json.dumps(value))


@settings(max_examples=500, deadline=None)
@given(start_like)
def test_message_shaped_input(raw):
    msg = parse_or_error(json.dumps(raw))
    if isinstance(msg, StartRequest):
        fmt = msg.format
        assert 1 <= fmt.channels <= 8 and fmt.frame_bytes > 0
    if msg is not None:
        assert parse_client_message(msg.to_json(), frozenset(CLIENT_REQUESTS)) == msg
    # a gateway handling only start and stop refuses the others with a clear message
    if raw["request"] not in ("start", "stop"):
        assert parse_or_error(json.dumps(raw), frozenset({"start", "stop"})) is None
