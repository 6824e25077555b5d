"""What ``streamer-client`` and ``streamer-loadtest`` share: option names and defaults, how
``--addr`` and ``--endpoint`` make a URL, one-line errors and the exit codes."""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from typing import Any, NoReturn

from yarl import URL

import streamer
from streamer.client import check_url
from streamer.client_audio import SAMPLE_FORMATS
from streamer.client_errors import ClientError, ConnectFailed, InvalidURL, Refused, Unauthorized

DEFAULT_ADDR = "ws://127.0.0.1:8080/api/v1/segmented"
DEFAULT_CHUNK_MS = 100.0
ENDPOINT_NAMES = ("simple", "segmented")

EXIT_OK = 0
EXIT_FAILED = 1        # the stream ran; an error event came, or it did not end normally
EXIT_USAGE = 2         # a bad option, URL, endpoint path or audio file
EXIT_UNREACHABLE = 3   # nobody answered at the address, or the handshake failed
EXIT_REFUSED = 4       # the gateway refused: busy, a missing or wrong key or token, the key's
                       # limits, another origin (the reason is printed)
EXIT_INTERRUPTED = 130

EXIT_CODES = ("exit codes: 0 success; 1 the stream ran but failed (an error, or an abnormal "
              "close); 2 bad usage (an option, the URL, an unknown endpoint path, an unreadable "
              "file); 3 gateway unreachable (or its TLS certificate does not verify); 4 refused by "
              "the gateway: busy, a missing or wrong API key or token, over the key's limits, "
              "or another origin (its reason is printed); 130 interrupted")
API_KEY_ENV = "STREAMER_API_KEY"


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


def add_auth_options(p: argparse.ArgumentParser) -> None:
    """--api-key, --token and --cacert. The key's value is never a default argparse could show
    in --help: the environment variable is read after parsing."""
    group = p.add_argument_group("authentication and TLS")
    cred = group.add_mutually_exclusive_group()
    cred.add_argument("--api-key", metavar="KEY",
                      help=f"API key for a gateway that needs one, sent as 'Authorization: "
                           f"Bearer' (default: the {API_KEY_ENV} environment variable, which "
                           "keeps the key out of the process list)")
    cred.add_argument("--token", metavar="TOKEN",
                      help="a token from POST /api/v1/token instead of a key, sent as a "
                           "websocket subprotocol")
    group.add_argument("--cacert", metavar="PATH",
                       help="for wss://: trust the certificate(s) in this PEM file (a private "
                            "or self-signed certificate) besides the system's")


def connect_auth(args: argparse.Namespace, url: str, prog: str) -> dict[str, Any]:
    """``api_key``, ``token`` and ``ssl`` for the client library from the options (and
    ``STREAMER_API_KEY``); a bad --cacert ends the program with a usage error."""
    auth: dict[str, Any] = {}
    if args.token is not None:
        auth["token"] = args.token
    elif args.api_key is not None or os.environ.get(API_KEY_ENV):
        auth["api_key"] = args.api_key if args.api_key is not None else os.environ[API_KEY_ENV]
    for name, value in auth.items():
        if not value.strip() or any(c.isspace() for c in value.strip()):
            source = f"--{name.replace('_', '-')}" if getattr(args, name) is not None \
                else API_KEY_ENV
            fail(prog, f"bad {source}: it is empty or has spaces in it", EXIT_USAGE)
    if args.cacert is not None:
        if URL(url).scheme != "wss":
            fail(prog, "--cacert is for wss:// addresses", EXIT_USAGE)
        try:
            auth["ssl"] = ssl.create_default_context(cafile=args.cacert)
        except OSError as exc:
            fail(prog, f"cannot read --cacert {args.cacert}: {exc.strerror or exc}", EXIT_USAGE)
        except ssl.SSLError as exc:
            fail(prog, f"--cacert {args.cacert} holds no usable PEM certificate ({exc.reason})",
                 EXIT_USAGE)
    return auth


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


def error_text(exc: ClientError) -> str:
    """The error's line, with what to do about a missing credential on the command line."""
    if isinstance(exc, Unauthorized) and exc.reason == "missing_credentials":
        return (f"refused by the gateway (missing_credentials, HTTP 401): it needs an API key; "
                f"set {API_KEY_ENV} or pass --api-key KEY (or --token TOKEN)")
    return str(exc)


def fail(prog: str, message: str, code: int) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)
