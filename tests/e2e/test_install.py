"""The wheel as a user installs it: ``pip install`` without extras into a fresh venv gives the
client library and its two commands, nothing of the server, and it streams to a real gateway.

Slow (a wheel build and a venv with aiohttp and numpy, once per session), so bounded: pip may
use the package registry, the streams go to a gateway on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import streamer
from streamer.protocol import AudioFormat
from tests.audio_gen import write_wav

ROOT = Path(__file__).resolve().parents[2]
DIST = "streamer-audio-gateway"
SERVER_ONLY = {"msgspec", "msgpack", "soxr", "psutil", "prometheus-client", "opentelemetry-sdk",
               "opentelemetry-exporter-otlp-proto-http", "opentelemetry-exporter-otlp-proto-grpc",
               "grpcio", "honcho", "soundfile", "matplotlib"}
SERVER_MODULES = ("msgspec", "msgpack", "soxr", "prometheus_client", "psutil", "opentelemetry.sdk",
                  "streamer.gateway", "streamer.workers", "soundfile")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@dataclass(frozen=True)
class Venv:
    root: Path
    site_before: frozenset[str]  # site-packages' top-level names before the install

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    def bin(self, name: str) -> str:
        return str(self.root / "bin" / name)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """Build the wheel from a copy of the sources, install it without extras into a fresh venv
    (no system site-packages)."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("shared", "gateway", "workers"):
        shutil.copytree(ROOT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}

    def run(*args: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr

    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"),
        str(src))
    wheel = next((base / "dist").glob("streamer_audio_gateway-*.whl"))
    root = base / "venv"
    run(sys.executable, "-m", "venv", str(root))  # no --system-site-packages
    venv = Venv(root, frozenset(_site_names(root)))
    run(venv.python, "-m", "pip", "install", "-q", str(wheel))
    return venv


def _site_names(root: Path) -> list[str]:
    out = subprocess.run([str(root / "bin" / "python"), "-c",
                          "import os, sysconfig; print('\\n'.join(os.listdir("
                          "sysconfig.get_paths()['purelib'])))"],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.split()


INSPECT = r"""
import json, sysconfig
from importlib import metadata
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

site = sysconfig.get_paths()["purelib"]
owners = {}
for dist in metadata.distributions():
    name = canonicalize_name(dist.metadata["Name"])
    tops = {str(f).split("/")[0] for f in dist.files or [] if not str(f).startswith("..")}
    owners[name] = sorted(tops)
closure, todo = set(), ["streamer-audio-gateway"]
while todo:
    name = canonicalize_name(todo.pop())
    if name in closure:
        continue
    closure.add(name)
    for text in metadata.requires(name) or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
print(json.dumps({"owners": owners, "closure": sorted(closure)}))
"""


def test_a_base_install_adds_only_streamer_and_the_clients_dependencies(installed):
    out = subprocess.run([installed.python, "-c", INSPECT], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    owners: dict[str, list[str]] = found["owners"]
    assert set(owners[DIST]) == {"streamer", f"streamer_audio_gateway-{streamer.__version__}"
                                 ".dist-info"}
    assert not SERVER_ONLY & set(owners), "a server dependency was installed"
    installed_dists = set(owners) - {"pip", "setuptools"}
    assert installed_dists <= set(found["closure"]), "something beyond the client's needs"
    assert {"aiohttp", "numpy", "opentelemetry-api"} <= installed_dists
    gained = set(_site_names(installed.root)) - installed.site_before - {"__pycache__"}
    by_dependencies = {top for name, tops in owners.items() if name != DIST for top in tops}
    assert gained - by_dependencies == set(owners[DIST])  # only streamer + its dist-info


async def test_the_installed_library_and_commands_stream_to_a_gateway(installed, gateway,
                                                                      tmp_path):
    server = await gateway(workers=2)
    url = str(server.make_url("/api/v1/simple"))
    wav = write_wav(tmp_path / "a.wav", AudioFormat(channels=2, sample_rate=44100), 1.3)
    script = (
        "import asyncio, json, sys\n"
        "import streamer.client as client\n"
        "loaded = sorted(sys.modules)\n"
        "report = asyncio.run(client.stream_file(sys.argv[1], sys.argv[2]))\n"
        "print(json.dumps({'loaded': loaded, 'close': report.close_code, 'counts': [\n"
        "    (e.channel, e.output['count']) for e in report.events\n"
        "    if isinstance(e, client.SegmentEvent)]}))\n")
    code, out, err = await _run(installed.python, "-c", script, url, str(wav))
    assert code == 0, err
    result = json.loads(out)
    assert sorted(result["counts"]) == [[0, 4800], [0, 8000], [0, 8000],
                                        [1, 4800], [1, 8000], [1, 8000]]
    assert result["close"] == 1000
    assert not [m for m in result["loaded"] if m.startswith(SERVER_MODULES)]
    code, out, err = await _run(installed.bin("streamer-client"), "-i", str(wav), "--addr", url)
    assert code == 0, err
    assert sum(json.loads(line)["type"] == "segment" for line in out.splitlines()) == 6
    code, out, err = await _run(installed.bin("streamer-loadtest"), "--addr", url, "-n", "2",
                                "--seconds", "1", "--fast", "--ramp-up", "0", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["passed"] and report["machine_busy_cores"] is not None  # /proc/stat
    for name in ("streamer-client", "streamer-loadtest"):
        code, out, _ = await _run(installed.bin(name), "--version")
        assert out.strip() == f"{name} {streamer.__version__}"
    flac = tmp_path / "a.flac"
    flac.write_bytes(b"fLaC" + bytes(64))
    code, _, err = await _run(installed.bin("streamer-client"), "-i", str(flac), "--addr", url)
    assert code == 2 and "'files' extra: pip install 'streamer-audio-gateway[files]'" in err


async def test_an_app_with_its_own_shared_and_workers_packages_uses_the_client(installed,
                                                                              gateway,
                                                                              tmp_path):
    server = await gateway(workers=1)
    app = tmp_path / "app"
    for package in ("shared", "workers"):
        (app / package).mkdir(parents=True)
        (app / package / "__init__.py").write_text(f"NAME = {f'the app own {package}'!r}\n")
    (app / "main.py").write_text(
        "import asyncio, sys\n"
        "import shared, workers\n"
        "from streamer.client import stream_file\n"
        "report = asyncio.run(stream_file(sys.argv[1], sys.argv[2]))\n"
        "print(shared.NAME, '|', workers.NAME, '|', report.results, report.close_code)\n")
    wav = write_wav(tmp_path / "a.wav", AudioFormat(), 1.0)
    code, out, err = await _run(installed.python, "main.py", str(server.make_url(
        "/api/v1/simple")), str(wav), cwd=app)
    assert code == 0, err
    assert out.strip() == "the app own shared | the app own workers | 2 1000"


async def _run(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMER_", "OTEL_",
                                                                    "VIRTUAL_ENV", "PYTHON"))}
    proc = await asyncio.create_subprocess_exec(*args, cwd=cwd, env=env,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
