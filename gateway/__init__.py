"""The websocket gateway: sessions, audio decoding, segmentation, dispatch to worker processes."""
