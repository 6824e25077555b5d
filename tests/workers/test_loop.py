"""The worker loop over a real socketpair, with this test playing the gateway's side.

The loop runs in a thread of this process (it is the same code a worker process runs); the test
reads and writes frames with ``multiprocessing.connection`` and waits with ``poll`` deadlines.
"""

from __future__ import annotations

import os
import socket
import threading
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pytest

from streamer.wire import (
    HEADER,
    EndSession,
    Heartbeat,
    InferenceRequest,
    InferenceResult,
    WorkerConfig,
    WorkerHello,
    WorkerReady,
    frame,
    from_wire,
)
from streamer.workers.loop import BOOT_FAILED_EXIT_CODE, GATEWAY_GONE_EXIT_CODE, serve
from streamer.workers.models.base import Model, SegmentInfo, register

DEADLINE = 10.0


@register("test_one_at_a_time")
class OneAtATime(Model):
    """A model that does not batch: the loop must answer each segment on its own."""

    def infer(self, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        return {"count": int(len(audio))}


class Worker:
    """``serve`` in a thread on one end of a socketpair; the test holds the other end."""

    def __init__(self) -> None:
        self.sock, theirs = socket.socketpair()
        self.conn = Connection(os.dup(self.sock.fileno()))
        self._theirs = theirs
        self.code: int | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.code = serve(self._theirs)
        finally:
            self._theirs.close()

    def recv(self) -> Any:
        assert self.conn.poll(DEADLINE), "the worker said nothing in time"
        return from_wire(self.conn.recv_bytes())

    def recv_skipping_heartbeats(self) -> Any:
        while isinstance(msg := self.recv(), Heartbeat):
            pass
        return msg

    def start(self, **config: Any) -> WorkerReady:
        hello = self.recv()
        assert isinstance(hello, WorkerHello) and hello.pid > 0 and hello.host
        self.conn.send_bytes(WorkerConfig(**{"worker_id": 7, "model": "counter", **config})
                             .to_wire())
        ready = self.recv_skipping_heartbeats()
        assert isinstance(ready, WorkerReady) and ready.worker_id == 7
        return ready

    def send_all(self, *messages: Any) -> None:
        """Several frames in one write: they are all waiting when the worker reads the first."""
        self.sock.sendall(b"".join(frame(m.to_wire()) for m in messages))

    def results(self, n: int) -> list[InferenceResult]:
        return [self.recv_skipping_heartbeats() for _ in range(n)]

    def close(self) -> None:
        self.conn.close()
        self.sock.close()

    def stop(self) -> int | None:
        self.close()
        self._thread.join(DEADLINE)
        assert not self._thread.is_alive()
        return self.code


def request(rid: int, n: int = 1600, key: str | None = None) -> InferenceRequest:
    return InferenceRequest(rid, "s", 0, rid, 0.0, n / 16000, np.zeros(n, np.float32).tobytes(),
                            stateful_key=key, sent_at=1.0)


@pytest.fixture
def worker():
    w = Worker()
    yield w
    w.stop()


def test_handshake_messages_round_trip():
    for msg in (WorkerHello(pid=1, host="h"), Heartbeat(worker_id=3, sent_at=1.5),
                WorkerConfig(worker_id=1000, model="counter", params={"delay": 0.1},
                             max_batch=4, max_wait=0.002, heartbeat_interval=0.5,
                             heartbeat_timeout=5.0),
                InferenceResult(request_id=1, worker_id=2, output={"a": 1}, batch_size=3,
                                state_lost=True)):
        assert from_wire(msg.to_wire()) == msg


def test_queued_requests_run_as_one_batch_and_come_back_one_by_one_in_order(worker):
    worker.start(max_batch=4, max_wait=0.05)
    worker.send_all(*(request(i, n=100 * i) for i in range(1, 6)))
    results = worker.results(5)
    assert [r.request_id for r in results] == [1, 2, 3, 4, 5]
    assert [r.output for r in results] == [{"count": 100 * i} for i in range(1, 6)]
    assert [r.batch_size for r in results] == [4, 4, 4, 4, 1]
    assert all(r.worker_id == 7 and r.queue_wait > 0 for r in results)


def test_a_model_that_does_not_batch_answers_each_segment_alone(worker):
    worker.start(model="test_one_at_a_time", max_batch=4, max_wait=0.05)
    worker.send_all(*(request(i) for i in range(1, 4)))
    assert [r.batch_size for r in worker.results(3)] == [1, 1, 1]


def test_a_control_message_between_requests_waits_for_the_batch_before_it(worker):
    """End of a stateful stream, then a new one with the same key: the state is dropped after
    the batch that used it and before the request that follows."""
    worker.start(model="stateful_counter", max_batch=4, max_wait=0.05)
    worker.send_all(request(1, 100, "k"), request(2, 100, "k"), EndSession("k"),
                    request(3, 100, "k"))
    totals = [r.output["total"] for r in worker.results(3)]
    assert totals == [100, 200, 100]


def test_one_failing_segment_does_not_fail_its_batch(worker):
    worker.start(params={"failure_rate": 0.5, "seed": 3}, max_batch=8, max_wait=0.05)
    worker.send_all(*(request(i) for i in range(1, 9)))
    results = worker.results(8)
    assert {r.batch_size for r in results} == {8}
    failed = [r for r in results if r.error]
    assert 0 < len(failed) < 8
    assert all("failure_rate" in r.error for r in failed)


def test_a_request_is_read_whole_however_its_bytes_arrive(worker):
    """Written in pieces cut mid-header and mid-body; the first is larger than the worker's
    read buffer and than the socket's, so it is read in several reads whatever the timing."""
    worker.start()
    big, small = request(1, n=5 * 16000), request(2, n=10)
    data = frame(big.to_wire()) + frame(small.to_wire())
    at = 0
    for cut in (2, 3000, len(data) - 5, len(data)):
        worker.sock.sendall(data[at:cut])
        at = cut
    assert [r.output for r in worker.results(2)] == [{"count": 5 * 16000}, {"count": 10}]


def test_an_unreadable_frame_is_dropped_and_a_broken_length_ends_the_worker(worker):
    worker.start()
    worker.sock.sendall(frame(b"\xc1 not msgpack") + frame(request(1).to_wire()))
    assert worker.results(1)[0].request_id == 1
    worker.sock.sendall(HEADER.pack(-5))
    worker._thread.join(DEADLINE)
    assert worker.code == GATEWAY_GONE_EXIT_CODE


def test_heartbeats_flow_and_a_silent_gateway_is_given_up():
    w = Worker()
    w.start(heartbeat_interval=0.05, heartbeat_timeout=0.5)
    assert isinstance(w.recv(), Heartbeat)
    w._thread.join(DEADLINE)  # we stay silent: the worker gives us up
    assert w.code == GATEWAY_GONE_EXIT_CODE
    w.close()


def test_end_of_stream_ends_the_worker_and_a_bad_model_fails_its_boot():
    w = Worker()
    w.start()
    assert w.stop() == GATEWAY_GONE_EXIT_CODE
    w = Worker()
    assert isinstance(w.recv(), WorkerHello)
    w.conn.send_bytes(WorkerConfig(worker_id=1, model="no_such_model").to_wire())
    w._thread.join(DEADLINE)
    assert w.code == BOOT_FAILED_EXIT_CODE
    w.close()
