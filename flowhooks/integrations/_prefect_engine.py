"""What the Prefect bridge reads from Prefect's states and follows in its engines.

Prefect passes a state hook the state and the run, never the engine that
runs the flow or task run; some states reach no hook at all, and a flow run
can leave its engine with no final state set (the API refuses or cannot take
it, ``Abort``, ``Pause``). The bridge finds the engine among the hook's
callers and follows it from then on: every state it sets, and any exception
that leaves the context it runs the flow function in.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import sys
from collections.abc import Awaitable, Callable
from types import FrameType, TracebackType
from typing import Any

from loguru import logger
from prefect import results as prefect_results
from prefect.exceptions import Abort, Pause, TerminationSignal

_RESULT_RECORD: type[Any] = getattr(prefect_results, "ResultRecord")  # noqa: B009 - re-exported
"""The in-memory holder of a final state's value (defined in a private Prefect module)."""

_CALLERS = 8
"""How many callers of a hook are searched for the Prefect engine that called it."""


def value_of(state: Any) -> Any:
    """What a final state holds: a task's or flow's return value, or its exception.

    Read from the state's in-memory result record, never from result
    storage (``state.result()`` would fetch it, and is a coroutine in an
    async flow); ``None`` when the state does not hold it.
    """
    data = getattr(state, "data", None)
    return data.result if isinstance(data, _RESULT_RECORD) else data


def failure(state: Any, fallback: str) -> BaseException:
    """The exception a failed or crashed state holds, or a ``RuntimeError`` with its message."""
    value = value_of(state)
    if isinstance(value, BaseException):
        return value
    return RuntimeError(getattr(state, "message", None) or fallback)


def interruption(exc: BaseException) -> BaseException:
    """``exc``, or the cancellation it stands for: Prefect's ``TerminationSignal`` (SIGTERM).

    flowhooks' own runs end ``cancelled`` on SIGTERM as on Ctrl-C; so do
    the flow and task runs it interrupts.
    """
    if not isinstance(exc, TerminationSignal):
        return exc
    number = getattr(exc, "signal", None)
    try:
        name = signal.Signals(number).name if isinstance(number, int) else "a termination signal"
    except ValueError:
        name = f"signal {number}"
    return asyncio.CancelledError(name)


def cancelled(state: Any, fallback: str) -> asyncio.CancelledError:
    """The cancellation a cancelled state stands for, with its message as the reason."""
    return asyncio.CancelledError(getattr(state, "message", None) or fallback)


def flow_outcome(state: Any) -> BaseException | None:
    """How a flow run that entered ``state`` ends: ``None`` (succeeded or suspended) or why."""
    if state.is_failed():
        return failure(state, "the flow run failed")
    if state.is_crashed():
        return interruption(failure(state, "the flow run crashed"))
    if state.is_cancelled() or state.is_cancelling():
        return cancelled(state, "the flow run was cancelled")
    return None


def escape_outcome(exc: BaseException) -> BaseException | None:
    """How a flow run ends that ``exc`` left the engine of: ``None`` (suspended) or why.

    ``Pause`` suspends it (Prefect resumes it later, if at all, as a new
    execution); ``Abort`` (the API told the engine to stop) cancels it; an
    interruption cancels it too, as a crash by it would; any other exception
    fails it.
    """
    if isinstance(exc, Pause):
        return None
    if isinstance(exc, Abort):
        return asyncio.CancelledError(str(exc) or "the flow run was aborted")
    return interruption(exc)


def engine_of(run: Any, attribute: str) -> Any:
    """The Prefect engine that is calling a state hook about ``run`` (a task or flow run).

    Prefect calls state hooks from a method of the engine running the task or
    flow run, and passes them no handle on it: it is ``self`` of the nearest
    caller whose ``attribute`` (``task_run``, ``flow_run``) is ``run``.
    ``None`` when the hook is called otherwise.
    """
    frame: FrameType | None = sys._getframe(2)  # the hook's caller
    for _ in range(_CALLERS):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        try:
            found = getattr(candidate, attribute, None) is run
        except Exception:  # a property that raises: not an engine
            found = False
        if found and callable(getattr(candidate, "set_state", None)):
            return candidate
        frame = frame.f_back
    return None


def _telling(what: str, fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """``fn``, logging what it raises rather than raising it into Prefect."""

    def tell(value: Any) -> None:
        try:
            fn(value)
        except Exception as exc:
            logger.opt(exception=exc).error(
                "flowhooks: reporting Prefect {} {} failed", what, value
            )

    return tell


def _owned(current: Any, owner: object) -> frozenset[int] | None:
    """Owners a wrapper of an engine's ``current`` method serves: ``None`` if ``owner`` is one."""
    owners: frozenset[int] = getattr(current, "flowhooks_owners", frozenset())
    return None if id(owner) in owners else owners | {id(owner)}


def watch(engine: Any, owner: object, seen: Callable[[Any], None]) -> None:
    """Call ``seen(state)`` with each state ``engine`` enters from now on, once per ``owner``.

    Prefect calls no hook for some states; every state an engine enters goes
    through its ``set_state``, wrapped here on that engine only. ``seen``
    runs after it, in the same thread, while Prefect handles the exception
    that led there (a failed attempt's, for a retry); what it raises is
    logged, never raised into Prefect.
    """
    current = engine.set_state
    owners = _owned(current, owner)
    if owners is None:
        return
    tell = _telling("state", seen)

    def set_state(*args: Any, **kwargs: Any) -> Any:
        state = current(*args, **kwargs)
        if inspect.isawaitable(state):  # the async engine's: told once it is awaited
            return _told_after(state, tell)
        tell(state)
        return state

    wrapper = set_state
    setattr(wrapper, "flowhooks_owners", owners)  # noqa: B010 - a function attribute
    engine.set_state = wrapper


async def _told_after(pending: Awaitable[Any], tell: Callable[[Any], None]) -> Any:
    """Await ``pending`` (an async ``set_state``), then tell the state it returned."""
    state = await pending
    tell(state)
    return state


def guard(engine: Any, owner: object, escaped: Callable[[BaseException], None]) -> None:
    """Call ``escaped(exc)`` with what leaves ``engine``'s flow run context, once per ``owner``.

    A flow engine runs each attempt of the flow function in its
    ``run_context()``, which turns the flow's exceptions into states. What
    leaves it ends the flow run's execution, often with no final state set
    through ``set_state`` (the API refused or could not take it, ``Abort``,
    ``Pause``, an interruption Prefect has yet to record as a crash).
    ``escaped`` runs before the exception goes on; what it raises is logged.
    """
    current: Callable[..., Any] | None = getattr(engine, "run_context", None)
    owners = _owned(current, owner) if callable(current) else None
    if current is None or owners is None:
        return
    inner = current
    tell = _telling("the exception", escaped)

    def run_context(*args: Any, **kwargs: Any) -> _Guarded:
        return _Guarded(inner(*args, **kwargs), tell)

    setattr(run_context, "flowhooks_owners", owners)  # noqa: B010 - a function attribute
    engine.run_context = run_context


class _Guarded:
    """A (sync or async) context manager that tells what leaves the one it wraps."""

    __slots__ = ("_inner", "_tell")

    def __init__(self, inner: Any, tell: Callable[[BaseException], None]) -> None:
        self._inner = inner
        self._tell = tell

    def __enter__(self) -> Any:
        return self._inner.__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        try:
            kept = bool(self._inner.__exit__(kind, exc, tb))
        except BaseException as raised:
            self._tell(raised)
            raise
        return self._settled(exc, kept=kept)

    async def __aenter__(self) -> Any:
        return await self._inner.__aenter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        try:
            kept = bool(await self._inner.__aexit__(kind, exc, tb))
        except BaseException as raised:
            self._tell(raised)
            raise
        return self._settled(exc, kept=kept)

    def _settled(self, exc: BaseException | None, *, kept: bool) -> bool:
        """Tell ``exc`` when the wrapped context let it through; return whether it kept it."""
        if exc is not None and not kept:
            self._tell(exc)
        return kept
