"""What handlers built on whole events read besides the hook's arguments, through public names.

``given_event`` insists on the ``Event`` a manager passes as ``event=``;
``context_of`` reaches the ``RunContext`` of the run an event belongs to
(its ``result`` while ``workflow_end`` is dispatched, its ``parent_node_id``)
through ``current_run()``.
"""

from __future__ import annotations

from flowhooks import Event, RunContext, current_run


def given_event(event: Event | None, handler: str, method: str) -> Event:
    """Return the ``Event`` a manager passed as ``event=``.

    Raises:
        TypeError: the method was called directly, without ``event=``.
    """
    if event is None:
        msg = (
            f"{handler}.{method} needs the event as event=; add the handler to a "
            "CallbackManager or to a run's callbacks instead of calling it directly"
        )
        raise TypeError(msg)
    return event


def context_of(run_id: str) -> RunContext | None:
    """The context of run ``run_id`` when the caller runs inside it, else ``None``.

    ``None`` outside any run, in another run (a parent's events seen from a
    child), or where the run's context is not carried (a background
    delivery task, events triggered by hand).
    """
    try:
        ctx = current_run()
    except LookupError:
        return None
    return ctx if ctx.run_id == run_id else None
