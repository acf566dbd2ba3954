"""How flowhooks writes to the log: failures it isolates, and its own DEBUG chatter.

The exception is rendered as plain text (type, message and, when asked, the
traceback) instead of being attached to the loguru record: loguru's default
sink prints the values of local variables next to an attached traceback,
and those locals are often a run's inputs, passwords included.

flowhooks' own diagnostics below WARNING go through ``debug``, whose records
come from this module, which is disabled in loguru on import: they never
reach the application's stderr unless it asks for them with
``logger.enable("flowhooks")`` (loguru's switch for libraries). Warnings and
errors, isolated handler failures among them, are always logged.
"""

from __future__ import annotations

import traceback
from typing import Any

from loguru import logger

from flowhooks._redact import redact_text

logger.disable(__name__)


def debug(message: str, /, *args: Any, **kwargs: Any) -> None:
    """Log a DEBUG diagnostic (shown only after ``logger.enable("flowhooks")``)."""
    logger.debug(message, *args, **kwargs)


def failure_text(exc: BaseException, *, with_traceback: bool) -> str:
    """Return ``"Type: message (notes)"``, then the plain traceback when ``with_traceback``.

    Credentials in it (a URL's password, a ``Bearer`` token, ``api_key=...``) are
    redacted by the process's policy: exception messages often quote a request.
    """
    try:
        message = str(exc)
    except Exception:  # an exception whose __str__ raises
        message = "<unprintable message>"
    summary = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    notes = getattr(exc, "__notes__", None)
    if notes:  # e.g. which part of a composite failed (the traceback repeats them)
        summary += " (" + "; ".join(str(n) for n in notes) + ")"
    summary = _capped(summary)
    return summary + traceback_suffix(exc) if with_traceback else summary


LOG_TEXT_CAP = 64_000
"""Characters of an exception's text a log record carries (a 20 MB message is cut, and
costs nothing to redact or write beyond that)."""


_REDACT_MARGIN = 4_096
"""Characters past the cap redacted with the rest, so that a credential the cut runs
through (a URL's password, a user pattern's match) is found whole."""


def _capped(text: str, *, both_ends: bool = False) -> str:
    """``text`` redacted and cut to ``LOG_TEXT_CAP`` characters, saying how long it was:
    its head, or with ``both_ends`` its head and its tail (a traceback's last frames).
    Only what is kept (and a margin) is redacted: a 20 MB message costs next to nothing."""
    if len(text) <= LOG_TEXT_CAP:
        return redact_text(text)
    mark = f"... [__flowhooks_truncated__: {len(text)} chars]"
    keep = LOG_TEXT_CAP // 2 if both_ends else LOG_TEXT_CAP
    head = redact_text(text[: keep + _REDACT_MARGIN])[:keep]
    if not both_ends:
        return f"{head}{mark}"
    tail = redact_text(text[-(keep + _REDACT_MARGIN) :])[-keep:]
    return f"{head}{mark}\n{tail}"


def traceback_suffix(exc: BaseException) -> str:
    """Return the plain traceback of ``exc`` on its own lines, to end a log message with.

    Redacted like ``failure_text``: a traceback quotes source lines and messages.
    """
    return _capped("\n" + "".join(traceback.format_exception(exc)).rstrip(), both_ends=True)
