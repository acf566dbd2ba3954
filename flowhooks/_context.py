"""The context variable that holds the current run (read by ``current_run()``).

It sits low in the import chain so the manager can name the run in its logs
without importing the runner.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowhooks._results import RunContext

current_run_var: ContextVar[RunContext] = ContextVar("flowhooks_current_run")


def current_run() -> RunContext:
    """Return the context of the run this code executes in (inside nodes and handlers).

    Raises:
        LookupError: outside any run, with a hint about where it works.
    """
    try:
        return current_run_var.get()
    except LookupError:
        msg = (
            "current_run() was called outside a workflow run; it works inside "
            "node functions, node callbacks and handlers while a run is executing"
        )
        raise LookupError(msg) from None


def run_id_for_logs() -> str:
    """Return the current run's id, or ``""`` outside any run."""
    ctx = current_run_var.get(None)
    return ctx.run_id if ctx is not None else ""


def run_context_for(run_id: str) -> RunContext | None:
    """Return the current run's context when it is run ``run_id``, else ``None``.

    Handlers use it to reach the ``RunContext`` (and, while ``workflow_end``
    is dispatched, its ``result``) of the run an event belongs to; an event
    triggered by hand, or for another run, gets ``None``.
    """
    ctx = current_run_var.get(None)
    if ctx is None or ctx.run_id != run_id:
        return None
    return ctx
