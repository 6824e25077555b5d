"""The gateway's end of a worker's byte stream lives in ``streamer.link``."""

from streamer.link import MAX_FRAME, WorkerLink, open_link, read_frame

__all__ = ["MAX_FRAME", "WorkerLink", "open_link", "read_frame"]
