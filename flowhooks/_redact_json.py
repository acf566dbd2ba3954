"""Redacting the JSON text of a payload cut to the size cap, by its keys.

A payload whose JSON text is longer than the cap is kept as a prefix of that
text (``to_jsonable``'s truncation marker, ``{"__flowhooks_truncated__": true,
"preview": "..."}``). Read as prose, that preview would keep what only its
structure says is secret: ``"auth": ["bob", "pw"]``, ``"credentials": {...}``,
``"pin": 1234``. So the preview is read as JSON text: the value of every
secret-named key, a string, number, list or object, becomes ``"***"``, up to
where the value ends or the text was cut; the masked values are returned, for
the caller to remove wherever else they appear. Every other string of the
preview, keys included, is decoded, cleaned by the text rules as any string
is (a JSON text inside it read as JSON again), and written back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

from flowhooks._redact_keys import KEEP, PLURAL

TRUNCATION_MARKER: Final = "__flowhooks_truncated__"
"""Key present in the dict that stands in for a payload larger than the cap."""

MASKED_VALUE: Final = '"***"'

_STRING = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.DOTALL)
"""A JSON string, or what is left of one where the text was cut."""
_NESTED = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)
_SCALAR = re.compile(r"[^,\]}\s]*")
_SPACE = re.compile(r"\s*")


_NUMBER = re.compile(r"-?\d")
_MAX_NESTING: Final = 2
"""Levels of JSON text inside a string of a preview that are read as JSON too."""


def _decoded(token: str) -> Any:
    """The value of a complete JSON token, or the token itself when it was cut."""
    if "\\" not in token and len(token) >= 2 and token.endswith('"'):
        return token[1:-1]  # a string without escapes: nothing to decode
    try:
        return json.loads(token)
    except (ValueError, RecursionError):
        return token


def _cut_string(token: str) -> str:
    """The text of a string token the cut left open (its escapes decoded where whole)."""
    body = token[1:]
    for trim in range(6):  # a cut inside an escape (up to \uXXX): drop its start
        try:
            decoded = json.loads('"' + body[: len(body) - trim] + '"')
        except (ValueError, RecursionError):
            continue
        return decoded if isinstance(decoded, str) else body
    return body


def _is_closed(token: str) -> bool:
    """Whether a string token ends with its closing quote (not with an escaped one)."""
    if len(token) < 2 or not token.endswith('"'):
        return False
    body = token[1:-1]
    return (len(body) - len(body.rstrip("\\"))) % 2 == 0


def _encoded(text: str) -> str:
    """``text`` as the inside of a JSON string."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


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


def redact_json_text(
    text: str,
    verdict: Callable[[str], int],
    scrub: Callable[[str, bool], str],
    *,
    nesting: int = 0,
) -> tuple[str, list[str]]:
    """Return ``text`` (JSON, possibly cut short) with the values of secret keys masked
    and every string's credentials removed, and the strings it masked.

    Args:
        text: a JSON text or a prefix of one.
        verdict: the policy's verdict on a key (``SECRET``, ``PLURAL`` or ``KEEP``).
        scrub: the policy's text rules, given a string and whether it was cut short.
    """
    pieces: list[str] = []
    hidden: list[str] = []
    done = 0
    pos = 0
    length = len(text)
    while (token := _STRING.search(text, pos)) is not None:
        pos = token.end()
        raw = token.group(0)
        after = _SPACE.match(text, pos)
        colon = after.end() if after is not None else pos
        if colon < length and text[colon] == ":":
            key = _decoded(raw)
            hit = verdict(key) if isinstance(key, str) else KEEP
            start_match = _SPACE.match(text, colon + 1)
            start = start_match.end() if start_match is not None else colon + 1
            if hit == KEEP or start >= length:
                shown = raw if not isinstance(key, str) else '"' + _encoded(scrub(key, False)) + '"'
                if shown != raw:
                    pieces.append(text[done : token.start()])
                    pieces.append(shown)
                    done = pos
                continue  # its value is read as the text goes on (nested keys)
            if hit == PLURAL and _NUMBER.match(text, start):
                continue  # a count, such as "total_tokens": 12
            end = _value_end(text, start)
            value = text[start:end]
            if value != MASKED_VALUE:
                pieces.append(text[done:start])
                pieces.append(MASKED_VALUE)
                if value.startswith('"'):  # a string's text is hidden elsewhere too, as
                    secret = _decoded(value) if _is_closed(value) else _cut_string(value)
                    if isinstance(secret, str):  # uncut (not the items of a list or object)
                        hidden.append(secret)
                done = end
            pos = end
            continue
        closed = _is_closed(raw)
        plain = _decoded(raw) if closed else _cut_string(raw)
        if not isinstance(plain, str):
            continue
        cleaned = scrub(plain, not closed)
        if nesting < _MAX_NESTING and cleaned.lstrip()[:1] in ("{", "["):
            cleaned, inner = redact_json_text(cleaned, verdict, scrub, nesting=nesting + 1)
            hidden.extend(inner)
        if cleaned != plain:
            pieces.append(text[done : token.start()])
            pieces.append('"' + _encoded(cleaned) + ('"' if closed else ""))
            done = pos
    if not pieces:
        return text, hidden
    pieces.append(text[done:])
    return "".join(pieces), hidden
