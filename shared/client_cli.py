"""``streamer-client``: stream an audio file to a gateway; events on stdout (JSON lines, or a
timeline with ``--pretty``), a summary on stderr, one line and an exit code for each failure."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from streamer.cli_common import (
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    add_auth_options,
    add_common_options,
    check_common_options,
    connect_auth,
    error_text,
    exit_code_for,
    fail,
    resolve_url,
)
from streamer.client import StreamReport, connect, play
from streamer.client_audio import AudioClip, read_audio
from streamer.client_errors import ClientError
from streamer.client_events import StreamEvent
from streamer.client_pretty import Timeline
from streamer.tracing import (
    context_from_traceparent,
    exporter_configured,
    setup_tracing,
    url_attributes,
)

PROG = "streamer-client"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, epilog=EXIT_CODES,
        description="Stream an audio file (WAV; FLAC, OGG and float WAV with the 'files' extra) "
                    "to a streamer gateway and print what comes back.")
    p.add_argument("-i", "--input", required=True, metavar="FILE", help="the audio file")
    add_common_options(p, real_time_default=False)
    add_auth_options(p)
    p.add_argument("--chunk-size", type=int, help=argparse.SUPPRESS)  # bytes; older spelling
    out = p.add_mutually_exclusive_group()
    out.add_argument("--pretty", dest="pretty", action="store_true", default=None,
                     help="a timeline for people (the default when stdout is a terminal)")
    out.add_argument("--json", dest="pretty", action="store_false",
                     help="one JSON object per event and line (the default otherwise)")
    p.add_argument("--retries", type=int, default=0, metavar="N",
                   help="when refused as busy (503) or over the key's limits (429), retry up "
                        "to N times after the gateway's Retry-After (default %(default)s)")
    p.add_argument("--trace-id", metavar="TRACEPARENT", help="W3C traceparent to continue")
    return p


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_common_options(parser, args)
    if args.retries < 0:
        parser.error("--retries must not be negative")
    if args.chunk_size is not None and args.chunk_size < 1:
        parser.error("--chunk-size must be at least 1")
    try:
        url = resolve_url(args.addr, args.endpoint)
    except ClientError as exc:
        fail(PROG, f"bad --addr: {exc}", EXIT_USAGE)
    auth = connect_auth(args, url, PROG)
    try:
        clip = read_audio(args.input, args.sample_format)
    except OSError as exc:
        fail(PROG, f"cannot read {args.input}: {exc.strerror or exc}", EXIT_USAGE)
    except ClientError as exc:
        fail(PROG, str(exc), EXIT_USAGE)
    if args.chunk_size is not None:  # bytes -> ms, for the older option
        args.chunk_ms = 1000 * args.chunk_size / (clip.format.frame_bytes
                                                  * clip.format.sample_rate)
    pretty = sys.stdout.isatty() if args.pretty is None else args.pretty
    timeline = (Timeline(sys.stdout, clip.format.channels, live=sys.stdout.isatty())
                if pretty else None)

    def show(event: StreamEvent) -> None:
        if timeline is not None:
            timeline(event)
        else:
            print(json.dumps(event.to_dict()), flush=True)

    tracing = _setup_tracing()
    report = StreamReport()
    error: ClientError | None = None
    try:
        asyncio.run(_stream(args, url, auth, clip, show, report))
    except ClientError as exc:
        error = exc
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        if timeline is not None:
            timeline.close()
        if tracing:
            from streamer.tracing import shutdown_tracing

            shutdown_tracing()
    if report.events or error is None:
        print(summary(report), file=sys.stderr)
    if error is not None:
        fail(PROG, error_text(error), exit_code_for(error))
    if report.errors or report.close_code not in (1000, None):
        raise SystemExit(EXIT_FAILED)


def summary(report: StreamReport) -> str:
    first = (f"{report.first_result_latency * 1000:.1f} ms"
             if report.first_result_latency is not None else "none")
    return (f"audio {report.audio_seconds:.2f} s, {report.results} results, {report.errors} "
            f"errors, first result after {first}, total {report.total_time:.2f} s, close code "
            f"{report.close_code}")


def _setup_tracing() -> bool:
    """Record the client's span with the OpenTelemetry SDK if it is installed (the ``server``
    extra has it); without it the trace context still flows, nothing is exported."""
    try:
        setup_tracing(PROG)
    except ImportError:
        if exporter_configured():
            print(f"{PROG}: OTEL_* asks for trace export, but the OpenTelemetry SDK is not "
                  "installed (pip install opentelemetry-sdk "
                  "opentelemetry-exporter-otlp-proto-http); not exporting", file=sys.stderr)
        return False
    return True


async def _stream(args: argparse.Namespace, url: str, auth: dict[str, Any], clip: AudioClip,
                  show: Callable[[StreamEvent], None], report: StreamReport) -> None:
    """The client's own span is the root of the trace, unless --trace-id names a parent."""
    parent = context_from_traceparent(args.trace_id) if args.trace_id else None
    with trace.get_tracer("streamer.client").start_as_current_span(
            "client.stream", context=parent, kind=trace.SpanKind.CLIENT,
            attributes={**url_attributes(url), "file.path": args.input}):
        async with connect(url, format=clip.format, interim_results=args.interim_results,
                           retries=args.retries, **auth) as stream:
            await play(stream, clip.data, chunk_ms=args.chunk_ms, real_time=args.real_time,
                       on_event=show, report=report)


if __name__ == "__main__":
    main()
