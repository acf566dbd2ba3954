"""Start a coroutine in a task of its own, running it at once until it first has to wait.

A run hands its sequential walk and its end to tasks of their own, so that a
cancellation of the task awaiting the run cannot interrupt a node or a
handler in the middle of an event, and so that a node that ignores
cancellation can be abandoned. Most of the time that code never waits (no-op
or synchronous handlers, nodes that return at once), and then creating the
task and waiting for it costs more than the work: about a quarter of a short run.

``start_eagerly`` runs the coroutine's first step in the caller's turn of the
event loop, as the first step of its own task: ``asyncio.current_task()`` is
that task, the context is the task's copy, a cancellation of the task during
the step is delivered as it would be. When the step finishes the coroutine,
the caller has the outcome without waiting; when the coroutine waits, the task
carries on from there. This is what ``eager_start=True`` tasks do on Python
3.12 and later, here for every supported version.

It starts an ordinary task instead (created by ``loop.create_task``) where an
eager step would differ from one: when the loop has a task factory of its own
(instrumentation, task subclasses, 3.12's eager factory), when the caller is
handling an exception (the step would see it in ``sys.exc_info()`` and chain it
to its own), and below ``MAX_DEPTH`` eager steps already on the stack (nested
sub-runs would otherwise spend the stack of the outermost caller).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_RUNNING, _RETURNED, _RAISED = 0, 1, 2

MAX_DEPTH = 8
"""Eager steps nested in one another (a sub-run started in a node of a run whose walk
runs eagerly, ...) at most; a deeper start is an ordinary task."""


class _Depth(threading.local):
    """How many eager steps are running on this thread's stack."""

    value = 0


_depth = _Depth()


class _Continuation(Coroutine[Any, Any, T]):
    """The task's coroutine: the started coroutine, carried on from where its first step stopped."""

    __slots__ = ("_coro", "_error", "_first", "_outcome", "_value", "_waiting", "cancelled_in_step")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._outcome = _RUNNING
        self._value: Any = None
        self._error: BaseException | None = None
        self._waiting: Any = None  # what the first step yielded (a future, or None)
        self._first = True  # the task's own first step has not run yet
        self.cancelled_in_step = False

    def step_now(self) -> None:
        """The eager first step, in the task's context with the task current."""
        try:
            self._waiting = self._coro.send(None)
        except StopIteration as stop:
            self._outcome, self._value = _RETURNED, stop.value
        except BaseException as exc:  # re-raised to whoever asks for the result
            self._outcome, self._error = _RAISED, exc

    # -- the coroutine protocol, as the task drives it ---------------------------------

    def send(self, value: Any) -> Any:
        if self._first:
            self._first = False
            if self._outcome is not _RUNNING:
                raise StopIteration(None)  # finished eagerly: the caller has the outcome
            waiting, self._waiting = self._waiting, None
            return waiting  # the task now waits on what the first step waited on
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        exc = typ if isinstance(typ, BaseException) else typ() if val is None else val
        if self._first:
            self._first = False
            if self._outcome is _RETURNED and isinstance(exc, asyncio.CancelledError):
                raise exc  # cancelled during a step that then returned: a task ends cancelled
            if self._outcome is not _RUNNING:
                raise StopIteration(None)
            waiting, self._waiting = self._waiting, None
            if (
                isinstance(exc, asyncio.CancelledError)
                and isinstance(waiting, asyncio.Future)
                and waiting.cancel(*exc.args[:1])
            ):
                return self._coro.send(None)  # as a task cancels: through what it waits on
        return self._coro.throw(exc)

    def close(self) -> None:
        self._coro.close()

    def __getattr__(self, name: str) -> Any:
        """The started coroutine's name, frame and code (``cr_frame``...): what a task's
        ``repr`` and ``get_stack()`` show."""
        return getattr(self._coro, name)

    def __await__(self) -> Generator[Any, None, T]:  # pragma: no cover - driven by the task
        msg = "a started coroutine is driven by its task only"
        raise TypeError(msg)


class Started(Generic[T]):
    """A coroutine started by ``start_eagerly``: finished already, or running in ``task``."""

    __slots__ = ("_error", "_finished", "_value", "caller_cancelled", "task")

    def __init__(
        self,
        task: asyncio.Task[T],
        continuation: _Continuation[T] | None = None,
        *,
        caller_cancelled: bool = False,
    ) -> None:
        self.task = task
        self.caller_cancelled = caller_cancelled
        """The caller's task was asked to cancel during the step: the caller must wait
        (for the task) to receive that cancellation where it would have before."""
        outcome = continuation._outcome if continuation is not None else _RUNNING
        # Finished by its first step, unless the task was cancelled during a step that
        # then returned: that task ends cancelled, as any task would.
        self._finished = outcome is _RAISED or (
            outcome is _RETURNED and continuation is not None and not continuation.cancelled_in_step
        )
        self._value: Any = None
        self._error: BaseException | None = None
        if continuation is not None:
            self._value, self._error = continuation._value, continuation._error
            continuation._value = continuation._error = None  # the outcome is kept here only

    def finished_now(self) -> bool:
        """Whether the caller may go on at once: the first step finished the coroutine (its
        outcome is ``result()``'s) and nobody asked the caller's task to cancel meanwhile."""
        return self._finished and not self.caller_cancelled

    def done(self) -> bool:
        """Whether the coroutine has finished, eagerly or in its task."""
        return self._finished or self.task.done()

    def result(self) -> T:
        """The coroutine's return value; raises what it raised.

        Raises:
            asyncio.InvalidStateError: when it has not finished yet.
        """
        if self._finished:
            if self._error is not None:
                raise self._error
            return self._value  # type: ignore[no-any-return]
        return self.task.result()

    def cancelled(self) -> bool:
        """Whether the coroutine ended by cancellation."""
        if self._finished:
            return isinstance(self._error, asyncio.CancelledError)
        return self.task.cancelled()


def _release_values(context: contextvars.Context) -> None:
    """Set every variable of ``context`` (the current one) to ``None``."""
    for var in list(context):
        var.set(None)


def start_eagerly(coro: Coroutine[Any, Any, T]) -> Started[T]:
    """Start ``coro`` in a new task and run its first step now (see the module's docstring)."""
    loop = asyncio.get_running_loop()
    depth = _depth
    if (
        loop.get_task_factory() is not None
        or sys.exception() is not None
        or (depth.value >= MAX_DEPTH)
    ):
        return Started(loop.create_task(coro))
    context = contextvars.copy_context()
    continuation = _Continuation(coro)
    task: asyncio.Task[T] = asyncio.Task(continuation, loop=loop, context=context)
    caller = asyncio.current_task(loop)
    asked_before = caller.cancelling() if caller is not None else 0
    if caller is not None:
        _leave_task(loop, caller)
    _enter_task(loop, task)
    depth.value += 1
    try:
        context.run(continuation.step_now)
    finally:
        depth.value -= 1
        continuation.cancelled_in_step = task.cancelling() > 0
        _leave_task(loop, task)
        if caller is not None:
            _enter_task(loop, caller)
    caller_cancelled = caller is not None and caller.cancelling() > asked_before
    if continuation._outcome is not _RUNNING:
        # The coroutine is over; its task's own first turn, whenever the caller next
        # waits, only ends it. Until then the task must not keep alive what the
        # coroutine's context referred to (a whole run, for a run's walk or end).
        context.run(_release_values, context)
    return Started(task, continuation, caller_cancelled=caller_cancelled)
