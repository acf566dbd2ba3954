"""One redaction policy for run data that leaves the process: ``Redaction``, ``redaction()``.

Where run data is logged, stored or sent (the built-in logging, webhook,
notification, Sentry, OpenLineage and history handlers, the outbox, the CLI),
it first goes through ``redact_value`` or ``redact_text``: a *copy* comes
back with the values of secret-named keys replaced by ``"***"`` (mappings,
pydantic models, dataclasses, ``(key, value)`` pairs, ``bytes`` keys, at any
depth) and credentials removed from every string (see ``_redact_text``). What
nodes and handlers hold in memory is never changed, and nothing here runs on
the dispatch path: only where data leaves.

The process-wide policy starts as ``Redaction()`` (``DEFAULT_REDACT_KEYS``,
no extra patterns); ``redaction(keys=..., patterns=...)`` adds to it and
``reset_redaction()`` restores it. A handler's ``redact=`` option is ``True``
(the process-wide policy as it is when data leaves), ``False`` (off), a list
of key names (added to the process-wide policy) or a ``Redaction`` (exactly
that policy).

Redaction never raises and never hangs on hostile values: a value whose
``repr``, ``items()`` or iteration raises becomes a placeholder, a container
met again inside itself becomes ``"<circular reference>"``, nesting deeper than
64 levels becomes ``"<nested too deeply>"``, and after a million values the
rest become ``"<redaction limit reached>"``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from decimal import Decimal
from enum import Enum
from fractions import Fraction
from itertools import islice
from typing import Any, Final, TypeAlias

from pydantic import BaseModel

from flowhooks._redact_json import TRUNCATION_MARKER, redact_json_text
from flowhooks._redact_keys import DEFAULT_REDACT_KEYS, SECRET, KeyMatcher
from flowhooks._redact_text import MASK, TextScrubber

REDACTED: Final = MASK
"""What a redacted value, or a credential cut from a string, is replaced with: ``"***"``."""

_MAX_DEPTH: Final = 64
_BUDGET: Final = 1_000_000
_DERIVED_CACHE: Final = 64
_CIRCULAR: Final = "<circular reference>"
_TOO_DEEP: Final = "<nested too deeply>"
_OVER_BUDGET: Final = "<redaction limit reached>"
_REDACTED_BYTES: Final = REDACTED.encode()
_MIN_SCRUBBED: Final = 6
"""Shortest secret text removed wherever it appears (shorter ones would hit ordinary words)."""
_KEPT_TYPES: Final = (
    int,
    float,
    complex,
    Decimal,
    Fraction,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    Enum,
)
"""Values kept as they are: numbers, times, ids, enum members (no text to hide)."""


def _placeholder(value: object, exc: BaseException | None = None) -> str:
    why = f": {type(exc).__name__}" if exc is not None else ""
    return f"<unrepresentable {type(value).__name__}{why}>"


def _compile(pattern: object) -> re.Pattern[str]:
    if isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, str):
        return pattern
    if not isinstance(pattern, str) or not pattern:
        msg = f"patterns must be regular expressions (str or re.Pattern[str]), got {pattern!r}"
        raise TypeError(msg)
    try:
        return re.compile(pattern)
    except re.error as exc:
        msg = f"patterns: {pattern!r} is not a valid regular expression: {exc}"
        raise ValueError(msg) from None


def _key_names(keys: object, name: str) -> tuple[str, ...]:
    if isinstance(keys, str | bytes) or not isinstance(keys, Iterable):
        msg = f"{name} takes a list of key names, got {keys!r}"
        raise TypeError(msg)
    names = tuple(keys)
    for key in names:
        if not isinstance(key, str) or not key.strip():
            msg = f"{name} takes non-empty key names (str), got {key!r} in {keys!r}"
            raise TypeError(msg)
    return names


def _patterns(patterns: object) -> tuple[re.Pattern[str], ...]:
    if isinstance(patterns, str | re.Pattern):
        patterns = [patterns]
    if not isinstance(patterns, Iterable):
        msg = f"patterns takes a list of regular expressions, got {patterns!r}"
        raise TypeError(msg)
    return tuple(_compile(p) for p in patterns)


class Redaction:
    """A redaction policy: which keys hold secrets, and which text patterns to hide.

    Immutable: ``extend`` and ``with_keys`` return new policies (remembered,
    so asking twice costs nothing). ``Redaction()`` is the default policy.

    Args:
        keys: key names whose values are replaced by ``"***"``; they match
            word-wise (see ``DEFAULT_REDACT_KEYS``: ``"token"`` covers
            ``GITHUB_TOKEN`` and ``X-Auth-Token``, not ``tokenizer``).
        patterns: regular expressions (``str`` or compiled) whose every match
            in a string is replaced by ``"***"``; use look-arounds to keep
            context: ``r"(?<=acct-)\\d+"``.

    Raises:
        TypeError: when ``keys`` is one string or holds a non-string, or a
            pattern is not a string or compiled ``str`` expression.
        ValueError: when a pattern does not compile.
    """

    __slots__ = ("_derived", "_keys", "_lock", "_matcher", "_patterns", "_scrubber")

    def __init__(
        self,
        keys: Iterable[str] = DEFAULT_REDACT_KEYS,
        patterns: Iterable[str | re.Pattern[str]] = (),
    ) -> None:
        self._keys = _key_names(keys, "keys")
        self._patterns = _patterns(patterns)
        self._matcher = KeyMatcher(self._keys)
        self._scrubber = TextScrubber(self._matcher, self._patterns)
        self._derived: dict[tuple[Any, ...], Redaction] = {}
        self._lock = threading.Lock()

    @property
    def keys(self) -> tuple[str, ...]:
        """The secret key names."""
        return self._keys

    @property
    def patterns(self) -> tuple[re.Pattern[str], ...]:
        """The extra expressions, compiled."""
        return self._patterns

    def __repr__(self) -> str:
        shown = [p.pattern for p in self._patterns]
        return f"Redaction(keys={list(self._keys)!r}, patterns={shown!r})"

    # -- derived policies ---------------------------------------------------------------

    def _derive(self, kind: str, keys: tuple[str, ...], patterns: tuple[Any, ...]) -> Redaction:
        memo = (kind, keys, patterns)
        found = self._derived.get(memo)
        if found is None:
            if kind == "extend":
                found = Redaction((*self._keys, *keys), (*self._patterns, *patterns))
            else:
                found = Redaction(keys, self._patterns)
            with self._lock:
                if len(self._derived) >= _DERIVED_CACHE:
                    self._derived.clear()
                self._derived[memo] = found
        return found

    def extend(
        self, keys: Iterable[str] = (), patterns: Iterable[str | re.Pattern[str]] = ()
    ) -> Redaction:
        """Return this policy with more key names and patterns."""
        names = _key_names(keys, "keys")
        compiled = _patterns(patterns)
        if not names and not compiled:
            return self
        return self._derive("extend", names, compiled)

    def with_keys(self, keys: Iterable[str]) -> Redaction:
        """Return this policy with ``keys`` instead of its key names (patterns kept)."""
        return self._derive("keys", _key_names(keys, "keys"), ())

    # -- redacting ----------------------------------------------------------------------

    def text(self, text: str) -> str:
        """Return ``text`` without credentials (URLs, assignments, Bearer/Basic, patterns).

        Never raises: a string that cannot be scanned becomes a placeholder.
        """
        try:
            plain = text if type(text) is str else str.__str__(text)
            return self._scrubber.scrub(plain)
        except Exception as exc:  # a hostile str subclass, an odd user pattern
            return _placeholder(text, exc)

    def key_verdict(self, key: str) -> int:
        """``SECRET``, ``PLURAL`` (secret unless its value is a number) or ``KEEP``."""
        try:
            return self._matcher.verdict(key)
        except Exception:  # a hostile str subclass: hide, to be safe
            return SECRET

    def scrub_text(self, text: str, cut: bool) -> str:
        """``text`` without credentials; ``cut``: it was cut short at its end."""
        return self._scrubber.scrub(text, cut=cut)

    def hides(self, key: object, value: Any = None) -> bool:
        """Whether the value of ``key`` is redacted (``str`` and ``bytes`` keys)."""
        try:
            return self._matcher.hides(key, value)
        except Exception:  # a key with a broken __hash__ or __eq__: hide, to be safe
            return True

    def value(self, value: Any, *, max_items: int | None = None) -> Any:
        """Return a redacted copy of ``value``; never raises, never mutates ``value``.

        Mappings become dicts, lists and sets lists, tuples tuples; pydantic
        models, dataclasses and named tuples become dicts of their fields. A secret-named
        key's value (a ``str`` or ``bytes`` key, in a mapping or as the first
        item of a two-item ``(key, value)`` pair) becomes ``"***"``, and so does
        that text (of 6 characters or more) wherever else it appears in
        ``value``'s strings. Strings,
        string keys and ``bytes`` lose their credentials (``text``). Numbers,
        booleans, ``None``, dates, times, UUIDs and enum members are kept as
        they are; any other object becomes its ``repr()``, redacted.

        Args:
            value: any object.
            max_items: show at most this many items of each container, then a
                note of how many more there were (for a bounded preview).
        """
        walk = _Walk(self, max_items)
        redacted = walk.walk(value, 0)
        if walk.hidden:  # the same secret elsewhere in the value (a list, a message): gone too
            redacted = _scrub(redacted, sorted(walk.hidden, key=len, reverse=True), 0)
        return redacted

    # -- options ------------------------------------------------------------------------

    @staticmethod
    def coerce(option: object, *, name: str = "redact") -> bool | Redaction | tuple[str, ...]:
        """Check a ``redact=`` option and return it in a form that can be kept and reused.

        Args:
            option: ``True``, ``False``, key names (a list, tuple or set of
                ``str``) or a ``Redaction``.
            name: the parameter's name, for the error.

        Raises:
            TypeError: for anything else, naming ``name``.
        """
        if isinstance(option, bool | Redaction):
            return option
        if isinstance(option, str | bytes) or not isinstance(option, Iterable):
            msg = (
                f"{name} must be True, False, a list of key names or a flowhooks.Redaction, "
                f"got {option!r}"
            )
            raise TypeError(msg)
        return _key_names(option, name)

    @staticmethod
    def resolve(option: object, *, name: str = "redact") -> Redaction | None:
        """The policy a ``redact=`` option stands for now; ``None`` when it is ``False``.

        ``True``: the process-wide policy (``redaction()``); key names: the
        process-wide policy extended with them; a ``Redaction``: itself.

        Raises:
            TypeError: for an option ``coerce`` refuses, naming ``name``.
        """
        coerced = Redaction.coerce(option, name=name)
        if coerced is True:
            return _state["policy"]
        if coerced is False:
            return None
        if isinstance(coerced, Redaction):
            return coerced
        return _state["policy"].extend(keys=coerced)


RedactOption: TypeAlias = bool | Redaction | Iterable[str]
"""A handler's ``redact=``: ``True``, ``False``, extra key names or a ``Redaction``."""


class _Walk:
    """One redacted copy: the path being walked (for cycles) and the budget left."""

    __slots__ = ("_active", "_budget", "_limit", "_policy", "hidden")

    def __init__(self, policy: Redaction, max_items: int | None) -> None:
        self._policy = policy
        self._limit = max_items
        self._active: set[int] = set()
        self._budget = _BUDGET
        self.hidden: set[str] = set()
        """The secrets hidden under secret-named keys, to remove where else they appear."""

    def _hide(self, item: Any) -> str:
        """``"***"`` for a secret-named key's value, remembering its text."""
        if isinstance(item, bytes | bytearray):
            raw = bytes(item)
            try:
                item = raw.decode()
            except UnicodeDecodeError:
                item = raw.decode("latin-1")
        if isinstance(item, str):
            text = item.strip().strip("'\"")
            if len(text) >= _MIN_SCRUBBED and text != REDACTED:
                self.hidden.add(text)
        return REDACTED

    def walk(self, value: Any, depth: int) -> Any:
        self._budget -= 1
        if self._budget < 0:
            return _OVER_BUDGET
        try:
            kind = type(value)
            if kind is str:
                return self._policy.text(value)
            if value is None or kind is bool or kind is int or kind is float:
                return value
            if isinstance(value, str):
                return self._policy.text(value)
            if isinstance(value, bytes | bytearray):
                return self._bytes(bytes(value))
            if isinstance(value, _KEPT_TYPES):
                return value
            if depth >= _MAX_DEPTH:
                return _TOO_DEEP
            ident = id(value)
            if ident in self._active:
                return _CIRCULAR
            self._active.add(ident)
            try:
                return self._container(value, depth)
            finally:
                self._active.discard(ident)
        except Exception as exc:  # hostile __class__, __iter__, items(), properties, ...
            return _placeholder(value, exc)

    def _bytes(self, raw: bytes) -> bytes:
        text = raw.decode("latin-1")
        cleaned = self._policy.text(text)
        return raw if cleaned == text else cleaned.encode("latin-1", "replace")

    def _container(self, value: Any, depth: int) -> Any:
        if isinstance(value, BaseModel):
            try:
                data = value.model_dump()
            except Exception:  # a broken serialiser: its repr, redacted
                return self._repr(value)
            return self.walk(data, depth + 1) if isinstance(data, dict) else self._repr(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {}
            for f in dataclasses.fields(value):
                try:
                    fields[f.name] = getattr(value, f.name)
                except Exception as exc:  # a property that raises
                    fields[f.name] = _placeholder(value, exc)
            return self._mapping(fields, depth)
        if isinstance(value, Mapping):
            return self._mapping(value, depth)
        names = getattr(type(value), "_fields", None) if isinstance(value, tuple) else None
        if isinstance(names, tuple):
            # A named tuple: its field names are keys (``Creds(user, token)``), as a
            # dataclass's are; as a plain tuple its values would go out unnamed, unredacted.
            return self._mapping(dict(zip(names, value, strict=False)), depth)
        if isinstance(value, list | tuple | set | frozenset | deque):
            return self._sequence(value, depth)
        return self._repr(value)

    def _repr(self, value: Any) -> str:
        try:
            shown = repr(value)
        except Exception as exc:  # a broken __repr__
            return _placeholder(value, exc)
        return self._policy.text(shown)

    def _mapping(self, value: Mapping[Any, Any], depth: int) -> dict[Any, Any]:
        policy = self._policy
        out: dict[Any, Any] = {}
        limit = self._limit
        named_pair = self._named_pair(value)
        cut = type(value) is dict and value.get(TRUNCATION_MARKER) is True
        for i, (key, item) in enumerate(value.items()):
            if limit is not None and i >= limit:
                out["..."] = _more(value, limit, "keys")
                break
            if self._budget <= 0:
                out["..."] = _OVER_BUDGET
                break
            hidden = policy.hides(key, item) or (named_pair and i == 1)
            if isinstance(key, str):
                key = policy.text(key)
            elif isinstance(key, bytes):
                key = self._bytes(key)
            if hidden:
                out[key] = self._hide(item)
            elif cut and key == "preview" and type(item) is str:
                out[key] = self._preview(item)
            else:
                out[key] = self.walk(item, depth + 1)
        return out

    def _preview(self, text: str) -> str:
        """The JSON text of a payload cut to the size cap: its secret keys' values hidden
        as in the payload itself (``_redact_json``), then its strings' credentials."""
        self._budget -= 1
        policy = self._policy
        try:
            masked, found = redact_json_text(text, policy.key_verdict, policy.scrub_text)
        except Exception as exc:  # an odd user pattern: hide the preview rather than risk it
            return _placeholder(text, exc)
        for secret in found:
            shown = secret.strip()
            if len(shown) >= _MIN_SCRUBBED and shown != REDACTED:
                self.hidden.add(shown)
                escaped = json.dumps(shown, ensure_ascii=False)[1:-1]
                if escaped != shown:  # how the preview's JSON text holds it
                    self.hidden.add(escaped)
        return masked

    def _named_pair(self, value: Mapping[Any, Any]) -> bool:
        """Whether ``value`` is a ``(key, value)`` pair with named fields whose key is
        secret: ``{"name": "Authorization", "value": "Bearer ..."}`` (a header as HAR
        writes it), ``Setting(key="password", val=...)``; its second value is hidden."""
        if len(value) != 2:
            return False
        (first_key, first), (_, second) = value.items()
        policy = self._policy
        return (
            isinstance(first, str | bytes)
            and not policy.hides(first_key, first)
            and policy.hides(first, second)
        )

    def _sequence(self, value: Any, depth: int) -> list[Any] | tuple[Any, ...]:
        keep = max(self._limit if self._limit is not None else self._budget, 0)
        items = list(islice(value, keep + 1))
        if (
            len(items) == 2
            and isinstance(value, list | tuple)
            and isinstance(items[0], str | bytes)
            and self._policy.hides(items[0], items[1])
        ):  # a (key, value) pair such as a header
            pair = (self.walk(items[0], depth + 1), self._hide(items[1]))
            return pair if isinstance(value, tuple) else list(pair)
        walked = [self.walk(item, depth + 1) for item in items[:keep]]
        if len(items) > keep:
            walked.append(f"... {_more(value, keep, 'items')}")
        return tuple(walked) if isinstance(value, tuple) else walked


def _scrub(value: Any, secrets: list[str], depth: int) -> Any:
    """``value`` (already redacted: dicts, lists, tuples, strings, bytes) with each of
    ``secrets`` replaced by ``"***"`` in its strings and bytes (UTF-8 or Latin-1), its
    keys included."""
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, bytes):
        for secret in secrets:
            for encoding in ("utf-8", "latin-1"):
                found = secret.encode(encoding, "ignore")
                if found and found in value:
                    value = value.replace(found, _REDACTED_BYTES)
        return value
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {
            _scrub(key, secrets, depth + 1): _scrub(item, secrets, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        scrubbed = [_scrub(item, secrets, depth + 1) for item in value]
        return tuple(scrubbed) if isinstance(value, tuple) else scrubbed
    return value


def _more(value: Any, shown: int, what: str) -> str:
    """``"N more keys"``: what a bounded preview left out."""
    try:
        return f"{len(value) - shown} more {what}"
    except Exception:  # no length, or a broken __len__
        return f"more {what}"


# -- the process-wide policy ------------------------------------------------------------

_DEFAULT: Final = Redaction()
_state: dict[str, Redaction] = {"policy": _DEFAULT}
_state_lock = threading.Lock()


def redaction(
    keys: Iterable[str] = (), patterns: Iterable[str | re.Pattern[str]] = ()
) -> Redaction:
    """Add key names and patterns to the process-wide redaction policy, and return it.

    Additions accumulate (they never replace the defaults or earlier
    additions); ``reset_redaction()`` goes back to the defaults. Called with
    nothing, it returns the current policy. Every handler with ``redact=True``
    (the default) or a list of keys uses the policy as it is when data
    leaves, so additions made after the handlers were created apply too.

    Args:
        keys: more secret key names (word-wise matching, see ``DEFAULT_REDACT_KEYS``).
        patterns: more regular expressions whose matches are hidden in every string.

    Raises:
        TypeError: when ``keys`` is one string or holds a non-string, or a
            pattern is neither a string nor a compiled ``str`` expression.
        ValueError: when a pattern does not compile.

    Example:
        ``flowhooks.redaction(keys=["ssn"], patterns=[r"sk-live-[0-9a-z]+"])``
    """
    names = _key_names(keys, "keys")
    compiled = _patterns(patterns)
    with _state_lock:
        current = _state["policy"]
        if names or compiled:
            current = Redaction((*current.keys, *names), (*current.patterns, *compiled))
            _state["policy"] = current
    return current


def reset_redaction() -> None:
    """Restore the process-wide policy to the defaults (for tests, mostly)."""
    with _state_lock:
        _state["policy"] = _DEFAULT


def redact_value(value: Any, redact: RedactOption = True) -> Any:
    """Return a redacted copy of ``value`` for logging, storing or sending (never raises).

    See ``Redaction.value`` for what is redacted and what the copy looks like.

    Args:
        value: any object, often JSON data (then the copy is JSON data too).
        redact: ``True`` for the process-wide policy, extra key names (added
            to it), a ``Redaction``, or ``False`` to return ``value`` itself.

    Raises:
        TypeError: when ``redact`` is not one of those.
    """
    policy = Redaction.resolve(redact)
    return value if policy is None else policy.value(value)


def redact_text(text: str, redact: RedactOption = True) -> str:
    """Return ``text`` without credentials (URLs, assignments, Bearer/Basic, patterns).

    For messages, exception texts and tracebacks; never raises. ``redact`` is
    as for ``redact_value``.
    """
    policy = Redaction.resolve(redact)
    return text if policy is None else policy.text(text)
