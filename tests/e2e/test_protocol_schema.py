"""The schema hook of tests/e2e/conftest.py itself: it sees real traffic and fails on a message
outside the protocol, in either direction."""

from __future__ import annotations

import aiohttp
import pytest

from streamer.client import StreamerClient
from streamer.protocol import AudioFormat

SIMPLE = "/api/v1/simple"


async def test_the_hook_checks_real_traffic_and_catches_what_breaks_the_protocol(
        gateway, protocol_schema):
    server = await gateway(workers=1)
    async with await StreamerClient.connect(str(server.make_url(SIMPLE))) as client:
        await client.start(AudioFormat())
        await client.send_audio(b"\x00\x00" * 8000)
        await client.stop()
        events = [e async for e in client.events()]
    # start, stop; started, audio_acked (at 0.5 s, which is also all of it), segment, stopped
    assert len(events) == 2 and protocol_schema.checked == 2 + 4

    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url(SIMPLE)) as ws:
        with pytest.raises(AssertionError, match="sent a message the protocol schema rejects"):
            await ws.send_json({"request": "start", "format": {"encoding": "ulaw"}})
        with pytest.raises(AssertionError, match="'pause' is not one of"):
            await ws.send_str('{"request": "pause"}')
    with pytest.raises(AssertionError, match="received a message the protocol schema rejects"):
        protocol_schema.received('{"type": "transcript", "channel": 0, "text": "hi"}')
    with pytest.raises(AssertionError, match="not JSON"):
        protocol_schema.received("segment 0 0.5")
    assert len(protocol_schema.violations) == 4
    protocol_schema.violations.clear()  # caught on purpose: do not fail this test at teardown
