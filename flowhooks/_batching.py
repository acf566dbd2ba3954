"""Composites that own tasks, timers and queues: ``BatchedCallback`` and ``BackgroundCallback``.

Place in the chain: events -> handler -> plan -> manager -> **composites** -> workflow.

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
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from time import monotonic
from typing import Any, Final, Literal, final

from loguru import logger

from flowhooks._composites import wrap_handlers
from flowhooks._context import current_run_var
from flowhooks._dispatcher import Dispatcher, event_from_args
from flowhooks._events import Event, EventType, parse_event_type
from flowhooks._handler import BaseCallbackHandler
from flowhooks._logs import failure_text
from flowhooks._manager import _mark_propagating
from flowhooks._plan import HandlerStats
from flowhooks._retry import RetryPolicy, retry_async

BatchSink = Callable[[list[Event]], object] | Callable[[list[Event]], Awaitable[object]]
"""A sync or async callable taking one batch (a ``list[Event]``)."""

Overflow = Literal["block", "drop_oldest", "drop_newest"]

_OVERFLOWS: Final = ("block", "drop_oldest", "drop_newest")
_DROP_LOG_INTERVAL: Final = 1.0  # seconds between two "dropped events" warnings


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
        """Raise the error of the run calling (if any), else that of events sent by hand."""
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
        ctx = current_run_var.get(None)
        if ctx is not None and ctx.run_id in self._errors:
            return ctx.run_id
        return "" if "" in self._errors else None


# -- BatchedCallback ------------------------------------------------------------------


@dataclass(slots=True)
class BatchStats:
    """Counters of a ``BatchedCallback``.

    Attributes:
        batches: batches delivered successfully.
        events: events in those batches.
        retries: delivery attempts repeated after a failure.
        dead_letters: batches that still failed after every retry (sent to
            ``on_dead_letter``).
        dead_letter_events: events in those batches.
    """

    batches: int = 0
    events: int = 0
    retries: int = 0
    dead_letters: int = 0
    dead_letter_events: int = 0


class BatchedCallback(Dispatcher):
    """Buffers events and delivers them in batches to a sink, with retries and a dead letter.

    Events (all types, or those in ``events``) are collected as ``Event``
    objects and handed as a ``list[Event]`` to ``sink`` or to an overridden
    ``process_batch``. A batch is sealed when ``batch_size`` events are
    buffered, when ``flush_interval`` seconds have passed since its first
    event (a timer started lazily in the running loop), on ``flush()`` (which
    the runner calls at the end of every run) and on ``aclose()``.

    Batches are delivered one at a time, in the order they were sealed, by a
    delivery task, so dispatch itself never waits for the sink. A failing
    batch is retried ``retry_attempts`` times with exponential backoff
    (``retry_backoff``, then twice that, ... capped at 10 s); ``flush()``
    waits for those retries. A batch that still fails goes to
    ``on_dead_letter(batch, error)`` and is counted in ``stats``: it is never
    silently dropped.

    ``flush()`` waits at most ``close_timeout`` seconds (default 30) for a slow
    sink; batches not delivered by then stay queued and the delivery task
    goes on delivering them after ``flush()`` has returned, so a run can end
    before its last batches are delivered. ``aclose()`` hands what it could not
    deliver within ``close_timeout`` to ``on_dead_letter`` with a ``TimeoutError``.

    With ``raise_error = True`` set on the instance or a subclass, a
    dead-lettered batch's error is kept for each run that had events in the
    batch and raised from ``flush()`` in that run, i.e. at the end of the run
    (``run`` re-raises it once the remaining callbacks have run). Events sent
    by hand outside a run have their error raised from the next ``flush()`` or
    ``aclose()``. Dispatch never raises it. An error that arrives after its
    run's flush has given up waiting is raised from ``aclose()``.

    Args:
        sink: a sync or async callable taking the batch. Optional when a
            subclass overrides ``process_batch``. A sync sink runs on the event
            loop: give blocking I/O its own thread (``asyncio.to_thread``).
        batch_size: events per batch (at least 1).
        flush_interval: seconds an event may wait before its batch is sealed,
            or ``None`` for no timer (batches then seal on size and flush).
        events: event types to collect (``"node_end"``, ``EventType`` ...), or
            ``None`` for all.
        retry_attempts: retries of a failing batch after its first try
            (``0`` = no retry).
        retry_backoff: wait before the first retry, in seconds; doubles each time.
        close_timeout: longest wait of ``flush()``/``aclose()`` for delivery,
            in seconds (``None`` = no limit).

    Raises:
        TypeError: when there is neither a callable ``sink`` nor a
            ``process_batch`` override, or an argument has the wrong type.
        ValueError: for a non-positive ``batch_size``/``flush_interval``, a
            negative retry setting, or unknown/empty ``events``.
    """

    def __init__(
        self,
        sink: BatchSink | None = None,
        *,
        batch_size: int = 100,
        flush_interval: float | None = 5.0,
        events: Iterable[str | EventType] | str | EventType | None = None,
        retry_attempts: int = 5,
        retry_backoff: float = 0.05,
        close_timeout: float | None = 30.0,
    ) -> None:
        name = type(self).__name__
        overridden = type(self).process_batch is not BatchedCallback.process_batch
        if sink is None and not overridden:
            msg = (
                f"{name} needs somewhere to deliver batches: pass sink=<callable taking a "
                "list[Event]> or subclass it and override `async def process_batch(self, batch)`"
            )
            raise TypeError(msg)
        given: object = sink
        if given is not None and not callable(given):
            msg = (
                f"{name}: sink must be a sync or async callable taking a list[Event], got {given!r}"
            )
            raise TypeError(msg)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            msg = f"{name}: batch_size must be an int >= 1 (events per batch), got {batch_size!r}"
            raise ValueError(msg)
        if flush_interval is not None and (
            isinstance(flush_interval, bool)
            or not isinstance(flush_interval, int | float)
            or flush_interval <= 0
        ):
            msg = (
                f"{name}: flush_interval must be a positive number of seconds "
                f"(or None for no timer), got {flush_interval!r}"
            )
            raise ValueError(msg)
        if (
            isinstance(retry_attempts, bool)
            or not isinstance(retry_attempts, int)
            or retry_attempts < 0
        ):
            msg = (
                f"{name}: retry_attempts must be an int >= 0 (retries after the first try), "
                f"got {retry_attempts!r}"
            )
            raise ValueError(msg)
        if (
            isinstance(retry_backoff, bool)
            or not isinstance(retry_backoff, int | float)
            or retry_backoff < 0
        ):
            msg = f"{name}: retry_backoff must be a number of seconds >= 0, got {retry_backoff!r}"
            raise ValueError(msg)
        self._sink = sink
        self._batch_size = batch_size
        self._interval = float(flush_interval) if flush_interval is not None else None
        self._types = _parse_types(name, events)
        self._policy = RetryPolicy(
            attempts=retry_attempts + 1,
            backoff=float(retry_backoff),
            max_backoff=10.0,
            jitter=False,
        )
        self._close_timeout = _check_timeout(name, close_timeout)
        self._buffer: list[Event] = []
        self._queue: deque[list[Event]] = deque()  # sealed, not yet finished; head in delivery
        self._sealed = 0  # batches sealed so far
        self._finished = 0  # batches delivered or dead-lettered so far
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._worker: asyncio.Task[None] | None = None
        self._errors = _RunErrors()
        self._stats = BatchStats()

    # -- public surface ---------------------------------------------------------------

    @property
    def stats(self) -> BatchStats:
        """Delivered batches and events, retries, and dead letters."""
        return self._stats

    @property
    def batches(self) -> int:
        """Batches delivered successfully so far."""
        return self._stats.batches

    @property
    def dead_letters(self) -> int:
        """Batches handed to ``on_dead_letter`` so far."""
        return self._stats.dead_letters

    @property
    def pending(self) -> int:
        """Events buffered or waiting in sealed batches, not yet delivered."""
        return len(self._buffer) + sum(len(b) for b in self._queue)

    @property
    def event_types(self) -> frozenset[EventType]:
        """The event types collected."""
        return self._types

    async def process_batch(self, batch: list[Event]) -> None:
        """Deliver one batch; the default calls ``sink``. Override to deliver elsewhere.

        Raise to have the batch retried (and, when every retry fails, dead-lettered).
        """
        sink = self._sink
        if sink is None:  # pragma: no cover - ruled out by __init__
            msg = f"{type(self).__name__} has no sink"
            raise TypeError(msg)
        result = sink(batch)
        if inspect.isawaitable(result):
            await result

    def on_dead_letter(self, batch: list[Event], error: BaseException) -> Awaitable[None] | None:
        """Receive a batch that could not be delivered. The default logs its event ids.

        Override (sync or ``async def``) to park the batch somewhere durable.
        The batch is already counted in ``stats.dead_letters`` when this runs.
        """
        ids = [e.id for e in batch]
        logger.bind(handler=type(self).__name__, event_ids=ids).error(
            "{handler}: batch of {n} events could not be delivered after {tries} tries "
            "({error}); dead-lettered event ids: {ids}",
            handler=type(self).__name__,
            n=len(batch),
            tries=self._policy.attempts,
            error=f"{type(error).__name__}: {error}",
            ids=ids,
        )
        return None

    # -- dispatch ---------------------------------------------------------------------

    def handles(self, event_type: EventType) -> bool:
        """Return whether ``event_type`` is collected."""
        return event_type in self._types

    def wants_event(self, event_type: EventType) -> bool:
        """Return whether ``event_type`` is collected (batches hold whole ``Event`` objects)."""
        return event_type in self._types

    async def dispatch(
        self, event_type: EventType, args: tuple[Any, ...], event: Event | None
    ) -> None:
        """Buffer the event; seal a batch when ``batch_size`` is reached.

        Never raises a stored ``raise_error`` failure: those come from ``flush()``.
        """
        if event_type not in self._types:
            return
        if event is None:
            event = event_from_args(event_type, args)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        buffer = self._buffer
        buffer.append(event)
        if len(buffer) >= self._batch_size:
            self._seal()
            self._start_worker()
        elif self._timer is None and self._interval is not None:
            self._timer = loop.call_later(self._interval, self._on_timer)

    # -- lifecycle --------------------------------------------------------------------

    async def flush(self) -> None:
        """Seal what is buffered and wait until every sealed batch is delivered or dead-lettered.

        Waits through retries, for at most ``close_timeout`` seconds; past that,
        it logs how many batches are still queued and returns (they keep being
        delivered in the background). Then, with ``raise_error`` set, it raises
        the error of a dead-lettered batch holding events of the run calling,
        or else of events sent by hand outside a run.
        """
        await self._drain()
        self._errors.raise_for_caller()

    async def aclose(self) -> None:
        """Flush (bounded by ``close_timeout``), then stop the timer and delivery task.

        Batches still undelivered then go to ``on_dead_letter`` with a
        ``TimeoutError``. With ``raise_error`` set, every error still kept is
        reported: the calling run's (or that of events sent by hand) or else
        the oldest is raised, the others are logged. The instance can be used
        again afterwards.
        """
        try:
            await self._drain()
        finally:
            self._cancel_timer()
            await _stop(self._worker)
            self._worker = None
            if self._buffer:
                self._seal()
            while self._queue:
                batch = self._queue.popleft()
                error = TimeoutError(
                    f"{type(self).__name__} closed before this batch was delivered "
                    f"(close_timeout={self._close_timeout}s)"
                )
                await self._dead_letter(batch, error)
                self._finished += 1
            self._wake_waiters()
        self._errors.raise_all(type(self).__name__)

    # -- internals --------------------------------------------------------------------

    async def _drain(self) -> None:
        """Seal the buffer and wait (at most ``close_timeout``) for every sealed batch."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        if self._buffer:
            self._seal()
        target = self._sealed
        if self._finished < target:
            self._start_worker()
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((target, fut))
            if not await _wait(fut, self._close_timeout):
                logger.warning(
                    "{handler}.flush(): {n} batches still undelivered after {t}s; "
                    "delivery goes on in the background",
                    handler=type(self).__name__,
                    n=target - self._finished,
                    t=self._close_timeout,
                )

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Forget the timer, task and waiters of a previous loop; keep the data."""
        self._cancel_timer()
        self._worker = None
        self._waiters.clear()
        self._loop = loop
        if self._queue:
            self._start_worker()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _seal(self) -> None:
        self._queue.append(self._buffer)
        self._buffer = []
        self._sealed += 1
        self._cancel_timer()

    def _on_timer(self) -> None:
        self._timer = None
        if self._buffer:
            self._seal()
            self._start_worker()

    def _start_worker(self) -> None:
        if self._worker is None and self._loop is not None:
            self._worker = self._loop.create_task(
                self._deliver_all(), name=f"flowhooks {type(self).__name__} delivery"
            )

    async def _deliver_all(self) -> None:
        try:
            queue = self._queue
            while queue:
                batch = queue[0]
                await self._deliver(batch)
                if queue and queue[0] is batch:
                    queue.popleft()
                    self._finished += 1
                self._wake_waiters()
        finally:
            if self._worker is asyncio.current_task():
                self._worker = None

    async def _deliver(self, batch: list[Event]) -> None:
        try:
            await retry_async(partial(self._attempt, batch), self._policy, on_retry=self._on_retry)
        except Exception as exc:
            await self._dead_letter(batch, exc)
        else:
            self._stats.batches += 1
            self._stats.events += len(batch)

    async def _attempt(self, batch: list[Event]) -> None:
        result: object = self.process_batch(list(batch))  # a copy: the sink may mutate it
        if inspect.isawaitable(result):
            await result

    def _on_retry(self, number: int, exc: Exception, delay: float) -> None:
        self._stats.retries += 1
        logger.warning(
            "{handler}: delivering a batch failed ({error}); retry {number} of {total} "
            "in {delay:.3f}s",
            handler=type(self).__name__,
            error=f"{type(exc).__name__}: {exc}",
            number=number,
            total=self._policy.attempts - 1,
            delay=delay,
        )

    async def _dead_letter(self, batch: list[Event], error: BaseException) -> None:
        self._stats.dead_letters += 1
        self._stats.dead_letter_events += len(batch)
        try:
            result: object = self.on_dead_letter(batch, error)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            logger.error(
                "{handler}.on_dead_letter raised {error}; event ids of the lost batch: {ids}",
                handler=type(self).__name__,
                error=failure_text(exc, with_traceback=True),
                ids=[e.id for e in batch],
            )
        if self.raise_error:
            for event in batch:
                self._errors.keep(event, error)

    def _wake_waiters(self) -> None:
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._finished:
            fut = waiters.popleft()[1]
            if not fut.done():
                fut.set_result(None)

    def __repr__(self) -> str:
        target = self._sink if self._sink is not None else "process_batch"
        return (
            f"{type(self).__name__}({target!r}, batch_size={self._batch_size}, "
            f"flush_interval={self._interval!r})"
        )


def _parse_types(
    owner: str, events: Iterable[str | EventType] | str | EventType | None
) -> frozenset[EventType]:
    if events is None:
        return frozenset(EventType)
    items: Iterable[str | EventType] = (events,) if isinstance(events, str) else events
    try:
        items = list(items)
    except TypeError:
        msg = f"{owner}: events must be a list of event types, e.g. ['node_end'], got {events!r}"
        raise TypeError(msg) from None
    types: set[EventType] = set()
    for item in items:
        try:
            types.add(parse_event_type(item))
        except ValueError as exc:
            msg = f"{owner}: bad entry in events: {exc}"
            raise ValueError(msg) from None
    if not types:
        msg = f"{owner}: events is empty, so nothing would be batched; pass None for all events"
        raise ValueError(msg)
    return frozenset(types)


# -- BackgroundCallback ---------------------------------------------------------------


@dataclass(slots=True)
class BackgroundStats:
    """Counters of a ``BackgroundCallback``.

    Attributes:
        enqueued: events accepted into the queue.
        delivered: events handed to the wrapped handler (whether it succeeded or not).
        dropped: events lost to the overflow policy, or still queued when
            ``aclose()`` gave up waiting.
    """

    enqueued: int = 0
    delivered: int = 0
    dropped: int = 0


_Item = tuple[EventType, tuple[Any, ...], Event]  # the Event is captured when queued


@final
class BackgroundCallback(Dispatcher):
    """Delivers events to ``wrapped`` from a background task, so the workflow does not wait.

    Events are queued in order and delivered one at a time, in that order, by
    one worker task. The wrapped handler's own failures are
    isolated and counted by an inner manager (see ``handler_stats``). With
    ``raise_error`` on the wrapped handler, its exception is kept for the run
    of the event it failed on and raised from ``flush()`` in that run, i.e. at
    the end of the run (``run`` re-raises it once the remaining callbacks have
    run); the node whose event it was is not failed, since the node went on
    without waiting. For events sent by hand outside a run it is raised from
    the next ``flush()`` or ``aclose()``. Dispatch never raises it. An error
    that arrives after its run's flush has given up waiting is raised from
    ``aclose()``.

    When ``max_queue`` events are waiting, ``overflow`` decides: ``"block"``
    makes the dispatcher wait for room, ``"drop_oldest"`` discards the oldest
    queued event, ``"drop_newest"`` discards the incoming one. Drops are
    counted in ``stats.dropped`` and logged (at most one warning per second).

    ``flush()`` (called at the end of every run) waits until everything queued
    before the call has been delivered, for at most ``close_timeout`` seconds
    (default 30) for a slow handler; events not delivered by then stay queued
    and the worker goes on delivering them after ``flush()`` has returned, so a
    run can end before its last events are delivered. ``aclose()`` flushes,
    stops the worker, and logs and counts as dropped what it could not deliver
    within ``close_timeout``.

    The worker task runs only while events are queued: it ends when the queue
    is empty and the next event starts a new one, so an instance dropped
    without ``aclose()`` leaves no task behind.

    Args:
        wrapped: the handler (or composite) to deliver to.
        max_queue: the most events waiting at once (at least 1).
        overflow: ``"block"``, ``"drop_oldest"`` or ``"drop_newest"``.
        close_timeout: longest wait of ``flush()``/``aclose()``, in seconds
            (``None`` = no limit).

    Raises:
        TypeError: when ``wrapped`` is not a handler instance.
        ValueError: for a bad ``max_queue``, ``overflow`` or ``close_timeout``.
    """

    def __init__(
        self,
        wrapped: BaseCallbackHandler,
        *,
        max_queue: int = 10_000,
        overflow: Overflow = "block",
        close_timeout: float | None = 30.0,
    ) -> None:
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            msg = f"BackgroundCallback: max_queue must be an int >= 1, got {max_queue!r}"
            raise ValueError(msg)
        if overflow not in _OVERFLOWS:
            msg = (
                f"BackgroundCallback: overflow must be one of "
                f"{', '.join(repr(o) for o in _OVERFLOWS)}, got {overflow!r}"
            )
            raise ValueError(msg)
        self._close_timeout = _check_timeout("BackgroundCallback", close_timeout)
        self._manager = wrap_handlers("BackgroundCallback", (wrapped,))
        self._max_queue = max_queue
        self._overflow = overflow
        self._queue: deque[_Item] = deque()
        self._put = 0  # events accepted so far
        self._done = 0  # events delivered (or dropped from the queue) so far
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()  # flush() calls
        self._space: deque[asyncio.Future[None]] = deque()  # producers blocked on a full queue
        self._worker: asyncio.Task[None] | None = None  # runs only while events are queued
        self._loop: asyncio.AbstractEventLoop | None = None
        self._errors = _RunErrors()
        self._stats = BackgroundStats()
        self._unlogged_drops = 0
        self._last_drop_log = float("-inf")

    # -- public surface ---------------------------------------------------------------

    @property
    def stats(self) -> BackgroundStats:
        """Events enqueued, delivered and dropped."""
        return self._stats

    @property
    def dropped(self) -> int:
        """Events dropped so far (overflow policy, or undeliverable at close)."""
        return self._stats.dropped

    @property
    def queued(self) -> int:
        """Events waiting in the queue now."""
        return len(self._queue)

    @property
    def overflow(self) -> Overflow:
        """The overflow policy."""
        return self._overflow

    @property
    def handlers(self) -> tuple[BaseCallbackHandler, ...]:
        """The wrapped handler, as a one-element tuple."""
        return self._manager.handlers

    @property
    def handler_stats(self) -> HandlerStats:
        """Calls, errors, timeouts and seconds of the wrapped handler, per event type."""
        return self._manager.stats

    # -- dispatch ---------------------------------------------------------------------

    def handles(self, event_type: EventType) -> bool:
        """Return whether the wrapped handler reacts to ``event_type``."""
        return self._manager.handles(event_type)

    def wants_event(self, event_type: EventType) -> bool:
        """Return True for the types it takes: the ``Event`` is captured when queued."""
        return self._manager.handles(event_type)

    async def dispatch(
        self, event_type: EventType, args: tuple[Any, ...], event: Event | None
    ) -> None:
        """Queue the event for the worker; apply the overflow policy when the queue is full.

        Never raises a stored ``raise_error`` failure: those come from ``flush()``.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        if event is None:
            event = event_from_args(event_type, args)
        queue = self._queue
        if len(queue) >= self._max_queue:
            overflow = self._overflow
            if overflow == "block":
                await self._wait_for_space(loop)
            elif overflow == "drop_newest":
                self._count_drop()
                return
            else:
                queue.popleft()
                self._done += 1
                self._count_drop()
                if self._waiters:  # a flush() may have been waiting for the dropped event
                    self._wake_waiters()
        queue.append((event_type, args, event))
        self._put += 1
        self._stats.enqueued += 1
        if self._worker is None:
            self._start_worker()

    # -- lifecycle --------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until everything queued before this call is delivered, then flush ``wrapped``.

        Waits at most ``close_timeout`` seconds; past that, it logs how many
        events are still queued and returns (delivery goes on). Then it raises
        the wrapped handler's ``raise_error`` failure on an event of the run
        calling, or else on an event sent by hand outside a run.
        """
        await self._drain()
        self._errors.raise_for_caller()

    async def aclose(self) -> None:
        """Flush (bounded by ``close_timeout``), stop the worker, then close ``wrapped``.

        Events still queued then are logged and counted in ``stats.dropped``.
        Every ``raise_error`` failure still kept is reported: the calling run's
        (or that of events sent by hand) or else the oldest is raised, the
        others are logged. The instance can be used again afterwards.
        """
        try:
            await self._drain()
        finally:
            await _stop(self._worker)
            self._worker = None
            left = len(self._queue)
            if left:
                self._queue.clear()
                self._done += left
                self._stats.dropped += left
                logger.error(
                    "BackgroundCallback closed with {n} events undelivered "
                    "(close_timeout={t}s); they are dropped",
                    n=left,
                    t=self._close_timeout,
                )
            self._wake_waiters()
            while self._space:
                fut = self._space.popleft()
                if not fut.done():
                    fut.set_result(None)
            await self._manager.aclose()
        self._errors.raise_all("BackgroundCallback")

    # -- internals --------------------------------------------------------------------

    async def _drain(self) -> None:
        """Wait (at most ``close_timeout``) for what is queued now, then flush ``wrapped``."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        target = self._put
        if self._done < target:
            if self._worker is None:
                self._start_worker()
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((target, fut))
            if not await _wait(fut, self._close_timeout):
                logger.warning(
                    "BackgroundCallback.flush(): {n} events still undelivered after {t}s; "
                    "delivery goes on in the background",
                    n=target - self._done,
                    t=self._close_timeout,
                )
        self._report_drops()
        await self._manager.flush()

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Forget the worker and futures of a previous loop; keep the queue."""
        self._loop = loop
        self._worker = None
        self._waiters.clear()
        self._space.clear()

    def _start_worker(self) -> None:
        if self._loop is not None:
            self._worker = self._loop.create_task(
                self._run(), name="flowhooks BackgroundCallback worker"
            )

    async def _run(self) -> None:
        """Deliver queued events in order; end as soon as the queue is empty."""
        queue = self._queue
        manager = self._manager
        stats = self._stats
        try:
            while queue:
                item = queue.popleft()
                if self._space:
                    self._give_space()
                try:
                    await manager.dispatch(*item)
                except Exception as exc:  # only raise_error failures get past the manager
                    self._errors.keep(item[2], exc)
                self._done += 1
                stats.delivered += 1
                if self._waiters:
                    self._wake_waiters()
        finally:
            if self._worker is asyncio.current_task():
                self._worker = None

    async def _wait_for_space(self, loop: asyncio.AbstractEventLoop) -> None:
        while len(self._queue) >= self._max_queue:
            if self._worker is None:
                self._start_worker()
            fut: asyncio.Future[None] = loop.create_future()
            self._space.append(fut)
            try:
                await fut
            finally:
                if not fut.done():  # cancelled while waiting
                    fut.cancel()

    def _give_space(self) -> None:
        space = self._space
        while space:
            fut = space.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _wake_waiters(self) -> None:
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._done:
            fut = waiters.popleft()[1]
            if not fut.done():
                fut.set_result(None)

    def _count_drop(self) -> None:
        self._stats.dropped += 1
        self._unlogged_drops += 1
        if monotonic() - self._last_drop_log >= _DROP_LOG_INTERVAL:
            self._report_drops()

    def _report_drops(self) -> None:
        if not self._unlogged_drops:
            return
        logger.warning(
            "BackgroundCallback({wrapped}): queue full (max_queue={max_queue}), "
            "{overflow} dropped {n} events; {total} dropped so far",
            wrapped=", ".join(type(h).__name__ for h in self.handlers),
            max_queue=self._max_queue,
            overflow=self._overflow,
            n=self._unlogged_drops,
            total=self._stats.dropped,
        )
        self._unlogged_drops = 0
        self._last_drop_log = monotonic()

    def __repr__(self) -> str:
        wrapped = ", ".join(type(h).__name__ for h in self.handlers)
        return (
            f"BackgroundCallback({wrapped}, max_queue={self._max_queue}, "
            f"overflow={self._overflow!r})"
        )
