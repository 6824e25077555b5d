"""``streamer-loadtest --find-capacity --plot FILE.png``: latency percentiles against sessions.

matplotlib is the ``bench`` extra; it is imported only here, and :func:`require_matplotlib`
checks for it before a long search starts rather than after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamer.loadtest_report import CapacityReport

BENCH_EXTRA = "pip install 'streamer-audio-gateway[bench]'"


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


def require_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(f"--plot needs matplotlib (the 'bench' extra: {BENCH_EXTRA})") \
            from None
    matplotlib.use("Agg")  # a file, no display
    import matplotlib.pyplot as plt

    return plt


def plot_capacity(cap: CapacityReport, path: str | Path) -> None:
    """Finalization p50/p95/p99 and first-result p50 per probe, the target, failed probes
    marked, the capacity found as a vertical line."""
    plt = require_matplotlib()
    probes = sorted(cap.probes, key=lambda p: p.sessions)
    x = [p.sessions for p in probes]

    def series(get: Any) -> list[float]:
        return [float("nan") if (v := get(p.report)) is None else v * 1e3 for p in probes]

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for label, get, style in (
            ("finalization p50", lambda r: r.finalization.p50, "o-"),
            ("finalization p95", lambda r: r.finalization.p95, "s-"),
            ("finalization p99", lambda r: r.finalization.p99, "^-"),
            ("first result p50", lambda r: r.first_result.p50, "d--")):
        ax.plot(x, series(get), style, label=label, markersize=4)
    failed = [p for p in probes if not p.passed]
    if failed:
        ax.plot([p.sessions for p in failed],
                [(p.report.finalization.p99 or 0.0) * 1e3 for p in failed], "x",
                color="red", markersize=10, mew=2, label="probe failed")
    ax.axhline(cap.target_p99 * 1e3, color="gray", linestyle=":",
               label=f"p99 target {cap.target_p99 * 1e3:.0f} ms")
    if cap.capacity:
        what = f"at least {cap.capacity}" if cap.bound_reached else str(cap.capacity)
        ax.axvline(cap.capacity, color="green", alpha=0.5, label=f"capacity {what}")
    ax.set_xlabel("concurrent real-time sessions")
    ax.set_ylabel("latency (ms)")
    ax.set_title("capacity search: latency against sessions")
    if x and max(x) / max(min(x), 1) >= 8:
        ax.set_xscale("log", base=2)
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)
