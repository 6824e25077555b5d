"""Models brought by import path, and models whose outputs or crashes would poison a pipeline:
every segment is answered (a result or an error naming it), no worker is lost to an output, and
a segment that kills workers costs at most two of them."""

from __future__ import annotations

import subprocess

import aiohttp
import pytest

from streamer.client import stream_audio
from streamer.config import load_config
from streamer.errors import ConfigError
from streamer.gateway.pool import make_pool
from streamer.gateway.state import POOL
from streamer.protocol import AudioFormat, ErrorEvent, SegmentEvent
from tests.audio_gen import make_pcm
from tests.conftest import BIN, wait_until

SIMPLE = "/api/v1/simple"
FMT = AudioFormat(1, 16000)
POISON = "tests.e2e.poison_models"


def answers(report) -> dict[float, ErrorEvent | SegmentEvent]:
    """Each segment's answer by start time; fails on a segment answered twice."""
    out: dict[float, ErrorEvent | SegmentEvent] = {}
    for event in report.events:
        if isinstance(event, SegmentEvent | ErrorEvent) and event.start_time is not None:
            assert event.start_time not in out, f"two answers for {event.start_time}"
            out[event.start_time] = event
    return out


@pytest.mark.parametrize("pool", ["embedded", "inline"])
async def test_unsendable_outputs_are_errors_and_numpy_values_are_converted(gateway, pool):
    server = await gateway(workers=1, pool=pool, model__name=f"{POISON}:Unsendable",
                           session__chunk_seconds=0.5)
    report = await stream_audio(str(server.make_url(SIMPLE)), FMT, make_pcm(FMT, 3.0))
    got = answers(report)
    assert sorted(got) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    for start in (0.0, 0.5, 2.0):
        assert isinstance(got[start], ErrorEvent), start
        assert "unusable model output" in got[start].message
    assert "of type bytes" in got[0.0].message and "of type set" in got[0.5].message
    assert got[1.0].output == {"value": 0.25}
    assert got[1.5].output == {"value": [[0, 1, 2], {"m": [[1.0, 0.0], [0.0, 1.0]]}]}
    assert got[2.5].output == {"count": 8000}
    assert report.close_code == 1000
    stats = server.app[POOL].stats()
    assert stats.lost == 0 and stats.restarts == 0  # no worker died for an output


async def test_a_segment_that_kills_workers_costs_two_and_gets_an_error(gateway):
    server = await gateway(workers=2, model__name=f"{POISON}:KillsOnSecondSegment",
                           session__chunk_seconds=0.5, pool__restart_backoff=0.05)
    report = await stream_audio(str(server.make_url(SIMPLE)), FMT, make_pcm(FMT, 2.0))
    got = answers(report)
    assert sorted(got) == [0.0, 0.5, 1.0, 1.5]
    assert isinstance(got[0.5], ErrorEvent) and "not sent again" in got[0.5].message
    assert all(isinstance(got[t], SegmentEvent) for t in (0.0, 1.0, 1.5))
    pool = server.app[POOL]
    assert pool.stats().poisoned == 1
    assert pool.stats().lost == 2  # the poison segment's two tries, no more
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/metrics")) as r:
        assert "streamer_poison_segments_total 1.0" in await r.text()
    await wait_until(lambda: pool.stats().ready == 2, within=20, what="the pool back to 2")


async def test_a_model_error_is_answered_once_and_never_retried(gateway):
    server = await gateway(workers=2, model__name=f"{POISON}:Raises")
    report = await stream_audio(str(server.make_url(SIMPLE)), FMT, make_pcm(FMT, 1.0))
    got = answers(report)
    assert len(got) == 2
    assert all("RuntimeError: this model always fails" in e.message for e in got.values())
    stats = server.app[POOL].stats()
    assert stats.redispatched == 0 and stats.lost == 0


@pytest.mark.parametrize("name, words", [
    ("tests.e2e.nowhere:Model", "cannot import 'tests.e2e.nowhere'"),
    (f"{POISON}:Missing", "has no 'Missing'"),
    (f"{POISON}:NotAModel", "is not a model class"),
    ("justamodule:", "expected an import path"),
])
def test_a_model_path_that_does_not_fit_is_a_clear_config_error(name, words):
    config = load_config(env={}, overrides={"model.name": name, "pool.workers": 1})
    with pytest.raises(ConfigError, match=words):
        make_pool(config)


@pytest.mark.parametrize("pool", ["embedded", "inline"])
async def test_the_example_model_serves_by_import_path(gateway, pool):
    server = await gateway(workers=1, pool=pool, model__name="examples.loudness:Loudness",
                           model__threshold_db=-20.0)
    report = await stream_audio(str(server.make_url(SIMPLE)), FMT, make_pcm(FMT, 1.0))
    outputs = [e.output for e in report.events if isinstance(e, SegmentEvent)]
    assert len(outputs) == 2
    assert all(set(o) == {"rms_dbfs", "peak_dbfs", "loud"} for o in outputs)
    assert all(isinstance(o["rms_dbfs"], float) and o["rms_dbfs"] <= o["peak_dbfs"] <= 0.0
               for o in outputs)


async def test_the_example_model_serves_through_separately_run_workers(gateway, nats_server,
                                                                        nats_workers):
    server = await gateway(workers=0, pool__nats_url=nats_server.url,
                           model__name="examples.loudness:Loudness")
    pool = server.app[POOL]
    nats_workers(model="examples.loudness:Loudness")
    await wait_until(lambda: pool.stats().ready == 1, within=40, what="a NATS worker")
    report = await stream_audio(str(server.make_url(SIMPLE)), FMT, make_pcm(FMT, 1.0))
    outputs = [e.output for e in report.events if isinstance(e, SegmentEvent)]
    assert len(outputs) == 2 and all("rms_dbfs" in o for o in outputs)


def test_the_gateway_command_names_a_model_it_cannot_import():
    out = subprocess.run([str(BIN / "streamer-gateway"), "--model", "nowhere.at_all:Model"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "cannot import 'nowhere.at_all'" in out.stderr
