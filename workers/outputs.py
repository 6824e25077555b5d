"""A model's output made fit for the wire and for JSON, or refused with a reason.

Models return numpy values all the time (``np.float32(0.5)``, an array of scores): those become
the Python numbers and lists they stand for. Anything else that JSON cannot carry (bytes, a set,
an arbitrary object) is an :class:`OutputError` for that one segment; the worker lives on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamer.errors import OutputError

MAX_DEPTH = 32


def to_json_like(output: Any) -> dict[str, Any]:
    """``output`` as a dict of JSON-like values (numpy converted); raises :class:`OutputError`
    naming the first value that cannot be sent."""
    if not isinstance(output, dict):
        raise OutputError(f"the model returned {type(output).__name__}, not a dict")
    return _convert(output, "output", 0)  # type: ignore[no-any-return]


def _convert(value: Any, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise OutputError(f"{where} is nested more than {MAX_DEPTH} levels deep")
    # Subclasses (np.float64 is a float, an IntEnum an int) become the plain type: the wire's
    # encoder takes exact types only.
    if value is None or type(value) is bool:
        return value
    if isinstance(value, str):
        return value if type(value) is str else str(value)
    if isinstance(value, int):  # a bool returned above
        if not -(2**63) <= value < 2**64:
            raise OutputError(f"{where} is an integer too large to send ({value})")
        return value if type(value) is int else int(value)
    if isinstance(value, float):
        # NaN and infinity travel; the gateway's JSON turns them into null
        return value if type(value) is float else float(value)
    if isinstance(value, np.generic | np.ndarray):
        if value.dtype.kind not in "biuf":
            raise OutputError(f"{where} is a numpy {value.dtype} value; only numbers are sent")
        return _convert(value.tolist(), where, depth)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise OutputError(f"{where} has a key of type {type(key).__name__}; keys must "
                                  "be text")
            out[key] = _convert(item, f"{where}.{key}", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_convert(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise OutputError(f"{where} is of type {type(value).__name__}, which cannot be sent as JSON "
                      "(use numbers, text, booleans, None, lists and dicts)")
