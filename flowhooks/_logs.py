"""How flowhooks writes a failure it isolates into the log.

The exception is rendered as plain text (type, message and, when asked, the
traceback) instead of being attached to the loguru record: loguru's default
sink prints the values of local variables next to an attached traceback,
and those locals are often a run's inputs, passwords included.
"""

from __future__ import annotations

import traceback


def failure_text(exc: BaseException, *, with_traceback: bool) -> str:
    """Return ``"Type: message (notes)"``, then the plain traceback when ``with_traceback``."""
    summary = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    notes = getattr(exc, "__notes__", None)
    if notes:  # e.g. which part of a composite failed (the traceback repeats them)
        summary += " (" + "; ".join(str(n) for n in notes) + ")"
    return summary + traceback_suffix(exc) if with_traceback else summary


def traceback_suffix(exc: BaseException) -> str:
    """Return the plain traceback of ``exc`` on its own lines, to end a log message with."""
    return "\n" + "".join(traceback.format_exception(exc)).rstrip()
