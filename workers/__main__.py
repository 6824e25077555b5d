"""``streamer-worker``: a worker that attaches to a running gateway (attached mode)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    print("streamer-worker: attached mode (--connect HOST:PORT) is not available yet; "
          "the gateway runs embedded workers (streamer-gateway --workers N)", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
