"""Keys, tokens, origins and per-key windows, on their own (clocks are injected)."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client import CollectorRegistry

from streamer.errors import ConfigError
from streamer.gateway.auth import (
    AuthSettings,
    KeyRing,
    KeySpec,
    Refused,
    Tokens,
    check_exposure,
    check_origin,
    hash_key,
    is_loopback,
    new_key,
    presented_credential,
    same_origin,
)
from streamer.gateway.keylimits import KeyLimits, KeyMetrics, KeyUsage


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_keys_are_random_and_their_hash_is_what_the_config_holds():
    a, b = new_key(), new_key()
    assert a != b and a.startswith("sk_") and len(a) > 40
    assert hash_key(a).startswith("sha256:") and len(hash_key(a)) == 7 + 64
    assert hash_key(a) == hash_key(a) != hash_key(b)


def test_a_token_names_its_key_until_it_expires():
    clock = Clock()
    tokens = Tokens(b"s" * 32, clock)
    token, expires = tokens.issue("alice", 60)
    assert expires == clock.now + 60
    assert tokens.verify(token) == "alice"
    clock.now += 59.9
    assert tokens.verify(token) == "alice"
    clock.now += 0.1
    with pytest.raises(Refused) as refused:
        tokens.verify(token)
    assert refused.value.status == 401 and refused.value.reason == "token_expired"


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature changed
    lambda t: t.replace("st1.", "st1.x", 1),  # payload changed
    lambda t: t + ".extra",
    lambda t: t.split(".", 1)[1],  # no prefix
    lambda t: "st1..",
    lambda t: "st1.!!!.???",
    lambda t: "",
])
def test_a_changed_or_garbage_token_is_forged(mangle):
    tokens = Tokens(b"s" * 32, Clock())
    token, _ = tokens.issue("alice", 60)
    with pytest.raises(Refused) as refused:
        tokens.verify(mangle(token))
    assert refused.value.reason == "invalid_token"


def test_a_token_from_another_secret_is_forged_and_no_secret_means_a_random_one():
    token, _ = Tokens(b"a" * 32, Clock()).issue("alice", 60)
    for other in (Tokens(b"b" * 32, Clock()), Tokens(b"", Clock())):
        with pytest.raises(Refused):
            other.verify(token)
    t1, _ = Tokens(b"", Clock()).issue("alice", 60)
    with pytest.raises(Refused):
        Tokens(b"", Clock()).verify(t1)  # each process draws its own


def test_the_key_ring_finds_keys_and_tokens_and_drops_tokens_of_removed_keys():
    key = new_key()
    settings = AuthSettings(keys=(KeySpec("alice", hash_key(key)),))
    tokens = Tokens(b"s" * 32, Clock())
    ring = KeyRing(settings, tokens)
    assert ring.by_credential(key).name == "alice"
    assert ring.by_credential(tokens.issue("alice", 60)[0]).name == "alice"
    with pytest.raises(Refused, match="no longer valid"):
        ring.by_credential(tokens.issue("mallory", 60)[0])
    with pytest.raises(Refused) as refused:
        ring.by_credential(key + "x")
    assert refused.value.reason == "invalid_key"


def test_credentials_come_from_one_place():
    assert presented_credential({"Authorization": "Bearer k"}, {}).source == "header"
    assert presented_credential({"Authorization": "token  k "}, {}).secret == "k"
    assert presented_credential({}, {"token": "st1.a.b"}).source == "query"
    proto = {"Sec-WebSocket-Protocol": "streamer.v1, streamer.token.st1.a.b"}
    assert presented_credential(proto, {}).secret == "st1.a.b"
    assert presented_credential({}, {}) is None
    for headers, query, reason in (
            ({"Authorization": "Bearer k"}, {"token": "st1.a.b"}, "ambiguous_credentials"),
            ({"Authorization": "Basic abc"}, {}, "invalid_authorization"),
            ({"Authorization": "Bearer"}, {}, "invalid_authorization"),
            ({}, {"token": "sk_a_key"}, "key_in_url"),
            ({"Sec-WebSocket-Protocol": "streamer.token.sk_key"}, {}, "key_in_url")):
        with pytest.raises(Refused) as refused:
            presented_credential(headers, query)
        assert refused.value.reason == reason and "sk_" not in refused.value.message


@pytest.mark.parametrize("origin, host, same", [
    ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
    ("https://example.com", "example.com", True),
    ("https://example.com", "example.com:443", True),
    ("https://Example.com:8443", "example.com:8443", True),
    ("http://example.com", "example.com:8080", False),
    ("http://127.0.0.1:8081", "127.0.0.1:8080", False),
    ("https://evil.example", "example.com", False),
    ("null", "example.com", False),
    ("http://[::1]:8080", "[::1]:8080", True),
    ("http://example.com", None, False),
])
def test_same_origin(origin, host, same):
    assert same_origin(origin, host) is same


def test_origin_rules_without_keys_with_keys_and_with_a_list():
    def allowed(settings: AuthSettings, origin: str | None) -> bool:
        try:
            check_origin(settings, origin, "gw.example:8080")
        except Refused as refused:
            assert refused.status == 403
            return False
        return True

    open_ = AuthSettings(allow_anonymous=True)  # serving gw.example on purpose
    keyed = AuthSettings(keys=(KeySpec("a", hash_key("k")),))
    listed = AuthSettings.from_config({"allowed_origins": ["https://App.example.com/"],
                                       "allow_anonymous": True})
    anyone = AuthSettings.from_config({"allowed_origins": "*"})
    for settings in (open_, keyed, listed, anyone):
        assert allowed(settings, None) and allowed(settings, "http://gw.example:8080")
    assert not allowed(open_, "https://evil.example")
    assert not allowed(AuthSettings(), "http://gw.example:8080")  # see the next test
    assert allowed(keyed, "https://evil.example")  # a credential is needed anyway
    assert allowed(listed, "https://app.example.com") and not allowed(listed, "https://b.example")
    assert allowed(anyone, "https://evil.example")


def test_without_keys_a_rebound_name_is_not_the_gateways_own_origin():
    # evil.example resolved to 127.0.0.1: Host and Origin agree, but the page is not ours
    with pytest.raises(Refused):
        check_origin(AuthSettings(), "http://evil.example:8080", "evil.example:8080")
    check_origin(AuthSettings(), "http://localhost:8080", "localhost:8080")
    check_origin(AuthSettings(), "http://[::1]:8080", "[::1]:8080")
    check_origin(AuthSettings(keys=(KeySpec("a", hash_key("k")),)),
                 "https://gw.example", "gw.example")


def test_config_errors_name_the_setting_and_never_echo_a_secret():
    key = new_key()
    with pytest.raises(ConfigError) as err:
        AuthSettings.from_config({"keys": [{"name": "alice", "hash": key}]})
    assert "auth.keys[0].hash" in str(err.value) and key not in str(err.value)
    with pytest.raises(ConfigError) as err:
        AuthSettings.from_config({"token_secret": "short-secret"})
    assert "auth.token_secret" in str(err.value) and "short-secret" not in str(err.value)
    for raw, words in (({"keys": {}}, "must be a list"),
                       ({"keys": [{"name": "a b", "hash": hash_key("k")}]}, ".name must be"),
                       ({"keys": [{"name": "a", "hash": hash_key("k"), "max_sessions": -1}]},
                        "max_sessions"),
                       ({"keys": [{"name": "a", "hash": hash_key("k"), "colour": 1}]},
                        "unknown field"),
                       ({"keys": [{"name": "a", "hash": hash_key("k")},
                                  {"name": "a", "hash": hash_key("j")}]}, "own name"),
                       ({"token_ttl": 0}, "auth.token_ttl"),
                       ({"allowed_origins": ["example.com"]}, "not an origin"),
                       ({"allow_anonymous": "yes"}, "true or false"),
                       ({"keyz": []}, "unknown setting auth.keyz")):
        with pytest.raises(ConfigError, match=words):
            AuthSettings.from_config(raw)


def test_open_only_on_loopback_unless_anonymous_is_allowed(caplog):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("example.com")
    check_exposure(AuthSettings(), "127.0.0.1")
    with pytest.raises(ConfigError, match="refusing to serve without API keys on 0.0.0.0"):
        check_exposure(AuthSettings(), "0.0.0.0")
    check_exposure(AuthSettings(keys=(KeySpec("a", hash_key("k")),)), "0.0.0.0")
    with caplog.at_level(logging.WARNING):
        check_exposure(AuthSettings(allow_anonymous=True), "0.0.0.0")
    assert "WITHOUT authentication" in caplog.text


def test_audio_per_minute_is_a_sliding_window():
    clock = Clock(100.0)
    usage = KeyUsage(KeySpec("a", hash_key("k"), audio_seconds_per_minute=10), clock)
    usage.charge(4)
    clock.now = 130.5
    usage.charge(6)
    assert usage.used() == 10 and usage.over_rate()
    assert usage.rate_retry_after() == 30  # the first 4 s leave the window at 160
    clock.now = 160.0
    assert usage.used() == 6 and not usage.over_rate()
    clock.now = 190.6
    assert usage.used() == 0


def test_session_leases_are_counted_and_released_once():
    spec = KeySpec("a", hash_key("k"), max_sessions=2)
    limits = KeyLimits((spec,), KeyMetrics(CollectorRegistry()))
    first, second = limits.admit(spec), limits.admit(spec)
    with pytest.raises(Refused) as refused:
        limits.admit(spec)
    assert refused.value.status == 429 and refused.value.retry_after
    first.release()
    first.release()
    third = limits.admit(spec)
    with pytest.raises(Refused):
        limits.admit(spec)
    second.release(), third.release()


def test_the_auth_section_comes_from_files_environment_and_flags_and_dumps_without_secrets():
    from streamer.config import load_config

    key = new_key()
    entry = {"name": "alice", "hash": hash_key(key), "max_sessions": 2}
    env = {"STREAMER_AUTH__KEYS": json.dumps([entry]),
           "STREAMER_AUTH__TOKEN_SECRET": "x" * 40}
    config = load_config(env=env, overrides={"auth.allow_anonymous": True})
    settings = AuthSettings.from_config(config.auth)
    assert settings.keys == (KeySpec("alice", hash_key(key), 2),)
    assert settings.token_secret == b"x" * 40 and settings.allow_anonymous
    dumped = json.dumps(config.to_dict())
    assert "x" * 40 not in dumped and "x" * 40 not in repr(config) + repr(settings)
