"""The outbox without a socket: order, a send deadline, and a sender that never stops."""

import asyncio

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
