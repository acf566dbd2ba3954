"""JSON conversion that never fails, with a size cap (used by events, webhooks, history).

Payloads are arbitrary Python objects. The result is always strict JSON (what
``JSON.parse`` in JavaScript or Go's ``encoding/json`` accept):

- plain data (dicts, lists, tuples, strings, numbers, booleans, ``None``) is
  kept; models (with their own serialisers), dataclasses, datetimes, sets,
  UUIDs, ... are converted as pydantic converts them; anything else becomes
  its ``repr()``;
- a one-shot iterator (a generator, ``map``, ``zip``, ``itertools.count()``,
  an open file, ...) becomes its ``repr()``: it is never iterated, so the
  value a node returned is left intact for the node that consumes it;
- NaN, Infinity and -Infinity become the strings ``"NaN"``, ``"Infinity"``
  and ``"-Infinity"``;
- a value that refers back to one of its own containers is replaced by
  ``"<circular reference>"``, and only that value.

A payload whose JSON text is longer than the configured cap is replaced by a
visible truncation marker holding a prefix of that text.

Plain data takes the fast path: the standard library's C encoder, which hands
everything else to ``_convert`` one object at a time. Only a payload the
encoder refuses (NaN, a cycle, an odd dict key) is walked in Python.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import deque
from typing import Any, Final

import pydantic_core
from pydantic import BaseModel
from pydantic.fields import FieldInfo

TRUNCATION_MARKER: Final = "__flowhooks_truncated__"
"""Key present in the dict that stands in for a payload larger than the cap."""

CIRCULAR_REFERENCE: Final = "<circular reference>"
"""What stands in for a value that refers back to one of its own containers."""

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


def _fallback(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not break serialisation
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


def _is_one_shot(value: Any) -> bool:
    """Whether iterating ``value`` would consume it.

    True for every ``Iterator`` and ``AsyncIterator``: generators, async
    generators, ``map``/``filter``/``zip``, ``itertools`` objects, files, and
    any object whose ``iter(x) is x`` (such a class defines ``__next__``).
    """
    cls = type(value)
    return hasattr(cls, "__next__") or hasattr(cls, "__anext__")


class _OneShotFound(Exception):
    """Raised by the scan in ``_holds_one_shot`` at the first one-shot iterator it meets."""


def _look_inside(value: Any) -> Any:
    """The scan's ``default``: stop at a one-shot iterator, open containers, skip the rest."""
    if _is_one_shot(value):
        raise _OneShotFound
    if isinstance(value, set | frozenset | deque):
        return list(value)
    if isinstance(value, BaseModel):
        return [vars(value), value.__pydantic_extra__]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [getattr(value, f.name, None) for f in dataclasses.fields(value)]
    return None


_SCANNER: Final = json.JSONEncoder(skipkeys=True, default=_look_inside)


def _holds_one_shot(value: Any) -> bool:
    """Whether a one-shot iterator sits anywhere in ``value``, found without iterating it.

    The C encoder does the walking; its output is thrown away. When the scan
    cannot finish (a cycle, nesting too deep), the answer is yes, to be safe.
    """
    try:
        _SCANNER.encode(value)
    except Exception:  # _OneShotFound, or a circular reference, ...
        return True
    return False


def _pydantic_data(value: Any, serializer: pydantic_core.SchemaSerializer) -> Any:
    """A pydantic model's (or pydantic dataclass's) JSON-mode data, its serialisers applied.

    JSON mode would exhaust a one-shot iterator, so the model is first dumped in
    Python mode (which leaves iterators unread) and scanned. A field holding
    one is left out of JSON mode and added back as it is, for the encoder to
    render (as repr()).
    """
    shown = serializer.to_python(value, mode="python", warnings=False, fallback=_fallback)
    if not _holds_one_shot(shown):
        return serializer.to_python(value, mode="json", warnings=False, fallback=_fallback)
    fields: dict[str, FieldInfo] = getattr(type(value), "__pydantic_fields__", {})
    values = {name: getattr(value, name, None) for name in fields}
    values.update(getattr(value, "__pydantic_extra__", None) or {})
    if getattr(value, "__pydantic_root_model__", False):  # serialised as its root, whole
        return values["root"]
    held = {name for name, item in values.items() if _holds_one_shot(item)}
    data = serializer.to_python(
        value, mode="json", exclude=held, warnings=False, fallback=_fallback
    )
    if isinstance(data, dict):
        kept = {name for name in held if name not in fields or not fields[name].exclude}
        data.update({name: values[name] for name in kept})
    return data


def _convert(value: Any) -> Any:
    """Convert one object the JSON encoder cannot hold itself, one level deep (never raises).

    The result may still hold such objects (a dataclass's fields, a set's
    items): the encoder calls this again for each of them, so nothing is
    handed whole to a converter that would iterate a one-shot iterator in it.
    """
    try:
        if _is_one_shot(value):
            return _fallback(value)
        serializer = getattr(type(value), "__pydantic_serializer__", None)
        if isinstance(serializer, pydantic_core.SchemaSerializer):
            return _pydantic_data(value, serializer)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if isinstance(value, set | frozenset | deque):
            return list(value)
        return pydantic_core.to_jsonable_python(value, fallback=_fallback, serialize_unknown=True)
    except Exception:  # circular models, broken serialisers or properties, ...
        return _fallback(value)


def _non_finite(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _key(key: Any) -> Any:
    """A dict key as the encoder writes it (str, or a scalar it turns into one)."""
    if isinstance(key, float) and not math.isfinite(key):
        return _non_finite(key)
    if key is None or isinstance(key, str | int | float):
        return key
    converted = _convert(key)
    return converted if isinstance(converted, str) else _fallback(key)


def _walk(value: Any, active: set[int]) -> Any:
    """Convert ``value`` for the encoder, replacing what it refuses: NaN, cycles, odd keys.

    ``active`` holds the ids of the containers being walked (the path from the
    root), so a value met again on that path closes a cycle, while the same
    object met twice side by side is converted twice.
    """
    if value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _non_finite(value)
    ident = id(value)
    if ident in active:
        return CIRCULAR_REFERENCE
    active.add(ident)
    try:
        if isinstance(value, dict):
            return {_key(k): _walk(v, active) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_walk(item, active) for item in value]
        return _walk(_convert(value), active)
    finally:
        active.discard(ident)


_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=_convert)


def _json_text(value: Any) -> str:
    """Return the strict JSON text of ``value``, never raising."""
    try:
        return _ENCODER.encode(value)
    except Exception:  # NaN or Infinity, a circular reference, a dict key of an odd type
        try:
            return _ENCODER.encode(_walk(value, set()))
        except Exception:  # nesting deeper than the recursion limit, ...
            return _ENCODER.encode(_fallback(value))


def _parse(text: str) -> Any:
    try:
        return pydantic_core.from_json(text)
    except (ValueError, TypeError):  # lone surrogates, nesting deeper than its limit
        return json.loads(text)


def to_jsonable(value: Any, *, max_chars: int | None = None) -> Any:
    """Convert ``value`` into plain JSON data, never raising.

    The result holds only dicts with string keys, lists, strings, finite
    numbers, booleans and ``None``, so ``json.dumps`` of it is strict JSON:
    NaN and infinities become ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``;
    one-shot iterators (generators, ``map``, ``itertools.count()``, ...)
    become their ``repr()`` and are never iterated; a value that contains
    itself is cut with ``"<circular reference>"`` where the cycle closes;
    other objects JSON cannot hold become their ``repr()``.

    Args:
        value: any Python object.
        max_chars: cap on the JSON text of the result; defaults to the
            process-wide cap (see ``set_max_payload_chars``).

    Returns:
        JSON-compatible data. A value too large for the cap becomes
        ``{"__flowhooks_truncated__": True, "original_chars": n, "preview": "..."}``.
    """
    limit = get_max_payload_chars() if max_chars is None else max_chars
    kind = type(value)
    if kind is str and len(value) <= limit:
        return value
    if value is None or kind is int or kind is bool:
        return value
    if kind is float:
        return value if math.isfinite(value) else _non_finite(value)
    text = _json_text(value)
    if len(text) <= limit:
        return _parse(text)
    return {TRUNCATION_MARKER: True, "original_chars": len(text), "preview": text[:limit]}


def dumps(value: Any, *, max_chars: int | None = None) -> str:
    """Serialise ``value`` to a JSON string, never raising (see ``to_jsonable``)."""
    return json.dumps(to_jsonable(value, max_chars=max_chars), ensure_ascii=False)
