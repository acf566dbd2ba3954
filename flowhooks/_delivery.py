"""Shared plumbing of the composites that deliver after dispatch returns.

Place in the chain: events -> handler -> plan -> manager -> composites
(``_composites`` -> **here** -> ``_batched``, ``_background``). It holds what
the two composites that own tasks, timers and queues, ``BatchedCallback`` and
``BackgroundCallback``, both use: the ``close_timeout`` check, bounded waits,
task stopping, and the per-run store of ``raise_error`` failures.

Both bind their timer, worker task and futures to the running event loop
lazily, the first time they need one, and rebind when they find themselves on
a different loop (two ``asyncio.run`` calls in a row): whatever the old loop
left queued is delivered by the new one. They are meant to be used from one
event loop at a time.

Neither creates a task per event, nor keeps a task alive while idle:
``BatchedCallback`` starts one delivery task when a batch is sealed and none
is running, ``BackgroundCallback`` one worker when an event is queued and
none is running; each ends as soon as nothing is left to deliver.

Waits on shutdown are bounded: ``flush()`` waits at most ``close_timeout``
seconds (default 30) for delivery, then logs what is still queued and returns
(delivery goes on in the background); ``aclose()`` does the same, then
cancels the worker. What ``aclose()`` could not deliver is handed to
``on_dead_letter`` (batches) or logged and counted as dropped (background).

``raise_error`` failures happen in the delivery task, after the event's
dispatch has returned, so they are kept per run (the ``run_id`` of the queued
``Event``; ``""`` for events sent by hand, outside a run) and raised from
``flush()``: the flush at the end of the run they belong to raises that run's
error, and any flush or ``aclose()`` raises the error of events sent by
hand. ``dispatch`` never raises a stored error. ``aclose()`` also raises what
is still kept (for instance an error that came after its run's flush gave
up at ``close_timeout``), the first one, and logs the others.
"""

from __future__ import annotations

import asyncio

from loguru import logger

from flowhooks._context import current_run_var
from flowhooks._events import Event
from flowhooks._logs import failure_text
from flowhooks._manager import _mark_propagating


def _check_timeout(owner: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        msg = (
            f"{owner}: close_timeout must be a positive number of seconds "
            f"(or None to wait without limit), got {value!r}"
        )
        raise ValueError(msg)
    return float(value)


async def _wait(fut: asyncio.Future[None], limit: float | None) -> bool:
    """Wait for ``fut`` at most ``limit`` seconds; return whether it completed."""
    if limit is None:
        await fut
        return True
    try:
        await asyncio.wait_for(fut, limit)
    except TimeoutError:
        return False
    return True


async def _stop(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait until it has ended, without swallowing our own cancellation."""
    if task is None or task.done():
        return
    if task.get_loop() is not asyncio.get_running_loop():  # pragma: no cover - dead loop
        return
    task.cancel()
    await asyncio.wait([task])


class _RunErrors:
    """``raise_error`` failures of queued deliveries, kept per run until a flush reports them.

    The key is the ``run_id`` of the event whose delivery failed, or ``""``
    for an event sent by hand (``seq`` 0: not numbered by a run). Only the
    first error of each key is kept.
    """

    __slots__ = ("_errors",)

    def __init__(self) -> None:
        self._errors: dict[str, BaseException] = {}

    def keep(self, event: Event, error: BaseException) -> None:
        key = event.run_id if event.seq else ""
        if key not in self._errors:
            _mark_propagating(error)
            self._errors[key] = error

    def raise_for_caller(self) -> None:
        """Raise the calling run's error; outside any run, that of events sent by hand."""
        errors = self._errors
        if errors:
            key = self._caller_key()
            if key is not None:
                raise errors.pop(key)

    def raise_all(self, owner: str) -> None:
        """Raise the caller's error, else the oldest kept one; log and forget the others."""
        errors = self._errors
        if not errors:
            return
        key = self._caller_key()
        first = errors.pop(key if key is not None else next(iter(errors)))
        for run_id, error in errors.items():
            logger.error(
                "{owner} closed with the raise_error failure {error} of run {run_id!r} "
                "unreported (aclose() raises only one)",
                owner=owner,
                error=failure_text(error, with_traceback=True),
                run_id=run_id,
            )
        errors.clear()
        raise first

    def _caller_key(self) -> str | None:
        """The key whose error the caller may raise: its own run's, or, outside any
        run, that of events sent by hand. A run never raises another's error."""
        ctx = current_run_var.get(None)
        key = ctx.run_id if ctx is not None else ""
        return key if key in self._errors else None
