"""A TCP proxy on 127.0.0.1 that can cut every connection through it, as a network that drops."""

from __future__ import annotations

import asyncio
import contextlib


class CutProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.connections = 0  # accepted so far
        self.cuts = 0         # cuts that dropped at least one connection
        self._server: asyncio.Server | None = None
        self._live: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CutProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._abort_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def live(self) -> int:
        return len(self._live)

    def cut(self) -> int:
        """Drop every connection now, both sides, without a websocket close: what each side
        sees is a reset TCP connection. Returns how many were dropped."""
        dropped = self._abort_all()
        self.cuts += dropped > 0
        return dropped

    def _abort_all(self) -> int:
        pairs = list(self._live)
        for pair in pairs:
            for writer in pair:
                writer.transport.abort()
        self._live.clear()
        return len(pairs)

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            u_reader, u_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            c_writer.transport.abort()
            return
        pair = (c_writer, u_writer)
        self._live.add(pair)
        pipes = [asyncio.create_task(self._pipe(c_reader, u_writer)),
                 asyncio.create_task(self._pipe(u_reader, c_writer))]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._tasks.difference_update(pipes)
            self._live.discard(pair)
            for writer in pair:
                writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
