"""Worker pools behind one interface, chosen by :func:`make_pool`."""

from __future__ import annotations

from streamer.config import Config, authkey_from_env
from streamer.gateway.pool.base import Job, Pool, PoolStats, WorkerInfo


def make_pool(config: Config, kind: str = "embedded", authkey: bytes | None = None) -> Pool:
    """``embedded``: worker processes (the default): ``pool.workers`` started by the gateway,
    plus attached workers at ``pool.worker_address`` if set (authkey from ``STREAMER_AUTHKEY``
    unless given), or, when ``pool.nats_url`` is set, only the workers of that NATS server
    (``streamer-worker --nats``); ``inline``/``thread``: the model in the gateway process, for
    baselines."""
    if kind == "embedded" and config.pool.nats_url:
        from streamer.gateway.pool.nats import NatsPool

        return NatsPool(config)
    if kind == "embedded":
        from streamer.gateway.pool.supervisor import WorkerPool

        return WorkerPool(config, authkey if authkey is not None else authkey_from_env())
    if kind in ("inline", "thread"):
        from streamer.gateway.pool.inline import InlinePool

        return InlinePool(config, mode=kind)
    raise ValueError(f"unknown pool kind {kind!r} (embedded, inline, thread)")


__all__ = ["Job", "Pool", "PoolStats", "WorkerInfo", "make_pool"]
