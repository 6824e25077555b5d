"""Every console script prints the package's version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import streamer

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("script", ["streamer-gateway", "streamer-worker", "streamer-client",
                                    "streamer-loadtest", "streamer-keygen"])
def test_version(script):
    out = subprocess.run([str(BIN / script), "--version"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{script} {streamer.__version__}"
