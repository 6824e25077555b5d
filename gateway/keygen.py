"""``streamer-keygen``: a new random API key, and the hash that goes in the gateway's config.

The key is shown once, here; the gateway only ever stores its hash.
"""

from __future__ import annotations

import argparse
import json
import sys

from streamer import __version__
from streamer.gateway.auth import hash_key, new_key


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer-keygen",
        description="Print a new random API key and the config entry (with its hash) that "
                    "lets the gateway accept it. Give the key to the client; put the entry "
                    "under auth.keys in the gateway's config.")
    parser.add_argument("--name", default="default", help="the key's name, as it appears in "
                        "logs and metrics (default: default)")
    parser.add_argument("--max-sessions", type=int, default=0,
                        help="concurrent sessions allowed with this key (0: no limit)")
    parser.add_argument("--audio-seconds-per-minute", type=float, default=0.0,
                        help="channel-seconds of audio per minute allowed (0: no limit)")
    parser.add_argument("--hash-stdin", action="store_true",
                        help="read an existing key from stdin and print only its hash")
    parser.add_argument("--json", action="store_true", help="print the entry as JSON, not TOML")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.hash_stdin:
        key = sys.stdin.readline().strip()
        if not key:
            print("streamer-keygen: no key on stdin", file=sys.stderr)
            raise SystemExit(2)
        print(hash_key(key))
        return
    key = new_key()
    entry: dict[str, object] = {"name": args.name, "hash": hash_key(key)}
    if args.max_sessions:
        entry["max_sessions"] = args.max_sessions
    if args.audio_seconds_per_minute:
        entry["audio_seconds_per_minute"] = args.audio_seconds_per_minute
    print(f"key (give to the client; it is not stored anywhere): {key}")
    if args.json:
        print(json.dumps({"auth": {"keys": [entry]}}, indent=2))
    else:
        print("config entry (TOML):\n[[auth.keys]]")
        for field, value in entry.items():
            print(f"{field} = {json.dumps(value)}")


if __name__ == "__main__":
    main()
