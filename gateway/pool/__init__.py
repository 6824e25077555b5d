"""Worker pools behind one interface, chosen by :func:`make_pool`."""

from __future__ import annotations

from gateway.pool.base import Pool, PoolStats, WorkerInfo
from shared.config import Config


def make_pool(config: Config, kind: str = "embedded") -> Pool:
    """``embedded``: worker processes (the default); ``inline``/``thread``: baselines."""
    if kind == "embedded":
        from gateway.pool.embedded import EmbeddedPool

        return EmbeddedPool(config)
    if kind in ("inline", "thread"):
        from gateway.pool.inline import InlinePool

        return InlinePool(config, mode=kind)
    raise ValueError(f"unknown pool kind {kind!r} (embedded, inline, thread)")


__all__ = ["Pool", "PoolStats", "WorkerInfo", "make_pool"]
