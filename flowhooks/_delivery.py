"""``DeferredDelivery``: the base of composites that deliver after dispatch returns.

Place in the chain: events -> handler -> plan -> manager -> composites
(``_composites`` -> ``_delivery_scope`` -> ``_delivery_end`` -> **here** -> ``_batched``,
``_background``). ``BatchedCallback`` (items: sealed batches) and
``BackgroundCallback`` (items: single events) are its subclasses; they fill
in what an item is and how one is delivered, and the base owns the rest:

* **Lanes.** Items wait in a queue and are delivered in order, one at a time,
  by a worker task. Queue, worker and the futures of whoever waits for them
  belong to one event loop: the base keeps one ``Lane`` per loop it is used
  from, created the first time a loop needs one. So one instance can serve
  runs in several threads at once, each thread with its own loop (``run_sync``
  from a threaded web server): each lane is only ever touched by its own
  loop's thread, and the few things shared by all lanes (the lane table,
  counters, kept errors) are guarded by a ``threading.Lock``. A run's events
  all go through the lane of the loop it runs in, so its flush waits for its
  own events, not for other threads'.
* **Successive loops.** When a loop opens a lane, lanes whose loop is closed
  (or, in the same thread, no longer running: two ``asyncio.run`` calls in a
  row) are taken over: what they left queued is delivered by the new loop.
* **Workers on demand.** The worker starts when an item is queued and none is
  running, and ends as soon as the queue is empty: no task per event, none
  alive while idle. It runs in a fresh context, marked as this composite's
  delivery (``_delivery_scope.delivering``), so it never inherits the run of
  whichever dispatch happened to start it.
* **Bounded drains.** ``flush()`` waits at most ``close_timeout`` seconds
  (default 30) for everything its loop had accepted when it was called, then
  logs what is still queued and returns (delivery goes on in the
  background); ``aclose()`` does the same, then cancels the worker and hands
  what is left to the subclass (``on_dead_letter`` for batches; logged and
  counted as dropped for events). A batch whose delivery the cancellation
  interrupted goes back to the head of the queue, so it is dead-lettered (or
  delivered by the next loop); an event, already handed to its handler, is
  not delivered twice.
* **raise_error failures** happen in the worker, after the event's dispatch
  has returned, so they are kept per run (the ``run_id`` of the queued
  ``Event``; ``""`` for events sent by hand, outside a run) and raised from
  ``flush()``: the flush at the end of the run they belong to raises that
  run's error, and any flush or ``aclose()`` outside a run raises the error
  of events sent by hand. ``dispatch`` never raises a stored error.
  ``aclose()`` also raises what is still kept (for instance an error that
  came after its run's flush gave up at ``close_timeout``), the first one, and
  logs the others.
* **BaseExceptions** (``KeyboardInterrupt``, ``SystemExit``, any other
  non-``Exception``) raised by the wrapped code do not stop the worker: it
  keeps the first, delivers the rest, and the next drain of that loop
  (``flush()`` or ``aclose()``) raises it once everything it waits for is
  delivered.

A durable subclass fits the same frame: its items are claimed rows, delivering
one acks it, and what ``aclose()`` leaves is released for another worker.
"""

from __future__ import annotations

import asyncio
import threading
from abc import abstractmethod
from collections import deque
from contextvars import Context
from typing import Any, ClassVar, Final, Generic, TypeVar

from loguru import logger

from flowhooks._context import current_run_var
from flowhooks._delivery_end import run_end_budget
from flowhooks._delivery_scope import delivering
from flowhooks._dispatcher import Dispatcher, _mark_propagating
from flowhooks._eager import start_eagerly
from flowhooks._events import Event
from flowhooks._logs import failure_text
from flowhooks._validate import check_seconds

ItemT = TypeVar("ItemT")

_CLOSING: Final = object()
"""``Lane.token`` while ``aclose()`` stops the worker: no other starts meanwhile."""


def _check_timeout(owner: str, value: object) -> float | None:
    return check_seconds("close_timeout", value, allow_none=True, owner=owner)


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


async def _stop(task: asyncio.Task[None] | None, limit: float | None, owner: str) -> None:
    """Cancel ``task`` and wait (at most ``limit`` seconds) until it has ended, without
    swallowing our own cancellation; a delivery that ignores its cancellation is left."""
    if task is None or task.done():
        return
    if task.get_loop() is not asyncio.get_running_loop():  # pragma: no cover - dead loop
        return
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=limit)
    if not done:
        logger.warning(
            "{owner}: a delivery ignored its cancellation for {limit:g}s after close; it is "
            "left running, and what was still queued is handed on as undelivered",
            owner=owner,
            limit=limit,
        )


class Lane(Generic[ItemT]):
    """One event loop's share of a ``DeferredDelivery``: its queue, worker and waiters.

    Only code running in ``loop`` touches a lane; another loop takes it over
    only once ``loop`` is closed, or no longer runs in the same thread.

    Attributes:
        loop: the event loop the lane belongs to.
        thread: the id of the thread that opened it.
        queue: items accepted and not yet taken by the worker, oldest first.
        active: the item the worker is delivering now.
        accepted: items accepted so far.
        finished: items delivered, dropped or handed on as undeliverable so far.
        waiters: drains waiting until ``finished`` reaches a target.
        worker: the task delivering the queue, while it is not empty.
        token: the running worker's own mark (a worker whose mark it no longer is stops).
        interrupted: the item last put back at the head by a worker's cancellation.
        interruptions: how many times in a row its delivery was cut short so.
        abandoned: that item, once it cut its own delivery short too often: given up on.
        fatal: the first ``BaseException`` a delivery raised, until a drain raises it.
    """

    __slots__ = (
        "abandoned",
        "accepted",
        "active",
        "fatal",
        "finished",
        "interrupted",
        "interruptions",
        "loop",
        "queue",
        "thread",
        "token",
        "waiters",
        "worker",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.get_ident()
        self.queue: deque[ItemT] = deque()
        self.active: ItemT | None = None
        self.accepted = 0
        self.finished = 0
        self.waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.token: object | None = None
        self.interrupted: ItemT | None = None
        self.interruptions = 0
        self.abandoned: ItemT | None = None
        self.fatal: BaseException | None = None

    def awaited(self) -> bool:
        """Whether a drain (``flush()``, a run's end) still waits for this lane."""
        return any(not fut.done() for _, fut in self.waiters)

    def replaceable(self) -> bool:
        """Whether another loop may take this lane over now (see the class docstring)."""
        return self.loop.is_closed() or self.thread == threading.get_ident()


LaneT = TypeVar("LaneT", bound=Lane[Any])


class DeferredDelivery(Dispatcher, Generic[ItemT, LaneT]):
    """Base of the composites that deliver items after dispatch returns, from a worker task.

    Subclasses call ``_lane()`` to find the running loop's lane,
    ``_enqueue``/``_kick`` to queue an item and make sure a worker delivers
    it, and fill in the hooks: ``_new_lane`` and ``_deliver`` always, the
    others (no-ops here) when they have something to do at that point. See
    the module docstring for what the base guarantees.
    """

    _noun: ClassVar[str] = "items"
    """What an item is called in log lines ("events", "batches")."""

    _redeliver_interrupted: ClassVar[bool] = True
    """Whether an item whose delivery was cancelled (``aclose()``, or the loop
    shutting down) goes back to the head of the queue; when false it counts as
    finished, having been handed over once."""

    def __init__(self, *, close_timeout: float | None) -> None:
        self._close_timeout = _check_timeout(type(self).__name__, close_timeout)
        self._lock = threading.Lock()  # guards _lanes and what subclasses share across lanes
        self._lanes: dict[asyncio.AbstractEventLoop, LaneT] = {}
        self._errors = _RunErrors()

    # -- hooks ------------------------------------------------------------------------

    @abstractmethod
    def _new_lane(self, loop: asyncio.AbstractEventLoop) -> LaneT:
        """Return an empty lane for ``loop``."""

    @abstractmethod
    async def _deliver(self, item: ItemT) -> None:
        """Deliver one item, handling its ``Exception`` failures; a ``BaseException`` is kept."""

    def _taken(self, lane: LaneT) -> None:
        """The worker has just taken an item off ``lane.queue``."""

    def _before_drain(self, lane: LaneT) -> None:
        """A drain is about to note what it waits for."""

    async def _after_drain(self, lane: LaneT) -> None:
        """A drain has waited (or given up at ``close_timeout``)."""

    def _before_shut(self, lane: LaneT) -> None:
        """``aclose()`` has stopped the worker and is about to hand on what is left."""

    async def _undelivered(self, items: list[ItemT]) -> None:
        """``aclose()`` could not deliver ``items`` within ``close_timeout``."""

    async def _abandoned(self, item: ItemT) -> None:
        """``item``'s delivery cancelled the worker's own task; it is not tried again."""

    async def _after_shut(self, lane: LaneT) -> None:
        """``aclose()`` has handed on what was left."""

    def _adopt(self, lane: LaneT, old: LaneT) -> None:
        """``lane`` takes over ``old``, whose loop is gone; its queue has been moved already."""

    # -- lanes ------------------------------------------------------------------------

    def _lane(self, kick: bool = True) -> LaneT:
        """Return the running loop's lane, opening it on first use (and, with ``kick``,
        starting a worker for what a closed loop's lane left in it)."""
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is None:
            lane = self._open_lane(loop, kick)
        return lane

    def _open_lane(self, loop: asyncio.AbstractEventLoop, kick: bool = True) -> LaneT:
        lane = self._new_lane(loop)
        with self._lock:
            for old in [old for old in self._lanes.values() if old.replaceable()]:
                del self._lanes[old.loop]
                self._take_over(lane, old)
            self._lanes[loop] = lane
        if lane.queue and kick:
            self._kick(lane)
        return lane

    def _take_over(self, lane: LaneT, old: LaneT) -> None:
        """Move what ``old`` left undelivered into ``lane`` (which is new and empty)."""
        items = list(old.queue)
        old.queue.clear()
        if old.active is not None and old.loop.is_closed():  # its worker will never finish it
            if self._redeliver_interrupted:
                items.insert(0, old.active)
            old.active = None
        lane.queue.extend(items)
        lane.accepted += len(items)
        if lane.fatal is None:
            lane.fatal = old.fatal
        old.fatal = None
        old.waiters.clear()  # futures of a loop that no longer runs: nobody awaits them here
        self._adopt(lane, old)

    def _lanes_now(self) -> list[LaneT]:
        """A snapshot of every lane, for counts across loops."""
        with self._lock:
            return list(self._lanes.values())

    # -- the queue and its worker -----------------------------------------------------

    def _enqueue(self, lane: LaneT, item: ItemT) -> None:
        """Accept ``item`` at the end of ``lane``'s queue (``_kick`` gets it delivered)."""
        lane.queue.append(item)
        lane.accepted += 1

    def _kick(self, lane: LaneT, now: bool = False) -> None:
        """Start ``lane``'s worker unless one is running. With ``now``, its first step runs
        here, before the caller goes on: an item whose delivery does not wait (a plain
        function as the sink) is delivered by then; one that waits goes on in the task."""
        worker = lane.worker
        # A worker runs, starts (its first step under way: no task yet) or is being
        # stopped by aclose(); one whose task is done was cancelled before it ever ran.
        if lane.token is not None and (worker is None or not worker.done()):
            return
        token = lane.token = object()
        marks = (*delivering.get(), self)
        context = Context()
        context.run(delivering.set, marks)
        work = self._work(lane, token)
        name = f"flowhooks {type(self).__name__} worker"
        if now:
            task = start_eagerly(work, (), lane.loop, context=context).task
        else:
            task = lane.loop.create_task(work, name=name, context=context)
        if lane.token is token:  # still running (its first step may have ended it)
            task.set_name(name)
            lane.worker = task

    def _delivering_here(self) -> bool:
        """Whether the calling code runs in this composite's delivery (its worker or a task
        the worker's callee started)."""
        return self in delivering.get()

    async def _work(self, lane: LaneT, token: object) -> None:
        """Deliver ``lane``'s queue in order; end as soon as it is empty (or once another
        worker, or none, holds ``lane.token``: one left behind by close stops here)."""
        queue = lane.queue
        task = asyncio.current_task()
        try:
            while queue and lane.token is token:
                item = queue.popleft()
                lane.active = item
                self._taken(lane)
                try:
                    abandoned = lane.abandoned
                    if abandoned is not None and item is abandoned:  # it cancelled its task
                        lane.abandoned = None
                        await self._abandoned(abandoned)
                    else:
                        await self._deliver(item)
                except BaseException as exc:
                    lane.active = None
                    if isinstance(exc, asyncio.CancelledError) and task and task.cancelling():
                        if self._redeliver_interrupted:
                            queue.appendleft(item)
                            waited = lane.awaited()
                            if item is not lane.interrupted:
                                lane.interrupted, lane.interruptions = item, 0
                            if waited:  # counted only while a drain waits for it
                                lane.interruptions += 1
                        else:
                            lane.finished += 1
                            self._wake(lane)
                        raise
                    if isinstance(exc, asyncio.CancelledError):  # raised, nothing cancelled
                        self._stray_cancel(exc)
                    else:
                        self._keep_fatal(lane, exc)
                lane.active = None
                lane.finished += 1
                if item is lane.interrupted:  # delivered (or given up on) at last
                    lane.interrupted, lane.interruptions = None, 0
                if lane.waiters:
                    self._wake(lane)
        finally:
            if lane.token is token:
                lane.token = lane.worker = None
                if queue and lane.waiters:
                    # Ended by a cancellation nobody here asked for: the wrapped code's
                    # own, or the loop shutting down (which cancels the drains too).
                    lane.loop.call_soon(self._rekick, lane)

    def _rekick(self, lane: LaneT) -> None:
        """Start a new worker if a drain still waits (the worker's task was cancelled by its
        own delivery, or by code outside); not when the drains were cancelled too, as a loop
        shutting down cancels every task. An item whose delivery was cut short twice in a
        row while a drain waited is not tried again (``_abandoned``): most likely it
        cancels its own task, and would do so until the drain gives up."""
        if lane.queue and lane.awaited():
            if lane.interruptions >= 2 and lane.queue[0] is lane.interrupted:
                lane.abandoned = lane.interrupted
            self._kick(lane)

    def _stopped(self, lane: LaneT) -> None:
        """The worker a cancelled ``aclose()`` was stopping has ended: start another if a
        drain waits (unless another ``aclose()`` or worker has taken over meanwhile)."""
        if lane.token is _CLOSING:
            lane.token = None
            if lane.queue and lane.awaited():
                self._kick(lane)

    def _stray_cancel(self, exc: asyncio.CancelledError) -> None:
        """The wrapped code raised ``CancelledError`` while nothing cancelled the worker: a
        failure of that code (logged; the inner manager counted it), not a stop."""
        logger.error(
            "{owner}: the wrapped code raised {error}; isolated, delivery goes on",
            owner=type(self).__name__,
            error=failure_text(exc, with_traceback=True),
        )

    def _keep_fatal(self, lane: LaneT, exc: BaseException) -> None:
        if lane.fatal is None:
            lane.fatal = exc
            return
        logger.error(
            "{owner}: delivery raised {error} while an earlier {first} was still to be "
            "reported; only the first is raised",
            owner=type(self).__name__,
            error=failure_text(exc, with_traceback=True),
            first=type(lane.fatal).__name__,
        )

    def _wake(self, lane: LaneT) -> None:
        """Resolve the drains whose target ``lane.finished`` has reached."""
        waiters = lane.waiters
        finished = lane.finished
        while waiters and waiters[0][0] <= finished:
            fut = waiters.popleft()[1]
            if not fut.done():
                fut.set_result(None)

    # -- drains -----------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait (at most ``close_timeout``) for what the running loop has accepted so far.

        Then raise a ``BaseException`` a delivery met, else the calling run's
        kept ``raise_error`` failure (outside any run: that of events sent by hand).
        """
        await self._drain(self._lane())
        self._errors.raise_for_caller()

    async def aclose(self) -> None:
        """Drain (bounded by ``close_timeout``), stop the worker, hand on what is left.

        Then raise every failure still kept: the calling run's (or that of
        events sent by hand) or else the oldest is raised, the others are
        logged. The instance can be used again afterwards.
        """
        lane = self._lane()
        try:
            await self._drain(lane)
        finally:
            await self._shut(lane)
        self._raise_fatal(lane)
        self._errors.raise_all(type(self).__name__)

    async def _drain(self, lane: LaneT) -> None:
        """Wait (at most ``close_timeout``) until all that ``lane`` accepted so far is finished."""
        self._before_drain(lane)
        target = lane.accepted
        if lane.finished < target:
            limit = self._close_timeout
            budget = run_end_budget.get()
            left = budget.limit(self, lane.loop) if budget is not None else None
            if left is not None:  # the run's end waited for it before workflow_end
                limit = left
            if not await self._finished(lane, target, limit):
                logger.warning(
                    "{owner}.flush(): {n} {noun} still undelivered after {t:.3g}s; "
                    "delivery goes on in the background",
                    owner=type(self).__name__,
                    n=target - lane.finished,
                    noun=self._noun,
                    t=limit,
                )
        await self._after_drain(lane)
        self._raise_fatal(lane)

    async def _finished(self, lane: LaneT, target: int, limit: float | None) -> bool:
        """Wait (at most ``limit`` seconds) until ``lane`` finished ``target`` items; False
        when the time ran out first."""
        if lane.finished >= target:
            return True
        self._kick(lane)
        if lane.finished >= target:  # delivered in the worker's first step (an eager task)
            return True
        fut: asyncio.Future[None] = lane.loop.create_future()
        lane.waiters.append((target, fut))
        return await _wait(fut, limit)

    def _raise_fatal(self, lane: LaneT) -> None:
        fatal = lane.fatal
        if fatal is not None:
            lane.fatal = None
            raise fatal

    async def _shut(self, lane: LaneT) -> None:
        # The worker stops after its item; while it does, nothing starts another.
        worker, lane.worker, lane.token = lane.worker, None, _CLOSING
        try:
            await _stop(worker, self._close_timeout, type(self).__name__)
        except BaseException:  # aclose() itself cancelled: a drain waiting still gets a worker,
            if worker is None or worker.done():  # once the one being stopped has ended
                self._stopped(lane)
            else:  # (or, should it ignore its cancellation, after close_timeout)
                worker.add_done_callback(lambda _: self._stopped(lane))
                if self._close_timeout is not None:
                    lane.loop.call_later(self._close_timeout, self._stopped, lane)
            raise
        lane.token = None
        self._before_shut(lane)
        left = list(lane.queue)
        lane.queue.clear()
        lane.interrupted, lane.interruptions = None, 0
        lane.finished += len(left)
        if left:
            await self._undelivered(left)
        self._wake(lane)
        await self._after_shut(lane)


class _RunErrors:
    """``raise_error`` failures of queued deliveries, kept per run until a flush reports them.

    The key is the ``run_id`` of the event whose delivery failed, or ``""``
    for an event sent by hand (``seq`` 0: not numbered by a run). Only the
    first error of each key is kept. Runs in several threads share it, hence
    the lock.
    """

    __slots__ = ("_errors", "_lock")

    def __init__(self) -> None:
        self._errors: dict[str, BaseException] = {}
        self._lock = threading.Lock()

    def keep(self, event: Event, error: BaseException) -> None:
        key = event.run_id if event.seq else ""
        with self._lock:
            if key not in self._errors:
                _mark_propagating(error)
                self._errors[key] = error

    def raise_for_caller(self) -> None:
        """Raise the calling run's error; outside any run, that of events sent by hand."""
        if not self._errors:
            return
        key = self._caller_key()
        with self._lock:
            error = self._errors.pop(key, None)
        if error is not None:
            raise error

    def raise_all(self, owner: str) -> None:
        """Raise the caller's error, else the oldest kept one; log and forget the others."""
        if not self._errors:
            return
        key = self._caller_key()
        with self._lock:
            errors = self._errors
            if not errors:
                return
            first = errors.pop(key if key in errors else next(iter(errors)))
            others = list(errors.items())
            errors.clear()
        for run_id, error in others:
            logger.error(
                "{owner} closed with the raise_error failure {error} of run {run_id!r} "
                "unreported (aclose() raises only one)",
                owner=owner,
                error=failure_text(error, with_traceback=True),
                run_id=run_id,
            )
        raise first

    @staticmethod
    def _caller_key() -> str:
        """The key whose error the caller may raise: its own run's, or, outside any run,
        that of events sent by hand. A run never raises another's error."""
        ctx = current_run_var.get(None)
        return ctx.run_id if ctx is not None else ""
