"""How the client presents a credential, where it asks for a token, and which refusals it retries
(the exchanges themselves run against a real gateway in tests/e2e/test_client_auth.py)."""

from __future__ import annotations

import pytest

from streamer.client import redact
from streamer.client_auth import IssuedToken, credentials, token_url
from streamer.client_errors import (
    REFUSALS,
    Forbidden,
    InvalidURL,
    RateLimited,
    Refused,
    Unauthorized,
)


def test_a_key_goes_in_the_authorization_header_and_a_token_in_the_subprotocols():
    headers, protocols = credentials(api_key="sk_abc", headers={"X-Trace": "1"})
    assert headers == {"X-Trace": "1", "Authorization": "Bearer sk_abc"} and protocols == ()
    headers, protocols = credentials(token="st1.p.s")
    assert headers is None and protocols == ("streamer.v1", "streamer.token.st1.p.s")
    assert credentials() == (None, ())
    with pytest.raises(ValueError, match="not both"):
        credentials(api_key="sk_abc", token="st1.p.s")
    for bad in ("", " ", "sk_a\r\nX-Evil: 1"):
        with pytest.raises(ValueError):
            credentials(api_key=bad)
    with pytest.raises(ValueError):
        credentials(token="st1.a, streamer.token.b")


@pytest.mark.parametrize("base, expected", [
    ("ws://127.0.0.1:8080/api/v1/segmented?x=1", "http://127.0.0.1:8080/api/v1/token"),
    ("wss://gw.example/api/v1/simple", "https://gw.example/api/v1/token"),
    ("https://gw.example:8443", "https://gw.example:8443/api/v1/token"),
    ("127.0.0.1:8080", "http://127.0.0.1:8080/api/v1/token"),
])
def test_the_token_endpoint_is_on_the_gateways_host(base, expected):
    assert token_url(base) == expected


def test_a_url_that_cannot_name_a_gateway_is_invalid():
    with pytest.raises(InvalidURL):
        token_url("ftp://gw.example/")


def test_a_token_in_a_url_is_hidden_in_messages_and_not_in_an_issued_tokens_repr():
    assert redact("ws://h:1/api/v1/simple?token=st1.secret") == "ws://h:1/api/v1/simple?token=***"
    assert redact("ws://h:1/api/v1/simple") == "ws://h:1/api/v1/simple"
    issued = IssuedToken("st1.secret", 30.0, 1e9, "alice")
    assert "st1.secret" not in repr(issued) and "alice" in repr(issued)
    assert issued.subprotocols == ("streamer.v1", "streamer.token.st1.secret")


def test_only_busy_and_over_the_limit_refusals_are_worth_retrying():
    assert [REFUSALS[s] for s in (401, 403, 429, 503)] == [Unauthorized, Forbidden, RateLimited,
                                                           Refused]
    retryable = {s: REFUSALS[s]("ws://h/", "r", "m", None, s).retryable for s in REFUSALS}
    assert retryable == {503: True, 401: False, 403: False, 429: True}
    assert str(Refused("ws://h/", "max_sessions", "full", 5.0)) == \
        "refused by the gateway (max_sessions): full; retry after 5 s"
    assert str(Unauthorized("ws://h/", "invalid_key", "the API key is not valid", None, 401)) \
        == "refused by the gateway (invalid_key, HTTP 401): the API key is not valid"
