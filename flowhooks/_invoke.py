"""Calling a hook that needs a timeout or a worker thread (``CallKind.GENERAL``).

Place in the chain: events -> handler -> hooks -> **general calls** -> manager.

The manager's loop makes the common calls (plain sync or async, with or
without ``event=``) itself; the rest come here (``call_other``): sync
``event=`` calls, calls behind a circuit breaker, a ``timeout`` enforced
with ``asyncio.timeout``, a ``run_in_thread`` method run in a worker
thread, and the rule that a handler whose threaded call timed out is skipped
until that call returns, so it never runs concurrently with itself. A failed
call is counted in its stats and breaker here too (``count_failure``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
from collections.abc import Callable
from typing import Any

from loguru import logger

from flowhooks._errors import FlowhooksError
from flowhooks._events import Event
from flowhooks._hooks import CallKind, HookCall, ThreadCall, ThreadSlot
from flowhooks._plan_cache import bump_generation
from flowhooks._threads import handler_pool


class HandlerTimeoutError(FlowhooksError, TimeoutError):
    """A handler call took longer than its ``timeout`` (also a ``TimeoutError``)."""


class HandlerStillBusy(HandlerTimeoutError):
    """A threaded handler's call was skipped: its earlier, timed-out call still runs."""


def _run_in_thread(
    slot: ThreadSlot,
    call: ThreadCall,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run a handler method in a worker thread; when it returns, free a handler it held up."""
    try:
        return fn(*args, **kwargs)
    finally:
        call.finished = True
        if slot.stuck is call:
            slot.stuck = None


def _start_in_thread(
    slot: ThreadSlot,
    call: ThreadCall,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[asyncio.Future[None], asyncio.Future[Any]]:
    """Start a handler method in the handlers' own thread pool (never the nodes').

    Returns a future set when the thread starts running it, and one for its result.
    The call runs in a copy of the caller's context, as ``asyncio.to_thread`` does.
    """
    loop = asyncio.get_running_loop()
    started: asyncio.Future[None] = loop.create_future()
    context = contextvars.copy_context()

    def work() -> Any:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(_mark_started, started)
        return context.run(_run_in_thread, slot, call, fn, args, kwargs)

    return started, asyncio.wrap_future(handler_pool().submit(work), loop=loop)


def _mark_started(started: asyncio.Future[None]) -> None:
    if not started.done():
        started.set_result(None)


async def invoke_general(call: HookCall, args: tuple[Any, ...], event: Event | None) -> None:
    """Call a hook that needs ``event=``, a timeout or a worker thread."""
    kwargs = {"event": event} if call.wants_event else {}
    slot = thread_call = None
    if call.in_thread:
        slot = call.thread_slot
        assert slot is not None
        if slot.stuck is not None:
            msg = (
                f"{call.label}.{call.event_type.method_name} skipped: an earlier call that "
                "timed out is still running in its worker thread"
            )
            raise HandlerStillBusy(msg)
        thread_call = ThreadCall()
        started, awaitable = _start_in_thread(slot, thread_call, call.fn, args, kwargs)
        if call.timeout is not None:
            await started  # the timeout measures the handler, not its wait for a thread
    elif call.is_async:
        awaitable = call.fn(*args, **kwargs)
    else:
        awaitable = call.fn(*args, **kwargs)
        if awaitable is None or not inspect.isawaitable(awaitable):
            return  # a plain def; one that hands back a coroutine is awaited below
    if call.timeout is None:
        await awaitable
        return
    if slot is None:
        await _within_timeout(call, awaitable, call.timeout)
        return
    deadline = asyncio.timeout(call.timeout)
    try:
        async with deadline:
            await awaitable
    except TimeoutError as exc:
        if deadline.expired():
            if slot is not None and thread_call is not None and not thread_call.finished:
                slot.stuck = thread_call  # its thread runs on: hold the handler's next calls
                if thread_call.finished:  # it returned meanwhile
                    slot.stuck = None
            msg = f"{call.label}.{call.event_type.method_name} timed out after {call.timeout:g}s"
            raise HandlerTimeoutError(msg) from exc
        raise


_ABANDONED: set[asyncio.Future[Any]] = set()
"""Handler calls that ignored their cancellation after a timeout, left to finish alone."""


async def _within_timeout(call: HookCall, awaitable: Any, timeout: float) -> None:
    """Await a handler's coroutine for at most ``timeout`` seconds, in a task of its own.

    In its own task, a call that catches its cancellation and carries on cannot hold
    the dispatch (and the run) past its timeout: once cancelled it gets ``timeout``
    seconds more to end, then it is left running and the dispatch goes on.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
        if done:
            task.result()  # its return, or what it raised
            return
        task.cancel()
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except asyncio.CancelledError:  # the dispatch itself was cancelled: so is the call
        task.cancel()
        _ABANDONED.add(task)  # held until it ends, however long it ignores the cancel
        task.add_done_callback(_forget)
        raise
    name = f"{call.label}.{call.event_type.method_name}"
    if done:
        _forget(task)  # however it ended once cancelled, it timed out
    else:
        _ABANDONED.add(task)
        task.add_done_callback(_forget)
        logger.warning(
            "{name} ignored its cancellation after its {timeout:g}s timeout; it is left "
            "running and the dispatch goes on",
            name=name,
            timeout=timeout,
        )
    msg = f"{name} timed out after {timeout:g}s"
    raise HandlerTimeoutError(msg)


def _forget(task: asyncio.Future[Any]) -> None:
    _ABANDONED.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a timed-out call's own failure is not reported again


async def call_other(
    kind: CallKind, call: HookCall, args: tuple[Any, ...], event: Event | None
) -> bool:
    """Make a call of the less common kinds; return False when its breaker skipped it.

    Sync ``event=`` handlers, handlers behind a circuit breaker (only they pay
    for it), and those with a timeout or a worker thread.
    """
    if kind is CallKind.SYNC_FIRST:
        returned = call.fn(*args)
        # Decided once: a plain def that hands back a coroutine (a decorator's wrapper) is
        # awaited from now on; any other stays a plain inline call, with nothing to check.
        handed_back = returned is not None and inspect.isawaitable(returned)
        call.kind = CallKind.ASYNC if handed_back else CallKind.SYNC
        call.is_async = handed_back
        bump_generation()  # plans hold the kind
        if handed_back:
            await returned
    elif kind is CallKind.SYNC_EVENT:
        returned = call.fn(*args, event=event)
        if returned is not None and inspect.isawaitable(returned):
            await returned  # a plain def that hands back a coroutine
    elif kind is CallKind.GUARDED:
        guard = call.breaker
        assert guard is not None
        if not guard.admit():
            call.stats.skipped += 1
            return False
        await invoke_general(call, args, event)
        guard.succeeded()
    else:
        await invoke_general(call, args, event)
    return True


def count_failure(call: HookCall, exc: Exception, elapsed: float) -> bool:
    """Record a failed call in its stats (``elapsed`` is 0.0 when untimed) and its
    circuit breaker; return whether it timed out. Hook monitors are told by the
    dispatch loop."""
    if call.breaker is not None:
        call.breaker.failed()
    stats = call.stats
    stats.calls += 1
    stats.seconds += elapsed
    timed_out = isinstance(exc, HandlerTimeoutError)
    if timed_out:
        stats.timeouts += 1
    else:
        stats.errors += 1
    return timed_out
