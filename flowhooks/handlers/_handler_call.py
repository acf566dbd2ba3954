"""Calling a handler's hook for a stored event, as the manager would: the delivery worker's side.

Place in the chain: handlers, used by ``_delivery_worker``. A worker has an
``Event`` rebuilt from JSON and a handler (any object with ``on_*`` methods);
``call_hook`` calls the method for the event's type with its positional
arguments, and ``event=`` when the method takes it (or ``**kwargs``).
``async def`` methods are awaited; plain ones run in a worker thread, so a
slow one does not hold up the worker's other deliveries and the timeout
applies to both. A method the handler does not override (the
``BaseCallbackHandler`` no-op) counts as delivered without a call.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any

from flowhooks import BaseCallbackHandler, Event, redact_text


@functools.lru_cache(maxsize=512)
def _takes_event(function: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (p.name == "event" and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
        for p in params
    )


def hook_of(handler: object, method_name: str) -> Callable[..., Any] | None:
    """The bound method ``method_name`` of ``handler``, or ``None`` when it does not have one
    of its own (missing, or the inherited ``BaseCallbackHandler`` no-op)."""
    own = getattr(type(handler), method_name, None)
    if own is None or own is getattr(BaseCallbackHandler, method_name, None):
        return None
    method = getattr(handler, method_name, None)
    return method if callable(method) else None


def _without_stop_iteration(
    method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Call a sync hook in the worker thread; a ``StopIteration`` it raises comes out as a
    ``RuntimeError`` (asyncio cannot set one on the call's future: it would never end)."""
    try:
        return method(*args, **kwargs)
    except StopIteration as exc:
        msg = f"{getattr(method, '__qualname__', 'the hook')} raised StopIteration"
        raise RuntimeError(msg) from exc


async def _call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if inspect.iscoroutinefunction(method):
        return await method(*args, **kwargs)
    result = await asyncio.to_thread(_without_stop_iteration, method, args, kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


async def call_hook(handler: object, event: Event, timeout: float | None) -> None:
    """Call ``handler``'s hook for ``event`` (with ``event=`` when it takes it), within ``timeout``.

    The hook runs in the caller's task (not in a task of its own, as ``wait_for``
    would on Python 3.11), so whatever it raises, a ``KeyboardInterrupt`` or a
    ``SystemExit`` too, reaches the caller rather than the event loop.

    Raises:
        TimeoutError: the hook ran longer than ``timeout``.
        BaseException: whatever the hook raised.
    """
    method = hook_of(handler, event.type.method_name)
    if method is None:
        return
    function = getattr(method, "__func__", method)
    kwargs = {"event": event} if _takes_event(function) else {}
    async with asyncio.timeout(timeout):
        await _call(method, *event.args, **kwargs)


async def call_dead_letter(handler: object, event: Event, error: str) -> bool:
    """Call ``handler.on_dead_letter(event, error)`` when it has one (sync or async).

    Returns whether it was called. Its own exceptions propagate.
    """
    method = getattr(handler, "on_dead_letter", None)
    if not callable(method):
        return False
    await _call(method, event, error)
    return True


def error_text(exc: BaseException, redact: Any = True) -> str:
    """``Type: message`` of a hook's failure without credentials, as kept, logged and
    listed (``redact`` is the handler's ``redact=`` option). Never raises: an exception
    whose ``__str__`` raises gives its type alone."""
    try:
        message = str(exc)
    except Exception:
        message = ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return redact_text(text, redact)
