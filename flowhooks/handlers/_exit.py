"""Work left for the very end of the process, after every other flowhooks exit hook.

``atexit`` runs its hooks last registered, first run. ``import flowhooks``
imports this module, so its one hook is registered before any handler or
integration module (imported later) can register one of its own, and what is
handed to ``at_last_exit`` runs after them: the database writers close only
once the runs and claims that other exit hooks end were written through them.
"""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Callable

_LAST: list[Callable[[], None]] = []


def at_last_exit(work: Callable[[], None]) -> None:
    """Run ``work`` at interpreter exit, after flowhooks' other exit hooks (once)."""
    if work not in _LAST:
        _LAST.append(work)


def _run_last() -> None:
    for work in _LAST:
        with contextlib.suppress(Exception):  # the process is exiting: nothing left to tell
            work()


atexit.register(_run_last)
