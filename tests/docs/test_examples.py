"""The Python examples in README.md and doc/01_protocol.md run, as written, against a real
gateway with real worker processes, so an example cannot drift away from the code.

Each ```python block is one script. Before it runs, ``ws://127.0.0.1:8080`` (and http, and
localhost) is pointed at the test's gateway, and it runs in a directory holding ``speech.wav``
(the bundled speech recording), the file name the examples use. A block may ``await`` at the top
level, as in ``python -m asyncio``. A fragment that is not a whole script opts out with a
``<!-- no-run -->`` comment on the line before its fence.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, free_port, stop_process
from tests.docs.markdown import ROOT, CodeBlock, code_blocks

EXAMPLE_FILES = [ROOT / "README.md", ROOT / "doc" / "01_protocol.md"]
ADDRESS = re.compile(r"\b(ws|http)://(?:127\.0\.0\.1|localhost):8080\b")
TIMEOUT = 60.0  # seconds per block; the longest streams a few seconds of audio in real time

# Runs one block as a script: top-level await is allowed (the block then runs in asyncio.run).
RUNNER = """
import ast, asyncio, inspect, sys
path = sys.argv[1]
code = compile(open(path).read(), path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
scope = {"__name__": "__main__", "__file__": path}
result = eval(code, scope)
if code.co_flags & inspect.CO_COROUTINE:
    asyncio.run(result)
"""


def runnable_blocks() -> list[CodeBlock]:
    return [b for path in EXAMPLE_FILES for b in code_blocks(path) if b.runnable]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("STREAMER_", "OTEL_"))}


@pytest.fixture(scope="module")
def gateway_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One gateway for every example, started the way a reader starts it (the default model,
    two embedded workers). Its log goes to a file: a pipe nobody reads could fill and stall it."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(BIN / "streamer-gateway"), "--port", str(port),
                                 "--workers", "2"], stdout=log, stderr=subprocess.STDOUT,
                                env=clean_env())
    try:
        wait_healthy(port, proc, log_path)
        yield port
    finally:
        stop_process(proc, signal.SIGINT, 30)


def wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the gateway exited with {proc.returncode}:\n"
                                 f"{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # polling a process we do not control, bounded by the deadline
    raise AssertionError(f"the gateway was not healthy within 60 s:\n{log.read_text()}")


def run_script(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = cwd / "example.py"
    script.write_text(code)
    try:
        return subprocess.run([sys.executable, "-c", RUNNER, str(script)], cwd=cwd,
                              env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"did not finish within {TIMEOUT} s") from exc


@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: b.name)
def test_example_runs(block: CodeBlock, gateway_port: int, tmp_path: Path) -> None:
    shutil.copy(ROOT / "tests" / "data" / "speech_3_sentences.wav", tmp_path / "speech.wav")
    proc = run_script(ADDRESS.sub(rf"\1://127.0.0.1:{gateway_port}", block.code), tmp_path)
    assert proc.returncode == 0, (f"{block.name} failed (exit {proc.returncode}):\n"
                                  f"{proc.stdout}\n{proc.stderr}")
    assert "Traceback" not in proc.stderr, proc.stderr


def test_the_runner_allows_top_level_await_and_reports_failures(tmp_path: Path) -> None:
    ok = run_script("import asyncio\nawait asyncio.sleep(0)\nprint('done')\n", tmp_path)
    assert (ok.returncode, ok.stdout) == (0, "done\n"), ok.stderr
    plain = run_script("print(__name__)\n", tmp_path)
    assert (plain.returncode, plain.stdout) == (0, "__main__\n"), plain.stderr
    bad = run_script("import asyncio\nawait asyncio.sleep(0)\nraise RuntimeError('boom')\n",
                     tmp_path)
    assert bad.returncode != 0 and "RuntimeError: boom" in bad.stderr


def test_the_example_files_have_runnable_blocks() -> None:
    """Guards the collection itself: if the fence syntax changed, the examples would silently
    stop running."""
    for path in EXAMPLE_FILES:
        assert any(b.lang == "python" for b in code_blocks(path)), path


def test_blocks_are_found_and_fragments_opt_out() -> None:
    text = "\n".join([
        "Intro", "", "```python", "print(1)", "```", "",
        "<!-- no-run -->", "", "```python", "fragment(", "```",
        "- a list item:", "", "  ```py", "  await x()", "  ```",
        "```sh", "scripts/run", "```",
        "````markdown", "```python", "inside another fence", "```", "````",
    ])
    blocks = code_blocks(ROOT / "README.md", text)
    assert [(b.line, b.lang, b.runnable) for b in blocks] == [
        (3, "python", True), (9, "python", False), (14, "py", True), (17, "sh", False),
        (20, "markdown", False)]
    assert blocks[0].code == "print(1)\n" and blocks[2].code == "await x()\n"
    assert "inside another fence" in blocks[4].code


def test_addresses_are_pointed_at_the_test_gateway() -> None:
    code = 'a = "ws://127.0.0.1:8080/api/v1/simple"; b = "http://localhost:8080/metrics"'
    assert ADDRESS.sub(r"\1://127.0.0.1:4321", code) == (
        'a = "ws://127.0.0.1:4321/api/v1/simple"; b = "http://127.0.0.1:4321/metrics"')
