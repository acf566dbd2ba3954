"""JSON conversion that never fails, with a size cap (used by events, webhooks, history).

Payloads are arbitrary Python objects. The result is always strict JSON (what
``JSON.parse`` in JavaScript, Go's ``encoding/json`` or Rust's ``serde_json``
accept) that encodes to valid UTF-8:

- plain data (dicts, lists, tuples, strings, numbers, booleans, ``None``) is
  kept; a named tuple becomes an object of its fields (its names are what
  tells a ``password`` field from the rest, redaction included); models
  (with their own serialisers), dataclasses, datetimes, sets,
  UUIDs, ... are converted as pydantic converts them; anything else becomes
  its ``repr()``;
- a one-shot iterator (a generator, ``map``, ``zip``, ``itertools.count()``,
  an open file, ...) becomes its ``repr()``: it is never iterated, so the
  value a node returned is left intact for the node that consumes it;
- NaN, Infinity and -Infinity become the strings ``"NaN"``, ``"Infinity"``
  and ``"-Infinity"``;
- a value that refers back to one of its own containers is replaced by
  ``"<circular reference>"``, and only that value;
- a lone surrogate (``"\\udcff"``, as ``os.listdir`` gives for a file name
  that is not valid UTF-8) is written as the six characters of its escape,
  ``\\udcff``, which any JSON parser reads as plain text;
- an int too long for the interpreter's int-to-str limit becomes a string
  of its digits (``"<int with about N digits>"`` past 20,000 digits);
- an object whose ``repr()`` raises becomes ``"<unrepresentable T: E>"``; a
  ``repr()`` longer than the cap is cut, after ``"<T: repr of N chars, cut>"``;
- nesting deeper than the C encoder can take is cut at 100 levels with
  ``"<nested too deep>"``.

A payload whose JSON text is longer than the configured cap is replaced by a
visible truncation marker holding a prefix of that text. Text fields (an
error's message, a run id) are cut by ``safe_text`` with a marker at their end.

Plain data takes the fast path: the standard library's C encoder, which hands
everything else to ``_convert`` one object at a time. Only a payload the
encoder refuses (NaN, a cycle, an odd dict key, a huge int, nesting too deep)
is walked in Python.

Not bounded: a ``__repr__`` (or a container subclass's ``__iter__``) that
never returns cannot be interrupted safely from inside the process, so it
holds the serialisation as it would hold any other call.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import json
import math
import re
from collections import deque
from json.encoder import encode_basestring
from typing import Any, Final

import pydantic_core
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from flowhooks._redact_json import TRUNCATION_MARKER as TRUNCATION_MARKER
from flowhooks._validate import ParameterTypeError

CIRCULAR_REFERENCE: Final = "<circular reference>"
"""What stands in for a value that refers back to one of its own containers."""

TOO_DEEP: Final = "<nested too deep>"
"""What stands in for a value nested deeper than ``MAX_DEPTH`` when the encoder gave up."""

MAX_DEPTH: Final = 100
"""Levels of nesting kept when a payload is too deep for the C encoder."""

DEFAULT_MAX_PAYLOAD_CHARS: Final = 64_000

_SAFE_INT_BITS: Final = 2_000
"""Ints this short print under any int-to-str limit (the lowest allowed is 640 digits)."""

_MAX_INT_DIGITS: Final = 20_000
"""Longer ints are not spelled out: converting them costs more than 10 ms each."""

_LOG10_2: Final = math.log10(2)
_NAME_CHARS: Final = 200
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_MAX_ESCAPE: Final = 6
"""The most JSON characters one character can take (``\\u0001``)."""
_FIT_ROUNDS: Final = 8

LIMITS: Final = {"max_payload_chars": DEFAULT_MAX_PAYLOAD_CHARS}
"""The process-wide cap, read directly by hot serialisers; set it with ``set_max_payload_chars``."""


def set_max_payload_chars(limit: int | None) -> None:
    """Set the process-wide cap on a serialised payload, in JSON characters.

    Args:
        limit: the cap; ``None`` restores the default (64,000 characters).

    Raises:
        TypeError: when ``limit`` is not an ``int`` or ``None`` (a ``bool`` is
            not); it is also a ``ValueError``, what it raised before.
        ValueError: when ``limit`` is below 1.
    """
    LIMITS["max_payload_chars"] = (
        DEFAULT_MAX_PAYLOAD_CHARS if limit is None else _checked_cap("limit", limit)
    )


def _checked_cap(name: str, limit: object) -> int:
    """A cap given by the caller: an ``int`` of at least 1, or an error naming ``name``."""
    expected = "a positive number of characters (an int >= 1)"
    if isinstance(limit, bool) or not isinstance(limit, int):
        msg = f"max payload size {name} must be {expected}, got {limit!r} ({type(limit).__name__})"
        raise ParameterTypeError(msg)
    if limit < 1:
        msg = f"max payload size {name} must be {expected}, got {limit!r}"
        raise ValueError(msg)
    return limit


def get_max_payload_chars() -> int:
    """Return the process-wide cap on a serialised payload, in JSON characters."""
    return LIMITS["max_payload_chars"]


# -- text and numbers JSON cannot carry as they are ----------------------------------


def _escape_in_text(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _escape_in_json(match: re.Match[str]) -> str:
    return f"\\\\u{ord(match.group()):04x}"  # an escaped backslash, then "uXXXX"


def _clean_json(text: str) -> str:
    """JSON text with each lone surrogate (only ever inside a string) written as ``\\\\uXXXX``.

    ``isascii()`` costs nothing in CPython, so plain ASCII text is not scanned.
    """
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(_escape_in_json, text)


def _type_name(value: Any) -> str:
    """The name of ``value``'s class, looked up without touching ``value`` itself."""
    try:
        name = type(value).__name__
    except Exception:  # a metaclass with a hostile __name__
        return "object"
    return name[:_NAME_CHARS] if type(name) is str else "object"


def _fitting_prefix(text: str, limit: int) -> int:
    """How many leading characters of ``text`` fit in ``limit`` JSON characters.

    JSON escapes control characters, quotes and backslashes (up to six
    characters for one), so the count is measured with the C string encoder.
    """
    size = len(encode_basestring(text)) - 2
    n = len(text)
    for _ in range(_FIT_ROUNDS):
        if size <= limit:
            return n
        n = n * limit // size  # fewer characters each round, while too long
        size = len(encode_basestring(text[:n])) - 2
    return limit // _MAX_ESCAPE if size > limit else n


# C0 (ESC, BEL, CR, ...), DEL, C1 (0x80-0x9f, CSI 0x9b among them), the line and
# paragraph separators, and the bidirectional controls that reorder what is shown.
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_CONTROL_BUT_NEWLINE: Final = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]"
)
_SHORT: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _shown(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")


def visible_text(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` safe to show on a terminal: every control character written as its escape.

    Run data (a workflow's or a node's name, an error message) can hold escape
    sequences that would retitle, clear or rewrite the terminal, and
    bidirectional controls that reorder what is shown. ``"a\\x1b[2Jb"`` becomes
    ``a\\x1b[2Jb`` with a visible backslash; a newline becomes ``\\n`` unless
    ``keep_newlines``. Text without control characters is returned unchanged.
    """
    return (_CONTROL_BUT_NEWLINE if keep_newlines else _CONTROL).sub(_shown, text)


def safe_text(value: Any, *, max_chars: int | None = None) -> Any:
    """Return the text ``value`` ready for any JSON writer, never raising.

    A ``str`` keeps its characters, except that a lone surrogate is written as
    the six characters of its escape (``\\udcff``), and text whose JSON form
    is longer than the cap (in characters, escapes included) is cut to what
    fits, followed by ``"... [__flowhooks_truncated__: N chars]"`` (``N``: the
    original length). ``None`` stays ``None``; anything else goes through
    ``to_jsonable``.

    Args:
        value: the text (normally a ``str`` or ``None``).
        max_chars: the cap; defaults to the process-wide cap.

    Raises:
        TypeError: when ``max_chars`` is not an ``int`` or ``None``.
        ValueError: when ``max_chars`` is below 1.
    """
    if type(value) is not str:
        if value is None:
            return None
        if not issubclass(type(value), str):
            return to_jsonable(value, max_chars=max_chars)
        value = str.__str__(value)
    limit = (
        LIMITS["max_payload_chars"] if max_chars is None else _checked_cap("max_chars", max_chars)
    )
    cut = len(value) > limit
    text = value[:limit] if cut else value
    if not text.isascii() and _SURROGATE.search(text) is not None:
        text = _SURROGATE.sub(_escape_in_text, text)
    if len(text) * _MAX_ESCAPE > limit:  # its JSON might not fit
        fits = _fitting_prefix(text, limit)
        if fits < len(text):
            text, cut = text[:fits], True
    return f"{text}... [{TRUNCATION_MARKER}: {len(value)} chars]" if cut else text


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or ``"<exception str() failed: E>"`` when its ``__str__`` raises ``E``."""
    try:
        return str(exc)
    except Exception as error:
        return f"<exception str() failed: {_type_name(error)}>"


def _int(value: int) -> int | str:
    """``value``, or a string of its digits when it is too long for ``int.__repr__``."""
    if value.bit_length() <= _SAFE_INT_BITS:
        return value
    try:
        int.__repr__(value)
    except ValueError:  # over sys.get_int_max_str_digits(); that limit stays as it is
        digits = int(value.bit_length() * _LOG10_2) + 1
        if digits > _MAX_INT_DIGITS:
            return f"<int with about {digits} digits>"
        return str(decimal.Decimal(value))  # exact; the decimal module has no such limit
    return value


def _non_finite(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


# -- one object JSON cannot hold ------------------------------------------------------


def repr_text(value: Any, limit: int = 200) -> str:
    """``repr(value)`` for an error message: bounded, and never raising (a placeholder naming
    the type when ``repr`` raises), so a hostile object cannot replace the error about it."""
    return _fallback(value, limit)


def _fallback(value: Any, limit: int) -> str:
    """``repr(value)``, bounded; a placeholder naming the type when ``repr`` raises."""
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break serialisation
        return f"<unrepresentable {_type_name(value)}: {_type_name(exc)}>"
    if type(text) is not str:  # a str subclass: its own __len__ or slicing might misbehave
        text = str.__str__(text)
    if len(text) > limit:  # named first, so the name survives the cap's preview
        return f"<{_type_name(value)}: repr of {len(text)} chars, cut> {text[:limit]}"
    return text


def _is_one_shot(value: Any) -> bool:
    """Whether iterating ``value`` would consume it.

    True for every ``Iterator`` and ``AsyncIterator``: generators, async
    generators, ``map``/``filter``/``zip``, ``itertools`` objects, files, and
    any object whose ``iter(x) is x`` (such a class defines ``__next__``).
    """
    cls = type(value)
    return hasattr(cls, "__next__") or hasattr(cls, "__anext__")


def _is_dataclass_instance(cls: type) -> bool:
    """Whether objects of class ``cls`` are dataclass instances (asked of the class, not
    the object, so a proxy's ``__class__`` is never consulted)."""
    return not issubclass(cls, type) and dataclasses.is_dataclass(cls)


class _OneShotFound(Exception):
    """Raised by the scan in ``_holds_one_shot`` at the first one-shot iterator it meets."""


def _look_inside(value: Any) -> Any:
    """The scan's ``default``: stop at a one-shot iterator, open containers, skip the rest."""
    if _is_one_shot(value):
        raise _OneShotFound
    cls = type(value)
    if issubclass(cls, set | frozenset | deque):
        return list(value)
    if issubclass(cls, BaseModel):
        return [vars(value), value.__pydantic_extra__]
    if _is_dataclass_instance(cls):
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


def _pydantic_data(value: Any, serializer: pydantic_core.SchemaSerializer, fallback: Any) -> Any:
    """A pydantic model's (or pydantic dataclass's) JSON-mode data, its serialisers applied.

    JSON mode would exhaust a one-shot iterator, so the model is first dumped in
    Python mode (which leaves iterators unread) and scanned. A field holding
    one is left out of JSON mode and added back as it is, for the encoder to
    render (as repr()).
    """
    shown = serializer.to_python(value, mode="python", warnings=False, fallback=fallback)
    if not _holds_one_shot(shown):
        return serializer.to_python(value, mode="json", warnings=False, fallback=fallback)
    fields: dict[str, FieldInfo] = getattr(type(value), "__pydantic_fields__", {})
    values = {name: getattr(value, name, None) for name in fields}
    values.update(getattr(value, "__pydantic_extra__", None) or {})
    if getattr(value, "__pydantic_root_model__", False):  # serialised as its root, whole
        return values["root"]
    held = {name for name, item in values.items() if _holds_one_shot(item)}
    data = serializer.to_python(value, mode="json", exclude=held, warnings=False, fallback=fallback)
    if isinstance(data, dict):
        kept = {name for name in held if name not in fields or not fields[name].exclude}
        data.update({name: values[name] for name in kept})
    return data


def _convert(value: Any, limit: int) -> Any:
    """Convert one object the JSON encoder cannot hold itself, one level deep (never raises).

    The result may still hold such objects (a dataclass's fields, a set's
    items): the encoder calls this again for each of them, so nothing is
    handed whole to a converter that would iterate a one-shot iterator in it.
    Classes are asked about the type of ``value``, never ``value.__class__``,
    so a lazy proxy whose ``__class__`` lies or raises gets its ``repr()``.
    """
    try:
        if _is_one_shot(value):
            return _fallback(value, limit)
        cls = type(value)
        fallback = functools.partial(_fallback, limit=limit)
        serializer = getattr(cls, "__pydantic_serializer__", None)
        if type(serializer) is pydantic_core.SchemaSerializer:
            return _pydantic_data(value, serializer, fallback)
        if _is_dataclass_instance(cls):
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            return _named_fields(fields, limit)
        if issubclass(cls, set | frozenset | deque):
            return list(value)
        return pydantic_core.to_jsonable_python(value, fallback=fallback, serialize_unknown=True)
    except Exception:  # circular models, broken serialisers or properties, ...
        return _fallback(value, limit)


# -- the slow path: what the C encoder refused ----------------------------------------


def _key(key: Any, limit: int) -> Any:
    """A dict key as the encoder writes it (str, or a scalar it turns into one)."""
    cls = type(key)
    if cls is str or key is None or cls is bool or issubclass(cls, str):
        return key
    if issubclass(cls, int):
        return _int(key)
    if issubclass(cls, float):
        return key if math.isfinite(key) else _non_finite(key)
    converted = _convert(key, limit)
    return converted if type(converted) is str else _fallback(key, limit)


def _walk(value: Any, active: set[int], depth: int, limit: int) -> Any:
    """Convert ``value`` for the encoder, replacing what it refuses (never raises).

    ``active`` holds the ids of the containers being walked (the path from the
    root), so a value met again on that path closes a cycle, while the same
    object met twice side by side is converted twice. A value that fails to
    convert is replaced by its ``repr()``, alone: its siblings are kept.
    """
    cls = type(value)
    if cls is str or value is None or cls is bool or issubclass(cls, str):
        return value
    if issubclass(cls, int):
        return _int(value)
    if issubclass(cls, float):
        return value if math.isfinite(value) else _non_finite(value)
    if depth >= MAX_DEPTH:
        return TOO_DEEP
    ident = id(value)
    if ident in active:
        return CIRCULAR_REFERENCE
    active.add(ident)
    try:
        if issubclass(cls, dict):
            return {_key(k, limit): _walk(v, active, depth + 1, limit) for k, v in value.items()}
        if issubclass(cls, list | tuple):
            return [_walk(item, active, depth + 1, limit) for item in value]
        return _walk(_convert(value, limit), active, depth + 1, limit)
    except Exception:  # a hostile items()/__iter__, the recursion limit, ...
        return _fallback(value, limit)
    finally:
        active.discard(ident)


@functools.lru_cache(maxsize=16)
def _encoder(limit: int) -> json.JSONEncoder:
    """The C-backed encoder for one cap (the cap bounds the ``repr()`` of odd objects)."""
    return json.JSONEncoder(
        ensure_ascii=False, allow_nan=False, default=functools.partial(_convert, limit=limit)
    )


_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


def _named_fields(value: Any, limit: int) -> Any:
    """``value`` with each named tuple in its plain dicts, lists and tuples made a dict of its
    fields; ``value`` itself when it holds none (nothing is copied then). The C encoder
    would write a named tuple as a list, losing the field names. At most ``limit`` items
    are looked at (a JSON text capped at ``limit`` characters shows no more). Never
    raises: on any failure the value is left as it was."""
    cls = type(value)
    if cls is str or cls is int or cls is float or value is None or cls is bool:
        return value
    left = [limit]
    active: set[int] = set()

    def walk(value: Any, depth: int) -> Any:
        cls = type(value)
        names = getattr(cls, "_fields", None) if issubclass(cls, tuple) else None
        if isinstance(names, tuple):
            return dict(zip(names, walk(tuple(value), depth), strict=False))
        if (cls is not dict and cls is not list and cls is not tuple) or depth >= MAX_DEPTH:
            return value  # converted by _convert, or by the encoder as it is
        if id(value) in active:
            return value  # a cycle: the encoder reports it
        active.add(id(value))
        try:
            changed: Any = None
            for key, item in value.items() if cls is dict else enumerate(value):
                left[0] -= 1
                if left[0] < 0:
                    break
                if type(item) in _SCALARS:  # most items: no call for them
                    continue
                new = walk(item, depth + 1)
                if new is not item:
                    if changed is None:
                        changed = dict(value) if cls is dict else list(value)
                    changed[key] = new
        finally:
            active.discard(id(value))
        if changed is None:
            return value
        return tuple(changed) if cls is tuple else changed

    try:
        return walk(value, 0)
    except Exception:  # RecursionError at the stack's edge, a hostile _fields ...
        return value


def _json_text(value: Any, limit: int) -> str:
    """Return the strict JSON text of ``value``, free of lone surrogates, never raising."""
    encoder = _encoder(limit)
    try:
        text = encoder.encode(value)
    except Exception:  # NaN, a cycle, an odd dict key, a huge int, nesting too deep, ...
        try:
            text = encoder.encode(_walk(value, set(), 0, limit))
        except Exception:  # called at the very edge of the recursion limit
            try:
                text = encoder.encode(_fallback(value, limit))
            except Exception:
                text = f'"<unrepresentable {_type_name(value)}>"'
    return _clean_json(text)


def _parse(text: str) -> Any:
    try:
        return pydantic_core.from_json(text)
    except ValueError:  # nesting deeper than its limit
        pass
    try:
        return json.loads(text)
    except RecursionError:  # text the encoder wrote this deep in the stack, but not parsable
        return TOO_DEEP


def to_jsonable(value: Any, *, max_chars: int | None = None) -> Any:
    """Convert ``value`` into plain JSON data, never raising.

    The result holds only dicts with string keys, lists, strings, finite
    numbers, booleans and ``None``, so ``json.dumps`` of it is strict JSON and
    encodes to valid UTF-8: NaN and infinities become ``"NaN"``,
    ``"Infinity"`` and ``"-Infinity"``; one-shot iterators (generators,
    ``map``, ``itertools.count()``, ...) become their ``repr()`` and are never
    iterated; a value that contains itself is cut with
    ``"<circular reference>"`` where the cycle closes; lone surrogates are
    escaped as text; ints too long for ``str()`` become strings; other
    objects JSON cannot hold become their ``repr()`` (bounded, or a
    placeholder naming the type when it raises).

    Args:
        value: any Python object.
        max_chars: cap on the JSON text of the result; defaults to the
            process-wide cap (see ``set_max_payload_chars``).

    Returns:
        JSON-compatible data. A value too large for the cap becomes
        ``{"__flowhooks_truncated__": True, "original_chars": n, "preview": "..."}``.

    Raises:
        TypeError: when ``max_chars`` is not an ``int`` or ``None``.
        ValueError: when ``max_chars`` is below 1.
    """
    limit = (
        LIMITS["max_payload_chars"] if max_chars is None else _checked_cap("max_chars", max_chars)
    )
    kind = type(value)
    if kind is str and len(value) * _MAX_ESCAPE + 2 <= limit:
        if value.isascii() or _SURROGATE.search(value) is None:
            return value
    elif value is None or kind is bool:
        return value
    elif kind is int:
        if value.bit_length() <= _SAFE_INT_BITS:
            return value
    elif kind is float:
        return value if math.isfinite(value) else _non_finite(value)
    text = _json_text(_named_fields(value, limit), limit)
    if len(text) <= limit:
        return _parse(text)
    # The preview is itself a string in JSON: cut where its own escapes (of the quotes
    # and backslashes of the text) still fit in the cap.
    preview = text[: _fitting_prefix(text, limit)]
    return {TRUNCATION_MARKER: True, "original_chars": len(text), "preview": preview}


def dumps(value: Any, *, max_chars: int | None = None) -> str:
    """Serialise ``value`` to a JSON string, never raising (see ``to_jsonable``)."""
    data = to_jsonable(value, max_chars=max_chars)
    try:
        return json.dumps(data, ensure_ascii=False)
    except RecursionError:  # data the parser built this deep in the stack
        return json.dumps(TOO_DEEP)
