"""How deep a JSON value nests: bounded, so that every walk of a body (estimates, mappings, re-serialisation)
stays well inside Python's stack and orjson's 255-level limit on dumps."""

from __future__ import annotations

from typing import Any

# levels of objects and arrays a body may nest (the body itself is level 1): a JSON Schema for structured
# output or a tool nests a few dozen at most, and a mapping may wrap it in a few more
MAX_NESTING = 128


def nests_deeper(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether objects and arrays in `value` nest more than `limit` levels. A walk level by level, not a
    recursion: it costs one visit per object or array and never the stack it guards."""
    level = [value] if type(value) is dict or type(value) is list else []
    for _ in range(limit):
        below: list[Any] = []
        for container in level:
            below += [x for x in (container.values() if type(container) is dict else container) if type(x) is dict or type(x) is list]
        if not below:
            return False
        level = below
    return True
