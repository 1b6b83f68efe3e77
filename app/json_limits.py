"""Bounds on the free-form JSON a client may store: entry ``metadata``, member ``attributes``, program
``settings`` as sent.

Free-form JSON is stored as ``jsonb`` and sent back in answers, so how deep it nests is bounded by what every
layer on the way can take: the JSON parser refuses about 1,000 levels, pydantic's serialiser about 255 (beyond
that an answer could not be written at all: a 500 for the client's own input), Postgres' ``jsonb`` more.
``MAX_JSON_DEPTH`` (32 nested objects or arrays inside the field) is far below all of them and far above any
real use; deeper is 422 ``validation_error`` naming the field, checked before anything is written.

The check walks the value iteratively, so a deep value cannot exhaust the interpreter's stack.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

MAX_JSON_DEPTH = 32


def json_depth(value: Any) -> int:
    """Levels of objects and arrays: ``1`` for ``{}``, ``2`` for ``{"a": []}``, ``0`` for a scalar."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def bounded_depth(value: Any) -> Any:
    """Pydantic validator: ``value`` unchanged if it nests at most ``MAX_JSON_DEPTH`` levels (the field's own
    object counts as one), else ``ValueError``."""
    depth = json_depth(value)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested {depth} levels deep; at most {MAX_JSON_DEPTH} levels of objects and arrays")
    return value


FreeFormObject = Annotated[dict[str, Any], AfterValidator(bounded_depth),
                           Field(description=f"Free-form JSON object, at most {MAX_JSON_DEPTH} levels deep")]
