"""streamer-client and streamer-loadtest as a user runs them: the same options, one-line errors
with documented exit codes, --pretty, progress lines and the capacity plot."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import pytest

from streamer.client import connect
from streamer.protocol import AudioFormat
from tests.audio_gen import write_wav
from tests.signals import DATA

BIN = Path(sys.executable).parent
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMER_", "OTEL_"))}
TOOLS = {"streamer-client": ["-i", "{wav}"],
         "streamer-loadtest": ["-n", "1", "--seconds", "0.5", "--ramp-up", "0"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run(*args: str, within: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV)
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def tool(name: str, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    wav = write_wav(tmp_path / "a.wav", AudioFormat(), 0.5)
    base = [a.format(wav=wav) for a in TOOLS[name]]
    return await run(str(BIN / name), *base, *args)


def one_line(err: str) -> str:
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("name", sorted(TOOLS))
async def test_bad_url_wrong_path_and_unreachable_are_one_line_each(name, tmp_path, gateway):
    code, _, err = await tool(name, tmp_path, "--addr", "ftp://127.0.0.1/api/v1/simple")
    assert code == 2 and one_line(err).startswith(f"{name}: bad --addr: ")
    assert "is not a websocket URL" in err
    server = await gateway(workers=1)
    code, _, err = await tool(name, tmp_path, "--addr", str(server.make_url("/api/v1/nope")))
    assert code == 2 and "no websocket endpoint at '/api/v1/nope' (HTTP 404)" in one_line(err)
    port = free_port()
    code, _, err = await tool(name, tmp_path, "--addr", f"127.0.0.1:{port}")
    assert code == 3 and f"cannot connect to 127.0.0.1:{port}" in one_line(err)
    code, _, err = await tool(name, tmp_path, "-i", str(tmp_path / "none.wav"))
    assert code == 2
    assert one_line(err) == f"{name}: cannot read {tmp_path / 'none.wav'}: No such file or " \
                            "directory"


@pytest.mark.parametrize("name", sorted(TOOLS))
async def test_a_refusal_prints_the_gateways_reason(name, tmp_path, gateway):
    server = await gateway(workers=1, server__max_sessions=1)
    async with connect(str(server.make_url("/api/v1/simple"))):  # holds the only slot
        code, _, err = await tool(name, tmp_path, "--addr", str(server.make_url("/")),
                                  "--endpoint", "simple")
    assert code == 4
    assert one_line(err).endswith("refused by the gateway (max_sessions): the server is at its "
                                  "limit of 1 concurrent sessions; retry after 5 s")


async def test_both_tools_share_option_names_and_defaults():
    helps = {name: (await run(str(BIN / name), "--help"))[1] for name in TOOLS}
    for option in ("--addr URL", "--endpoint {simple,segmented}", "--chunk-ms MS",
                   "--real-time", "--fast", "--sample-format {s16,f32}", "--interim-results",
                   "--version", "exit codes: 0 success"):
        for name, text in helps.items():
            assert option in " ".join(text.split()), (name, option)
    for text in helps.values():
        flat = " ".join(text.split())
        assert "(default ws://127.0.0.1:8080/api/v1/segmented)" in flat
        assert "audio per websocket frame, ms (default 100)" in flat


async def test_json_lines_when_piped_and_a_timeline_with_pretty(gateway):
    server = await gateway(workers=2)
    url = str(server.make_url("/"))  # no path: the default endpoint, /segmented
    wav = str(DATA / "speech_3_sentences.wav")
    code, out, err = await run(str(BIN / "streamer-client"), "-i", wav, "--addr", url)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert {"active", "inactive", "segment", "stopped"} <= {e["type"] for e in events}
    assert "close code 1000" in err
    code, out, err = await run(str(BIN / "streamer-client"), "-i", wav, "--addr", url,
                               "--pretty", "--interim-results")
    assert code == 0, err
    lines = out.splitlines()
    assert sum(line.endswith(" speech") for line in lines) >= 2
    assert sum(line.endswith(" silence") for line in lines) >= 2
    assert lines[-1].endswith(" end of stream") and "count " in out
    assert "..." not in out  # interim results are not written to a file
    assert "\r" not in out and "{" not in out


async def test_loadtest_prints_plain_progress_lines_when_stderr_is_not_a_terminal(gateway):
    server = await gateway(workers=2)
    code, out, err = await run(
        str(BIN / "streamer-loadtest"), "--addr", str(server.make_url("/api/v1/simple")),
        "-n", "2", "--seconds", "1", "--duration", "2", "--ramp-up", "0",
        "--progress-every", "0.5")
    assert code == 0, err
    lines = [line for line in err.splitlines() if "/2 s | " in line]
    assert len(lines) >= 2 and "\r" not in err
    assert "2 active" in lines[0] and "every segment came back: yes" in out


async def test_a_capacity_search_counts_its_probes_and_plots_them(gateway, tmp_path):
    server = await gateway(workers=2)
    png = tmp_path / "capacity.png"
    code, out, err = await run(
        str(BIN / "streamer-loadtest"), "--addr", str(server.make_url("/")), "--endpoint",
        "simple", "--find-capacity", "-n", "1", "--max-sessions", "2", "--duration", "1",
        "--seconds", "1", "--ramp-up", "0", "--no-progress", "--plot", str(png), within=120)
    assert code == 0, err
    assert "probe 1 of about 2: 1 session pass" in err
    assert "probe 2 of about 2: 2 sessions pass" in err
    assert "capacity: at least 2 (bound reached)" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


async def test_plot_without_matplotlib_names_the_extra_before_searching(tmp_path):
    code, _, err = await run(
        sys.executable, "-c", "import sys; sys.modules['matplotlib'] = None; "
        "from streamer.loadtest import main; main(sys.argv[1:])",
        "--find-capacity", "--plot", str(tmp_path / "x.png"), "--addr", "127.0.0.1:1")
    assert code == 2
    assert one_line(err) == ("streamer-loadtest: --plot needs matplotlib (the 'bench' extra: "
                             "pip install 'streamer-audio-gateway[bench]')")
