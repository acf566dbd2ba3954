"""Which key names hold secrets: word-wise matching of names such as ``db_password``.

The vocabulary of redaction (``_redact`` builds policies on it). Keys and
names are split into words at ``_``, ``-``, ``.``, spaces and camelCase
boundaries and compared case-insensitively, so one name (``api_key``) covers
``apiKey``, ``X-API-KEY`` and ``x_api_key``; see ``DEFAULT_REDACT_KEYS``.
Verdicts are cached per key, so a payload of many rows with the same keys
pays for each key once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

DEFAULT_REDACT_KEYS: Final[tuple[str, ...]] = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "authorization",
    "auth",
    "cookie",
    "set_cookie",
    "session",
    "credential",
    "credentials",
    "signature",
    "card_number",
    "cvv",
)
"""Key names whose values are redacted.

Keys and names are split into words at ``_``, ``-``, ``.``, spaces and
camelCase boundaries and compared case-insensitively. A key is redacted when
the words of one of these names appear in it, in order and next to each
other, where

* the last word may be plural (``+s``): ``"token"`` matches ``refresh_tokens``
  and ``"api_key"`` matches ``api_keys``;
* the first word may be run together with what comes before it: ``"token"``
  matches ``mytoken`` and ``csrftoken``, ``"password"`` matches ``dbpassword``;
* a name's words may be run together: ``"api_key"`` matches ``xapikey``.

So ``"token"`` also matches ``access_token``, ``GITHUB_TOKEN``,
``X-Auth-Token`` and ``accessToken``, and ``"api_key"`` matches ``apiKey``
and ``X-API-KEY``. A word that only *starts* with a name is kept:
``tokenizer``, ``secretary``, ``author``. A key matched only through a plural
(``total_tokens``, ``tokens_used``) names a count when its value is a number,
so a number there is kept and anything else is redacted.
"""

KEEP: Final = 0
"""Verdict: the key's value is kept."""
PLURAL: Final = 1
"""Verdict: the key matched only through a plural; its value is kept when it is a number."""
SECRET: Final = 2
"""Verdict: the key's value is redacted."""

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_CACHE_SIZE: Final = 10_000
_LONGEST_KEY: Final = 256  # longer keys are judged on their first characters


def key_words(key: str) -> tuple[str, ...]:
    """The lower-cased words of a key or name (``"X-ApiKey"`` -> ``("x", "api", "key")``)."""
    return tuple(w.lower() for w in _WORD.findall(key[:_LONGEST_KEY]))


def _word_match(word: str, name: str, *, first: bool, last: bool) -> int:
    """How one word of a key matches one word of a name (see ``DEFAULT_REDACT_KEYS``)."""
    if word == name or (first and word.endswith(name)):
        return SECRET
    plural = name + "s"
    if last and (word == plural or (first and word.endswith(plural))):
        return PLURAL
    return KEEP


def _match(words: tuple[str, ...], name: tuple[str, ...]) -> int:
    """The strongest match of the name's words among the key's words."""
    n = len(name)
    best = KEEP
    for i in range(len(words) - n + 1):
        found = SECRET
        for j in range(n):
            got = _word_match(words[i + j], name[j], first=j == 0, last=j == n - 1)
            if got == KEEP:
                found = KEEP
                break
            found = min(found, got)
        if found == SECRET:
            return SECRET
        best = max(best, found)
    if n > 1:  # the name's words run together inside one word of the key
        joined = "".join(name)
        for word in words:
            best = max(best, _word_match(word, joined, first=True, last=True))
            if best == SECRET:
                return SECRET
    return best


def is_count(value: Any) -> bool:
    """Whether ``value`` is a number (not a bool): a count a plural key may keep."""
    return isinstance(value, int | float) and not isinstance(value, bool)


class KeyMatcher:
    """Decides, per key, whether its value is secret; remembers the decisions.

    Args:
        names: the secret key names (see ``DEFAULT_REDACT_KEYS`` for how they match).
    """

    __slots__ = ("_cache", "_names")

    def __init__(self, names: Iterable[str]) -> None:
        self._names = tuple({w for w in (key_words(n) for n in names) if w})
        self._cache: dict[str, int] = {}

    def verdict(self, key: str) -> int:
        """``SECRET``, ``PLURAL`` (secret unless the value is a number) or ``KEEP``."""
        hit = self._cache.get(key)
        if hit is None:
            words = key_words(key)
            hit = KEEP
            for name in self._names:
                hit = max(hit, _match(words, name))
                if hit == SECRET:
                    break
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[str.__str__(key)] = hit
        return hit

    def hides(self, key: object, value: Any) -> bool:
        """Whether the value of ``key`` (a ``str`` or ``bytes`` key) is redacted."""
        if isinstance(key, str):
            hit = self.verdict(key)
        elif isinstance(key, bytes):
            hit = self.verdict(key[:_LONGEST_KEY].decode("latin-1"))
        else:
            return False
        return hit == SECRET or (hit == PLURAL and not is_count(value))
