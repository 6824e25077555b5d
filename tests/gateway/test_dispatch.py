"""The dispatcher's bookkeeping, with workers stood in by lists of sent envelopes. Request ids
are the dispatcher's own, handed out 1, 2, 3... in submission order."""

from streamer.gateway.dispatch import Dispatcher
from streamer.gateway.pool.base import Job
from streamer.wire import EndSession, InferenceRequest, InferenceResult, from_wire


def req(seq: int, key: str | None = None) -> Job:
    return Job("s", 0, seq, 0.0, 0.1, b"\x00" * 8, stateful_key=key)


def ok(rid: int, worker: int) -> InferenceResult:
    return InferenceResult(request_id=rid, worker_id=worker, output={"count": 2})


class Wires:
    def __init__(self) -> None:
        self.sent: dict[int, list] = {}

    def add(self, d: Dispatcher, wid: int) -> None:
        self.sent[wid] = []
        d.add_worker(wid, lambda data, wid=wid: self.sent[wid].append(from_wire(data)))

    def ids(self, wid: int) -> list[int]:
        return [m.request_id for m in self.sent[wid] if isinstance(m, InferenceRequest)]


async def test_least_loaded_with_a_per_worker_limit_and_fifo_queue():
    d, w = Dispatcher(per_worker=2), Wires()
    w.add(d, 0)
    w.add(d, 1)
    futs = [d.submit(req(i)) for i in range(1, 6)]
    assert sorted(w.ids(0) + w.ids(1)) == [1, 2, 3, 4]
    assert d.stats().queued == 1
    first = w.ids(0)[0]
    d.on_result(ok(first, 0))
    assert futs[first - 1].result().output == {"count": 2}
    assert 5 in w.ids(0)  # the freed slot took the queued request
    assert w.sent[0][-1].sent_at > 0


async def test_dead_worker_requests_are_resent_then_failed_after_retries():
    d, w = Dispatcher(per_worker=1, max_retries=1), Wires()
    w.add(d, 0)
    fut = d.submit(req(1))
    w.add(d, 1)
    d.remove_worker(0, "worker 0 crashed")
    assert w.ids(1) == [1]
    assert w.sent[1][0].attempt == 1
    assert d.stats().redispatched == 1
    d.remove_worker(1, "worker 1 crashed")
    result = fut.result()
    assert result.error == ("inference failed: worker 1 crashed (tried 2 times; this segment is "
                            "not sent again)")
    assert d.stats().poisoned == 1
    assert d.stats().inflight == 0 and d.stats().queued == 0


async def test_a_segment_held_by_two_dead_workers_is_not_sent_again_by_default():
    d, w = Dispatcher(per_worker=1), Wires()
    for wid in range(3):
        w.add(d, wid)
    fut = d.submit(req(1))
    d.remove_worker(0, "worker 0 crashed")
    holder = next(wid for wid in (1, 2) if w.ids(wid) == [1])
    d.remove_worker(holder, f"worker {holder} crashed")
    assert "tried 2 times" in fut.result().error
    assert w.ids(1) + w.ids(2) == [1]  # the third worker never saw it
    assert d.stats().poisoned == 1


async def test_requests_wait_for_a_worker_and_a_late_result_is_dropped():
    d, w = Dispatcher(), Wires()
    fut = d.submit(req(1))
    assert d.stats().queued == 1
    w.add(d, 0)
    assert w.ids(0) == [1]
    fut.cancel()  # the session left
    d.on_result(ok(1, 0))  # arrives after the session left: dropped, no error
    assert d.stats().inflight == 0


async def test_a_cancelled_job_that_is_still_queued_is_never_sent():
    d, w = Dispatcher(), Wires()
    fut = d.submit(req(1))
    fut.cancel()  # withdrawn at once: no loop turn needed
    w.add(d, 0)
    assert w.ids(0) == []
    assert d.stats().queued == 0


async def test_a_cancelled_job_in_the_queue_does_not_take_a_workers_turn():
    d, w = Dispatcher(per_worker=1), Wires()
    w.add(d, 0)
    futs = [d.submit(req(i)) for i in range(1, 4)]
    futs[1].cancel()
    d.on_result(ok(1, 0))
    assert w.ids(0) == [1, 3]  # the freed slot skipped the withdrawn job
    d.on_result(ok(3, 0))
    assert futs[2].result().request_id == 3
    assert d.stats().queued == 0 and d.stats().inflight == 0

async def test_affinity_keeps_a_stream_on_one_worker_and_end_stream_tells_it():
    d, w = Dispatcher(per_worker=1), Wires()
    w.add(d, 0)
    w.add(d, 1)
    a1 = d.submit(req(1, "A"))
    d.submit(req(2))  # goes to the other worker
    d.submit(req(3, "A"))  # must wait for A's worker, not take a free one
    assert w.ids(0) == [1] and w.ids(1) == [2]
    d.on_result(ok(2, 1))
    assert w.ids(1) == [2]  # request 3 did not move to worker 1
    d.on_result(ok(1, 0))
    assert a1.done() and w.ids(0) == [1, 3]
    d.release("A")
    assert isinstance(w.sent[0][-1], EndSession)


async def test_streams_that_start_on_idle_workers_spread_over_them():
    d, w = Dispatcher(per_worker=2), Wires()
    for wid in range(3):
        w.add(d, wid)
    for n, key in enumerate("ABCD", start=1):  # each stream's first job is answered at once
        d.submit(req(n, key))
        holder = next(wid for wid in w.sent if n in w.ids(wid))
        d.on_result(ok(n, holder))
    assert sorted(len(w.ids(wid)) for wid in w.sent) == [1, 1, 2]
    d.release("A")
    d.submit(req(5, "E"))  # takes the place A left
    assert 5 in w.ids(next(wid for wid in w.sent if 1 in w.ids(wid)))


async def test_a_result_counts_only_from_the_worker_that_holds_the_request():
    d, w = Dispatcher(per_worker=1, max_retries=2), Wires()
    w.add(d, 0)
    fut = d.submit(req(1))
    w.add(d, 1)
    d.remove_worker(0, "worker 0 stopped responding")  # hung, not dead: it may still answer
    assert w.ids(1) == [1]
    d.on_result(ok(1, 0), worker_id=0)  # from the worker it was taken from: ignored
    assert not fut.done()
    d.on_result(InferenceResult(request_id=1, worker_id=1, output={"count": 7}), worker_id=1)
    d.on_result(ok(1, 1), worker_id=1)  # a second answer: dropped, the first one stands
    assert fut.result().output == {"count": 7}
    assert d.stats().inflight == 0


async def test_state_lost_marks_the_first_answer_after_the_keys_worker_died():
    d, w = Dispatcher(per_worker=2), Wires()
    w.add(d, 0)
    a1, a2 = d.submit(req(1, "A")), d.submit(req(2, "A"))
    b1 = d.submit(req(3, "B"))
    assert w.ids(0) == [1, 2]
    w.add(d, 1)
    assert w.ids(1) == [3]
    d.remove_worker(0, "worker 0 crashed")
    assert w.ids(1) == [3]  # A's requests are suspects now: each runs alone on an idle worker
    d.on_result(ok(3, 1))
    assert w.ids(1) == [3, 1]
    d.on_result(ok(1, 1))
    assert w.ids(1) == [3, 1, 2]  # in order
    d.on_result(ok(2, 1))
    assert a1.result().state_lost and not a2.result().state_lost
    assert not b1.result().state_lost  # B's worker did not die
    a3 = d.submit(req(4, "A"))
    d.on_result(ok(4, 1))
    assert not a3.result().state_lost
    # the worker dies while A has nothing in flight: A's next answer is marked too
    w.add(d, 2)
    d.remove_worker(1, "worker 1 crashed")
    a4 = d.submit(req(5, "A"))
    d.on_result(ok(5, 2))
    assert a4.result().state_lost
    # a stream that ends after its worker died leaves nothing behind for a later stream
    d.submit(req(6, "C"))
    w.add(d, 3)
    d.remove_worker(2, "worker 2 crashed")
    d.release("C")
    d.on_result(ok(6, 3))  # the re-sent suspect ran alone on worker 3 and is answered
    c2 = d.submit(req(7, "C"))
    d.on_result(ok(7, 3), worker_id=3)
    assert not c2.result().state_lost


async def test_segments_that_shared_a_worker_with_a_poison_one_are_not_blamed():
    d, w = Dispatcher(per_worker=2, max_retries=1), Wires()
    w.add(d, 0)
    poison, bystander = d.submit(req(1)), d.submit(req(2))
    assert w.ids(0) == [1, 2]
    w.add(d, 1)
    d.remove_worker(0, "worker 0 crashed")
    assert w.ids(1) == [1]  # suspects run alone: the bystander waits
    w.add(d, 2)
    assert w.ids(2) == [2]
    d.remove_worker(1, "worker 1 crashed")  # the poison one killed its second worker
    assert "tried 2 times" in poison.result().error
    d.on_result(ok(2, 2))
    assert bystander.result().ok
    assert d.stats().poisoned == 1
    fresh = d.submit(req(3))  # a worker that finished its suspect takes ordinary work again
    assert w.ids(2) == [2, 3] and not fresh.done()


async def test_a_busy_worker_gets_its_request_back_in_front_and_nothing_until_it_has_room():
    """A worker shared by other gateways says busy: the request is queued again first, with no
    attempt counted, and that worker gets nothing more until it finishes one or says so."""
    d, w = Dispatcher(per_worker=2), Wires()
    w.add(d, 0)
    futs = [d.submit(req(i)) for i in range(1, 4)]
    assert w.ids(0) == [1, 2]
    d.busy(0, 2)
    assert d.stats().queued == 2 and w.ids(0) == [1, 2]  # 2 waits, first; 0 is full
    d.busy(0, 1)
    assert d.stats().inflight == 0 and d.stats().queued == 3
    d.has_room(0)
    assert w.ids(0) == [1, 2, 1, 2]  # oldest first, and not counted as a retry
    assert all(m.attempt == 0 for m in w.sent[0])
    d.on_result(ok(1, 0))
    assert w.ids(0)[-1] == 3  # a finished one makes room too
    d.busy(0, 99)  # a request it does not hold: ignored
    assert futs[0].result().output == {"count": 2}
    assert d.stats().redispatched == 0


async def test_resend_queues_what_a_worker_holds_again_without_an_attempt():
    d, w = Dispatcher(per_worker=2), Wires()
    w.add(d, 0)
    fut = d.submit(req(1))
    d.resend(0)  # the broker connection came back: messages may be lost
    assert w.ids(0) == [1, 1] and w.sent[0][1].attempt == 0
    d.on_result(ok(1, 0))
    d.on_result(ok(1, 0))  # the first copy's answer too: dropped, answered once
    assert fut.result().output == {"count": 2}
    assert d.stats().inflight == 0
