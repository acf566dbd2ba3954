"""Removing credentials from text: URLs, assignments, ``Bearer``/``Basic`` and custom patterns.

Used by ``_redact`` on every string it redacts (values, keys, exception
messages, tracebacks, reprs). The rules, in order:

1. the user information of a URL: ``https://bob:pw@host/`` -> ``https://***@host/``
   (``_redact_urls``: a password holding ``/``, ``#``, ``?`` or ``@`` too, and a
   password a cut parted from its ``@``);
2. ``Bearer``/``Basic`` credentials: ``Bearer abc.def`` -> ``Bearer ***``
   (a ``Basic`` word counts as a credential only when it looks like base64:
   a digit, ``+``, ``/`` or ``=``, or mixed case, so ``Basic setup`` stays);
3. assignments to a secret-named key, in the forms a message, a repr, a
   header line, JSON or a query string uses: ``password=pw``,
   ``api_key='pw'``, ``"token": "pw"``, ``X-Api-Key: pw``,
   ``?access_token=pw&``, ``Authorization: Bearer pw``, and the quoted pairs
   of a repr or JSON list, ``('X-Api-Key', 'pw')``, ``b'token': b'pw'``
   -> the value becomes ``***`` (quotes kept);
4. the policy's own regular expressions: each match becomes ``***``.

Every built-in expression runs in time linear in the text; a text with none of
their anchors (``:``, ``=``, a quote before a comma, ``bearer``, ``basic``) is
returned after one scan.
"""

from __future__ import annotations

import re
from typing import Final

from flowhooks._redact_json import TRUNCATION_MARKER
from flowhooks._redact_keys import KEEP, PLURAL, KeyMatcher
from flowhooks._redact_urls import hide_userinfo

MASK: Final = "***"

_HINT = re.compile(r"""[:=]|["'][ \t]{0,3},|(?i:bearer|basic)""")
_CUT_MARK = re.compile(r"\.\.\. \[" + re.escape(TRUNCATION_MARKER) + r": \d+ chars\]\Z")
_AUTH_SCHEME = re.compile(r"\b(?i:(bearer|basic))(\s+)([A-Za-z0-9\-._~+/]+=*)")
_ASSIGNMENT = re.compile(
    r"""(?<![\w.\-])(?:-{1,2}(?=[A-Za-z_]))?(?:[bB](?=["']))?(?P<q>["']?)(?:-{1,2})?"""
    r"""(?P<key>[A-Za-z_][\w.\-]*(?:\[[\w.\-]*\])*)(?P=q)\]?"""
    r"""[ \t]{0,16}(?:(?P<pair>,)[ \t]{0,16}"""
    r"""|[:=](?!//)[ \t]{0,16}(?:\r?\n[ \t]{0,64}(?=[bB]?["']))?)"""
)
_SCHEMES = (
    "bearer|basic|token|digest|bot|apikey|key|ssws|negotiate|ntlm|hmac|splunk"
    "|sharedaccesssignature|aws4-hmac-sha256"
)
_VALUE = re.compile(
    r"""[bBuUrR]?"(?:[^"\\\n]|\\.)*"?"""
    r"""|[bBuUrR]?'(?:[^'\\\n]|\\.)*'?"""
    rf"""|(?:(?i:{_SCHEMES})[ \t]+)?[^\s,;&'"<>(){{}}\[\]]+"""
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _looks_encoded(word: str) -> bool:
    """Whether the word after ``Basic`` looks like base64 rather than prose."""
    if any(c.isdigit() or c in "+/=" for c in word):
        return True
    rest = word[1:]
    return any(c.isupper() for c in rest) and any(c.islower() for c in word)


def _auth_scheme(match: re.Match[str]) -> str:
    scheme, space, credential = match.group(1, 2, 3)
    if scheme.lower() == "basic" and not _looks_encoded(credential):
        return match.group(0)
    return f"{scheme}{space}{MASK}"


def _masked(value: str) -> str:
    """The replacement of an assigned value: ``***``, inside the value's own quotes."""
    start = value.lstrip("bBuUrR")[:1]
    if start in ('"', "'"):
        prefix = value[: len(value) - len(value.lstrip("bBuUrR"))]
        return f"{prefix}{start}{MASK}{start}"
    return MASK


class TextScrubber:
    """Applies the rules above to strings, with one key matcher and extra patterns.

    Args:
        keys: decides which assignment keys are secret.
        patterns: compiled expressions whose matches are replaced by ``***``.
    """

    __slots__ = ("_keys", "_patterns")

    def __init__(self, keys: KeyMatcher, patterns: tuple[re.Pattern[str], ...]) -> None:
        self._keys = keys
        self._patterns = patterns

    def scrub(self, text: str, *, cut: bool = False) -> str:
        """Return ``text`` with credentials replaced by ``***``.

        ``cut``: the text was cut short at its end (without ``safe_text``'s marker).
        """
        if _HINT.search(text) is not None:
            if "/" in text:
                mark = _CUT_MARK.search(text) if TRUNCATION_MARKER in text else None
                if mark is not None:
                    text = hide_userinfo(text[: mark.start()], cut=True) + mark.group(0)
                else:
                    text = hide_userinfo(text, cut=cut)
            text = _AUTH_SCHEME.sub(_auth_scheme, text)
            text = self._assignments(text)
        for pattern in self._patterns:
            text = pattern.sub(MASK, text)
        return text

    def _assignments(self, text: str) -> str:
        """Replace the values assigned to secret-named keys (rule 3)."""
        pieces: list[str] = []
        done = 0  # text[:done] is in pieces
        pos = 0
        search = _ASSIGNMENT.search
        verdict = self._keys.verdict
        while (found := search(text, pos)) is not None:
            pos = found.end()
            pair = found.group("pair") is not None
            if pair and not found.group("q"):
                continue  # a comma after a bare word is prose, not a pair
            hit = verdict(found.group("key"))
            if hit == KEEP:
                continue
            value = _VALUE.match(text, pos)
            if value is None:
                continue
            shown = value.group(0)
            if pair and shown.lstrip("bBuUrR")[:1] not in ('"', "'"):
                continue  # ("token", 5): only a quoted string is a pair's secret
            if hit == PLURAL and _NUMBER.fullmatch(shown):
                continue  # a count, such as total_tokens=12
            if shown != MASK:
                pieces.append(text[done:pos])
                pieces.append(_masked(shown))
                done = value.end()
            pos = value.end()
        if not pieces:
            return text
        pieces.append(text[done:])
        return "".join(pieces)
