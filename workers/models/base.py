"""The model interface: one class per model, registered by name."""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, TypeVar

import numpy as np

from streamer.config import coerce
from streamer.errors import ConfigError


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """What a model may know about the audio it is given besides the samples."""

    session_id: str
    channel: int
    start_time: float
    end_time: float
    is_final: bool | None
    stateful_key: str | None = None


class Model:
    """Subclass, set ``Params`` to a dataclass of the model's settings, and implement ``infer``.

    ``infer`` runs in a worker process and may block or burn CPU as long as it likes. A model
    that keeps state between segments of one stream sets ``stateful = True``; the gateway then
    sends every segment of a (session, channel) to the same worker, in order, and calls
    ``end_stream`` when that stream is over.

    A *streaming* model (stateful, and implementing :meth:`feed`, :meth:`partial` and
    :meth:`finish`) hears a speech segment while it is spoken: on ``/api/v1/segmented`` the
    gateway sends the segment's new audio every ``session.feed_interval`` seconds to ``feed``,
    asks ``partial`` when the client is due an interim result and ``finish`` at the segment's
    end, so finishing costs the last piece, not a decode of the whole segment. ``infer`` still
    answers whole segments (``/api/v1/simple``).
    """

    stateful: ClassVar[bool] = False

    @dataclass(frozen=True, slots=True)
    class Params:
        pass

    def __init__(self, params: Any) -> None:
        self.params = params

    def warmup(self) -> None:
        """Run once before the worker says it is ready (load weights, first slow call)."""

    def infer(self, audio: np.ndarray, info: SegmentInfo) -> dict[str, Any]:
        raise NotImplementedError

    def infer_batch(self, items: list[tuple[np.ndarray, SegmentInfo]]
                    ) -> list[dict[str, Any] | Exception]:
        """Several segments at once, one output (or the exception for that segment) per item,
        in order. Override when one call on many segments is cheaper than many calls; the
        default, a loop over ``infer``, makes the worker answer each segment as soon as it is
        done instead of holding results for a batch that saves nothing."""
        out: list[dict[str, Any] | Exception] = []
        for audio, info in items:
            try:
                out.append(self.infer(audio, info))
            except Exception as exc:  # one bad segment must not fail its batch-mates
                out.append(exc)
        return out

    @classmethod
    def batches(cls) -> bool:
        """Whether this model overrides :meth:`infer_batch` (runs batches for real)."""
        return cls.infer_batch is not Model.infer_batch

    def end_stream(self, stateful_key: str) -> None:
        """Forget what was kept for one stream (stateful models only)."""

    # ---- streaming models -------------------------------------------------------------------
    def feed(self, stateful_key: str, audio: np.ndarray, info: SegmentInfo) -> None:
        """Take in the next piece of the open segment: ``audio`` ends at ``info.end_time``;
        ``info.start_time`` is the segment's start (a new value: a new segment began)."""
        raise NotImplementedError

    def partial(self, stateful_key: str, info: SegmentInfo) -> dict[str, Any]:
        """The interim output for the open segment so far."""
        raise NotImplementedError

    def finish(self, stateful_key: str, info: SegmentInfo) -> dict[str, Any]:
        """The segment ended (its last piece was just fed): the final output; close it."""
        raise NotImplementedError

    @classmethod
    def streaming(cls) -> bool:
        """Whether this model takes open segments piece by piece (see the class docstring)."""
        return cls.stateful and all(
            getattr(cls, name) is not getattr(Model, name)
            for name in ("feed", "partial", "finish"))


M = TypeVar("M", bound=type[Model])
_REGISTRY: dict[str, type[Model]] = {}


def register(name: str) -> Callable[[M], M]:
    def wrap(cls: M) -> M:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = cls
        return cls
    return wrap


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def model_class(name: str) -> type[Model]:
    """A registered model by name, or any model class by import path,
    ``package.module:ClassName``."""
    if ":" in name:
        return import_model(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(model_names())}; or "
                          "give an import path, package.module:ClassName)") from None


def import_model(path: str) -> type[Model]:
    """Load a model class from the Python path; the current directory is searched too, so
    ``--model examples.loudness:Loudness`` works from a checkout without installing it."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model {path!r}: expected an import path like package.module:ClassName")
    try:
        module = _import(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"model {path!r}: cannot import {module_name!r} ({exc}); it must be "
                          "installed or on the Python path (PYTHONPATH, or the current "
                          "directory)") from None
    except Exception as exc:
        raise ConfigError(f"model {path!r}: importing {module_name!r} failed: "
                          f"{type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if obj is None:
        raise ConfigError(f"model {path!r}: module {module_name!r} has no {attr!r}")
    if not (isinstance(obj, type) and issubclass(obj, Model)):
        raise ConfigError(f"model {path!r}: {attr} is not a model class (subclass "
                          "streamer.workers.models.Model and implement infer)")
    if obj.infer is Model.infer and obj.infer_batch is Model.infer_batch and not obj.streaming():
        raise ConfigError(f"model {path!r}: {attr} implements neither infer nor infer_batch")
    if not dataclasses.is_dataclass(obj.Params):
        raise ConfigError(f"model {path!r}: {attr}.Params must be a dataclass of its settings")
    return obj


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError:
        here = os.getcwd()
        if here in sys.path:
            raise
        sys.path.append(here)
        return importlib.import_module(module_name)


def parse_params(cls: type[Model], raw: Mapping[str, Any], name: str) -> Any:
    """Validate a model's parameters from config with messages that name the setting."""
    fields = {f.name: f for f in dataclasses.fields(cls.Params)}
    unknown = set(raw) - set(fields)
    if unknown:
        raise ConfigError(f"unknown parameter(s) for model {name!r}: "
                          f"{', '.join(sorted(unknown))} (known: {', '.join(fields) or 'none'})")
    values = {k: coerce(f"model.{k}", v, type(fields[k].default), fields[k].metadata)
              for k, v in raw.items()}
    return cls.Params(**values)


def make_model(name: str, raw_params: Mapping[str, Any]) -> Model:
    cls = model_class(name)
    return cls(parse_params(cls, raw_params, name))
