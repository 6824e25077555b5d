"""streamer: live audio over websockets, models in worker processes, results streamed back.

The package is the client library (``streamer.client``) plus, with the ``server`` extra, the
gateway (``streamer.gateway``) and the workers (``streamer.workers``).
"""

__version__ = "0.2.0"
