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
carries on from there. On Python 3.12 and later this is an ``eager_start=True``
task; on 3.11 the same is done here (the task's own first turn, which comes
later, then only ends it or takes over what the coroutine waits on).

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
from asyncio.tasks import _enter_task, _leave_task, _unregister_task, current_task
from collections.abc import Coroutine, Generator
from time import perf_counter
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_RUNNING, _RETURNED, _RAISED = 0, 1, 2

_EAGER_TASKS = sys.version_info >= (3, 12)
"""``asyncio.Task(..., eager_start=True)`` exists (Python 3.12+)."""

MAX_DEPTH = 8
"""Eager steps nested in one another (a sub-run started in a node of a run whose walk
runs eagerly, ...) at most; a deeper start is an ordinary task."""


TURN_AFTER = 0.001
"""Seconds a thread's event loop may go without a turn from runs that never wait."""


class _ThreadState(threading.local):
    """How many eager steps are running on this thread's stack, and when the last run
    that never waited gave the loop a turn (``turn_due``)."""

    depth = 0
    turn_at = 0.0


_thread = _ThreadState()


def turn_due(awaiting: asyncio.Task[Any] | None) -> bool:
    """Whether a run that ended without waiting should give the event loop a turn now.

    A loop of such runs would otherwise never let timers, I/O callbacks and other
    tasks run; a turn per run costs about a tenth of a short run, so it is one every
    ``TURN_AFTER`` seconds of the thread's runs instead. It is always due when the
    task awaiting the run has a cancellation asked for (the turn delivers it, and
    the run reports it once ended).
    """
    now = perf_counter()
    state = _thread
    if now - state.turn_at < TURN_AFTER and (awaiting is None or not awaiting.cancelling()):
        return False
    state.turn_at = now
    return True


class Started(Generic[T]):
    """A coroutine started by ``start_eagerly``: finished already, or running in ``task``."""

    __slots__ = ("_error", "_finished", "_value", "caller_cancelled", "task")

    def __init__(
        self,
        task: asyncio.Task[T],
        finished: bool = False,
        value: Any = None,
        error: BaseException | None = None,
        caller_cancelled: bool = False,
    ) -> None:
        self.task = task
        self._finished = finished
        self._value = value
        self._error = error
        self.caller_cancelled = caller_cancelled
        """The caller's task was asked to cancel during the step: the caller must wait
        (for the task) to receive that cancellation where it would have before."""

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

    async def wait(self) -> T:
        """Wait for the coroutine as a shielded wait for its task does: the caller's
        cancellation is raised here, the task goes on. It yields to the loop at least
        once, so a cancellation the caller got during the first step lands here."""
        if self.task.done():
            await asyncio.sleep(0)
            return self.result()
        return await asyncio.shield(self.task)

    def cancelled(self) -> bool:
        """Whether the coroutine ended by cancellation."""
        if self._finished:
            return isinstance(self._error, asyncio.CancelledError)
        return self.task.cancelled()


def start_eagerly(
    coro: Coroutine[Any, Any, T],
    forget: tuple[contextvars.ContextVar[Any], ...] = (),
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    context: contextvars.Context | None = None,
) -> Started[T]:
    """Start ``coro`` in a new task and run its first step now (see the module's docstring).

    ``forget``: context variables whose values the task's context lets go of (sets to
    ``None``) when the first step finished the coroutine, so the task, whose own turn
    comes later (3.11) or which stays referenced (3.12+), does not keep them alive (a
    run's ``RunContext``, and through it the whole run). Only those: clearing every
    variable would cost each start time in proportion to the variables an application
    has set. ``loop``: the running loop, when the caller has it at hand. ``context``: the
    task's context (default: a copy of the caller's).

    A ``KeyboardInterrupt`` or ``SystemExit`` raised by the first step is the
    outcome on 3.11, but propagates from here on 3.12+ (as from any eager task):
    the run's coroutines keep theirs for the caller and never let one escape.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    state = _thread
    if (
        loop.get_task_factory() is not None
        or sys.exception() is not None
        or (state.depth >= MAX_DEPTH)
    ):
        return Started(loop.create_task(coro, context=context))
    if context is None:
        context = contextvars.copy_context()
    caller = current_task(loop)
    asked_before = caller.cancelling() if caller is not None else 0
    state.depth += 1
    try:
        if _EAGER_TASKS:
            started = _start_eager_task(loop, coro, context, forget)
        else:
            started = _start_with_first_step(loop, coro, context, caller, forget)
    finally:
        state.depth -= 1
    started.caller_cancelled = caller is not None and caller.cancelling() > asked_before
    return started


def _forget(forget: tuple[contextvars.ContextVar[Any], ...]) -> None:
    """Set the variables ``forget`` to ``None`` in the current context (a finished start's)."""
    for var in forget:
        var.set(None)


# -- Python 3.12+: the task starts itself ----------------------------------------------------


def _start_eager_task(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, T],
    context: contextvars.Context,
    forget: tuple[contextvars.ContextVar[Any], ...],
) -> Started[T]:
    task: asyncio.Task[T] = asyncio.Task(  # type: ignore[call-arg,unused-ignore]
        coro, loop=loop, context=context, eager_start=True
    )
    if not task.done():
        return Started(task)
    if forget:
        context.run(_forget, forget)
    if task.cancelled():  # it cancelled itself in a step that then returned: it waits, as before
        return Started(task)
    error = task.exception()
    return Started(task, True, None if error is not None else task.result(), error)


# -- Python 3.11: the first step run here, the task's own first turn later ------------------


class _Continuation(Coroutine[Any, Any, T]):
    """The task's coroutine: the started coroutine, carried on from where its first step
    stopped. Its own first turn ends it when that step finished the coroutine, else takes
    over what the step waited on (a cancellation thrown before that turn goes through
    it, as a task cancels). It shows the started coroutine's name and frame (``repr``,
    ``get_stack()``)."""

    __slots__ = ("_coro", "_error", "_first", "_outcome", "_value", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._outcome = _RUNNING
        self._value: Any = None
        self._error: BaseException | None = None
        self._waiting: Any = None  # what the first step yielded (a future, or None)
        self._first = True  # the task's own first turn has not come yet

    def step_now(self, forget: tuple[contextvars.ContextVar[Any], ...]) -> None:
        """The eager first step, in the task's context with the task current."""
        try:
            self._waiting = self._coro.send(None)
            return
        except StopIteration as stop:
            self._outcome, self._value = _RETURNED, stop.value
        except BaseException as exc:  # re-raised to whoever asks for the result
            self._outcome, self._error = _RAISED, exc
        _forget(forget)

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


def _start_with_first_step(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, T],
    context: contextvars.Context,
    caller: asyncio.Task[Any] | None,
    forget: tuple[contextvars.ContextVar[Any], ...],
) -> Started[T]:
    continuation = _Continuation(coro)
    task: asyncio.Task[T] = asyncio.Task(continuation, loop=loop, context=context)
    if caller is not None:
        _leave_task(loop, caller)
    _enter_task(loop, task)
    try:
        context.run(continuation.step_now, forget)
    finally:
        _leave_task(loop, task)
        if caller is not None:
            _enter_task(loop, caller)
    outcome = continuation._outcome
    if outcome is _RUNNING:
        return Started(task)
    if outcome is _RETURNED and task.cancelling():
        return Started(task)  # cancelled during a step that then returned: it ends cancelled
    value, error = continuation._value, continuation._error
    continuation._value = continuation._error = None  # the outcome is kept in Started only
    # Over, but pending until its own first turn: out of ``asyncio.all_tasks()`` (as a
    # finished eager task is on 3.12+), and no warning should the loop close before it.
    _unregister_task(task)
    task._log_destroy_pending = False  # type: ignore[attr-defined]
    return Started(task, True, value, error)
