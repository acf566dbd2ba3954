"""Removing the user information of URLs from text: ``https://bob:pw@host`` -> ``https://***@host``.

A password is not always encoded as it should be: it may hold ``/``, ``#``,
``?`` or ``@`` (``postgresql://app:p@ss/w#rd@db/app``), and JSON may escape
the scheme's slashes (``https:\\/\\/``). So the rule reads each URL's rest up
to the next blank, quote or URL, and finds where its user information ends:

- at the last ``@`` before the first ``/``, ``?`` or ``#`` (the usual form);
- otherwise, when a ``user:`` comes first and what follows the ``:`` is not a
  port (``host:8080/``), at the last ``@`` of the rest: the password held
  ``/``, ``#`` or ``?``.

Each URL's rest is read once, so the scan is linear in the text, whatever the
lengths of the passwords. A text cut short (``safe_text``'s marker, or the end
of a cut JSON string) can part a password from its ``@``: the rest of a URL
that runs into the cut, with a ``:`` before its first ``/``, is hidden whole.
"""

from __future__ import annotations

import re
from typing import Final

MASK: Final = "***"

_SCHEME_END = re.compile(r":(?:\\?/){2}")
_REST_END = re.compile(r"""[\s"'<>]|:(?:\\?/){2}""")
_PORT = re.compile(r"\d+(?:[/?#\\]|$)")


def _userinfo_end(rest: str) -> int:
    """The index of the ``@`` that ends the user information of ``rest`` (a URL after
    its ``://``), or -1 when it has none."""
    stop = len(rest)
    for mark in "/?#":
        found = rest.find(mark, 0, stop)
        if found != -1:
            stop = found
    at = rest.rfind("@", 0, stop)
    if at != -1:
        return at
    colon = rest.find(":", 0, stop)
    if colon == -1 or "@" in rest[:colon] or _PORT.match(rest, colon + 1):
        return -1  # no user before a ':', or host:port
    return rest.rfind("@")


def _looks_like_credentials(rest: str) -> bool:
    """Whether the rest of a URL cut short may hold a password (``user:pw``, ``token``)."""
    slash = rest.find("/")
    head = rest if slash == -1 else rest[:slash]
    if "@" in head:
        return False  # its user information ended before the cut, and is hidden
    colon = head.find(":")
    return slash == -1 or (colon != -1 and not _PORT.match(head, colon + 1))


def hide_userinfo(text: str, *, cut: bool = False) -> str:
    """Return ``text`` with the user information of every URL in it replaced by ``***``.

    Args:
        text: any text.
        cut: ``text`` was cut short at its end (a URL running into the end may have
            lost its ``@``).
    """
    pieces: list[str] = []
    done = 0
    pos = 0
    length = len(text)
    while (scheme := _SCHEME_END.search(text, pos)) is not None:
        start = scheme.end()
        ends = _REST_END.search(text, start)
        end = ends.start() if ends is not None else length
        pos = end if end > start else start
        rest = text[start:end]
        at = _userinfo_end(rest)
        if at > 0:
            pieces.append(text[done:start])
            pieces.append(MASK)
            done = start + at
        elif cut and end == length and rest and _looks_like_credentials(rest):
            pieces.append(text[done:start])
            pieces.append(MASK)
            done = end
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)
