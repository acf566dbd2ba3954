"""Hook monitors: process-wide functions told about every hook call (``add_hook_monitor``).

Place in the chain: events -> handler -> hooks -> **monitors** -> manager.

A monitor is called after every handler method call a ``CallbackManager``
makes, and after every function callback a run makes (``on_success``,
``on_failure``, ``on_workflow_start``/``on_workflow_end``), with a
``HookCallReport``. While at least one monitor is registered, managers time
their calls (the report's ``seconds``); with none registered, a manager
reads no clock. Registering or removing a monitor makes every manager
rebuild its plans, which is where it chooses between its timed and untimed
loops. ``PrometheusCallback``'s hook
metrics are built on this, the same way any user's tracing can be.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

from loguru import logger

from flowhooks._events import EventType
from flowhooks._logs import failure_text
from flowhooks._plan_cache import bump_generation

if TYPE_CHECKING:
    from flowhooks._handler import BaseCallbackHandler
    from flowhooks._hooks import HookCall


@final
@dataclass(frozen=True, slots=True)
class HookCallReport:
    """One finished hook call, as a hook monitor receives it.

    Attributes:
        label: the handler's label in its manager (its class name, ``#2``
            for a second one of the same class), or a function callback's
            qualified name (``module.function``).
        event_type: the event the call was made for.
        seconds: how long the call took; ``None`` when it was not timed.
        error: the exception the call raised (a ``HandlerTimeoutError`` for
            a timeout), or ``None`` when it returned.
        handler: the handler whose method was called; ``None`` for a
            function callback.
    """

    label: str
    event_type: EventType
    seconds: float | None
    error: BaseException | None
    handler: BaseCallbackHandler | None = None


HookMonitor = Callable[[HookCallReport], object]
"""A function called with a ``HookCallReport`` after every hook call."""

hook_monitors: list[HookMonitor] = []
"""The registered monitors: truthy while at least one is registered (read per event)."""

_lock = threading.Lock()
_reported: set[int] = set()  # ids of monitors whose failure was logged with its traceback


def add_hook_monitor(monitor: HookMonitor) -> Callable[[], None]:
    """Call ``monitor(call)`` after every hook call in this process, until removed.

    Every handler method call made by any ``CallbackManager`` (a nested
    manager or composite is not reported itself; the handlers it calls are)
    and every function callback of a run (``on_success``, ``on_failure``,
    ``on_workflow_start``, ``on_workflow_end``) is reported with a
    ``HookCallReport``: its label, event type, seconds and error. While any
    monitor is registered, managers time their calls, so ``seconds`` is set
    and ``CallbackManager.stats`` seconds grow too.

    A monitor runs inline, right after the call, on the thread that made it;
    keep it quick. A monitor that raises is logged and ignored: it never
    breaks dispatch or changes a run.

    Args:
        monitor: a callable taking one ``HookCallReport``.

    Returns:
        A function that removes this registration (calling it again does nothing).

    Raises:
        TypeError: when ``monitor`` is not callable, or is a coroutine function.
    """
    if not callable(monitor):
        msg = f"add_hook_monitor(monitor) takes a callable, got {monitor!r}"
        raise TypeError(msg)
    if inspect.iscoroutinefunction(monitor) or inspect.iscoroutinefunction(
        getattr(monitor, "__call__", None)  # noqa: B004 - callable objects with async __call__
    ):
        msg = (
            f"add_hook_monitor(monitor) takes a plain (synchronous) function, got the coroutine "
            f"function {monitor!r}: monitors run inline right after each hook call, where "
            "nothing awaits them; record what you need and hand slow work to a queue"
        )
        raise TypeError(msg)
    with _lock:
        hook_monitors.append(monitor)
    bump_generation()  # managers' plans choose the timed loop now
    removed = False

    def remove() -> None:
        nonlocal removed
        with _lock:
            if removed:
                return
            removed = True
            for i, registered in enumerate(hook_monitors):
                if registered is monitor:
                    del hook_monitors[i]
                    break
        bump_generation()

    return remove


def notify_monitors(call: HookCall, seconds: float | None, error: BaseException | None) -> None:
    """Tell every monitor about one handler method call."""
    _notify(HookCallReport(call.label, call.event_type, seconds, error, call.handler))


def report_callback_call(
    label: str,
    event_type: EventType,
    seconds: float | None,
    error: BaseException | None,
) -> None:
    """Tell every monitor about one function callback call (``on_success``, ``on_failure``...).

    For the run code, after each function callback it calls. Check
    ``hook_monitors`` first (truthy while any monitor is registered) and read
    the clock only then; with no monitor this is never needed.

    Args:
        label: the callback's qualified name (``module.qualname``).
        event_type: the event it was called for (``on_success``: ``node_end``;
            ``on_failure``: ``error``; ``on_workflow_start``/``on_workflow_end``:
            theirs).
        seconds: how long it took, or ``None`` when not timed.
        error: what it raised, or ``None``.
    """
    if hook_monitors:
        _notify(HookCallReport(label, event_type, seconds, error))


def callback_label(fn: object) -> str:
    """Return the label a function callback is reported under: ``module.qualname``."""
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None)
    return f"{module}.{qualname}" if module else str(qualname)


def _notify(report: HookCallReport) -> None:
    for monitor in tuple(hook_monitors):
        try:
            monitor(report)
        except Exception as exc:  # a monitor must never break dispatch
            first = id(monitor) not in _reported
            _reported.add(id(monitor))
            logger.warning(
                "hook monitor {monitor!r} raised {error} on {label}.{event_type}; ignored",
                monitor=monitor,
                error=failure_text(exc, with_traceback=first),
                label=report.label,
                event_type=report.event_type.value,
            )
