import json

import pytest

from streamer.config import load_config, parse_assignment
from streamer.errors import ConfigError


def test_defaults():
    cfg = load_config(env={})
    assert cfg.server.port == 8080 and cfg.server.host == "127.0.0.1"
    assert cfg.session.chunk_seconds == 0.5
    assert cfg.model.name == "counter" and dict(cfg.model.params) == {}


def test_upstream_config_json_is_accepted(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": {"delay": 0.5, "constant_factor": 0.3}}))
    cfg = load_config(path, env={})
    assert cfg.model.name == "counter"
    assert dict(cfg.model.params) == {"delay": 0.5, "constant_factor": 0.3}


def test_toml_file(tmp_path):
    path = tmp_path / "streamer.toml"
    path.write_text('[server]\nport = 9001\n[model]\nname = "counter"\nmode = "sleep"\n')
    cfg = load_config(path, env={})
    assert cfg.server.port == 9001 and cfg.model.params["mode"] == "sleep"


def test_precedence_file_then_env_then_flags(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"server": {"port": 1111, "host": "127.0.0.2"},
                                "pool": {"workers": 3}, "model": {"delay": 1.0}}))
    env = {"STREAMER_PORT": "2222", "STREAMER_POOL__WORKERS": "4",
           "STREAMER_MODEL__DELAY": "0.25", "UNRELATED": "x"}
    cfg = load_config(path, env=env, overrides={"server.port": 3333})
    assert cfg.server.port == 3333          # flag beats env and file
    assert cfg.pool.workers == 4            # env beats file
    assert cfg.server.host == "127.0.0.2"   # file beats default
    assert cfg.model.params["delay"] == 0.25


def test_config_file_from_environment(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"session": {"chunk_seconds": 0.25}}')
    assert load_config(env={"STREAMER_CONFIG": str(path)}).session.chunk_seconds == 0.25


@pytest.mark.parametrize("overrides, words", [
    ({"server.prot": 1}, "unknown setting server.prot"),
    ({"server.port": 70000}, "server.port must be between 0 and 65535, got 70000"),
    ({"pool.workers": "many"}, "pool.workers must be a whole number"),
    ({"session.chunk_seconds": 0}, "session.chunk_seconds must be between"),
    ({"database.url": "x"}, "unknown section 'database'"),
])
def test_bad_settings_are_named(overrides, words):
    with pytest.raises(ConfigError, match=words):
        load_config(env={}, overrides=overrides)


def test_bad_files_and_env(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.json", env={})
    with pytest.raises(ConfigError, match="unknown environment setting STREAMER_PROT"):
        load_config(env={"STREAMER_PROT": "1"})


def test_parse_assignment():
    assert parse_assignment("model.delay=0.1") == ("model.delay", 0.1)
    assert parse_assignment("model.mode=sleep") == ("model.mode", "sleep")
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        parse_assignment("delay")


def test_log_format_from_env_file_or_flag_and_checked():
    assert load_config(env={}).server.log_format == "text"
    assert load_config(env={"STREAMER_LOG_FORMAT": "json"}).server.log_format == "json"
    assert load_config(env={"STREAMER_SERVER__LOG_FORMAT": "json"}).server.log_format == "json"
    with pytest.raises(ConfigError, match="server.log_format must be one of text, json"):
        load_config(env={}, overrides={"server.log_format": "xml"})
