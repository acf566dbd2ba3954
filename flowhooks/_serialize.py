"""JSON conversion that never fails, with a size cap (used by events, webhooks, history).

Payloads are arbitrary Python objects. pydantic-core converts what JSON can
hold (models, dataclasses, datetimes, sets, ...); anything else falls back to
``repr()``. A payload whose JSON text is longer than the configured cap is
replaced by a visible truncation marker holding a prefix of that text.
"""

from __future__ import annotations

import json
from typing import Any, Final

import pydantic_core

TRUNCATION_MARKER: Final = "__flowhooks_truncated__"
"""Key present in the dict that stands in for a payload larger than the cap."""

DEFAULT_MAX_PAYLOAD_CHARS: Final = 64_000

_limits = {"max_payload_chars": DEFAULT_MAX_PAYLOAD_CHARS}


def set_max_payload_chars(limit: int | None) -> None:
    """Set the process-wide cap on a serialised payload, in JSON characters.

    Args:
        limit: the cap; ``None`` restores the default (64,000 characters).

    Raises:
        ValueError: when ``limit`` is not a positive integer.
    """
    if limit is None:
        limit = DEFAULT_MAX_PAYLOAD_CHARS
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        msg = f"max payload size must be a positive number of characters, got {limit!r}"
        raise ValueError(msg)
    _limits["max_payload_chars"] = limit


def get_max_payload_chars() -> int:
    """Return the process-wide cap on a serialised payload, in JSON characters."""
    return _limits["max_payload_chars"]


def _fallback(value: Any) -> Any:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not break serialisation
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


def to_jsonable(value: Any, *, max_chars: int | None = None) -> Any:
    """Convert ``value`` into plain JSON data, never raising.

    Args:
        value: any Python object.
        max_chars: cap on the JSON text of the result; defaults to the
            process-wide cap (see ``set_max_payload_chars``).

    Returns:
        JSON-compatible data. A value too large for the cap becomes
        ``{"__flowhooks_truncated__": True, "original_chars": n, "preview": "..."}``.
    """
    try:
        data = pydantic_core.to_jsonable_python(value, fallback=_fallback, serialize_unknown=True)
    except Exception:  # circular references, broken model serialisers, ...
        data = _fallback(value)
    limit = get_max_payload_chars() if max_chars is None else max_chars
    if isinstance(data, str) and len(data) <= limit:
        return data
    if data is None or isinstance(data, bool | int | float):
        return data
    text = json.dumps(data, ensure_ascii=False, default=_fallback)
    if len(text) <= limit:
        return data
    return {TRUNCATION_MARKER: True, "original_chars": len(text), "preview": text[:limit]}


def dumps(value: Any, *, max_chars: int | None = None) -> str:
    """Serialise ``value`` to a JSON string, never raising (see ``to_jsonable``)."""
    return json.dumps(to_jsonable(value, max_chars=max_chars), ensure_ascii=False)
