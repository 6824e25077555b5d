"""streamer-loadtest against real gateways with real worker processes, and its coverage check."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from dataclasses import replace

import pytest

from streamer.client_errors import ConnectFailed
from streamer.loadtest import (
    LoadSettings,
    find_capacity,
    generate_audio,
    judge,
    next_probe,
    probes_left,
    run_load,
)
from streamer.loadtest_report import check_coverage, format_capacity, format_report
from streamer.protocol import AudioFormat

SIMPLE = "/api/v1/simple"
MONO16K = AudioFormat()


def settings(url: str, fmt: AudioFormat = MONO16K, seconds: float = 1.3,
             **kw: object) -> LoadSettings:
    return LoadSettings(url=url, fmt=fmt, audio=generate_audio(fmt, seconds),
                        **kw)  # type: ignore[arg-type]


# ---- the coverage check on its own ---------------------------------------------------------

def test_spans_that_tile_the_stream_lose_nothing():
    cov = check_coverage([(0.5, 1.0), (0.0, 0.5), (1.0, 1.3)], 1.3, 0.5)
    assert (cov.answered, cov.expected, cov.lost, cov.duplicates) == (3, 3, 0, 0)


def test_a_gap_and_a_missing_tail_count_as_lost_segments():
    cov = check_coverage([(0.0, 0.5), (1.5, 2.0)], 3.2, 0.5)
    assert cov.expected == 7
    assert cov.lost == 2 + 3  # [0.5, 1.5) and [2.0, 3.2)


def test_an_answer_twice_is_a_duplicate():
    cov = check_coverage([(0.0, 0.5), (0.0, 0.5), (0.5, 1.0)], 1.0, 0.5)
    assert cov.duplicates == 1 and cov.lost == 0


def test_segmented_spans_may_leave_gaps_but_not_overlap():
    cov = check_coverage([(0.3, 1.1), (2.0, 2.4), (2.2, 2.6)], 3.0, 0.5, contiguous=False)
    assert cov.lost is None and cov.expected is None and cov.duplicates == 1


# ---- against a gateway ---------------------------------------------------------------------

async def test_real_time_sessions_all_come_back_with_latencies(gateway):
    server = await gateway(workers=2, model__constant_factor=0.05, model__mode="sleep")
    s = settings(str(server.make_url(SIMPLE)), sessions=3, ramp_up=0.3)
    report = await run_load(s)
    assert (report.ok, report.failed, report.refused) == (3, 0, 0)
    assert report.every_segment_came_back and report.passed
    assert report.expected_segments == report.results == 3 * 3  # ceil(1.3 / 0.5) each
    assert report.lost_segments == 0 and report.errors == 0
    fin = report.finalization
    assert fin.count == 9 and 0 < fin.p50 <= fin.p99 < 2.0  # type: ignore[operator]
    # the first result waits for a whole 0.5 s segment to be captured
    assert 0.35 < report.first_result.p50 < 2.0  # type: ignore[operator]
    assert report.realtime_factor.p50 == pytest.approx(1.0, abs=0.5)
    text = format_report(report)
    assert "every segment came back: yes" in text and "finalization" in text


async def test_as_fast_as_possible_stereo_resampled_and_several_streams_per_socket(gateway):
    server = await gateway(workers=2)
    fmt = AudioFormat(channels=2, sample_rate=44100, bit_depth=32, is_float=True)
    s = settings(str(server.make_url(SIMPLE)), fmt, seconds=1.1, sessions=2, real_time=False,
                 streams=3, chunk_seconds=0.037)
    report = await run_load(s)
    assert report.passed and report.streams == 6
    assert report.results == 6 * 2 * 3  # streams x channels x ceil(1.1 / 0.5)
    assert report.throughput_x_realtime > 1.0


async def test_a_bounded_duration_keeps_streaming_then_stops(gateway):
    server = await gateway(workers=2)
    s = settings(str(server.make_url(SIMPLE)), seconds=0.6, sessions=2, duration=1.5)
    report = await run_load(s)
    assert report.passed
    assert report.streams >= 4  # each 0.6 s clip is one stream, back to back
    assert 1.4 < report.wall_seconds < 5.0


async def test_model_errors_are_answers_not_lost_segments(gateway):
    server = await gateway(workers=2, model__failure_rate=0.5, model__seed=3)
    s = settings(str(server.make_url(SIMPLE)), seconds=4.0, sessions=2, real_time=False)
    report = await run_load(s)
    assert report.errors > 0 and report.results > 0
    assert report.errors + report.results == report.expected_segments == 16
    assert report.lost_segments == 0 and report.every_segment_came_back


async def test_sessions_nobody_serves_are_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        s = settings(f"ws://127.0.0.1:{port}{SIMPLE}", sessions=3, connect_timeout=5.0)
        report = await run_load(s)
        assert (report.ok, report.failed, report.refused) == (0, 0, 3)
        assert not report.passed and not report.every_segment_came_back
        assert "cannot connect" in next(iter(report.failure_reasons))
        with pytest.raises(ConnectFailed, match="cannot connect to 127.0.0.1"):
            await run_load(s, raise_unserved=True)  # the command's one-line error


async def test_find_capacity_bisects_to_the_largest_passing_count(gateway):
    server = await gateway(workers=1, model__constant_factor=0.05, model__mode="sleep")
    s = settings(str(server.make_url(SIMPLE)), seconds=1.2, duration=1.2, ramp_up=0.2)
    starts: list[tuple[int, int, int]] = []
    cap = await find_capacity(s, target_p99=2.0, start=1, max_sessions=3,
                              on_probe_start=lambda *a: starts.append(a))
    assert [p.sessions for p in cap.probes] == [1, 2, 3]
    assert starts == [(1, 3, 1), (2, 3, 2), (3, 3, 3)]  # probe k of about 3, n sessions
    assert cap.capacity == 3 and all(p.passed for p in cap.probes)
    assert cap.bound_reached and cap.to_dict()["bound_reached"] is True
    assert "capacity: at least 3 (bound reached)" in format_capacity(cap)
    # a target nobody can meet fails every probe
    strict = judge(cap.probes[0].report, target_p99=1e-6)
    assert strict[0] is False and "over the target" in strict[1]


async def test_the_command_prints_json_and_a_table(gateway):
    server = await gateway(workers=2)
    url = str(server.make_url(SIMPLE))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}

    async def cli(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamer.loadtest", "--addr", url, "--no-progress", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, out.decode() + err.decode()

    code, out = await cli("--sessions", "2", "--seconds", "1", "--ramp-up", "0", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["passed"] and report["ok"] == 2 and report["lost_segments"] == 0
    assert report["finalization"]["p50"] > 0 and report["results_per_second"] > 0
    code, out = await cli("--sessions", "2", "--seconds", "2", "--fast", "--channels", "2",
                          "--sample-rate", "48000")
    assert code == 0, out
    assert "every segment came back: yes" in out and "sessions     ok 2" in out
    code, out = await cli("--sessions", "0")
    assert code == 2 and "--sessions must be at least 1" in out


@pytest.mark.parametrize("max_sessions", [1, 2, 3, 7, 64, 256])
@pytest.mark.parametrize("start", [1, 3, 8])
def test_the_probe_estimate_bounds_every_search_and_is_reached(max_sessions, start):
    """For every true capacity, the search finds it (or the bound) within the first estimate,
    the estimate never grows, and some capacity needs all of it."""
    first = probes_left(0, max_sessions + 1, min(start, max_sessions), max_sessions)
    longest = 0
    for capacity in range(max_sessions + 2):
        lo, hi, n = 0, max_sessions + 1, min(start, max_sessions)
        probes: int = 0
        while n is not None:
            probes += 1
            assert probes - 1 + probes_left(lo, hi, n, max_sessions) <= first
            lo, hi, n = next_probe(lo, hi, n, n <= capacity, max_sessions)
        assert lo == min(capacity, max_sessions)
        longest = max(longest, probes)
    assert longest == first


def test_generated_audio_has_the_asked_length_and_format():
    fmt = AudioFormat(channels=2, sample_rate=8000, bit_depth=16)
    assert len(generate_audio(fmt, 1.5)) == 2 * 2 * 12000
    f32 = replace(fmt, bit_depth=32, is_float=True)
    assert len(generate_audio(f32, 0.5)) == 2 * 4 * 4000


async def test_thirty_seconds_of_chaos_lose_no_segment(gateway):
    """The zero-lost-segments target under chaos: 30 s of real-time load while workers panic at
    random and are SIGKILLed every few seconds; every segment comes back as a result or an
    explicit error."""
    import random
    import signal

    from streamer.gateway.state import POOL

    server = await gateway(workers=2, model__panic_rate=0.01, model__delay=0.01,
                           model__mode="sleep", pool__max_retries=3)
    pool = server.app[POOL]
    kills = 0

    async def killer() -> None:
        nonlocal kills
        rng = random.Random(7)
        while True:
            await asyncio.sleep(3.0)  # chaos at a steady pace, not a synchronisation
            pids = [w.pid for w in pool.stats().workers if w.pid and w.ready]
            if pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1

    chaos = asyncio.create_task(killer())
    try:
        report = await run_load(settings(str(server.make_url(SIMPLE)), seconds=2.0, sessions=6,
                                         duration=30.0, ramp_up=1.0))
    finally:
        chaos.cancel()
    assert kills >= 8
    assert report.lost_segments == 0 and report.every_segment_came_back
    assert report.results + report.errors == report.expected_segments
    assert report.ok == 6 and report.failed == 0
    assert pool.stats().restarts >= kills
