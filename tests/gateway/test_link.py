"""The gateway's end of a worker stream: frames cut out of bytes however they arrive, the
handshake, results handed on as they are read, and how a link ends (closed, aborted, broken).

Frame cutting is driven byte by byte through the protocol's own buffer calls; the link is tested
over a real socketpair, both as the transport's protocol (``open_link``) and over an asyncio
stream pair (as a NATS worker opens it), with this test playing the worker's side."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from streamer.errors import WireError
from streamer.framing import BUFFER, FrameBuffer
from streamer.gateway.pool.link import FrameProtocol, WorkerLink, open_link
from streamer.wire import (
    HEADER,
    Heartbeat,
    InferenceResult,
    WorkerConfig,
    WorkerHello,
    WorkerReady,
    frame,
    from_wire,
)

DEADLINE = 10.0
CONFIG = WorkerConfig(worker_id=3, model="counter")


class Frames(FrameProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[bytes] = []
        self.errors: list[WireError] = []

    def frame_received(self, data: memoryview) -> None:
        self.frames.append(bytes(data))  # the view is good only until the next read

    def frame_error(self, exc: WireError) -> None:
        self.errors.append(exc)

    def feed(self, data: bytes, chunk: int) -> None:
        """``data`` as the transport would hand it over, at most ``chunk`` bytes per read."""
        at = 0
        while at < len(data):
            buf = self.get_buffer(-1)
            n = min(chunk, len(buf), len(data) - at)
            assert n > 0, "the protocol offered no room to read into"
            buf[:n] = data[at:at + n]
            self.buffer_updated(n)
            at += n


@pytest.mark.parametrize("chunk", [1, 3, 4, 5, 1000, 1 << 20])
def test_frames_come_out_whole_however_the_bytes_are_split(chunk: int) -> None:
    big = b"z" * (3 * BUFFER if chunk > 100 else BUFFER + 7)  # larger than the buffer
    payloads = [b"", b"a", bytes(range(256)) * 40, big, b"tail"]
    proto = Frames()
    proto.feed(b"".join(frame(p) for p in payloads), chunk)
    assert proto.frames == payloads and proto.errors == []


def test_the_buffer_grows_for_a_large_frame_and_shrinks_back() -> None:
    proto = Frames()
    proto.feed(frame(b"x" * (5 * BUFFER)), 1 << 20)
    assert proto.frames == [b"x" * (5 * BUFFER)]
    assert len(proto.get_buffer(-1)) == BUFFER


def test_a_length_no_frame_can_have_stops_the_stream() -> None:
    proto = Frames()
    proto.feed(frame(b"ok") + HEADER.pack(-1) + frame(b"never"), 1 << 20)
    assert proto.frames == [b"ok"]
    assert len(proto.errors) == 1 and "frame length -1" in str(proto.errors[0])


class Peer:
    """The worker's end of a socketpair, spoken by the test."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._frames = FrameBuffer()

    async def send(self, *messages: Any, raw: bytes = b"") -> None:
        data = b"".join(frame(m.to_wire()) for m in messages) + raw
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def recv(self) -> Any:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(DEADLINE):
            while (data := self._frames.next()) is None:
                n = await loop.sock_recv_into(self.sock, self._frames.room())
                assert n, "the link closed the connection"
                self._frames.filled(n)
            return from_wire(data)

    async def at_end(self) -> bool:
        """True once the link closed its end (whatever it still sent is skipped)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(DEADLINE):
            while await loop.sock_recv(self.sock, 1 << 16):
                pass
        return True

    async def ready(self, link: WorkerLink) -> WorkerReady:
        """Play a worker's start: hello, the config comes, ready (a heartbeat in between)."""
        handshake = asyncio.ensure_future(link.handshake(CONFIG, DEADLINE))
        await self.send(WorkerHello(pid=4242, host="here"))
        assert await self.recv() == CONFIG
        await self.send(Heartbeat(worker_id=3, sent_at=1.0),
                        WorkerReady(worker_id=3, pid=4242, model="counter"))
        return await handshake


Body = Callable[[WorkerLink, Peer], Awaitable[None]]


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "asyncio":
        return None
    if importlib.util.find_spec("uvloop") is None and not os.environ.get("CI"):
        pytest.skip("uvloop is not installed (the server extra installs it)")
    import uvloop

    return uvloop.new_event_loop


def each_link(body: Body) -> Callable[[str, str], None]:
    """Run ``body(link, peer)`` on asyncio's loop and on uvloop's (the gateway's default)."""

    @pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
    def test(loop: str) -> None:
        async def main() -> None:
            ours, theirs = socket.socketpair()
            link = await open_link(ours, 3, "embedded")
            try:
                await body(link, Peer(theirs))
            finally:
                link.abort("test over")
                theirs.close()

        with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
            runner.run(main())

    test.__name__, test.__doc__ = body.__name__, body.__doc__
    return test


def result(rid: int, **fields: Any) -> InferenceResult:
    return InferenceResult(request_id=rid, worker_id=3, output={"n": rid}, **fields)


@each_link
async def test_handshake_then_results_reach_the_callback_in_order(
        link: WorkerLink, peer: Peer) -> None:
    ready = await peer.ready(link)
    assert ready.pid == 4242 and link.ready and (link.pid, link.host) == (4242, "here")
    got: list[tuple[int, int]] = []
    all_in = asyncio.Event()

    def on_result(res: InferenceResult, wid: int) -> None:
        got.append((res.request_id, wid))
        if len(got) == 50:
            all_in.set()

    running = asyncio.ensure_future(link.run(on_result))
    for first in range(0, 50, 10):  # several frames per write, a heartbeat among them
        await peer.send(*(result(r) for r in range(first, first + 5)),
                        Heartbeat(worker_id=3, sent_at=2.0),
                        *(result(r) for r in range(first + 5, first + 10)))
    async with asyncio.timeout(DEADLINE):
        await all_in.wait()
    assert got == [(r, 3) for r in range(50)] and link.answered == 50
    peer.sock.close()  # the worker exits: the link ends with no reason
    async with asyncio.timeout(DEADLINE):
        assert await running is None
    assert not link.ready and link.closed


@each_link
async def test_a_bad_frame_after_ready_aborts_the_link(link: WorkerLink, peer: Peer) -> None:
    await peer.ready(link)
    got: list[int] = []
    running = asyncio.ensure_future(link.run(lambda r, _: got.append(r.request_id)))
    await peer.send(result(1), raw=frame(b"\x93not a map") + frame(result(2).to_wire()))
    async with asyncio.timeout(DEADLINE):
        reason = await running
    assert reason is not None and reason.startswith("sent a bad frame (")
    assert got == [1]  # nothing after the broken frame counts
    assert await peer.at_end()


@each_link
async def test_an_abort_drops_what_the_worker_says_afterwards(link: WorkerLink, peer: Peer) -> None:
    await peer.ready(link)
    got: list[int] = []

    def on_result(res: InferenceResult, _: int) -> None:
        got.append(res.request_id)
        link.abort("stopped responding")  # the first result is the last one taken

    running = asyncio.ensure_future(link.run(on_result))
    await peer.send(result(1), result(2), result(3))
    async with asyncio.timeout(DEADLINE):
        assert await running == "stopped responding"
    assert got == [1] and link.answered == 1


@each_link
async def test_a_receiver_that_raises_does_not_end_the_stream(link: WorkerLink, peer: Peer) -> None:
    await peer.ready(link)
    got: list[int] = []
    second = asyncio.Event()

    def on_result(res: InferenceResult, _: int) -> None:
        got.append(res.request_id)
        if res.request_id == 1:
            raise RuntimeError("a bug downstream")
        second.set()

    running = asyncio.ensure_future(link.run(on_result))
    await peer.send(result(1), result(2))
    async with asyncio.timeout(DEADLINE):
        await second.wait()
    assert got == [1, 2] and not running.done()


@each_link
async def test_the_gateway_closing_the_link_ends_the_workers_stream(
        link: WorkerLink, peer: Peer) -> None:
    await peer.ready(link)
    running = asyncio.ensure_future(link.run(lambda r, _: None))
    link.send(Heartbeat(worker_id=3, sent_at=3.0).to_wire())
    assert isinstance(await peer.recv(), Heartbeat)
    link.close()
    assert await peer.at_end()
    peer.sock.close()
    async with asyncio.timeout(DEADLINE):
        assert await running is None


@each_link
async def test_a_worker_that_leaves_during_the_handshake_is_a_connection_error(
        link: WorkerLink, peer: Peer) -> None:
    handshake = asyncio.ensure_future(link.handshake(CONFIG, DEADLINE))
    await peer.send(WorkerHello(pid=1, host="h"))
    assert await peer.recv() == CONFIG
    peer.sock.close()
    with pytest.raises(ConnectionError):
        await handshake


@each_link
async def test_a_wrong_message_or_bad_frame_during_the_handshake_is_a_wire_error(
        link: WorkerLink, peer: Peer) -> None:
    handshake = asyncio.ensure_future(link.handshake(CONFIG, DEADLINE))
    await peer.send(raw=frame(b"garbage"))
    with pytest.raises(WireError, match="undecodable"):
        await handshake
    ours, theirs = socket.socketpair()
    other = await open_link(ours, 4, "embedded")
    handshake = asyncio.ensure_future(other.handshake(CONFIG, DEADLINE))
    await Peer(theirs).send(WorkerReady(worker_id=4, pid=1, model="counter"))
    with pytest.raises(WireError, match="expected a hello message, got ready"):
        await handshake
    other.abort("test over")
    theirs.close()


@each_link
async def test_a_silent_worker_times_the_handshake_out(link: WorkerLink, peer: Peer) -> None:
    with pytest.raises(TimeoutError):
        await link.handshake(CONFIG, 0.2)
