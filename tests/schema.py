"""The published protocol schema (doc/protocol.schema.json) as validators for tests."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "doc" / "protocol.schema.json"


@functools.cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


@functools.cache
def validator(definition: str) -> Draft202012Validator:
    """A validator for one of the schema's ``$defs`` ("ClientMessage", "ServerEvent", ...)."""
    root = schema()
    return Draft202012Validator({"$schema": root["$schema"], "$defs": root["$defs"],
                                 "$ref": f"#/$defs/{definition}"})


def problems(definition: str, text: str) -> list[str]:
    """Why a JSON text frame is not a valid ``definition`` (empty when it is)."""
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        return [f"not JSON: {exc}"]
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in validator(definition).iter_errors(message)]


def is_valid(definition: str, message: Any) -> bool:
    return validator(definition).is_valid(message)
