"""The client library: stream audio to a streamer gateway and read its events as they come.

    import asyncio
    import streamer.client

    async def main() -> None:
        async with streamer.client.connect(
                "ws://127.0.0.1:8080/api/v1/segmented",
                format=streamer.client.AudioFormat(channels=1, sample_rate=16000)) as stream:
            await stream.send(pcm)          # bytes (or a numpy array) as audio arrives
            await stream.stop()
            async for event in stream:      # typed events, until every channel has stopped
                print(event)

    asyncio.run(main())

:func:`stream_file` streams a whole file. ``api_key=`` (or a ``token=`` from
:func:`fetch_token`) authenticates to a gateway with keys, ``ssl=`` trusts a private wss
certificate. Every failure is a :class:`ClientError`: ``Refused`` (admission control's 503, or
``Unauthorized`` 401, ``Forbidden`` 403, ``RateLimited`` 429; with reason, message and
Retry-After), ``ConnectFailed``,
``StreamClosed`` (a close code and reason), ``InvalidURL``, ``AudioFileError``; aiohttp's
exceptions stay inside. :class:`StreamerClient` is the step-by-step layer under it (several
streams on one socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext
from types import SimpleNamespace, TracebackType
from typing import Any

import aiohttp
import numpy as np
from yarl import URL

from streamer.client_audio import AudioClip, pcm_bytes, read_audio, read_wav
from streamer.client_auth import IssuedToken, credentials, fetch_token
from streamer.client_errors import (
    REFUSALS,
    AudioFileError,
    ClientError,
    ConnectFailed,
    Forbidden,
    InvalidURL,
    RateLimited,
    Refused,
    StreamClosed,
    Unauthorized,
)
from streamer.client_events import Reconnected, StreamEvent
from streamer.protocol import (
    ActivityEvent,
    AudioAckedEvent,
    AudioFormat,
    ErrorEvent,
    FinalizedEvent,
    FinalizeRequest,
    KeepAliveRequest,
    ResumedEvent,
    ResumeRequest,
    SegmentEvent,
    ServerEvent,
    StartedEvent,
    StartRequest,
    StoppedEvent,
    StopRequest,
    parse_server_event,
)
from streamer.tracing import current_traceparent

__all__ = [
    "ActivityEvent", "AudioClip", "AudioFileError", "AudioFormat", "ClientError",
    "ConnectFailed", "ErrorEvent", "FinalizedEvent", "Forbidden", "InvalidURL", "IssuedToken",
    "RateLimited", "Reconnected", "Refused", "SegmentEvent", "ServerEvent", "Stream",
    "StreamClosed", "StreamEvent", "StoppedEvent", "StreamReport", "StreamerClient",
    "Unauthorized", "client_session", "connect", "fetch_token", "pcm_bytes", "read_audio",
    "read_wav", "stream_audio", "stream_file",
]

ENDPOINTS = ("/api/v1/simple", "/api/v1/segmented")
RETRY_RESUME = "attached to another socket"  # the gateway still holds the lost connection
_MAX_ERROR_BODY = 64 * 1024

# The body of a refused handshake, kept by the trace hook below for the connect() that asked.
_handshake_body: ContextVar[dict[str, bytes] | None] = ContextVar("_handshake_body",
                                                                  default=None)


async def _keep_error_body(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                           params: aiohttp.TraceRequestEndParams) -> None:
    """aiohttp drops the body of a handshake answered with an HTTP error; the gateway puts the
    reason for a refusal there, so read it before aiohttp does."""
    holder = _handshake_body.get()
    resp = params.response
    if holder is None or resp.status < 400 or (resp.content_length or 0) > _MAX_ERROR_BODY:
        return
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with asyncio.timeout(5):
            holder["body"] = await resp.read()


def client_session(**kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session for :meth:`StreamerClient.connect`'s ``session=`` that keeps the
    gateway's refusal reasons (a plain session still works, but ``Refused.reason`` is then
    ``unknown``)."""
    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(_keep_error_body)
    return aiohttp.ClientSession(trace_configs=[trace], **kwargs)


def check_url(url: str) -> URL:
    """The URL as yarl parses it, if it can name a websocket endpoint; else :class:`InvalidURL`."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise InvalidURL(f"{url!r} is not a valid URL ({exc})") from None
    if parsed.scheme not in ("ws", "wss", "http", "https") or not parsed.host:
        raise InvalidURL(f"{url!r} is not a websocket URL; expected "
                         "ws://HOST:PORT/api/v1/segmented (or wss://, or /api/v1/simple)")
    return parsed


def redact(url: str) -> str:
    """``url`` with a ``token`` query value hidden, for error messages and logs."""
    with contextlib.suppress(ValueError, TypeError):
        parsed = URL(url)
        if "token" in parsed.query:
            return str(parsed.update_query(token="***"))
    return url


async def open_websocket(url: str, session: aiohttp.ClientSession, *,
                         headers: dict[str, str] | None = None,
                         protocols: tuple[str, ...] = (), ssl: SSLContext | bool = True,
                         connect_timeout: float = 10.0,
                         close_timeout: float = 10.0) -> aiohttp.ClientWebSocketResponse:
    """Open the websocket; every failure becomes a :class:`ClientError`. ``ssl`` is for wss:
    an ``ssl.SSLContext`` that trusts a private certificate, or False to skip verification."""
    check_url(url)
    shown = redact(url)
    holder: dict[str, bytes] = {}
    token = _handshake_body.set(holder)
    try:
        async with asyncio.timeout(connect_timeout):
            return await session.ws_connect(
                url, headers=headers, protocols=protocols, ssl=ssl, max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=close_timeout))
    except aiohttp.WSServerHandshakeError as exc:
        raise _handshake_error(shown, exc, holder.get("body", b"")) from exc
    except TimeoutError as exc:
        raise ConnectFailed(f"no answer from {shown} within {connect_timeout:g} s",
                            shown) from exc
    except aiohttp.InvalidURL as exc:
        raise InvalidURL(f"{shown!r} is not a valid URL") from exc
    except aiohttp.ClientConnectorCertificateError as exc:
        raise ConnectFailed(_certificate_text(exc), shown) from exc
    except aiohttp.ClientSSLError as exc:
        raise ConnectFailed(f"TLS with {shown} failed: {exc}", shown) from exc
    except aiohttp.ClientConnectorError as exc:
        raise ConnectFailed(f"cannot connect to {exc.host}:{exc.port}: "
                            f"{_os_error_text(exc.os_error)}", shown) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise ConnectFailed(f"cannot connect to {shown}: {exc or type(exc).__name__}",
                            shown) from exc
    finally:
        _handshake_body.reset(token)


def _certificate_text(exc: aiohttp.ClientConnectorCertificateError) -> str:
    cert_error = exc.certificate_error
    why = getattr(cert_error, "verify_message", None) or str(cert_error)
    return (f"cannot connect to {exc.host}:{exc.port}: its TLS certificate does not verify "
            f"({why}); trust a private certificate with ssl=ssl.create_default_context("
            "cafile=...) (--cacert on the command line)")


def _os_error_text(error: OSError) -> str:
    """"Connection refused" rather than asyncio's "Connect call failed ('127.0.0.1', 1)"."""
    if isinstance(error, socket.gaierror) or not error.errno or error.errno < 0:
        return error.strerror or str(error) or type(error).__name__
    return os.strerror(error.errno)


def _handshake_error(url: str, exc: aiohttp.WSServerHandshakeError, body: bytes) -> ConnectFailed:
    data: Any = None
    with contextlib.suppress(ValueError):
        data = json.loads(body)
    fields = data if isinstance(data, dict) else {}
    text = str(fields.get("message") or body.decode("utf-8", "replace").strip()
               or exc.message)[:300]
    status = exc.status
    if status in REFUSALS:
        return REFUSALS[status](url, str(fields.get("reason", "unknown")),
                                str(fields.get("message") or _REFUSAL_TEXT[status]),
                                _retry_after(exc.headers), status)
    if status == 404:
        return ConnectFailed(f"{url}: no websocket endpoint at {URL(url).path!r} (HTTP 404); "
                             f"the gateway serves {' and '.join(ENDPOINTS)}", url, 404)
    if status < 300:
        return ConnectFailed(f"{url} is not a websocket endpoint (HTTP {status})", url, status)
    return ConnectFailed(f"{url}: the gateway answered HTTP {status}: {text}", url, status)


_REFUSAL_TEXT = {503: "the gateway is not taking sessions now",
                 401: "the gateway needs a valid API key or token",
                 403: "the gateway does not accept connections from this origin",
                 429: "the API key is over its limits"}


def _retry_after(headers: Any) -> float | None:
    """Retry-After as seconds (the gateway sends a number; an HTTP date is not honoured)."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


# ---- the step-by-step layer ----------------------------------------------------------------

class StreamerClient:
    """One websocket; ``start``, ``send_audio``, ``stop`` and ``events()`` as the protocol has
    them, any number of streams one after the other."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse,
                 owns_session: bool) -> None:
        self._session = session
        self.ws = ws
        self._owns_session = owns_session
        self._streams: deque[int] = deque()  # channel counts of streams not yet read to the end
        self._close_reason = ""

    @classmethod
    async def connect(cls, url: str, *, session: aiohttp.ClientSession | None = None,
                      headers: dict[str, str] | None = None, api_key: str | None = None,
                      token: str | None = None, ssl: SSLContext | bool = True,
                      connect_timeout: float = 10.0, close_timeout: float = 10.0,
                      ) -> StreamerClient:
        """Open the websocket. ``api_key`` is sent as ``Authorization: Bearer``, ``token`` (from
        :func:`fetch_token`) as a websocket subprotocol; ``ssl`` as for :func:`open_websocket`."""
        headers, protocols = credentials(api_key, token, headers)
        owns = session is None
        session = session or client_session()
        try:
            ws = await open_websocket(url, session, headers=headers, protocols=protocols,
                                      ssl=ssl, connect_timeout=connect_timeout,
                                      close_timeout=close_timeout)
        except BaseException:
            if owns:
                await session.close()
            raise
        return cls(session, ws, owns)

    async def __aenter__(self) -> StreamerClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    @property
    def close_reason(self) -> str:
        """The reason of the close frame, once it has been read ("" if none)."""
        return self._close_reason

    async def start(self, fmt: AudioFormat, *, interim_results: bool = False,
                    trace_id: str | None = None, **options: Any) -> None:
        self._streams.append(fmt.channels)
        if trace_id is None:
            trace_id = current_traceparent()  # the caller's span becomes the stream's parent
        await self._send(self.ws.send_str,
                         StartRequest(fmt, trace_id, interim_results, options).to_json())

    async def send_audio(self, data: bytes | bytearray | memoryview) -> None:
        await self._send(self.ws.send_bytes, data)

    async def stop(self, disconnect: bool = False) -> None:
        await self._send(self.ws.send_str, StopRequest(disconnect).to_json())

    async def keepalive(self) -> None:
        """Keep a stream open while no audio flows (a muted microphone)."""
        await self._send(self.ws.send_str, KeepAliveRequest().to_json())

    async def finalize(self) -> None:
        """Ask for the results of every channel's open speech now; the stream goes on."""
        await self._send(self.ws.send_str, FinalizeRequest().to_json())

    async def _send(self, send: Callable[[Any], Any], payload: Any) -> None:
        if self.ws.closed:
            raise StreamClosed(self.ws.close_code, self.close_reason)
        try:
            await send(payload)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            # aiohttp says "Cannot write to closing transport" (ConnectionResetError) or
            # "websocket connection is closing" (RuntimeError in older releases)
            raise StreamClosed(self.ws.close_code, self.close_reason) from exc

    async def receive(self) -> ServerEvent | None:
        """The next event, or None once the socket has closed (``close_code`` says how)."""
        msg = await self.ws.receive()
        if msg.type == aiohttp.WSMsgType.TEXT:
            return parse_server_event(msg.data)
        if msg.type == aiohttp.WSMsgType.CLOSE:
            self._close_reason = str(msg.extra or "")
        return None

    async def events(self) -> AsyncIterator[ServerEvent]:
        """Events of the oldest stream not yet read to its end: until all its channels stopped,
        or the socket closed (``close_code`` then says why). Without ``started``,
        ``audio_acked`` and ``resumed``, which :meth:`receive` returns."""
        channels = self._streams[0] if self._streams else 1
        stopped: set[int] = set()
        while len(stopped) < channels:
            event = await self.receive()
            if event is None:
                return
            if isinstance(event, StartedEvent | AudioAckedEvent | ResumedEvent):
                continue  # the stream's bookkeeping: receive() has them
            if isinstance(event, StoppedEvent):
                stopped.add(event.channel)
            yield event
        if self._streams:
            self._streams.popleft()

    async def close(self) -> None:
        try:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
                await self.ws.close()
        finally:
            if self._owns_session:
                await self._session.close()


# ---- one stream on its own socket ----------------------------------------------------------

# Close codes after which a stream is resumed: the connection was lost, nobody closed it.
LOST_CONNECTION = (None, 1006)


class Stream:
    """One stream on its own websocket, already started. ``send`` audio, ``stop``, and iterate
    for events: the iteration ends once every channel has stopped, and raises
    :class:`StreamClosed` if the socket ends first (a bad message, the server draining, a
    connection lost for good). Sending and reading may run in different tasks.

    With ``resume`` (the default) a lost connection is resumed on a new one: audio not yet
    acknowledged by the gateway is kept and sent again from the byte the gateway names, events
    it sends again are skipped, and a :class:`Reconnected` notice says it happened. The
    gateway's bookkeeping events (``started``, ``audio_acked``, ``resumed``) are not yielded."""

    def __init__(self, client: StreamerClient, fmt: AudioFormat, url: str, *,
                 resume: bool = True, resume_timeout: float = 30.0,
                 auth: dict[str, Any] | None = None) -> None:
        self._client = client
        self.format = fmt
        self.url = url
        self._stopped: set[int] = set()
        self._stop_sent = False
        self._resume, self._resume_timeout = resume, resume_timeout
        self._auth = auth or {}  # how the first connection authenticated, for the next ones
        self.stream_id: str | None = None
        self._token: str | None = None
        self.last_seq = 0           # the highest event number received
        self.sent_bytes = 0         # audio handed to send()
        self.acked_bytes = 0        # audio the gateway acknowledged
        self._unacked = bytearray()  # audio from acked_bytes to sent_bytes
        self._lock = asyncio.Lock()  # one sender or reconnection at a time
        self.reconnects = 0

    @property
    def done(self) -> bool:
        """Every channel has reported ``stopped``: all results are in."""
        return len(self._stopped) >= self.format.channels

    @property
    def close_code(self) -> int | None:
        return self._client.close_code

    async def send(self, pcm: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Send audio in the stream's format: bytes as they are, or a numpy array (floats in
        [-1, 1] are converted to the format; integers must match its sample type)."""
        data = as_pcm(pcm, self.format)
        async with self._lock:
            client = self._client
            if self._resume:
                self._unacked += data
            self.sent_bytes += len(data)
            try:
                await client.send_audio(data)
                return
            except StreamClosed:
                if not self._can_resume(client):
                    raise
        await self._reconnect(client)  # sends this frame again with the rest not acknowledged

    async def stop(self) -> None:
        """End the audio; the results of what was sent still come. Calling it again is a no-op."""
        if self._stop_sent:
            return
        self._stop_sent = True
        async with self._lock:
            client = self._client
            try:
                await client.stop(disconnect=True)
                return
            except StreamClosed:
                if not self._can_resume(client):
                    raise
        await self._reconnect(client)  # sends 'stop' again after the audio

    async def keepalive(self) -> None:
        """Keep the stream open while no audio flows (a muted microphone)."""
        await self._control("keepalive")

    async def finalize(self) -> None:
        """Results of every channel's open speech now, then ``finalized``; the stream goes
        on. Lost with the connection if it drops before the gateway reads it."""
        await self._control("finalize")

    async def _control(self, request: str) -> None:
        async with self._lock:
            client = self._client
            try:
                await getattr(client, request)()
            except StreamClosed:
                if not self._can_resume(client):
                    raise
                # the reader resumes the stream; a keepalive is moot on the new connection

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[StreamEvent]:
        while not self.done:
            client = self._client
            event = await client.receive()
            if event is None:
                if not self._can_resume(client):
                    raise StreamClosed(client.close_code, client.close_reason)
                notice = await self._reconnect(client)
                if notice is not None:
                    yield notice
                continue
            if event.seq is not None:
                if event.seq <= self.last_seq:
                    continue  # sent again after a resume; we have it
                self.last_seq = event.seq
            if isinstance(event, StartedEvent):
                self.stream_id, self._token = event.stream_id, event.resume_token
                continue
            if isinstance(event, AudioAckedEvent):
                self._acked(event.bytes)
                continue
            if isinstance(event, ResumedEvent):
                continue
            if isinstance(event, StoppedEvent):
                self._stopped.add(event.channel)
            yield event
        if not self._client.ws.closed:
            # the gateway closes right after the last 'stopped' (1000 after our 'stop', 1001 when
            # it shuts down): read that close frame, which also answers it, so close_code says
            # how the stream ended
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._client.receive()

    async def close(self) -> None:
        """Close the socket (the stream is abandoned if it has not finished)."""
        self._resume = False
        await self._client.close()

    # ---- resuming -----------------------------------------------------------------------
    def _can_resume(self, client: StreamerClient) -> bool:
        return (self._resume and self._token is not None and not self.done
                and client.close_code in LOST_CONNECTION)

    def _acked(self, total: int) -> None:
        drop = min(total - self.acked_bytes, len(self._unacked))
        if drop > 0:
            del self._unacked[:drop]
            self.acked_bytes += drop

    async def _reconnect(self, lost: StreamerClient) -> Reconnected | None:
        """Resume the stream on a new connection (None: another task already did). Retries
        with backoff within ``resume_timeout``; raises :class:`StreamClosed` if it cannot."""
        async with self._lock:
            if self._client is not lost:
                return None
            assert self._token is not None
            await lost.close()
            started = time.monotonic()
            deadline = started + self._resume_timeout
            delay, attempts = 0.05, 0
            while True:
                attempts += 1
                resumed, client = await self._try_resume(deadline)
                if resumed is not None and client is not None:
                    break
                if time.monotonic() + delay > deadline:
                    raise StreamClosed(lost.close_code, "the connection was lost and the "
                                       f"stream could not be resumed within "
                                       f"{self._resume_timeout:g} s")
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
            self._client = client
            self.reconnects += 1
            self._acked(resumed.audio_bytes)
            resend = bytes(self._unacked[resumed.audio_bytes - self.acked_bytes:])
            offline = time.monotonic() - started
            try:
                if resend:
                    await client.send_audio(resend)
                if self._stop_sent:
                    await client.stop(disconnect=True)
            except StreamClosed:
                pass  # lost again: the reader notices and resumes once more
            return Reconnected(attempts, offline, resumed.audio_bytes, len(resend))

    async def _try_resume(self, deadline: float) -> tuple[ResumedEvent | None,
                                                          StreamerClient | None]:
        """One attempt: (resumed, client), or (None, None) to try again. A refusal that
        another attempt cannot change raises :class:`StreamClosed`."""
        assert self._token is not None
        try:
            client = await StreamerClient.connect(self.url, **self._auth,
                                                  connect_timeout=max(0.1, deadline
                                                                      - time.monotonic()))
        except (ConnectFailed, Refused):
            return None, None
        try:
            await client.ws.send_str(ResumeRequest(self._token, self.last_seq).to_json())
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                answer = await client.receive()
        except (aiohttp.ClientError, ConnectionError, RuntimeError, TimeoutError):
            await client.close()
            return None, None
        if isinstance(answer, ResumedEvent):
            return answer, client
        await client.close()
        if isinstance(answer, ErrorEvent) and RETRY_RESUME not in answer.message:
            raise StreamClosed(client.close_code, answer.message)
        return None, None  # the gateway has not yet seen the old connection go


def as_pcm(pcm: bytes | bytearray | memoryview | np.ndarray, fmt: AudioFormat) -> bytes | \
        bytearray | memoryview:
    if not isinstance(pcm, np.ndarray):
        return pcm
    if fmt.encoding != "pcm":
        raise ValueError(f"a {fmt.encoding} stream takes its encoded bytes as they are, not a "
                         "numpy array")
    if pcm.dtype.kind == "f":
        return pcm_bytes(pcm.reshape(-1, fmt.channels), fmt)
    if pcm.dtype.kind == "i" and not fmt.is_float and pcm.dtype.itemsize * 8 == fmt.bit_depth:
        return pcm.astype(fmt.dtype).tobytes()
    raise ValueError(f"cannot send a {pcm.dtype} array on a stream of "
                     f"{fmt.bit_depth}-bit {'float' if fmt.is_float else 'integer'} samples; "
                     "send floats in [-1, 1] or the format's own sample type")


class connect:  # noqa: N801  (used like a function: ``async with connect(...)`` or ``await``)
    """Open a websocket to ``url`` and start one stream on it.

    ``format`` describes the audio you will send; ``interim_results`` asks ``/segmented`` for
    interim results; ``trace_id`` is a W3C traceparent to continue (default: the current
    OpenTelemetry span's); ``options`` are further ``start`` fields (``vad={...}``).
    ``api_key`` (sent as ``Authorization: Bearer``) or ``token`` (from :func:`fetch_token`, sent
    as a websocket subprotocol) authenticate to a gateway that has keys; ``ssl`` is an
    ``ssl.SSLContext`` trusting a private certificate for wss (False skips verification).
    ``retries`` > 0 retries a connection refused as busy (503) or over the key's limits (429)
    after the gateway's Retry-After (1 s if it gives none), unless that is longer than
    ``max_retry_wait``; then the ``Refused`` is raised (at once for 401 and 403).
    ``on_refused(refused, wait)`` is told before each wait (to show "waiting for the server").
    ``resume`` (default on) resumes the stream on a new connection when one is lost, trying
    for ``resume_timeout`` seconds (see :class:`Stream`).
    """

    def __init__(self, url: str, *, format: AudioFormat | None = None,  # noqa: A002
                 interim_results: bool = False, trace_id: str | None = None,
                 headers: dict[str, str] | None = None, api_key: str | None = None,
                 token: str | None = None, ssl: SSLContext | bool = True, retries: int = 0,
                 max_retry_wait: float = 30.0,
                 on_refused: Callable[[Refused, float], None] | None = None,
                 connect_timeout: float = 10.0, close_timeout: float = 10.0,
                 resume: bool = True, resume_timeout: float = 30.0,
                 **options: Any) -> None:
        check_url(url)
        if retries < 0:
            raise ValueError("retries must not be negative")
        self.url = url
        self.format = format or AudioFormat()
        self.format.validate()
        self._start = dict(interim_results=interim_results, trace_id=trace_id, **options)
        credentials(api_key, token)  # a bad combination fails here, not on first await
        self._auth: dict[str, Any] = dict(headers=headers, api_key=api_key, token=token, ssl=ssl)
        self._retries = retries
        self._max_retry_wait = max_retry_wait
        self._on_refused = on_refused
        self._timeouts = (connect_timeout, close_timeout)
        self._resume = (resume, resume_timeout)
        self._stream: Stream | None = None

    async def _open(self) -> Stream:
        attempt = 0
        while True:
            try:
                client = await StreamerClient.connect(
                    self.url, **self._auth, connect_timeout=self._timeouts[0],
                    close_timeout=self._timeouts[1])
                break
            except Refused as refused:
                wait = 1.0 if refused.retry_after is None else refused.retry_after
                if (not refused.retryable or attempt >= self._retries
                        or wait > self._max_retry_wait):
                    raise
                attempt += 1
                if self._on_refused is not None:
                    self._on_refused(refused, wait)
                await asyncio.sleep(wait)
        try:
            await client.start(self.format, **self._start)
        except BaseException:
            await client.close()
            raise
        return Stream(client, self.format, self.url, resume=self._resume[0],
                      resume_timeout=self._resume[1], auth=self._auth)

    def __await__(self) -> Generator[Any, None, Stream]:
        return self._open().__await__()

    async def __aenter__(self) -> Stream:
        self._stream = await self._open()
        return self._stream

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._stream is not None:
            await self._stream.close()


# ---- whole clips ---------------------------------------------------------------------------

@dataclass(slots=True)
class StreamReport:
    """What came back for one streamed clip."""

    events: list[StreamEvent] = field(default_factory=list)
    close_code: int | None = None
    first_result_latency: float | None = None  # seconds from the start of sending
    total_time: float = 0.0
    audio_seconds: float = 0.0

    @property
    def results(self) -> int:
        return sum(isinstance(e, SegmentEvent) and e.is_final is not False for e in self.events)

    @property
    def errors(self) -> int:
        return sum(isinstance(e, ErrorEvent) for e in self.events)

    def record(self, event: StreamEvent, started: float) -> None:
        """Keep ``event``; the first answer (a result or an error) sets the latency from
        ``started`` (a ``time.perf_counter()`` reading)."""
        if self.first_result_latency is None and isinstance(event, SegmentEvent | ErrorEvent):
            self.first_result_latency = time.perf_counter() - started
        self.events.append(event)


async def send_paced(send: Callable[[bytes], Any], data: bytes, fmt: AudioFormat,
                     chunk_bytes: int, real_time: bool) -> None:
    """Send ``data`` in frames of ``chunk_bytes`` (whole sample frames). In real time a frame
    goes once the END of its audio has been "captured", as a live source sends it."""
    chunk = max(fmt.frame_bytes, chunk_bytes - chunk_bytes % fmt.frame_bytes)
    bytes_per_second = fmt.frame_bytes * fmt.sample_rate
    t0 = time.perf_counter()
    for offset in range(0, len(data), chunk):
        end = min(offset + chunk, len(data))
        if real_time:
            delay = t0 + end / bytes_per_second - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await send(data[offset:end])


def chunk_bytes_for(fmt: AudioFormat, chunk_ms: float) -> int:
    """Bytes in ``chunk_ms`` of audio, at least one frame."""
    return fmt.frame_bytes * max(1, round(chunk_ms / 1000 * fmt.sample_rate))


async def play(stream: Stream, data: bytes, *, chunk_ms: float = 100.0, real_time: bool = False,
               on_event: Callable[[StreamEvent], None] | None = None,
               report: StreamReport | None = None) -> StreamReport:
    """Send ``data`` on ``stream`` (then ``stop``) while reading every event into ``report``;
    the report is filled as events come, so a caller keeps what arrived before an error."""
    fmt = stream.format
    report = report if report is not None else StreamReport()
    report.audio_seconds = len(data) / (fmt.frame_bytes * fmt.sample_rate)
    t0 = time.perf_counter()

    async def send() -> None:
        await send_paced(stream.send, data, fmt, chunk_bytes_for(fmt, chunk_ms), real_time)
        await stream.stop()

    sender = asyncio.create_task(send())
    try:
        async for event in stream:
            report.record(event, t0)
            if on_event is not None:
                on_event(event)
        if not sender.done():  # the gateway ended the stream before we stopped (shutdown)
            sender.cancel()
        await asyncio.wait([sender])
        if not sender.cancelled() and (failed := sender.exception()) is not None:
            raise failed  # a failed send
    finally:
        if not sender.done():
            sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ClientError):
            await sender
        report.total_time = time.perf_counter() - t0
        report.close_code = stream.close_code
    return report


async def stream_file(url: str, path: str | Path, *, real_time: bool = False,
                      chunk_ms: float = 100.0, sample_format: str | None = None,
                      on_event: Callable[[StreamEvent], None] | None = None,
                      **connect_options: Any) -> StreamReport:
    """Stream a whole audio file (see :func:`streamer.client_audio.read_audio` for the formats)
    and return every event. ``connect_options`` go to :func:`connect` (``interim_results``,
    ``trace_id``, ``api_key``, ``token``, ``ssl``, ``retries``, ``vad``, ...)."""
    clip = read_audio(path, sample_format)
    async with connect(url, format=clip.format, **connect_options) as stream:
        return await play(stream, clip.data, chunk_ms=chunk_ms, real_time=real_time,
                          on_event=on_event)


async def stream_audio(url: str, fmt: AudioFormat, data: bytes, *, chunk_size: int = 8192,
                       real_time: bool = False, interim_results: bool = False,
                       disconnect: bool = True, trace_id: str | None = None,
                       on_event: Callable[[ServerEvent], None] | None = None,
                       api_key: str | None = None, token: str | None = None,
                       ssl: SSLContext | bool = True, **options: Any) -> StreamReport:
    """Send raw PCM in frames of ``chunk_size`` bytes while collecting every event. Unlike
    :func:`stream_file` a close with an error code is not raised: ``report.close_code`` has it
    (for tests and tools that look at how streams end)."""
    report = StreamReport(audio_seconds=len(data) / (fmt.frame_bytes * fmt.sample_rate))
    async with await StreamerClient.connect(url, api_key=api_key, token=token,
                                            ssl=ssl) as client:
        await client.start(fmt, interim_results=interim_results, trace_id=trace_id, **options)
        t0 = time.perf_counter()

        async def send() -> None:
            bytes_per_second = fmt.frame_bytes * fmt.sample_rate
            for offset in range(0, len(data), chunk_size):
                end = min(offset + chunk_size, len(data))
                if real_time:  # the frame goes once its last byte has been "captured"
                    delay = t0 + end / bytes_per_second - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await client.send_audio(data[offset:end])
            await client.stop(disconnect=disconnect)

        sender = asyncio.create_task(send())
        try:
            async for event in client.events():
                report.record(event, t0)
                if on_event is not None:
                    on_event(event)
        finally:
            if not sender.done():
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClientError):
                await sender
        if disconnect and not client.ws.closed:
            await client.receive()  # the server's close frame
        report.close_code = client.close_code
        report.total_time = time.perf_counter() - t0
    return report
