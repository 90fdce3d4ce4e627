"""Parse the dict-valued attributes some libraries write as text (JSON, or a Python repr)."""

from __future__ import annotations

import ast
import json
from typing import Any

_MAX_CHARS = 8192  # usage objects are small: never parse a large value


def mapping(value: object) -> dict[str, Any]:
    """A dict from a JSON object or a Python dict literal given as a string; {} for anything else.

    `ast.literal_eval` evaluates literals only (no names, calls or operators), so a hostile string
    cannot run code; its size is bounded first.
    """
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value.startswith("{") or len(value) > _MAX_CHARS:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            return {}
    return parsed if isinstance(parsed, dict) else {}


def dig(data: dict[str, Any], *path: str) -> Any:
    for name in path:
        if not isinstance(data, dict):
            return None
        data = data.get(name)
    return data
