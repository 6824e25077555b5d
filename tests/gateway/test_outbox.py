"""The outbox without a socket: order, a send deadline, and a sender that never stops."""

import asyncio
import os
from collections.abc import Awaitable, Callable

import pytest

from streamer.gateway.ledger import Outgoing
from streamer.gateway.outbox import Outbox


class FakeWs:
    def __init__(self, stall_after: int | None = None) -> None:
        self.sent: list[str] = []
        self.stall_after = stall_after

    async def send_str(self, text: str) -> None:
        if self.stall_after is not None and len(self.sent) >= self.stall_after:
            await asyncio.Event().wait()  # a client that stopped reading
        self.sent.append(text)


async def run(outbox: Outbox, *texts: str) -> None:
    task = asyncio.create_task(outbox.run())
    try:
        for text in texts:
            outbox.put(Outgoing(text))
        async with asyncio.timeout(5):
            await outbox.join()
    finally:
        task.cancel()


async def test_events_leave_in_order_and_each_is_reported():
    ws, done = FakeWs(), []
    outbox = Outbox(ws, 1.0, lambda out, at: done.append((out.text, at is not None)),
                    lambda: None)
    await run(outbox, "a", "b", "c")
    assert ws.sent == ["a", "b", "c"] and done == [("a", True), ("b", True), ("c", True)]


async def test_a_stuck_client_is_given_up_after_the_deadline_and_the_rest_is_dropped():
    ws, done, stuck = FakeWs(stall_after=1), [], []
    outbox = Outbox(ws, 0.05, lambda out, at: done.append((out.text, at is not None)),
                    lambda: stuck.append(True))
    await run(outbox, "a", "b", "c")
    assert ws.sent == ["a"] and stuck == [True] and outbox.gone
    assert done == [("a", True), ("b", False), ("c", False)]


async def test_a_failing_callback_does_not_stop_the_sender():
    ws = FakeWs()

    def broken(out: Outgoing, at: float | None) -> None:
        raise RuntimeError("bookkeeping bug")

    await run(Outbox(ws, 1.0, broken, lambda: None), "a", "b")
    assert ws.sent == ["a", "b"]


class GatedWs:
    """A socket whose sends wait while ``gate`` is clear, like a full buffer under flow
    control."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send_str(self, text: str) -> None:
        await self.gate.wait()
        self.sent.append(text)


async def idle_sender(outbox: Outbox) -> asyncio.Task[None]:
    """The sender started and waiting on its empty queue."""
    task = asyncio.create_task(outbox.run())
    await asyncio.sleep(0)  # one turn of the loop: the new task runs up to its first wait
    assert outbox._idle
    return task


async def test_an_idle_sender_lets_put_send_at_once():
    ws, done = GatedWs(), []
    outbox = Outbox(ws, 1.0, lambda out, at: done.append((out.text, at is not None)),
                    lambda: None)
    task = await idle_sender(outbox)
    try:
        outbox.put(Outgoing("a", notice="n"))
        outbox.put(Outgoing("b"))
        assert ws.sent == ["n", "a", "b"] and done == [("a", True), ("b", True)]
        assert outbox._idle and outbox._queue.empty()
    finally:
        task.cancel()


async def test_a_send_that_waits_keeps_its_place_ahead_of_later_events():
    ws, done = GatedWs(), []
    outbox = Outbox(ws, 5.0, lambda out, at: done.append((out.text, at is not None)),
                    lambda: None)
    task = await idle_sender(outbox)
    try:
        ws.gate.clear()
        outbox.put(Outgoing("a"))
        outbox.put(Outgoing("b"))
        assert ws.sent == [] and done == []
        ws.gate.set()
        async with asyncio.timeout(5):
            await outbox.join()
        assert ws.sent == ["a", "b"] and done == [("a", True), ("b", True)]
        outbox.put(Outgoing("c"))  # idle again: sent at once
        assert ws.sent == ["a", "b", "c"]
    finally:
        task.cancel()


async def test_a_send_put_started_is_cut_off_at_the_deadline():
    ws, done, stuck = GatedWs(), [], []
    outbox = Outbox(ws, 0.05, lambda out, at: done.append((out.text, at is not None)),
                    lambda: stuck.append(True))
    task = await idle_sender(outbox)
    try:
        ws.gate.clear()
        outbox.put(Outgoing("a"))
        outbox.put(Outgoing("b"))
        async with asyncio.timeout(5):
            await outbox.join()
        assert ws.sent == [] and stuck == [True] and outbox.gone
        assert done == [("a", False), ("b", False)]
        outbox.put(Outgoing("c"))  # gone: dropped, never sent
        async with asyncio.timeout(5):
            await outbox.join()
        assert ws.sent == [] and done[-1] == ("c", False)
    finally:
        task.cancel()


async def test_cancelling_the_sender_mid_send_is_not_a_timeout():
    ws, stuck = GatedWs(), []
    outbox = Outbox(ws, 5.0, lambda out, at: None, lambda: stuck.append(True))
    task = await idle_sender(outbox)
    ws.gate.clear()
    outbox.put(Outgoing("a"))
    await asyncio.sleep(0)  # one turn: the woken sender takes over the waiting send
    assert outbox._started is not None
    task.cancel()
    async with asyncio.timeout(5):
        done, _ = await asyncio.wait([task])
    assert task.cancelled() and stuck == [] and not outbox.gone and ws.sent == []


@pytest.mark.parametrize("case", [
    test_an_idle_sender_lets_put_send_at_once,
    test_a_send_that_waits_keeps_its_place_ahead_of_later_events,
    test_a_send_put_started_is_cut_off_at_the_deadline,
    test_cancelling_the_sender_mid_send_is_not_a_timeout,
    test_a_stuck_client_is_given_up_after_the_deadline_and_the_rest_is_dropped,
], ids=lambda case: case.__name__.removeprefix("test_"))
def test_on_uvloop(case: Callable[[], Awaitable[None]]) -> None:
    """The gateway may run on uvloop: a send started outside the sender task resumes there."""
    if not os.environ.get("CI"):
        pytest.importorskip("uvloop", reason="uvloop (server extra) is not installed")
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(case())  # type: ignore[arg-type]
