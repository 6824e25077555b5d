"""``streamer-client``: stream a WAV file, print each event as a JSON line on stdout."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable

import aiohttp
from opentelemetry import trace

from streamer.client import StreamReport, read_wav, stream_audio
from streamer.protocol import AudioFormat, ErrorEvent, SegmentEvent, ServerEvent
from streamer.tracing import context_from_traceparent, setup_tracing, shutdown_tracing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamer-client",
                                description="Stream a WAV file to a streamer gateway.")
    p.add_argument("-i", "--input", required=True, help="PCM WAV file (16- or 32-bit)")
    p.add_argument("--addr", default="ws://127.0.0.1:8080/api/v1/segmented",
                   help="websocket URL (default %(default)s)")
    p.add_argument("--chunk-size", type=int, default=8192,
                   help="bytes per websocket frame (default %(default)s)")
    p.add_argument("--real-time", action="store_true", help="pace the audio like a live source")
    p.add_argument("--interim-results", action="store_true", help="ask for interim results")
    p.add_argument("--trace-id", help="W3C traceparent to continue")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.chunk_size < 1:
        sys.exit("streamer-client: --chunk-size must be at least 1")
    try:
        fmt, data = read_wav(args.input)
    except (OSError, ValueError) as exc:
        sys.exit(f"streamer-client: {exc}")

    def show(event: ServerEvent) -> None:
        print(json.dumps(event.to_dict()), flush=True)

    setup_tracing("streamer-client")
    try:
        report = asyncio.run(_traced_stream(args, fmt, data, show))
    except (aiohttp.ClientError, OSError) as exc:
        sys.exit(f"streamer-client: cannot stream to {args.addr}: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        shutdown_tracing()
    segments = sum(isinstance(e, SegmentEvent) for e in report.events)
    errors = sum(isinstance(e, ErrorEvent) for e in report.events)
    first = (f"{report.first_result_latency * 1000:.1f} ms"
             if report.first_result_latency is not None else "none")
    print(f"audio {report.audio_seconds:.2f} s, {segments} results, {errors} errors, "
          f"first result after {first}, total {report.total_time:.2f} s, "
          f"close code {report.close_code}", file=sys.stderr)
    if errors or report.close_code not in (1000, None):
        sys.exit(1)


async def _traced_stream(args: argparse.Namespace, fmt: AudioFormat, data: bytes,
                         show: Callable[[ServerEvent], None]) -> StreamReport:
    """The client's own span is the root of the trace, unless --trace-id names a parent."""
    parent = context_from_traceparent(args.trace_id) if args.trace_id else None
    with trace.get_tracer("streamer.client").start_as_current_span(
            "client.stream", context=parent,
            attributes={"url": args.addr, "file": args.input}):
        return await stream_audio(
            args.addr, fmt, data, chunk_size=args.chunk_size, real_time=args.real_time,
            interim_results=args.interim_results, on_event=show)


if __name__ == "__main__":
    main()
