import pathlib

import msgpack
import numpy as np
import pytest

from streamer.errors import WireError
from streamer.wire import (
    SCHEMA_VERSION,
    EndSession,
    Heartbeat,
    InferenceRequest,
    InferenceResult,
    WorkerReady,
    frame,
    from_wire,
    replace,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_request_round_trip_keeps_audio_bit_exact():
    audio = np.linspace(-1, 1, 8000, dtype=np.float32)
    req = InferenceRequest(request_id=7, session_id="s1", channel=1, seq=3, start_time=0.5,
                           end_time=1.0, audio=audio.tobytes(), is_final=True,
                           stateful_key="s1/1/1", attempt=1, sent_at=12.5,
                           trace={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
    back = from_wire(req.to_wire())
    assert back == req
    assert isinstance(back, InferenceRequest)
    np.testing.assert_array_equal(back.samples, audio)


@pytest.mark.parametrize("msg", [
    InferenceResult(request_id=1, worker_id=0, output={"count": 5}, queue_wait=0.001,
                    inference_time=0.01),
    InferenceResult(request_id=2, worker_id=1, error="inference failed: boom"),
    WorkerReady(worker_id=3, pid=1234, model="counter", warmup_time=0.2),
    EndSession(stateful_key="abc/1/0"),
])
def test_every_message_round_trips(msg):
    assert from_wire(msg.to_wire()) == msg


def test_a_number_field_takes_an_int_and_absent_fields_take_their_defaults():
    data = msgpack.packb({"v": 1, "kind": "heartbeat", "worker_id": 2, "sent_at": 5})
    assert from_wire(data) == Heartbeat(worker_id=2, sent_at=5.0)


def test_every_envelope_carries_its_version_and_kind():
    for msg in (EndSession(stateful_key="k"), Heartbeat(worker_id=1, sent_at=2.0)):
        obj = msgpack.unpackb(msg.to_wire())
        assert obj["v"] == SCHEMA_VERSION and obj["kind"] == msg.KIND


def test_stamp_and_replace_copy_without_changing_the_message():
    req = InferenceRequest(1, "s", 0, 0, 0.0, 0.1, b"\x00" * 8)
    stamped = from_wire(req.to_wire(sent_at=3.5))
    assert isinstance(stamped, InferenceRequest) and stamped.sent_at == 3.5
    assert req.sent_at == 0.0
    again = replace(req, attempt=2)
    assert again.attempt == 2 and req.attempt == 0 and again.audio == req.audio


def test_frame_is_length_prefixed_like_multiprocessing_connection():
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"


@pytest.mark.parametrize("payload, words", [
    (b"\xc1", "undecodable"),
    (msgpack.packb([1, 2]), "must be a map"),
    (msgpack.packb({"v": 99, "kind": "result"}), "schema version 99"),
    (msgpack.packb({"v": 1, "kind": "gossip"}), "unknown envelope kind"),
    (msgpack.packb({"v": 1, "kind": "result", "request_id": 1, "worker_id": 0,
                    "output": {"a": 1}, "error": "x", "queue_wait": 0,
                    "inference_time": 0, "batch_size": 1}), "exactly one of"),
    (msgpack.packb({"v": 1, "kind": "ready", "worker_id": "0", "pid": 1, "model": "m",
                    "warmup_time": 0}),
     r"ready envelope: Expected `int`, got `str` - at `\$.worker_id`"),
    (msgpack.packb({"v": 1, "kind": "end_session"}), "missing required field `stateful_key`"),
    (msgpack.packb({"kind": "end_session", "stateful_key": "k"}), "schema version None"),
    (msgpack.packb({"v": 1, "kind": 3}), "unknown envelope kind 3"),
    (msgpack.packb({"v": 1, "kind": "heartbeat", "worker_id": True, "sent_at": 1.0}),
     r"Expected `int`, got `bool` - at `\$.worker_id`"),
    (msgpack.packb({"v": 1, "kind": "end_session", "stateful_key": "k", "trace": {1: "x"}}),
     r"Expected `str`, got `int` - at `key` in `\$.trace`"),
    (msgpack.packb({"v": 1, "kind": "end_session", "stateful_key": "k", "trace": {"a": 1}}),
     r"Expected `str`, got `int` - at `\$.trace\[...\]`"),
    (msgpack.packb({"v": 1, "kind": "result", "request_id": 1, "worker_id": 0,
                    "output": {"a": 1}, "queue_wait": "slow"}), r"at `\$.queue_wait`"),
    (msgpack.packb({"v": 1, "kind": "config", "worker_id": 0, "model": "m",
                    "max_batch": 0}), "'max_batch' must be at least 1"),
    (msgpack.packb({"v": 1, "kind": "request", "request_id": 1, "session_id": "s",
                    "channel": 0, "seq": 0, "start_time": 0, "end_time": 1, "audio": b"",
                    "step": "rewind"}), "step 'rewind'"),
])
def test_bad_envelopes_raise_wire_error(payload, words):
    with pytest.raises(WireError, match=words):
        from_wire(payload)


def test_request_audio_must_be_whole_float32_samples():
    req = InferenceRequest(1, "s", 0, 0, 0.0, 0.1, b"\x00" * 6)
    with pytest.raises(WireError, match="not whole float32 samples"):
        from_wire(req.to_wire())


def test_no_pickle_in_the_package():
    offenders = [str(p.relative_to(ROOT)) for pkg in ("gateway", "workers", "shared")
                 for p in (ROOT / pkg).rglob("*.py")
                 if "import pickle" in p.read_text() or "from pickle" in p.read_text()]
    assert offenders == []
