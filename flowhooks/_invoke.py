"""Calling a hook that needs a timeout or a worker thread (``CallKind.GENERAL``).

Place in the chain: events -> handler -> hooks -> **general calls** -> manager.

The manager's loop makes the common calls (plain sync or async, with or
without ``event=``) itself; the rest come here (``call_other``): sync
``event=`` calls, calls behind a circuit breaker, a ``timeout`` enforced
with ``asyncio.timeout``, and a ``run_in_thread`` method run in a worker
thread. A failed call is counted in its stats and breaker here too
(``count_failure``).

A threaded call that times out cannot be stopped: its thread runs on, and the
call is *stuck* (``ThreadSlot.stuck``, a chain of ``_Running`` calls). While a
handler has a stuck call, each later call of that handler first waits for it,
within the later call's own ``timeout``: when the stuck call returns in time,
the later call runs in what is left of its ``timeout`` (so calls of a handler
never overlap a stuck one, and keep their order); when it does not, the event
is not delivered to that handler: the method is not called, ``HandlerStillBusy``
is raised, and ``count_failure`` counts it in ``skipped`` (never in ``calls``
or ``timeouts``) and as a failure for the handler's circuit breaker; the
manager logs and isolates it (or propagates it, for ``raise_error``). So a
handler that hangs on every call holds one thread, not one per event, and
holds each dispatch for at most its ``timeout``. ``workflow_end`` is the
exception: it is never held back behind a stuck call, it starts in a thread
of its own at once (and may then overlap the stuck call), unless
``_MOST_STUCK`` of the handler's calls are stuck already (a handler that hung
that often: it is then treated as any other event). Every worker thread is a
daemon: a stuck call never holds up the process's exit. Handlers that do not
run in a thread never come near any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import threading
from collections.abc import Callable
from typing import Any

from loguru import logger

from flowhooks._errors import FlowhooksError
from flowhooks._events import Event, EventType
from flowhooks._hooks import CallKind, HookCall, ThreadCall, ThreadSlot
from flowhooks._plan_cache import bump_generation
from flowhooks._threads import call_in_thread, handler_pool


class HandlerTimeoutError(FlowhooksError, TimeoutError):
    """A handler call took longer than its ``timeout`` (also a ``TimeoutError``)."""


class HandlerStillBusy(HandlerTimeoutError):
    """A threaded handler's call was not made: an earlier call that timed out still runs.

    Raised once the call has waited its own ``timeout`` for that earlier call;
    counted in ``skipped``, not in ``calls`` or ``timeouts``.
    """


_MOST_STUCK = 4
"""How many stuck calls of one handler make its ``workflow_end`` wait like other events."""

_lock = threading.Lock()
"""Guards every ``ThreadSlot.stuck`` chain (shared by loops in several threads)."""

_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]


class _Running(ThreadCall):
    """One threaded call; once it timed out, a link of its handler's stuck chain.

    ``before`` is the handler's previous stuck call, still running when this one
    got stuck; ``waiters`` are the later calls waiting for this one to return.
    """

    __slots__ = ("before", "waiters")

    def __init__(self) -> None:
        super().__init__()
        self.before: _Running | None = None
        self.waiters: list[_Waiter] = []


def _stuck(slot: ThreadSlot) -> list[_Running]:
    """The handler's stuck calls still running, newest first (under ``_lock``)."""
    running: list[_Running] = []
    link = slot.stuck
    while isinstance(link, _Running):
        if not link.finished:
            running.append(link)
        link = link.before
    return running


def _count_stuck(slot: ThreadSlot) -> int:
    """How many of the handler's calls are stuck."""
    with _lock:
        return len(_stuck(slot))


def _relink(slot: ThreadSlot, running: list[_Running]) -> None:
    """Make ``running`` the handler's stuck chain (under ``_lock``)."""
    for newer, older in zip(running, [*running[1:], None], strict=False):
        newer.before = older  # the last one gets None
    slot.stuck = running[0] if running else None


def _hold(slot: ThreadSlot, call: _Running) -> None:
    """A call timed out: unless it returned meanwhile, its handler's later calls wait for it."""
    with _lock:
        if not call.finished:
            _relink(slot, [call, *_stuck(slot)])


def _finish(slot: ThreadSlot, call: _Running) -> None:
    """A threaded call returned: drop it from the stuck chain, wake whoever waits for it."""
    with _lock:
        call.finished = True
        waiters, call.waiters = call.waiters, []
        if slot.stuck is not None:
            _relink(slot, _stuck(slot))
    for loop, waiter in waiters:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(_mark_started, waiter)


def _run_in_thread(
    slot: ThreadSlot,
    call: _Running,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run a handler method in a worker thread; when it returns, free a handler it held up."""
    try:
        return call_in_thread(fn, *args, **kwargs)
    finally:
        _finish(slot, call)


def _start_in_thread(
    slot: ThreadSlot,
    call: _Running,
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


async def _wait_for_stuck(slot: ThreadSlot, deadline: float) -> bool:
    """Wait until none of the handler's calls is stuck; False once ``deadline`` passed."""
    loop = asyncio.get_running_loop()
    while True:
        remaining = deadline - loop.time()
        waiter: asyncio.Future[None] = loop.create_future()
        entry = (loop, waiter)
        with _lock:
            running = _stuck(slot)
            if not running:
                return True
            if remaining <= 0:
                return False
            for stuck in running:
                stuck.waiters.append(entry)
        try:
            await asyncio.wait((waiter,), timeout=remaining)
        finally:
            with _lock:
                for stuck in running:
                    with contextlib.suppress(ValueError):
                        stuck.waiters.remove(entry)


async def _invoke_in_thread(call: HookCall, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Call a ``run_in_thread`` method (see the module's docstring)."""
    slot = call.thread_slot
    assert slot is not None
    thread_call = _Running()
    timeout = call.timeout
    if timeout is None:  # nothing ever times out, so nothing is ever stuck
        await _start_in_thread(slot, thread_call, call.fn, args, kwargs)[1]
        return
    budget = timeout
    if slot.stuck is not None and (
        call.event_type is not EventType.WORKFLOW_END or _count_stuck(slot) >= _MOST_STUCK
    ):
        loop = asyncio.get_running_loop()
        began = loop.time()
        if not await _wait_for_stuck(slot, began + timeout):
            msg = (
                f"{call.label}.{call.event_type.method_name} skipped: an earlier call that "
                f"timed out was still running in its worker thread after {timeout:g}s"
            )
            raise HandlerStillBusy(msg)
        budget = timeout - (loop.time() - began)
    started, result = _start_in_thread(slot, thread_call, call.fn, args, kwargs)
    await started  # the timeout measures the handler, not its wait for a thread
    deadline = asyncio.timeout(budget)
    try:
        async with deadline:
            await result
    except TimeoutError as exc:
        if deadline.expired():
            _hold(slot, thread_call)  # its thread runs on: the handler's next calls wait for it
            msg = f"{call.label}.{call.event_type.method_name} timed out after {timeout:g}s"
            if budget < timeout:
                msg += f" ({timeout - budget:.3g}s of it waiting for an earlier call)"
            raise HandlerTimeoutError(msg) from exc
        raise


async def invoke_general(call: HookCall, args: tuple[Any, ...], event: Event | None) -> None:
    """Call a hook that needs ``event=``, a timeout or a worker thread."""
    kwargs = {"event": event} if call.wants_event else {}
    if call.in_thread:
        await _invoke_in_thread(call, args, kwargs)
        return
    if call.is_async:
        awaitable = call.fn(*args, **kwargs)
    else:
        awaitable = call.fn(*args, **kwargs)
        if awaitable is None or not inspect.isawaitable(awaitable):
            return  # a plain def; one that hands back a coroutine is awaited below
    if call.timeout is None:
        await awaitable
    else:
        await _within_timeout(call, awaitable, call.timeout)


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
        guard.succeeded(call.event_type)
    else:
        await invoke_general(call, args, event)
    return True


def count_failure(call: HookCall, exc: Exception, elapsed: float) -> bool:
    """Record a failed call in its stats (``elapsed`` is 0.0 when untimed) and its
    circuit breaker; return whether it timed out. Hook monitors are told by the
    dispatch loop. A ``HandlerStillBusy`` call was never made: it is counted in
    ``skipped`` only (and as a failure by the breaker: the handler is stuck)."""
    if call.breaker is not None:
        call.breaker.failed(call.event_type)
    stats = call.stats
    if isinstance(exc, HandlerStillBusy):
        stats.skipped += 1
        return False
    stats.calls += 1
    stats.seconds += elapsed
    timed_out = isinstance(exc, HandlerTimeoutError)
    if timed_out:
        stats.timeouts += 1
    else:
        stats.errors += 1
    return timed_out
