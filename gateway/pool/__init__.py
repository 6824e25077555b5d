"""Worker pools behind one interface, chosen by :func:`make_pool`."""

from __future__ import annotations

from streamer.config import Config
from streamer.gateway.pool.base import Job, Pool, PoolStats, WorkerInfo


def make_pool(config: Config, kind: str = "embedded") -> Pool:
    """``embedded``: worker processes (the default): ``pool.workers`` started by the gateway,
    or, when ``pool.nats_url`` is set, the workers of that NATS server (``streamer-worker
    --nats``), shared with other gateways; ``inline``/``thread``: the model in the gateway
    process, for baselines."""
    if kind == "embedded" and config.pool.nats_url:
        from streamer.gateway.pool.nats import NatsPool

        return NatsPool(config)
    if kind == "embedded":
        from streamer.gateway.pool.supervisor import WorkerPool

        return WorkerPool(config)
    if kind in ("inline", "thread"):
        from streamer.gateway.pool.inline import InlinePool

        return InlinePool(config, mode=kind)
    raise ValueError(f"unknown pool kind {kind!r} (embedded, inline, thread)")


__all__ = ["Job", "Pool", "PoolStats", "WorkerInfo", "make_pool"]
