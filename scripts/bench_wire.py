#!/usr/bin/env python
"""Encoding and decoding the gateway <-> worker envelopes: the codec in use against alternatives.

Every segment crosses the process boundary twice (a request out, a result back) and each side
encodes one and decodes the other, so the codec is paid four times per segment. Three codecs,
same messages, same run, in alternating rounds:

- ``field loop``: msgpack and a loop over each message's fields checking each value against its
  annotation (how ``streamer.wire`` worked before msgspec);
- ``compiled``: msgpack and straight-line Python written per message class (one dict display to
  encode; one lookup and one exact-type test per field to decode), the fastest pure-Python way;
- ``msgspec`` (in use): ``streamer.wire``'s ``to_wire``/``from_wire``, msgspec Structs
  validated and encoded natively (version and kind read first, then the kind's fields).

All three check the schema version, the kind, every field's type and the cross-field rules, and
produce the same bytes format. Times are per message (median of the rounds); ratios against
``field loop``.

Usage: .venv/bin/python scripts/bench_wire.py [--count 20000] [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import msgspec
import numpy as np
from bench_common import machine, table, write_json

from streamer.errors import WireError
from streamer.wire import SCHEMA_VERSION, InferenceRequest, InferenceResult, from_wire

TRACE = {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}


def messages() -> dict[str, Any]:
    """The two messages every segment sends: a 0.5 s request and its result."""
    audio = np.zeros(8000, np.float32).tobytes()
    return {
        "request, 0.5 s audio": InferenceRequest(
            request_id=12345, session_id="0123456789ab", channel=0, seq=17, start_time=8.5,
            end_time=9.0, audio=audio, sent_at=time.time(), trace=TRACE),
        "result": InferenceResult(
            request_id=12345, worker_id=0, output={"count": 8000, "text": "hello"},
            queue_wait=1.2e-5, inference_time=3.4e-4, trace=TRACE),
    }


# ---- each message's schema, read from its annotations (for the two Python codecs) -------------

@dataclass(frozen=True)
class Field:
    name: str
    types: frozenset[type]  # exact types accepted (msgpack decodes to exact builtins)
    required: bool
    default: Any            # a value, or a factory when ``factory``
    factory: bool
    text_map: bool          # a map whose keys must be text ...
    text_values: bool       # ... and its values too


_BASES: dict[Any, frozenset[type]] = {int: frozenset({int}), float: frozenset({int, float}),
                                      str: frozenset({str}), bytes: frozenset({bytes}),
                                      bool: frozenset({bool})}


def schema(cls: type) -> tuple[Field, ...]:
    out = []
    for f in msgspec.structs.fields(cls):
        if f.name == "v":
            continue
        optional = type(None) in typing.get_args(f.type)
        base = next(a for a in typing.get_args(f.type) if a is not type(None)) \
            if optional else f.type
        is_map = typing.get_origin(base) is dict
        types = frozenset({dict}) if is_map else _BASES[base]
        if optional:
            types |= {type(None)}
        factory = f.default_factory is not msgspec.NODEFAULT
        out.append(Field(f.name, types, f.required, f.default_factory if factory else f.default,
                         factory, is_map, is_map and typing.get_args(base)[1] is str))
    return tuple(out)


def _check(kind: str, f: Field, value: Any) -> None:
    """Raise unless ``value`` fits ``f``."""
    ok = type(value) in f.types
    if ok and f.text_map and value:
        ok = all(type(k) is str and (not f.text_values or type(v) is str)
                 for k, v in value.items())
    if not ok:
        raise WireError(f"{kind} envelope field '{f.name}' has type {type(value).__name__}")


_KINDS: dict[str, Any] = {c.KIND: c for c in (InferenceRequest, InferenceResult)}
_SCHEMAS = {c: schema(c) for c in _KINDS.values()}
_MISSING: Any = object()


def _head(data: bytes) -> tuple[dict[str, Any], Any]:
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise WireError(f"undecodable envelope: {exc}") from None
    if type(obj) is not dict or obj.get("v") != SCHEMA_VERSION:
        raise WireError("not a map of this schema version")
    return obj, _KINDS[obj["kind"]]


# ---- field loop: the reference ----------------------------------------------------------------

def loop_encode(msg: Any) -> bytes:
    obj = {"v": SCHEMA_VERSION, "kind": msg.KIND}
    for f in _SCHEMAS[type(msg)]:
        obj[f.name] = getattr(msg, f.name)
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def loop_decode(data: bytes) -> Any:
    obj, cls = _head(data)
    values = {}
    for f in _SCHEMAS[cls]:
        value = obj.get(f.name, _MISSING)
        if value is _MISSING:
            if f.required:
                raise WireError(f"{cls.KIND} envelope lacks '{f.name}'")
            continue
        _check(cls.KIND, f, value)
        values[f.name] = value
    msg = cls(**values)
    msg.validate()
    return msg


# ---- compiled: straight-line Python per message class ------------------------------------------

def compile_codec(cls: Any) -> tuple[Callable[[Any], bytes], Callable[[dict[str, Any]], Any]]:
    """``encode(msg)`` and ``decode(map)`` for ``cls``, written as source the way
    ``dataclasses`` writes ``__init__``."""
    fields = _SCHEMAS[cls]
    env: dict[str, Any] = {"_cls": cls, "_V": SCHEMA_VERSION, "_K": cls.KIND,
                           "_MISSING": _MISSING, "_check": _check, "WireError": WireError,
                           "_pack": msgpack.Packer(use_bin_type=True).pack}
    items = ", ".join(f"{f.name!r}: m.{f.name}" for f in fields)
    src = [f"def encode(m):\n    return _pack({{'v': _V, 'kind': _K, {items}}})\n",
           "def decode(o):"]
    for i, f in enumerate(fields):
        env[f"_T{i}"], env[f"_F{i}"], env[f"_D{i}"] = f.types, f, f.default
        src.append(f"    x{i} = o.get({f.name!r}, _MISSING)")
        src.append(f"    if x{i} is _MISSING:")
        if f.required:
            src.append(f"        raise WireError(_K + \" envelope lacks '{f.name}'\")")
        else:
            src.append(f"        x{i} = _D{i}()" if f.factory else f"        x{i} = _D{i}")
        test = f"type(x{i}) not in _T{i}" + (f" or x{i}" if f.text_map else "")
        src.append(f"    {'elif' if not f.required else 'if'} {test}:")
        src.append(f"        _check(_K, _F{i}, x{i})")
    args = ", ".join(f"x{i}" for i in range(len(fields)))
    src.append(f"    m = _cls({args})\n    m.validate()\n    return m")
    exec("\n".join(src), env)  # noqa: S102
    return env["encode"], env["decode"]


_COMPILED = {c: compile_codec(c) for c in _KINDS.values()}


def compiled_encode(msg: Any) -> bytes:
    return _COMPILED[type(msg)][0](msg)


def compiled_decode(data: bytes) -> Any:
    obj, cls = _head(data)
    return _COMPILED[cls][1](obj)


# ---- the run ----------------------------------------------------------------------------------

def time_per_call(fn: Callable[[Any], Any], arg: Any, count: int) -> float:
    t0 = time.perf_counter()
    for _ in range(count):
        fn(arg)
    return (time.perf_counter() - t0) / count


def run(count: int, rounds: int = 7) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, msg in messages().items():
        data = msg.to_wire()
        for enc in (loop_encode, compiled_encode):  # every codec reads every codec's bytes
            assert from_wire(enc(msg)) == msg
            assert loop_decode(enc(msg)) == compiled_decode(enc(msg)) == msg
        assert loop_decode(data) == compiled_decode(data) == msg
        codecs: dict[str, tuple[Callable[[Any], Any], Callable[[bytes], Any]]] = {
            "field loop": (loop_encode, loop_decode),
            "compiled": (compiled_encode, compiled_decode),
            "msgspec (in use)": (type(msg).to_wire, from_wire),
        }
        times: dict[str, dict[str, list[float]]] = {
            c: {"encode": [], "decode": []} for c in codecs}
        per = max(1, count // rounds)
        for _ in range(rounds):
            for codec, (enc, dec) in codecs.items():
                times[codec]["encode"].append(time_per_call(enc, msg, per))
                times[codec]["decode"].append(time_per_call(dec, data, per))
        out[name] = {"bytes": len(data), "codecs": {
            c: {k: statistics.median(v) for k, v in t.items()} for c, t in times.items()}}
    return out


HEADERS = ["message", "codec", "encode us", "decode us", "both us", "both vs field loop"]


def rows(result: dict[str, Any]) -> list[list[object]]:
    out: list[list[object]] = []
    for name, r in result.items():
        base = sum(r["codecs"]["field loop"].values())
        for codec, t in r["codecs"].items():
            both = t["encode"] + t["decode"]
            out.append([f"{name} ({r['bytes']} B)", codec, f"{t['encode'] * 1e6:.2f}",
                        f"{t['decode'] * 1e6:.2f}", f"{both * 1e6:.2f}", f"{both / base:.2f}x"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=20000, help="calls per codec and message")
    p.add_argument("--quick", action="store_true", help="a few hundred calls, for tests")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    count = 700 if args.quick else args.count
    result = run(count)
    print(f"Wire codecs, {count} calls per codec, message and direction; median of 7 rounds")
    print(table(HEADERS, rows(result)))
    write_json(args.json, {"benchmark": "wire", "machine": machine(), "count": count,
                           "messages": result})


if __name__ == "__main__":
    main()
