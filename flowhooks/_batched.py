"""``BatchedCallback``: buffers events and delivers them in batches, with retries.

Place in the chain: events -> handler -> plan -> manager -> composites
(``_composites`` -> ``_delivery`` -> **here**). The queue of sealed batches,
its worker, loop binding, sharing across threads, bounded drains and per-run
``raise_error`` failures come from ``DeferredDelivery`` (``_delivery``); this
module adds the buffer, the sealing (size, timer, flush) and retries with a
dead letter.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from loguru import logger

from flowhooks._delivery import DeferredDelivery, Lane
from flowhooks._delivery_end import held_back
from flowhooks._dispatcher import event_from_args
from flowhooks._events import Event, EventType, parse_event_type
from flowhooks._logs import failure_text
from flowhooks._retry import RetryPolicy, retry_async
from flowhooks._validate import ParameterTypeError, check_count, check_seconds

BatchSink = Callable[[list[Event]], object] | Callable[[list[Event]], Awaitable[object]]
"""A sync or async callable taking one batch (a ``list[Event]``)."""


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


class _BatchLane(Lane[list[Event]]):
    """A lane with the events not sealed yet and the timer that will seal them."""

    __slots__ = ("buffer", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.buffer: list[Event] = []
        self.timer: asyncio.TimerHandle | None = None


class BatchedCallback(DeferredDelivery[list[Event], _BatchLane]):
    """Buffers events and delivers them in batches to a sink, with retries and a dead letter.

    Events (all types, or those in ``events``) are collected as ``Event``
    objects and handed as a ``list[Event]`` to ``sink`` or to an overridden
    ``process_batch``. A batch is sealed when ``batch_size`` events are
    buffered, when ``flush_interval`` seconds have passed since its first
    event (a timer started lazily in the running loop), on ``flush()`` (which
    the runner calls at the end of every run) and on ``aclose()``.

    Batches are delivered one at a time, in the order they were sealed, by a
    delivery task, so dispatch itself never waits for the sink; an idle task
    starts at once, in the dispatch that fills a batch, so a sink that does
    not wait (a plain function) has the batch when that dispatch returns, and
    one that waits goes on in the background (on a loop with a task factory,
    or from inside an ``except`` block, it starts at the next turn). A batch
    whose delivery is cut short is delivered again, unless that happened twice
    in a row while a flush waited for it (a sink that cancels its own task):
    it is then dead-lettered. A failing
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

    Shared by runs in several threads, each with its own event loop, the
    instance keeps one buffer, queue and delivery task per loop: a batch holds
    events of one loop's runs, and each run's flush waits for its own events.
    A sink that raises a ``BaseException`` (``KeyboardInterrupt`` ...) has that
    batch dead-lettered; the other batches are still delivered, then the
    flush waiting for them raises it.

    With ``raise_error = True`` set on the instance or a subclass, a
    dead-lettered batch's error is kept for each run that had events in the
    batch and raised from ``flush()`` in that run, i.e. at the end of the run
    (``run`` re-raises it once the remaining callbacks have run). Events sent
    by hand outside a run have their error raised from the next ``flush()`` or
    ``aclose()`` called outside any run. Dispatch never raises it. An error that arrives after its
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

    _noun = "batches"

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
        batch_size = check_count("batch_size", batch_size, minimum=1, owner=name)
        interval = check_seconds("flush_interval", flush_interval, allow_none=True, owner=name)
        retry_attempts = check_count("retry_attempts", retry_attempts, owner=name)
        retry_backoff = check_seconds(
            "retry_backoff", retry_backoff, allow_zero=True, owner=name, default=0.0
        )
        self._sink = sink
        self._batch_size = batch_size
        self._interval = interval
        self._types = _parse_types(name, events)
        self._policy = RetryPolicy(
            attempts=retry_attempts + 1,
            backoff=float(retry_backoff),
            max_backoff=10.0,
            jitter=False,
        )
        super().__init__(close_timeout=close_timeout)
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
        """Events buffered or waiting in sealed batches, not yet delivered (in every loop)."""
        total = 0
        for lane in self._lanes_now():
            total += len(lane.buffer) + sum(len(batch) for batch in list(lane.queue))
            active = lane.active
            if active is not None:
                total += len(active)
        return total

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
            error=failure_text(error, with_traceback=False),
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
        held = held_back(event_type, event)  # the end of a run whose loop is going away
        lane = self._lane(kick=not held)
        buffer = lane.buffer
        buffer.append(event)
        if len(buffer) >= self._batch_size:
            self._seal(lane)
            if not held:
                self._kick(lane, now=True)  # a sink that does not wait has it on return
        elif not held and lane.timer is None and self._interval is not None:
            lane.timer = lane.loop.call_later(self._interval, self._on_timer, lane)

    # -- lifecycle --------------------------------------------------------------------

    async def flush(self) -> None:
        """Seal what is buffered and wait until every sealed batch is delivered or dead-lettered.

        Waits through retries, for at most ``close_timeout`` seconds; past that,
        it logs how many batches are still queued and returns (they keep being
        delivered in the background). Then it raises a ``BaseException`` the
        sink raised meanwhile, else, with ``raise_error`` set, the error of a
        dead-lettered batch holding events of the run calling; called outside
        any run, that of events sent by hand.
        """
        await super().flush()

    async def aclose(self) -> None:
        """Flush (bounded by ``close_timeout``), then stop the timer and delivery task.

        Batches still undelivered then go to ``on_dead_letter`` with a
        ``TimeoutError``. With ``raise_error`` set, every error still kept is
        reported: the calling run's (or that of events sent by hand) or else
        the oldest is raised, the others are logged. The instance can be used
        again afterwards.
        """
        await super().aclose()

    # -- hooks of DeferredDelivery ----------------------------------------------------

    def _new_lane(self, loop: asyncio.AbstractEventLoop) -> _BatchLane:
        return _BatchLane(loop)

    async def _deliver(self, item: list[Event]) -> None:
        """Deliver one batch through its retries; dead-letter it when they all fail."""
        try:
            await retry_async(partial(self._attempt, item), self._policy, on_retry=self._on_retry)
        except Exception as exc:
            await self._dead_letter(item, exc)
        except asyncio.CancelledError:
            raise  # not delivered: the worker puts it back at the head of the queue
        except BaseException as exc:
            await self._dead_letter(item, exc)
            raise
        else:
            with self._lock:
                self._stats.batches += 1
                self._stats.events += len(item)

    def _before_drain(self, lane: _BatchLane) -> None:
        if lane.buffer:
            self._seal(lane)

    def _before_shut(self, lane: _BatchLane) -> None:
        if lane.buffer:
            self._seal(lane)
        self._cancel_timer(lane)

    async def _abandoned(self, item: list[Event]) -> None:
        error = RuntimeError(
            "the batch's delivery was cancelled twice in a row while a flush waited for it "
            "(a sink that cancels its own task?); it is not retried"
        )
        await self._dead_letter(item, error)

    async def _undelivered(self, items: list[list[Event]]) -> None:
        for batch in items:
            error = TimeoutError(
                f"{type(self).__name__} closed before this batch was delivered "
                f"(close_timeout={self._close_timeout}s)"
            )
            await self._dead_letter(batch, error)

    def _adopt(self, lane: _BatchLane, old: _BatchLane) -> None:
        self._cancel_timer(old)
        if old.buffer:
            lane.buffer[:0] = old.buffer
            old.buffer = []
            if self._interval is not None:
                lane.timer = lane.loop.call_later(self._interval, self._on_timer, lane)

    # -- internals --------------------------------------------------------------------

    def _cancel_timer(self, lane: _BatchLane) -> None:
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None

    def _seal(self, lane: _BatchLane) -> None:
        """Queue the buffer as a batch (the caller starts the worker when it should run)."""
        self._enqueue(lane, lane.buffer)
        lane.buffer = []
        self._cancel_timer(lane)

    def _on_timer(self, lane: _BatchLane) -> None:
        lane.timer = None
        if lane.buffer:
            self._seal(lane)
            self._kick(lane)

    async def _attempt(self, batch: list[Event]) -> None:
        try:
            result: object = self.process_batch(list(batch))  # a copy: the sink may mutate it
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the worker itself is stopped
            # The sink's own CancelledError (a future it awaited was cancelled): a failed
            # attempt like any other, retried and then dead-lettered, never silently lost.
            msg = f"the batch sink raised CancelledError without being cancelled: {exc!r}"
            raise RuntimeError(msg) from exc

    def _on_retry(self, number: int, exc: Exception, delay: float) -> None:
        with self._lock:
            self._stats.retries += 1
        logger.warning(
            "{handler}: delivering a batch failed ({error}); retry {number} of {total} "
            "in {delay:.3f}s",
            handler=type(self).__name__,
            error=failure_text(exc, with_traceback=False),
            number=number,
            total=self._policy.attempts - 1,
            delay=delay,
        )

    async def _dead_letter(self, batch: list[Event], error: BaseException) -> None:
        with self._lock:
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
        if self.raise_error and isinstance(error, Exception):  # the rest reaches the drain
            for event in batch:
                self._errors.keep(event, error)

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
        except ParameterTypeError as exc:
            msg = f"{owner}: bad entry in events: {exc}"
            raise ParameterTypeError(msg) from None
        except ValueError as exc:
            msg = f"{owner}: bad entry in events: {exc}"
            raise ValueError(msg) from None
    if not types:
        msg = f"{owner}: events is empty, so nothing would be batched; pass None for all events"
        raise ValueError(msg)
    return frozenset(types)
