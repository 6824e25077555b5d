"""What a load test measured: per-stream records, the segment-coverage check, the summary report.

Kept apart from the runner so the checks (did every segment come back?) are plain functions over
events that tests can feed directly, and so benchmarks can format and merge reports.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# Event times are rounded to 6 decimals by the gateway; one 16 kHz sample is 62.5 us.
TIME_TOLERANCE = 1e-5


@dataclass(frozen=True, slots=True)
class Coverage:
    """How one channel's answered spans cover its stream.

    On ``/simple`` the spans must tile ``[0, end)`` exactly: ``lost`` counts the segments missing
    from the gaps (in units of ``segment_seconds``), ``duplicates`` the spans answered twice or
    overlapping. On ``/segmented`` only speech is answered, so gaps are expected and ``lost`` is
    None; overlapping final spans still count as duplicates.
    """

    answered: int
    expected: int | None
    lost: int | None
    duplicates: int


def check_coverage(spans: list[tuple[float, float]], end: float | None, segment_seconds: float,
                   contiguous: bool = True) -> Coverage:
    """Check answered ``(start, end)`` spans of one channel against the stream's end time."""
    ordered = sorted(spans)
    cursor, lost, duplicates = 0.0, 0, 0
    for start, stop in ordered:
        if start > cursor + TIME_TOLERANCE:
            lost += _segments_in(start - cursor, segment_seconds)
        elif start < cursor - TIME_TOLERANCE:
            duplicates += 1
        cursor = max(cursor, stop)
    if not contiguous:
        return Coverage(len(ordered), None, None, duplicates)
    if end is not None and end > cursor + TIME_TOLERANCE:
        lost += _segments_in(end - cursor, segment_seconds)
    expected = (math.ceil(end / segment_seconds - TIME_TOLERANCE)
                if end is not None and end > TIME_TOLERANCE else None)
    return Coverage(len(ordered), expected, lost, duplicates)


def _segments_in(gap: float, segment_seconds: float) -> int:
    return max(1, math.ceil(gap / segment_seconds - TIME_TOLERANCE))


@dataclass(slots=True)
class StreamRecord:
    """One stream (start ... stop) of one session, as the load tester saw it."""

    session: int
    audio_seconds: float = 0.0          # audio sent
    started: float = 0.0                # perf_counter of the first audio frame sent
    finished: float = 0.0               # perf_counter of the last event
    first_result: float | None = None   # seconds from the first audio sent to the first result
    finalization: list[float] = field(default_factory=list)  # per final result, seconds
    results: int = 0
    interim: int = 0
    errors: int = 0
    stream_errors: list[str] = field(default_factory=list)  # errors not about one segment
    expected: int | None = None
    lost: int | None = None
    duplicates: int = 0
    complete: bool = False              # every channel reported 'stopped'
    failure: str | None = None

    @property
    def realtime_factor(self) -> float | None:
        """Wall time from the first audio sent to the last event, over the audio's duration."""
        if self.audio_seconds <= 0 or self.finished <= self.started:
            return None
        return (self.finished - self.started) / self.audio_seconds


@dataclass(slots=True)
class SessionRecord:
    """One websocket: ``ok``, ``failed`` (with the reason) or ``refused`` (never served)."""

    index: int
    status: str = "ok"
    reason: str | None = None
    streams: list[StreamRecord] = field(default_factory=list)
    connect_error: Exception | None = None  # why a refused session was never served


@dataclass(frozen=True, slots=True)
class Percentiles:
    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: list[float]) -> Percentiles:
        if not values:
            return cls(0, None, None, None, None)
        a = np.asarray(values, dtype=np.float64)
        p50, p95, p99 = np.percentile(a, [50, 95, 99])
        return cls(len(values), float(p50), float(p95), float(p99), float(a.max()))


@dataclass(frozen=True, slots=True)
class LoadReport:
    """The summary of one load test run."""

    url: str
    sessions: int
    real_time: bool
    wall_seconds: float
    ok: int
    failed: int
    refused: int
    streams: int
    audio_seconds: float
    results: int
    interim_results: int
    errors: int
    expected_segments: int | None
    lost_segments: int | None
    duplicate_segments: int
    first_result: Percentiles
    finalization: Percentiles
    realtime_factor: Percentiles
    throughput_x_realtime: float
    results_per_second: float
    errors_per_second: float
    every_segment_came_back: bool
    failure_reasons: dict[str, int]
    stream_errors: dict[str, int]
    client_cpu_seconds: float = 0.0  # the load tester's own CPU, to tell its share of a machine
    machine_busy_cores: float | None = 0.0  # every process on the machine, averaged over the
    # run (None where neither psutil nor /proc/stat can tell)

    @property
    def passed(self) -> bool:
        return self.failed == 0 and self.refused == 0 and self.every_segment_came_back

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def summarize(url: str, real_time: bool, sessions: list[SessionRecord],
              wall_seconds: float, client_cpu_seconds: float = 0.0,
              machine_busy_cores: float | None = 0.0) -> LoadReport:
    streams = [s for sess in sessions for s in sess.streams]
    served = [s for sess in sessions if sess.status != "refused" for s in sess.streams]
    known = [s.lost for s in served if s.lost is not None]
    expected = [s.expected for s in served if s.expected is not None]
    lost = sum(known) if known else None
    duplicates = sum(s.duplicates for s in served)
    came_back = bool(served) and all(s.complete and (s.lost or 0) == 0 and s.duplicates == 0
                                     for s in served)
    results = sum(s.results for s in streams)
    errors = sum(s.errors for s in streams)
    wall = max(wall_seconds, 1e-9)
    rtf = [r for s in served if s.complete and (r := s.realtime_factor) is not None]
    return LoadReport(
        url=url, sessions=len(sessions), real_time=real_time, wall_seconds=wall_seconds,
        ok=sum(s.status == "ok" for s in sessions),
        failed=sum(s.status == "failed" for s in sessions),
        refused=sum(s.status == "refused" for s in sessions),
        streams=len(streams), audio_seconds=sum(s.audio_seconds for s in streams),
        results=results, interim_results=sum(s.interim for s in streams), errors=errors,
        expected_segments=sum(expected) if expected else None, lost_segments=lost,
        duplicate_segments=duplicates,
        first_result=Percentiles.of([s.first_result for s in streams
                                     if s.first_result is not None]),
        finalization=Percentiles.of([x for s in streams for x in s.finalization]),
        realtime_factor=Percentiles.of(rtf),
        throughput_x_realtime=sum(s.audio_seconds for s in served if s.complete) / wall,
        results_per_second=results / wall, errors_per_second=errors / wall,
        every_segment_came_back=came_back,
        failure_reasons=dict(Counter(s.reason or "?" for s in sessions if s.status != "ok")),
        stream_errors=dict(Counter(m for s in streams for m in s.stream_errors)),
        client_cpu_seconds=client_cpu_seconds, machine_busy_cores=machine_busy_cores)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.1f}"


def format_report(r: LoadReport) -> str:
    """The terminal table."""
    pace = "real time" if r.real_time else "as fast as possible"
    lost = "unknown (segmented)" if r.lost_segments is None else str(r.lost_segments)
    expected = "-" if r.expected_segments is None else str(r.expected_segments)
    lines = [
        f"load test: {r.sessions} sessions against {r.url}, {pace}, {r.wall_seconds:.1f} s",
        f"  sessions     ok {r.ok}   failed {r.failed}   refused {r.refused}   "
        f"(streams {r.streams}, audio {r.audio_seconds:.1f} s)",
        f"  segments     expected {expected}   results {r.results}   errors {r.errors}   "
        f"lost {lost}   duplicates {r.duplicate_segments}"
        + (f"   interim {r.interim_results}" if r.interim_results else ""),
        f"  every segment came back: {'yes' if r.every_segment_came_back else 'NO'}",
        "",
        f"  {'latency (ms)':<26}{'n':>7}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}",
    ]
    for name, p in (("first result", r.first_result), ("finalization", r.finalization)):
        lines.append(f"  {name:<26}{p.count:>7}{ms(p.p50):>9}{ms(p.p95):>9}{ms(p.p99):>9}"
                     f"{ms(p.max):>9}")
    f = r.realtime_factor
    fmt = (lambda v: "-" if v is None else f"{v:.3f}")  # noqa: E731
    lines += [
        f"  {'real-time factor (wall/audio)':<26}{f.count:>4}{fmt(f.p50):>9}{fmt(f.p95):>9}"
        f"{fmt(f.p99):>9}{fmt(f.max):>9}",
        "",
        f"  throughput {r.throughput_x_realtime:.2f} x real time   "
        f"results {r.results_per_second:.1f}/s   errors {r.errors_per_second:.2f}/s   "
        f"load tester CPU {r.client_cpu_seconds / max(r.wall_seconds, 1e-9):.2f} cores, "
        f"machine {'-' if r.machine_busy_cores is None else f'{r.machine_busy_cores:.2f}'} "
        "cores busy",
    ]
    for reason, n in sorted(r.failure_reasons.items(), key=lambda kv: -kv[1])[:5]:
        lines.append(f"  {n} session(s): {reason}")
    for message, n in sorted(r.stream_errors.items(), key=lambda kv: -kv[1])[:5]:
        lines.append(f"  {n} error event(s) without a segment: {message}")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Probe:
    """One step of a capacity search."""

    sessions: int
    passed: bool
    why: str
    report: LoadReport


@dataclass(frozen=True, slots=True)
class CapacityReport:
    target_p99: float
    capacity: int
    probes: list[Probe]
    max_sessions: int | None = None  # the search's upper bound

    @property
    def bound_reached(self) -> bool:
        """The bound passed: the real capacity is at least this, maybe more."""
        return self.max_sessions is not None and self.capacity >= self.max_sessions

    def to_dict(self) -> dict[str, Any]:
        return {"target_p99": self.target_p99, "capacity": self.capacity,
                "max_sessions": self.max_sessions, "bound_reached": self.bound_reached,
                "probes": [{"sessions": p.sessions, "passed": p.passed, "why": p.why,
                            "report": p.report.to_dict()} for p in self.probes]}


def format_capacity(c: CapacityReport) -> str:
    lines = [f"capacity search: finalization p99 target {c.target_p99 * 1e3:.0f} ms",
             f"  {'sessions':>8}{'result':>8}{'fin p50':>10}{'fin p99':>10}{'lost':>6}"
             f"{'failed':>8}  why"]
    for p in c.probes:
        r = p.report
        lines.append(f"  {p.sessions:>8}{'pass' if p.passed else 'FAIL':>8}"
                     f"{ms(r.finalization.p50):>10}{ms(r.finalization.p99):>10}"
                     f"{'-' if r.lost_segments is None else r.lost_segments:>6}"
                     f"{r.failed + r.refused:>8}  {p.why}")
    if c.bound_reached:
        lines.append(f"  capacity: at least {c.capacity} (bound reached) real-time sessions; "
                     "raise --max-sessions to search further")
    else:
        lines.append(f"  capacity: {c.capacity} real-time sessions")
    return "\n".join(lines)
