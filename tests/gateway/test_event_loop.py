"""``server.event_loop`` resolved to the loop the gateway runs on."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from streamer.config import load_config
from streamer.errors import ConfigError
from streamer.gateway.event_loop import choose_loop


def test_asyncio_is_the_default_factory():
    assert choose_loop("asyncio").name == "asyncio" and choose_loop("asyncio").factory is None


def test_auto_falls_back_to_asyncio_without_uvloop_and_uvloop_itself_is_an_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvloop" else real(name, *a))
    assert choose_loop("auto").name == "asyncio"
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        choose_loop("uvloop")


def test_auto_and_uvloop_run_on_uvloop_when_installed():
    if importlib.util.find_spec("uvloop") is None:
        pytest.skip("uvloop is not installed")
    import uvloop

    for setting in ("auto", "uvloop"):
        choice = choose_loop(setting)
        with asyncio.Runner(loop_factory=choice.factory) as runner:
            assert choice.name == "uvloop"
            assert isinstance(runner.get_loop(), uvloop.Loop)


def test_a_bad_value_is_a_config_error():
    with pytest.raises(ConfigError, match="server.event_loop must be one of auto, asyncio, "
                       "uvloop, got 'trio'"):
        load_config(None, overrides={"server.event_loop": "trio"})
    with pytest.raises(ConfigError, match="got 'trio'"):
        choose_loop("trio")
