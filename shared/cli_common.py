"""What ``streamer-client`` and ``streamer-loadtest`` share: option names and defaults, how
``--addr`` and ``--endpoint`` make a URL, one-line errors and the exit codes."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from yarl import URL

import streamer
from streamer.client import check_url
from streamer.client_audio import SAMPLE_FORMATS
from streamer.client_errors import ClientError, ConnectFailed, InvalidURL, Refused

DEFAULT_ADDR = "ws://127.0.0.1:8080/api/v1/segmented"
DEFAULT_CHUNK_MS = 100.0
ENDPOINT_NAMES = ("simple", "segmented")

EXIT_OK = 0
EXIT_FAILED = 1        # the stream ran; an error event came, or it did not end normally
EXIT_USAGE = 2         # a bad option, URL, endpoint path or audio file
EXIT_UNREACHABLE = 3   # nobody answered at the address, or the handshake failed
EXIT_REFUSED = 4       # the gateway's admission control refused (the reason is printed)
EXIT_INTERRUPTED = 130

EXIT_CODES = ("exit codes: 0 success; 1 the stream ran but failed (an error, or an abnormal "
              "close); 2 bad usage (an option, the URL, an unknown endpoint path, an unreadable "
              "file); 3 gateway unreachable; 4 refused by the gateway (its reason is printed); "
              "130 interrupted")


def add_common_options(p: argparse.ArgumentParser, real_time_default: bool) -> None:
    """--addr, --endpoint, --chunk-ms, --real-time/--fast, --sample-format, --interim-results
    and --version, worded alike in both tools."""
    p.add_argument("--addr", default=DEFAULT_ADDR, metavar="URL",
                   help="the gateway's websocket URL; HOST:PORT alone means ws://HOST:PORT, "
                        "a URL without a path gets /api/v1/segmented (default %(default)s)")
    p.add_argument("--endpoint", choices=ENDPOINT_NAMES,
                   help="use /api/v1/ENDPOINT on --addr's host instead of --addr's path")
    p.add_argument("--chunk-ms", type=float, default=DEFAULT_CHUNK_MS, metavar="MS",
                   help="audio per websocket frame, ms (default %(default)g)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--real-time", dest="real_time", action="store_true",
                      default=real_time_default,
                      help="pace the audio like a live source: a frame goes once its audio has "
                           "been captured" + (" (the default)" if real_time_default else ""))
    pace.add_argument("--fast", dest="real_time", action="store_false",
                      help="send the audio as fast as the gateway reads it"
                           + ("" if real_time_default else " (the default)"))
    p.add_argument("--sample-format", choices=SAMPLE_FORMATS,
                   help="samples to send: s16 or f32 (default: a file's own precision, s16 for "
                        "16 bits or fewer, else f32; generated audio: s16)")
    p.add_argument("--interim-results", action="store_true",
                   help="ask /segmented for interim results")
    p.add_argument("--version", action="version", version=f"%(prog)s {streamer.__version__}")


def check_common_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.chunk_ms <= 0:
        p.error("--chunk-ms must be positive")


def resolve_url(addr: str, endpoint: str | None = None) -> str:
    """``--addr`` (a URL, or HOST:PORT) with ``--endpoint``'s path if given; raises
    :class:`InvalidURL` with a one-line message."""
    text = addr.strip()
    if "://" not in text:
        text = f"ws://{text}"
    url = check_url(text)
    url = url.with_scheme({"http": "ws", "https": "wss"}.get(url.scheme, url.scheme))
    if endpoint is None and url.path in ("", "/"):
        endpoint = "segmented"
    if endpoint is not None:
        url = url.with_path(f"/api/v1/{endpoint}").with_query(None).with_fragment(None)
    return str(URL(url))


def exit_code_for(exc: ClientError) -> int:
    if isinstance(exc, Refused):
        return EXIT_REFUSED
    if isinstance(exc, InvalidURL) or (isinstance(exc, ConnectFailed) and exc.status == 404):
        return EXIT_USAGE
    if isinstance(exc, ConnectFailed):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def fail(prog: str, message: str, code: int) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)
