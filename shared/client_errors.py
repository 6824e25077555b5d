"""The errors the client library raises: every failure of a stream as one of these types, so an
application catches ``streamer.client.ClientError`` and never an aiohttp exception.

``Refused`` is the gateway turning the session away with a JSON reason: "not now" (HTTP 503 from
admission control, with Retry-After) or, as its subclasses, the access controls' 401
(``Unauthorized``), 403 (``Forbidden``) and 429 (``RateLimited``); ``ConnectFailed`` is every
other way the websocket could not be opened;
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
    """The gateway turned the session away before the upgrade, with an HTTP status (``status``),
    its short label (``reason``: ``max_sessions``, ``invalid_key``, ...), what a person reads
    (``message``) and the seconds it asks to wait (``retry_after``, None if it did not say).

    A plain ``Refused`` is admission control's 503 ("not now"); the subclasses below are the
    access controls' answers. Only 503 and 429 are worth retrying (:attr:`retryable`).
    """

    def __init__(self, url: str, reason: str, message: str, retry_after: float | None,
                 status: int = 503) -> None:
        wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        what = reason if status == 503 else f"{reason}, HTTP {status}"
        super().__init__(f"refused by the gateway ({what}): {message}{wait}", url, status)
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Waiting may help: the gateway is busy (503) or the key is over its limits (429)."""
        return self.status in (503, 429)


class Unauthorized(Refused):
    """HTTP 401: no credential, or an API key or token the gateway does not accept (``reason``:
    ``missing_credentials``, ``invalid_key``, ``invalid_token``, ``token_expired``, ...)."""


class Forbidden(Refused):
    """HTTP 403: the gateway does not accept websockets from this ``Origin``."""


class RateLimited(Refused):
    """HTTP 429: the API key is over its own limits (``max_sessions`` for the key, or its audio
    seconds per minute); ``retry_after`` says when to come back."""


REFUSALS: dict[int, type[Refused]] = {503: Refused, 401: Unauthorized, 403: Forbidden,
                                      429: RateLimited}


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
