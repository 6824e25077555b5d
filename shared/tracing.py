"""OpenTelemetry set-up and W3C trace-context helpers shared by gateway, workers and clients.

Spans are always recorded (so a stream without a client trace still gets a real root trace whose
id reaches the workers), but exported only when the standard ``OTEL_*`` variables ask for it:
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or
``OTEL_TRACES_EXPORTER=otlp``. With none set nothing is exported and nothing is printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:  # the SDK is a server dependency; clients only need the API
    from opentelemetry.sdk.trace import TracerProvider

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None


def exporter_configured(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter == "none":
        return False
    return exporter == "otlp" or bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                                      or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup_tracing(service_name: str) -> TracerProvider:
    """Install the process's tracer provider once; later calls return the same one."""
    global _provider
    if _provider is not None:
        return _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from streamer import __version__

    # OTEL_RESOURCE_ATTRIBUTES may add to these; OTEL_SERVICE_NAME replaces the name
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                               service_name),
                                "service.version": __version__})
    provider = TracerProvider(resource=resource)
    if exporter_configured():
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(_make_exporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_tracing() -> None:
    """Flush and stop exporting (at process exit, in workers too)."""
    if _provider is not None:
        _provider.shutdown()


def _make_exporter():  # type: ignore[no-untyped-def]
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as exc:  # not in the server extra: grpc is heavy and rarely needed
            raise RuntimeError("OTLP over grpc needs the opentelemetry-exporter-otlp-proto-grpc "
                               "package; install it or use http/protobuf") from exc
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    return OTLPSpanExporter()


def url_attributes(url: str) -> dict[str, Any]:
    """``url.full``, ``server.address`` and ``server.port`` of a request's URL, named as the
    semantic conventions name them; credentials and query values are redacted, since spans
    leave the process."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "REDACTED:REDACTED@" + netloc.rpartition("@")[2]
    query = urlencode([(key, "REDACTED") for key, _ in parse_qsl(parts.query,
                                                                  keep_blank_values=True)])
    attrs: dict[str, Any] = {"url.full": urlunsplit((parts.scheme, netloc, parts.path, query,
                                                     "")),
                             "url.scheme": parts.scheme}
    try:
        port = parts.port or {"ws": 80, "http": 80, "wss": 443, "https": 443}.get(parts.scheme)
    except ValueError:  # a port that is not a number: the connection will say so
        port = None
    if parts.hostname:
        attrs["server.address"] = parts.hostname
    if port:
        attrs["server.port"] = port
    return attrs


def context_from_traceparent(traceparent: str | None,
                             tracestate: str | None = None) -> context.Context:
    """The context a ``traceparent`` names; an empty one (a new root) when absent or invalid."""
    if not traceparent:
        return context.Context()
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _propagator.extract(carrier)


def context_from_carrier(carrier: Mapping[str, str]) -> context.Context:
    return _propagator.extract(dict(carrier))


def inject(ctx: context.Context | None = None) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current or given context, for an envelope."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=ctx)
    return carrier


def current_traceparent() -> str | None:
    return inject().get("traceparent")


def trace_id_hex(span: trace.Span) -> str:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else "-"
