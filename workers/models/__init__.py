"""Models by name. Importing this package registers every bundled model."""

from streamer.workers.models import (  # noqa: F401  (registers)
    counter,
    features,
    silero_vad,
    transcribe,
    vosk_model,
)
from streamer.workers.models.base import (
    Model,
    SegmentInfo,
    make_model,
    model_class,
    model_names,
    register,
)

__all__ = ["Model", "SegmentInfo", "make_model", "model_class", "model_names", "register"]
