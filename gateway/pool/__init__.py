"""Worker pools behind one interface, chosen by :func:`make_pool`."""

from __future__ import annotations

import os

from streamer.config import Config
from streamer.gateway.pool.base import Pool, PoolStats, WorkerInfo

AUTHKEY_ENV = "STREAMER_AUTHKEY"


def make_pool(config: Config, kind: str = "embedded", authkey: bytes | None = None) -> Pool:
    """``embedded``: worker processes (the default): ``pool.workers`` started by the gateway,
    plus attached workers at ``pool.worker_address`` if set (authkey from ``STREAMER_AUTHKEY``
    unless given); ``inline``/``thread``: the model in the gateway process, for baselines."""
    if kind == "embedded":
        from streamer.gateway.pool.supervisor import WorkerPool

        if authkey is None and os.environ.get(AUTHKEY_ENV):
            authkey = os.environ[AUTHKEY_ENV].encode()
        return WorkerPool(config, authkey)
    if kind in ("inline", "thread"):
        from streamer.gateway.pool.inline import InlinePool

        return InlinePool(config, mode=kind)
    raise ValueError(f"unknown pool kind {kind!r} (embedded, inline, thread)")


__all__ = ["Pool", "PoolStats", "WorkerInfo", "make_pool"]
