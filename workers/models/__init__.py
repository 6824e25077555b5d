"""Models by name. Importing this package registers every bundled model."""

from streamer.workers.models import counter, features, transcribe  # noqa: F401  (registers)
from streamer.workers.models.base import (
    Model,
    SegmentInfo,
    make_model,
    model_class,
    model_names,
    register,
)

__all__ = ["Model", "SegmentInfo", "make_model", "model_class", "model_names", "register"]
