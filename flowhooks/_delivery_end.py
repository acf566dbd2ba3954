"""A run's end and its background deliveries: the wait before ``workflow_end``.

Place in the chain: events -> handler -> plan -> manager -> composites
(``_composites`` -> ``_delivery_scope`` -> **here** -> ``_delivery`` ->
``_batched``, ``_background``). Before a run sends ``workflow_end``, the
composites that deliver later (``BackgroundCallback``, through the
``Dispatcher`` hooks ``_below``, ``_holds_events`` and ``_settle``) deliver what
they hold, so that what their handlers send in reply is part of the run:

* ``end_after_deliveries`` is that end, for a ``Workflow`` run and an
  ``ExternalRun`` alike: the wait (``EndSettle``, in a task of its own, cut
  short when the task awaiting the run is cancelled), then ``workflow_end``
  and the flush;
* ``EndBudget``: the wait and the flush after ``workflow_end`` share each
  composite's ``close_timeout``;
* ``held_back``: when the task running the end is itself cancelled (a loop
  shutting down), the composites only queue that run's ``workflow_end``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar

from loguru import logger

from flowhooks._delivery_scope import queue_only
from flowhooks._dispatcher import Dispatcher
from flowhooks._events import Event, EventType

T = TypeVar("T")


def held_back(event_type: EventType, event: Event) -> bool:
    """Whether a composite only queues this event: the ``workflow_end`` of a run whose end
    goes on after its own task was cancelled. It neither waits for room nor starts a worker
    that nobody would stop; it is delivered with what the composite holds the next time it
    is used or closed (a later loop takes over what a closed one left). Only that event:
    code its handlers start, which sees the variable too, is not affected."""
    run_id = queue_only.get()
    return run_id is not None and event_type is EventType.WORKFLOW_END and event.run_id == run_id


class EndBudget:
    """One ``close_timeout`` per composite for a run's end: the wait before ``workflow_end``
    (``_settle``) notes when each composite's runs out, and the end's flush after it waits
    only what is left. Only the task running that end has it: deliveries and tasks that
    start during the end (which see the context variable too) flush as usual."""

    __slots__ = ("owner", "until")

    def __init__(self) -> None:
        self.owner = asyncio.current_task()
        self.until: dict[int, float] = {}

    def limit(self, composite: object, loop: asyncio.AbstractEventLoop) -> float | None:
        """What is left of ``composite``'s wait at this end (None: it did not wait yet)."""
        until = self.until.get(id(composite))
        if until is None or asyncio.current_task() is not self.owner:
            return None
        return max(until - loop.time(), 0.0)


run_end_budget: ContextVar[EndBudget | None] = ContextVar("flowhooks_run_end_budget", default=None)
"""The ``EndBudget`` of the run's end running (set by it)."""


def holds_events(root: Dispatcher) -> bool:
    """Whether a dispatcher at or below ``root`` holds events of the running loop not yet
    delivered, whose handlers may still reply: see ``Dispatcher._settle``."""
    return any(d._holds_events() for d in _dispatchers(root))


def _dispatchers(root: Dispatcher) -> Iterator[Dispatcher]:
    """``root`` and the dispatchers below it, each once, outermost first."""
    seen: set[int] = set()
    stack: list[object] = [root]
    while stack:
        handler = stack.pop()
        if isinstance(handler, Dispatcher) and id(handler) not in seen:
            seen.add(id(handler))
            yield handler
            stack.extend(reversed(handler._below()))


async def settle_deliveries(root: Dispatcher, limit: float | None) -> None:
    """Let each dispatcher at or below ``root`` deliver what it holds, all within ``limit``
    seconds; an outer one first, so that what it hands on to those below it is waited
    for too."""
    loop = asyncio.get_running_loop()
    until = None if limit is None else loop.time() + limit
    for dispatcher in _dispatchers(root):
        if dispatcher._holds_events():
            await dispatcher._settle(None if until is None else max(until - loop.time(), 0.0))


class EndSettle:
    """A run's end waiting for its background deliveries (``settle_deliveries``) before
    ``workflow_end``, in a task of its own, so that a cancellation of whoever awaits the
    run cuts the wait short (``cut``): the end goes on at the next turn of the loop, its
    grace kept for ``workflow_end`` (an anyio scope cancels again at every turn). Touched
    only from the run's loop."""

    __slots__ = ("over", "task", "was_cut")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.over: asyncio.Future[None] | None = None
        self.was_cut = False

    def cut(self) -> None:
        """Stop the wait now, or, before it began, keep it from beginning."""
        self.was_cut = True
        if self.over is not None:
            _resolve(self.over)
        if self.task is not None:
            self.task.cancel()

    async def wait(self, root: Dispatcher, limit: float | None) -> None:
        """Run ``settle_deliveries(root, limit)`` unless cut; return once it ended or was cut."""
        if self.was_cut:
            return
        loop = asyncio.get_running_loop()
        self.over = over = loop.create_future()
        self.task = task = loop.create_task(settle_deliveries(root, limit))
        task.add_done_callback(lambda _: _resolve(over))
        try:
            await over
        finally:
            self.task = self.over = None
            if not task.done():  # cut, or this task itself was cancelled: the wait goes
                task.cancel()
            elif not task.cancelled() and task.exception() is not None:
                logger.opt(exception=task.exception()).error(
                    "waiting for background deliveries at the end of a run failed"
                )


async def end_after_deliveries(
    manager: Dispatcher,
    settle: Callable[[], EndSettle] | None,
    limit: float | None,
    run_id: str,
    close: Callable[[bool], Awaitable[T]],
) -> T:
    """A run's end (a ``Workflow`` run's or an ``ExternalRun``'s): wait, when ``settle``
    gives the wait and a composite holds events, for the background deliveries (so that
    replies to the run's events are part of it), then ``close(flush)``: send
    ``workflow_end`` and, with ``flush``, flush the handlers, the flush sharing each
    composite's ``close_timeout`` with that wait (``EndBudget``).

    When the task running the end is itself cancelled during the wait (a loop shutting
    down), ``workflow_end`` still goes out, held in the composites (``held_back``),
    without the flush, and the cancellation is raised.
    """
    budget = run_end_budget.set(EndBudget())  # this end's own, not an outer run's
    try:
        if settle is not None and holds_events(manager):
            try:
                await settle().wait(manager, limit)
            except asyncio.CancelledError:
                shutting = queue_only.set(run_id)
                try:
                    await close(False)
                finally:
                    queue_only.reset(shutting)
                raise
        return await close(True)
    finally:
        run_end_budget.reset(budget)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
