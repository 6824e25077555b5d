"""The errors the client library raises: every failure of a stream as one of these types, so an
application catches ``streamer.client.ClientError`` and never an aiohttp exception.

``Refused`` is the gateway saying "not now" (HTTP 503 from admission control, with its reason and
Retry-After); ``ConnectFailed`` is every other way the websocket could not be opened;
``StreamClosed`` is the socket ending before the stream did, with the close code and reason.
"""

from __future__ import annotations

from streamer.errors import StreamerError

# Websocket close codes a stream can end with, for ``StreamClosed.code`` readers.
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
ABNORMAL_CLOSURE = 1006   # no close frame: the connection dropped
TRY_AGAIN_LATER = 1013


class ClientError(StreamerError):
    """Base of every error the client library raises; ``str()`` is one readable line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidURL(ClientError, ValueError):
    """The URL cannot name a gateway endpoint (not ws/wss/http/https, or no host)."""


class AudioFileError(ClientError, ValueError):
    """An audio file the client cannot read, or that needs an optional dependency."""


class ConnectFailed(ClientError):
    """The websocket could not be opened: nobody listening, a timeout, or an HTTP status other
    than 101 (``status``; 404 means the URL's path is not an endpoint)."""

    def __init__(self, message: str, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class Refused(ConnectFailed):
    """Admission control turned the session away (HTTP 503). ``reason`` is the gateway's short
    label (``not_ready``, ``max_sessions``, ``backlog``, ``memory``), ``message`` what a person
    reads, ``retry_after`` the seconds the gateway asks to wait (None if it did not say)."""

    def __init__(self, url: str, reason: str, message: str, retry_after: float | None) -> None:
        wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        super().__init__(f"refused by the gateway ({reason}): {message}{wait}", url, 503)
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


class StreamClosed(ClientError):
    """The socket closed before every channel of the stream had ended (or sending found it
    closed). ``code`` is the websocket close code (1006 when no close frame came), ``reason``
    the gateway's close reason, which repeats the last error event's message."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        code = ABNORMAL_CLOSURE if code is None else code
        text = f"the gateway closed the stream with code {code}"
        if code == ABNORMAL_CLOSURE:
            text = "the connection to the gateway was lost (close code 1006)"
        super().__init__(f"{text}: {reason}" if reason else text)
        self.code = code
        self.reason = reason
