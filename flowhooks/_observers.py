"""Process-wide observers of handler calls (``PrometheusCallback``'s hook metrics).

The manager tells every registered observer about each handler call it
makes: the call, its seconds and its error. With no observer registered this
costs the manager one truthiness check per call.
"""

from __future__ import annotations

from collections.abc import Callable

from loguru import logger

from flowhooks._logs import failure_text
from flowhooks._plan import HookCall

HookObserver = Callable[[HookCall, float, BaseException | None], None]
"""Called after every handler call with the call, its seconds and its error (if any)."""

hook_observers: list[HookObserver] = []
"""The registered observers; read by the manager on every dispatch."""


def add_hook_observer(observer: HookObserver) -> None:
    """Register a process-wide observer of handler calls (used by ``PrometheusCallback``)."""
    if observer not in hook_observers:
        hook_observers.append(observer)


def remove_hook_observer(observer: HookObserver) -> None:
    """Unregister an observer added with ``add_hook_observer``; unknown ones are ignored."""
    if observer in hook_observers:
        hook_observers.remove(observer)


def notify_observers(call: HookCall, elapsed: float, error: BaseException | None) -> None:
    """Tell every observer about one handler call; an observer's failure is only logged."""
    for observer in tuple(hook_observers):
        try:
            observer(call, elapsed, error)
        except Exception as exc:  # an observer must not break dispatch
            logger.warning(
                "hook observer {!r} failed: {}", observer, failure_text(exc, with_traceback=True)
            )
