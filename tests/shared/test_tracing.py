"""Span attributes named by the semantic conventions, and the resource every process reports."""

from __future__ import annotations

import pytest

import streamer
from streamer import tracing
from streamer.tracing import url_attributes


def test_url_attributes_name_the_server_and_redact_secrets():
    assert url_attributes("ws://127.0.0.1:8080/api/v1/simple") == {
        "url.full": "ws://127.0.0.1:8080/api/v1/simple", "url.scheme": "ws",
        "server.address": "127.0.0.1", "server.port": 8080}
    attrs = url_attributes("wss://me:secret@example.com/api/v1/segmented?token=abc&x=")
    assert attrs["url.full"] == ("wss://REDACTED:REDACTED@example.com/api/v1/segmented"
                                 "?token=REDACTED&x=REDACTED")
    assert attrs["server.address"] == "example.com" and attrs["server.port"] == 443
    assert url_attributes("ws://[::1]/x")["server.address"] == "::1"
    assert "server.port" not in url_attributes("ws://host:notaport/x")


def test_the_resource_names_service_and_version(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tracing, "_provider", None)
    monkeypatch.setattr(tracing.trace, "set_tracer_provider", lambda provider: None)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    provider = tracing.setup_tracing("streamer-test")
    attrs = provider.resource.attributes
    assert attrs["service.name"] == "streamer-test"
    assert attrs["service.version"] == streamer.__version__
    assert attrs["deployment.environment"] == "test"
