"""Redacting the JSON text of a payload cut to the size cap, by its keys.

A payload whose JSON text is longer than the cap is kept as a prefix of that
text (``to_jsonable``'s truncation marker, ``{"__flowhooks_truncated__": true,
"preview": "..."}``). Read as prose, that preview would keep what only its
structure says is secret: ``"auth": ["bob", "pw"]``, ``"credentials": {...}``,
``"pin": 1234``. So the preview is read as JSON text: the value of every
secret-named key, a string, number, list or object, becomes ``"***"``, up to
where the value ends or the text was cut. The hidden values are returned, for
the caller to remove wherever else they appear.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

TRUNCATION_MARKER: Final = "__flowhooks_truncated__"
"""Key present in the dict that stands in for a payload larger than the cap."""

MASKED_VALUE: Final = '"***"'

_STRING = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.DOTALL)
"""A JSON string, or what is left of one where the text was cut."""
_NESTED = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)
_SCALAR = re.compile(r"[^,\]}\s]*")
_SPACE = re.compile(r"\s*")


def _decoded(token: str) -> Any:
    """The value of a complete JSON token, or the token itself when it was cut."""
    try:
        return json.loads(token)
    except ValueError:
        return token


def _value_end(text: str, start: int) -> int:
    """Where the JSON value beginning at ``start`` ends (the text's end when it was cut)."""
    first = text[start : start + 1]
    if first == '"':
        found = _STRING.match(text, start)
        return found.end() if found is not None else len(text)
    if first in ("[", "{"):
        depth = 0
        for token in _NESTED.finditer(text, start):
            mark = token.group(0)
            if mark in ("[", "{"):
                depth += 1
            elif mark in ("]", "}"):
                depth -= 1
                if depth == 0:
                    return token.end()
        return len(text)
    found = _SCALAR.match(text, start)
    return found.end() if found is not None else len(text)


def _strings_in(value: str) -> list[str]:
    """The complete strings a hidden JSON value holds (what else to remove elsewhere)."""
    if value.startswith('"'):
        decoded = _decoded(value)
        return [decoded] if isinstance(decoded, str) else [value.strip('"')]
    found = [_decoded(token.group(0)) for token in _STRING.finditer(value)]
    return [item for item in found if isinstance(item, str)]


def redact_json_text(text: str, hides: Callable[[str, Any], bool]) -> tuple[str, list[str]]:
    """Return ``text`` (JSON, possibly cut short) with the values of secret keys masked,
    and the texts of the values it masked.

    Args:
        text: a JSON text or a prefix of one.
        hides: the policy's verdict on a key and its value (``Redaction.hides``).
    """
    pieces: list[str] = []
    hidden: list[str] = []
    done = 0
    pos = 0
    length = len(text)
    while (token := _STRING.search(text, pos)) is not None:
        pos = token.end()
        colon = _SPACE.match(text, pos)
        after = colon.end() if colon is not None else pos
        if after >= length or text[after] != ":":
            continue  # a string value, not a key
        key = _decoded(token.group(0))
        start_match = _SPACE.match(text, after + 1)
        start = start_match.end() if start_match is not None else after + 1
        if not isinstance(key, str) or start >= length:
            continue  # a key cut short, or cut before its value: nothing to hide
        end = _value_end(text, start)
        value = text[start:end]
        if not hides(key, _decoded(value)):
            continue  # its value is walked as the text goes on (nested keys)
        if value != MASKED_VALUE:
            pieces.append(text[done:start])
            pieces.append(MASKED_VALUE)
            hidden.extend(_strings_in(value))
            done = end
        pos = end
    if not pieces:
        return text, hidden
    pieces.append(text[done:])
    return "".join(pieces), hidden
