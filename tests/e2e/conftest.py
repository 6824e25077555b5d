"""Every e2e test checks the protocol schema: each JSON text frame a test sends through a
websocket client and each one the gateway sends back must match doc/protocol.schema.json.

The hook wraps the client side at its narrowest points (aiohttp's ClientWebSocketResponse
``send_str`` and ``receive``, under ``send_json``/``receive_json``/the client library, and the raw
socket's ``send_text``), so no test has to ask for it. A test that breaks the protocol on purpose
is marked ``sends_invalid``: what it sends is not checked (it must still send at least one
message the schema rejects, so the mark cannot go stale); what it receives always is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.schema import problems
from tests.wsraw import RawWebSocket


class SchemaCheck:
    def __init__(self, sends_invalid: bool) -> None:
        self.sends_invalid = sends_invalid
        self.violations: list[str] = []
        self.invalid_sent = 0
        self.checked = 0

    def sent(self, text: str) -> None:
        found = problems("ClientMessage", text)
        self.checked += 1
        if not found:
            return
        if self.sends_invalid:
            self.invalid_sent += 1
            return
        self._fail("sent", text, found)

    def received(self, text: str) -> None:
        self.checked += 1
        found = problems("ServerEvent", text)
        if found:
            self._fail("received", text, found)

    def _fail(self, direction: str, text: str, found: list[str]) -> None:
        report = f"{direction} a message the protocol schema rejects: {text[:200]}\n  " + \
            "\n  ".join(found)
        self.violations.append(report)
        raise AssertionError(report)


@pytest.fixture(autouse=True)
def protocol_schema(request: pytest.FixtureRequest,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[SchemaCheck]:
    check = SchemaCheck(sends_invalid=request.node.get_closest_marker("sends_invalid") is not None)
    client_ws = aiohttp.ClientWebSocketResponse
    send_str, receive, send_text = client_ws.send_str, client_ws.receive, RawWebSocket.send_text

    async def checked_send_str(self: aiohttp.ClientWebSocketResponse, data: str,
                               *args: Any, **kwargs: Any) -> None:
        check.sent(data)
        await send_str(self, data, *args, **kwargs)

    async def checked_receive(self: aiohttp.ClientWebSocketResponse,
                              *args: Any, **kwargs: Any) -> aiohttp.WSMessage:
        msg = await receive(self, *args, **kwargs)
        if msg.type == aiohttp.WSMsgType.TEXT:
            check.received(msg.data)
        return msg

    def checked_send_text(self: RawWebSocket, text: str) -> None:
        check.sent(text)
        send_text(self, text)

    monkeypatch.setattr(client_ws, "send_str", checked_send_str)
    monkeypatch.setattr(client_ws, "receive", checked_receive)
    monkeypatch.setattr(RawWebSocket, "send_text", checked_send_text)
    yield check
    # a failure raised inside a task the test swallowed still fails the test
    assert not check.violations, "\n".join(check.violations)
    if check.sends_invalid:
        assert check.invalid_sent, "marked sends_invalid but every message it sent was valid"
