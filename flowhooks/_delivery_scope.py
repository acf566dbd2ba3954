"""What code that delivers an event later sees: the run of the event, and whose delivery it is.

Place in the chain: events -> handler -> plan -> manager -> composites
(``_composites`` -> **here** -> ``_delivery_end`` -> ``_delivery`` ->
``_batched``, ``_background``).

A composite that calls a wrapped handler from its own worker task, after the
event's dispatch has returned (``BackgroundCallback``), captures a
``RunScope`` when the event is dispatched and enters it around the call, so
that the handler runs as it would have during the dispatch:

* ``current_run()`` names the run whose event it is, whatever other runs the
  same worker delivers for, and the other context variables of the code that
  dispatched (a request id set by the caller of ``run_sync`` ...) are seen;
* an event the handler sends (``current_run().emit(...)``) joins the run's
  queue of events sent during a dispatch: it is dispatched right after the
  run's current event, or at the latest before its next one, instead of
  waiting for the run's dispatch turn. That turn may be held by a dispatcher
  waiting for room in the very queue the worker empties, which would never
  come back.

``delivering`` names the composites whose delivery the current code runs
in, so that one of them can tell its own worker (or a task it started)
dispatching, and admit that event to a full ``block`` queue instead of
waiting for room only its worker could make.
"""

from __future__ import annotations

import asyncio
from contextvars import Context, ContextVar, Token, copy_context
from typing import Any

from flowhooks._sequencer import EventSequencer, TaskFrame, _frame

delivering: ContextVar[tuple[object, ...]] = ContextVar("flowhooks_delivering", default=())
"""The composites whose worker the current code runs in (innermost last)."""

queue_only: ContextVar[str | None] = ContextVar("flowhooks_queue_only", default=None)
"""The run whose ``workflow_end`` an end sends after its own task was cancelled (a loop
shutting down, a routine cancelling every task): see ``_delivery_end.held_back``. A delivery
later on does not carry it (``enter``)."""

_Tokens = list[tuple[ContextVar[Any], Token[Any]]]


class RunScope:
    """The context of one dispatch, kept with the event until it is delivered.

    Attributes:
        context: a copy of the dispatching code's context (``copy_context``
            is a constant-time snapshot).
        node: the node whose code dispatched, if any.
        run: the sequencer of the run dispatching the event, when the event came
            from a run's dispatch (``None`` for events sent by hand).
    """

    __slots__ = ("context", "node", "run")

    def __init__(self, context: Context, node: str | None, run: EventSequencer | None) -> None:
        self.context = context
        self.node = node
        self.run = run


def capture() -> RunScope:
    """Return the scope of the dispatch calling: call it from ``dispatch``."""
    frame = _frame.get()
    if isinstance(frame, TaskFrame):
        return RunScope(copy_context(), frame.node, frame.dispatching)
    return RunScope(copy_context(), frame, None)


def enter(scope: RunScope) -> _Tokens:
    """Make the calling task run in ``scope``; hand the result to ``leave`` afterwards.

    Every context variable of the dispatch is set, except which deliveries
    the code runs in (the worker's own) and ``queue_only``. The task gets a frame of its own
    that joins the run's dispatch, so events the code sends are queued behind
    the run's current event (see the module docstring).
    """
    tokens: _Tokens = []
    for var, value in scope.context.items():
        if var is not _frame and var is not delivering and var is not queue_only:
            tokens.append((var, var.set(value)))
    task = asyncio.current_task()
    if task is not None:
        frame = TaskFrame(scope.node, task)
        frame.dispatching = scope.run
        tokens.append((_frame, _frame.set(frame)))
    return tokens


def leave(tokens: _Tokens) -> None:
    """Give the calling task back the context ``enter`` replaced."""
    for var, token in reversed(tokens):
        var.reset(token)
