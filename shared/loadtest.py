"""``streamer-loadtest``: many concurrent sessions against a running gateway, and what came back.

Each session opens a websocket and streams a clip (a WAV file or generated speech-like audio),
paced like a live source (a frame is sent once it has been "captured") or as fast as possible;
with ``--duration`` every session keeps starting new streams on its socket until time is up. For
every result it records the first-result latency and the finalization latency: the result's
arrival minus the moment the client sent the audio byte at the segment's ``end_time``. At the end
it checks that every segment came back (on ``/simple`` the answered spans of each channel must
tile the stream without gaps or overlaps) and prints a table, or JSON with ``--json``.

``--find-capacity`` repeats bounded real-time runs, doubling then bisecting the number of
sessions, to find the largest count that keeps the finalization p99 under a target with no lost
segments and no failed sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from streamer.cli_common import (
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    add_auth_options,
    add_common_options,
    check_common_options,
    connect_auth,
    error_text,
    exit_code_for,
    fail,
    resolve_url,
)
from streamer.client import StreamerClient, client_session
from streamer.client_audio import pcm_bytes, read_audio, sample_format
from streamer.client_errors import TRY_AGAIN_LATER, ClientError, ConnectFailed, Refused
from streamer.loadtest_progress import LiveCounters, Progress
from streamer.loadtest_report import (
    CapacityReport,
    LoadReport,
    Probe,
    SessionRecord,
    StreamRecord,
    check_coverage,
    format_capacity,
    format_report,
    summarize,
)
from streamer.protocol import AudioFormat, ErrorEvent, SegmentEvent, StoppedEvent

PROG = "streamer-loadtest"


@dataclass(frozen=True, slots=True)
class LoadSettings:
    url: str
    fmt: AudioFormat
    audio: bytes = field(repr=False)  # one clip, interleaved PCM in ``fmt``
    sessions: int = 1
    real_time: bool = True
    chunk_seconds: float = 0.1        # audio per websocket frame
    ramp_up: float = 0.0              # sessions start evenly spread over this many seconds
    duration: float | None = None     # keep streaming until then (None: ``streams`` clips)
    streams: int = 1
    drain_timeout: float = 30.0       # after 'stop', how long to wait for every result
    connect_timeout: float = 10.0
    # api_key / token / ssl for StreamerClient.connect; kept out of repr so no key is printed
    auth: Mapping[str, Any] = field(default_factory=dict, repr=False)
    interim_results: bool = False
    segment_seconds: float = 0.5      # the gateway's session.chunk_seconds, for expected counts

    @property
    def contiguous(self) -> bool:
        """Results tile the whole stream on /simple; /segmented only answers speech."""
        return "segmented" not in urlsplit(self.url).path

    @property
    def expected_seconds(self) -> float | None:
        """How long a run should take (None when sending as fast as possible)."""
        if self.duration is not None:  # every session stops at the same deadline
            return self.duration
        if not self.real_time:
            return None
        clip = len(self.audio) / (self.fmt.frame_bytes * self.fmt.sample_rate)
        return self.ramp_up + clip * self.streams


# ---- audio ---------------------------------------------------------------------------------

def generate_audio(fmt: AudioFormat, seconds: float, seed: int = 0) -> bytes:
    """Speech-like test audio: 2 s of a voiced, amplitude-modulated harmonic tone, then 1 s of
    faint noise, repeated; each channel at its own pitch. Voice-activity detectors find it."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fmt.sample_rate))
    t = np.arange(n) / fmt.sample_rate
    voiced = (t % 3.0) < 2.0
    chans = []
    for c in range(fmt.channels):
        f0 = 140.0 + 30.0 * c
        tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
        x = np.where(voiced, 0.15 * tone * envelope, 0.0) + 0.003 * rng.standard_normal(n)
        chans.append(x)
    return pcm_bytes(np.stack(chans, axis=1), fmt)


# ---- one stream, one session, many sessions --------------------------------------------------

class _Stream:
    """Sends one clip on an open socket and files every event it brings back."""

    def __init__(self, client: StreamerClient, settings: LoadSettings, record: StreamRecord,
                 live: LiveCounters, deadline: float | None) -> None:
        self.client = client
        self.s = settings
        self.rec = record
        self.live = live
        self.deadline = deadline
        fmt = settings.fmt
        self.bytes_per_second = fmt.frame_bytes * fmt.sample_rate
        self.chunk = fmt.frame_bytes * max(1, round(settings.chunk_seconds * fmt.sample_rate))
        self.sent_ends: list[int] = []   # byte offset at the end of each frame sent ...
        self.sent_at: list[float] = []   # ... and when it was sent
        self.spans: list[list[tuple[float, float]]] = [[] for _ in range(fmt.channels)]
        self.stopped: dict[int, float] = {}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await self.client.start(self.s.fmt, interim_results=self.s.interim_results)
        sender: asyncio.Task[None] | None = None
        try:
            async with asyncio.timeout(None) as limit:
                sender = asyncio.create_task(self._send(limit, loop))
                async for event in self.client.events():
                    self._on_event(event, time.perf_counter())
        except TimeoutError:
            self.rec.failure = (f"not every result within {self.s.drain_timeout:g} s of "
                                "'stop' (drain timeout)")
        finally:
            if sender is not None:
                if not sender.done():
                    sender.cancel()
                await asyncio.wait([sender])
                exc = None if sender.cancelled() else sender.exception()
                if exc is not None and self.rec.failure is None:
                    self.rec.failure = f"sending failed: {type(exc).__name__}: {exc}"
        self._finish()

    async def _send(self, limit: asyncio.Timeout, loop: asyncio.AbstractEventLoop) -> None:
        data, chunk = self.s.audio, self.chunk
        t0 = time.perf_counter()
        for offset in range(0, len(data), chunk):
            end = min(offset + chunk, len(data))
            if self.s.real_time:
                # a live source sends a frame once it has been captured
                delay = t0 + end / self.bytes_per_second - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if offset and self.deadline is not None and time.perf_counter() >= self.deadline:
                break
            await self.client.send_audio(data[offset:end])
            now = time.perf_counter()
            if not self.sent_ends:
                self.rec.started = now
            self.sent_ends.append(end)
            self.sent_at.append(now)
        self.rec.audio_seconds = (self.sent_ends[-1] if self.sent_ends else 0) \
            / self.bytes_per_second
        await self.client.stop(disconnect=False)
        limit.reschedule(loop.time() + self.s.drain_timeout)

    def _sent_time(self, end_time: float) -> float | None:
        """When the frame holding the audio at ``end_time`` (stream seconds) was sent."""
        if not self.sent_at:
            return None
        byte = math.ceil(end_time * self.s.fmt.sample_rate - 1e-6) * self.s.fmt.frame_bytes
        i = bisect.bisect_left(self.sent_ends, byte)
        return self.sent_at[min(i, len(self.sent_at) - 1)]  # a resampler tail: the last frame

    def _on_event(self, event: object, now: float) -> None:
        rec, live = self.rec, self.live
        rec.finished = now
        if isinstance(event, SegmentEvent):
            if rec.first_result is None and rec.started:
                rec.first_result = now - rec.started
            if event.is_final is False:
                rec.interim += 1
                return
            rec.results += 1
            live.results += 1
            self._span(event.channel, event.start_time, event.end_time)
            sent = self._sent_time(event.end_time)
            if sent is not None:
                rec.finalization.append(now - sent)
                live.recent.append(now - sent)
        elif isinstance(event, ErrorEvent):
            rec.errors += 1
            live.errors += 1
            if event.start_time is not None and event.end_time is not None:
                if event.is_final is not False:
                    self._span(event.channel, event.start_time, event.end_time)
            else:
                rec.stream_errors.append(event.message)
        elif isinstance(event, StoppedEvent):
            self.stopped[event.channel] = event.time

    def _span(self, channel: int, start: float, end: float) -> None:
        if 0 <= channel < len(self.spans):
            self.spans[channel].append((start, end))
        else:
            self.rec.stream_errors.append(f"result for unknown channel {channel}")

    def _finish(self) -> None:
        rec = self.rec
        channels = self.s.fmt.channels
        rec.complete = len(self.stopped) == channels
        if not rec.complete and rec.failure is None:
            rec.failure = f"socket closed mid-stream (close code {self.client.close_code})"
        expected: list[int] = []
        lost: list[int] = []
        for channel in range(channels):
            end = self.stopped.get(channel, rec.audio_seconds)
            cov = check_coverage(self.spans[channel], end, self.s.segment_seconds,
                                 self.s.contiguous)
            rec.duplicates += cov.duplicates
            if cov.expected is not None:
                expected.append(cov.expected)
            if cov.lost is not None:
                lost.append(cov.lost)
        rec.expected = sum(expected) if self.s.contiguous else None
        rec.lost = sum(lost) if self.s.contiguous else None


async def _run_session(index: int, s: LoadSettings, http: aiohttp.ClientSession,
                       live: LiveCounters, start_at: float,
                       deadline: float | None) -> SessionRecord:
    rec = SessionRecord(index)
    delay = start_at - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    try:
        client = await StreamerClient.connect(s.url, session=http, **s.auth,
                                              connect_timeout=s.connect_timeout)
    except Refused as exc:
        return _refused(rec, live, f"refused ({exc.reason}): {exc.message}", exc)
    except ConnectFailed as exc:
        return _refused(rec, live, f"cannot connect: {exc}", exc)
    live.active += 1
    try:
        while True:
            stream = StreamRecord(index)
            rec.streams.append(stream)
            try:
                await _Stream(client, s, stream, live, deadline).run()
            except ClientError as exc:
                stream.failure = str(exc)
            if stream.failure is not None:
                break
            if deadline is not None:
                if time.perf_counter() >= deadline:
                    break
            elif len(rec.streams) >= s.streams:
                break
    finally:
        live.active -= 1
        with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
            await client.close()
    first = rec.streams[0]
    failure = next((st.failure for st in rec.streams if st.failure), None)
    if failure is not None and client.close_code == TRY_AGAIN_LATER and first.results == 0:
        return _refused(rec, live, "closed with 1013 (try again later)")
    problems = [st for st in rec.streams if (st.lost or 0) or st.duplicates]
    if failure is not None:
        rec.status, rec.reason = "failed", failure
    elif problems:
        rec.status = "failed"
        rec.reason = "segments lost or answered twice"
    if rec.status == "ok":
        live.ok += 1
    else:
        live.failed += 1
    return rec


def _refused(rec: SessionRecord, live: LiveCounters, reason: str,
             error: Exception | None = None) -> SessionRecord:
    rec.status, rec.reason, rec.connect_error = "refused", reason, error
    live.refused += 1
    return rec


async def run_load(s: LoadSettings,
                   progress: Callable[[LiveCounters], None] | None = None,
                   progress_interval: float = 0.5, raise_unserved: bool = False) -> LoadReport:
    """Run ``s.sessions`` sessions to the end and summarize them. With ``raise_unserved``, a run
    where no session could even connect raises the first session's :class:`ClientError`
    (the gateway is down, the URL wrong, or every session refused) instead of reporting."""
    if s.sessions < 1:
        raise ValueError("sessions must be at least 1")
    live = LiveCounters()
    t0, cpu0, busy0 = time.perf_counter(), time.process_time(), _busy_seconds()
    deadline = t0 + s.duration if s.duration is not None else None
    step = s.ramp_up / s.sessions if s.sessions > 1 else 0.0
    connector = aiohttp.TCPConnector(limit=0)
    async with client_session(connector=connector) as http:
        tasks = [asyncio.create_task(_run_session(i, s, http, live, t0 + i * step, deadline))
                 for i in range(s.sessions)]
        ticker = (asyncio.create_task(_tick(live, progress, progress_interval))
                  if progress is not None else None)
        try:
            records = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
    if progress is not None:
        progress(live)
    errors = [r.connect_error for r in records]
    if raise_unserved and all(isinstance(e, ClientError) for e in errors):
        raise errors[0]  # type: ignore[misc]
    wall = time.perf_counter() - t0
    busy1 = _busy_seconds()
    busy = None if busy0 is None or busy1 is None else (busy1 - busy0) / max(wall, 1e-9)
    return summarize(s.url, s.real_time, list(records), wall, time.process_time() - cpu0, busy)


def _busy_seconds() -> float | None:
    """CPU seconds every process on the machine has used since boot (all cores): psutil if it
    is installed (the server extra has it), else Linux's /proc/stat, else unknown."""
    try:
        import psutil
    except ImportError:
        try:
            with open("/proc/stat") as f:
                fields = f.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu":
            return None
        # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
        ticks = [int(v) for v in fields[1:9]]
        busy_ticks = sum(ticks) - ticks[3] - ticks[4]
        return busy_ticks / _clock_ticks()
    t = psutil.cpu_times()
    return float(t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0)
                 + getattr(t, "softirq", 0.0))


def _clock_ticks() -> int:
    import os

    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100


async def _tick(live: LiveCounters, progress: Callable[[LiveCounters], None],
                interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        progress(live)


# ---- capacity search -----------------------------------------------------------------------

def judge(report: LoadReport, target_p99: float) -> tuple[bool, str]:
    """Did a real-time run hold: nobody failed, nothing lost, finalization p99 under target?"""
    if report.refused or report.failed:
        return False, f"{report.failed} failed, {report.refused} refused"
    if not report.every_segment_came_back:
        return False, f"segments lost ({report.lost_segments}) or answered twice"
    p99 = report.finalization.p99
    if p99 is None:
        return False, "no results"
    if p99 > target_p99:
        return False, f"p99 {p99 * 1e3:.0f} ms over the target"
    return True, f"p99 {p99 * 1e3:.0f} ms within the target"


async def find_capacity(s: LoadSettings, target_p99: float, start: int = 1,
                        max_sessions: int = 256,
                        on_probe: Callable[[Probe], None] | None = None,
                        progress: Callable[[LiveCounters], None] | None = None,
                        on_probe_start: Callable[[int, int, int], None] | None = None,
                        raise_unserved: bool = False) -> CapacityReport:
    """Double from ``start`` until a run fails, then bisect: the largest passing count.

    ``on_probe_start(k, about, sessions)`` is called before probe ``k`` of (at most) ``about``."""
    if not s.real_time:
        raise ValueError("capacity is measured in real-time sessions; do not use --fast")
    lo, hi = 0, max_sessions + 1
    n = max(1, min(start, max_sessions))
    probes: list[Probe] = []
    while True:
        if on_probe_start is not None:
            on_probe_start(len(probes) + 1, len(probes) + probes_left(lo, hi, n, max_sessions),
                           n)
        report = await run_load(dataclasses.replace(s, sessions=n), progress,
                                raise_unserved=raise_unserved and not probes)
        ok, why = judge(report, target_p99)
        probe = Probe(n, ok, why, report)
        probes.append(probe)
        if on_probe is not None:
            on_probe(probe)
        lo, hi, following = next_probe(lo, hi, n, ok, max_sessions)
        if following is None:
            break
        n = following
    return CapacityReport(target_p99, lo, probes, max_sessions)


def next_probe(lo: int, hi: int, n: int, passed: bool,
               max_sessions: int) -> tuple[int, int, int | None]:
    """One step of the search: the new (largest passing, smallest failing) bounds and the next
    count to probe, None when the search is over. It doubles while nothing has failed, then
    bisects."""
    lo, hi = (n, hi) if passed else (lo, n)
    if hi - lo <= 1:
        return lo, hi, None
    following = min(n * 2, hi - 1) if hi > max_sessions and passed else (lo + hi) // 2
    return lo, hi, (following if following > lo else None)


def probes_left(lo: int, hi: int, n: int, max_sessions: int) -> int:
    """At most how many probes the search still runs, the one at ``n`` included: while no probe
    has failed it doubles (up to ``max_sessions``), then it bisects the open interval."""
    if hi <= max_sessions:  # bisecting
        return 1 + max(_bisections(n, hi), _bisections(lo, n))
    if_fails = 1 + _bisections(lo, n)
    if n >= max_sessions:
        return if_fails
    return max(if_fails, 1 + probes_left(n, hi, min(n * 2, max_sessions), max_sessions))


def _bisections(lo: int, hi: int) -> int:
    """Probes to settle an open interval (lo passed, hi failed) in the worst case."""
    return 0 if hi - lo <= 1 else math.ceil(math.log2(hi - lo))


# ---- command line --------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, epilog=EXIT_CODES + " (1 also when a session failed or a segment was lost)",
        description="Run many concurrent streaming sessions against a gateway and report "
                    "latency, throughput and whether every segment came back.")
    p.add_argument("-i", "--input", metavar="FILE",
                   help="audio file to stream (default: generated speech-like audio)")
    add_common_options(p, real_time_default=True)
    add_auth_options(p)
    p.add_argument("-n", "--sessions", type=int, default=10,
                   help="concurrent sessions (default %(default)s; the first probe with "
                        "--find-capacity)")
    p.add_argument("--ramp-up", type=float, default=1.0,
                   help="start the sessions evenly over this many seconds (default %(default)s)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="length of the generated clip (default %(default)s)")
    p.add_argument("--channels", type=int, default=1, help="generated audio channels")
    p.add_argument("--sample-rate", type=int, default=16000, help="generated audio rate, Hz")
    p.add_argument("--duration", type=float,
                   help="keep every session streaming (clip after clip) for this many seconds")
    p.add_argument("--streams", type=int, default=1,
                   help="clips per session without --duration (default %(default)s)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds to wait for a stream's results after 'stop' (default "
                        "%(default)s)")
    p.add_argument("--segment-seconds", type=float, default=0.5,
                   help="the gateway's session.chunk_seconds, for expected segment counts "
                        "(default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress on stderr: a line fitted to the terminal, or a plain line "
                        "every few seconds when stderr is not a terminal (default: on)")
    p.add_argument("--progress-every", type=float, default=5.0, metavar="SECONDS",
                   help="seconds between plain progress lines (default %(default)g)")
    cap = p.add_argument_group("capacity search")
    cap.add_argument("--find-capacity", action="store_true",
                     help="search the largest number of real-time sessions meeting the target")
    cap.add_argument("--target-p99-ms", type=float, default=1000.0,
                     help="finalization latency p99 target, ms (default %(default)s)")
    cap.add_argument("--max-sessions", type=int, default=256,
                     help="upper bound of the search (default %(default)s)")
    cap.add_argument("--plot", metavar="FILE.png",
                     help="draw latency percentiles against sessions (needs matplotlib, the "
                          "'bench' extra)")
    return p


def settings_from_args(args: argparse.Namespace, url: str,
                       auth: Mapping[str, Any] | None = None) -> LoadSettings:
    if args.input:
        clip = read_audio(args.input, args.sample_format)
        fmt, audio = clip.format, clip.data
    else:
        fmt = sample_format(args.sample_format or "s16", args.channels, args.sample_rate)
        fmt.validate()
        audio = generate_audio(fmt, args.seconds)
    if not audio:
        raise ValueError(f"{args.input}: the file has no audio")
    duration = args.duration
    if args.find_capacity and duration is None:
        duration = 20.0
    return LoadSettings(url=url, fmt=fmt, audio=audio, sessions=args.sessions,
                        real_time=args.real_time, chunk_seconds=args.chunk_ms / 1000.0,
                        ramp_up=args.ramp_up, duration=duration, streams=args.streams,
                        drain_timeout=args.drain_timeout,
                        interim_results=args.interim_results,
                        segment_seconds=args.segment_seconds, auth=dict(auth or {}))


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    check_common_options(p, args)
    for name in ("sessions", "streams", "channels", "max_sessions"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("seconds", "drain_timeout", "segment_seconds", "target_p99_ms",
                 "progress_every"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.ramp_up < 0:
        p.error("--ramp-up must not be negative")
    if args.duration is not None and args.duration <= 0:
        p.error("--duration must be positive")
    if args.find_capacity and not args.real_time:
        p.error("--find-capacity measures real-time sessions; drop --fast")
    if args.plot and not args.find_capacity:
        p.error("--plot draws a capacity search; add --find-capacity")


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    if args.plot:
        from streamer.loadtest_plot import PlotUnavailable, require_matplotlib

        try:
            require_matplotlib()  # before a search that may take many minutes
        except PlotUnavailable as exc:
            fail(PROG, str(exc), EXIT_USAGE)
    try:
        url = resolve_url(args.addr, args.endpoint)
    except ClientError as exc:
        fail(PROG, f"bad --addr: {exc}", EXIT_USAGE)
    try:
        settings = settings_from_args(args, url, connect_auth(args, url, PROG))
    except OSError as exc:
        fail(PROG, f"cannot read {args.input}: {exc.strerror or exc}", EXIT_USAGE)
    except ValueError as exc:
        fail(PROG, str(exc), EXIT_USAGE)
    progress = (Progress(sys.stderr, live=sys.stderr.isatty(), every=args.progress_every)
                if args.progress else None)
    try:
        if args.find_capacity:
            cap = asyncio.run(_search(args, settings, progress))
            if args.plot:
                from streamer.loadtest_plot import plot_capacity

                plot_capacity(cap, args.plot)
                print(f"{PROG}: wrote {args.plot}", file=sys.stderr)
            print(json.dumps(cap.to_dict(), indent=2) if args.json else format_capacity(cap))
            raise SystemExit(EXIT_OK if cap.capacity > 0 else EXIT_FAILED)
        if progress is not None:
            progress.begin(settings.expected_seconds)
        report = asyncio.run(run_load(settings, progress, raise_unserved=True))
    except ClientError as exc:
        if progress is not None:
            progress.finish()
        fail(PROG, f"no session could connect: {error_text(exc)}", exit_code_for(exc))
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None
    if progress is not None:
        progress.finish()
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    raise SystemExit(EXIT_OK if report.passed else EXIT_FAILED)


async def _search(args: argparse.Namespace, settings: LoadSettings,
                  progress: Progress | None) -> CapacityReport:
    about = 0

    def on_probe_start(k: int, estimate: int, sessions: int) -> None:
        nonlocal about
        about = estimate
        if progress is not None:
            progress.begin(settings.expected_seconds,
                           f"probe {k} of about {estimate}, {_sessions(sessions)}")

    def on_probe(probe: Probe) -> None:
        if progress is not None:
            progress.finish()
        print(f"probe {len(cap_probes) + 1} of about {about}: {_sessions(probe.sessions)} "
              f"{'pass' if probe.passed else 'FAIL'} ({probe.why})", file=sys.stderr,
              flush=True)
        cap_probes.append(probe)

    cap_probes: list[Probe] = []
    return await find_capacity(settings, args.target_p99_ms / 1000.0, start=args.sessions,
                               max_sessions=args.max_sessions, on_probe=on_probe,
                               progress=progress, on_probe_start=on_probe_start,
                               raise_unserved=True)


def _sessions(n: int) -> str:
    return f"{n} session" if n == 1 else f"{n} sessions"


if __name__ == "__main__":
    main()
