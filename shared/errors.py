"""Error types shared by the gateway, the workers and clients.

Two levels, carried as data: errors that end a stream (they know their websocket close code) and
errors about one segment (the stream goes on and the client gets an ``error`` event).
"""

from __future__ import annotations

POLICY_VIOLATION = 1008  # the websocket close code (RFC 6455); workers do not import aiohttp


class StreamerError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(StreamerError):
    """A configuration value is missing, unknown or out of range."""


class ProtocolError(StreamerError):
    """The client broke the protocol; ``close_code`` says how the socket ends if it must."""

    def __init__(self, message: str, close_code: int = POLICY_VIOLATION) -> None:
        super().__init__(message)
        self.message = message
        self.close_code = int(close_code)


class WireError(StreamerError):
    """A gateway<->worker envelope could not be decoded or failed validation."""


class ModelError(StreamerError):
    """The model failed on one segment; the worker lives on and reports it."""


class OutputError(StreamerError):
    """A model's output cannot be sent as JSON (a set, bytes, an object): an error for that
    segment, never a crashed worker."""


class PoolUnavailable(StreamerError):
    """No worker can take work (none started, or all keep failing to boot)."""
