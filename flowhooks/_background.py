"""``BackgroundCallback``: delivers events to a handler from a worker task, off the caller.

Place in the chain: events -> handler -> plan -> manager -> composites
(``_composites`` -> ``_delivery_scope`` -> ``_delivery`` -> **here**). The
queue, its worker, loop binding, sharing across threads, bounded drains and
per-run ``raise_error`` failures come from ``DeferredDelivery`` (``_delivery``);
this module adds the overflow policy and delivers each event in the context
of the run that dispatched it (``_delivery_scope``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from time import monotonic
from typing import Any, Final, Literal, final

from loguru import logger

from flowhooks import _delivery_scope
from flowhooks._composites import wrap_handlers
from flowhooks._delivery import DeferredDelivery, Lane
from flowhooks._delivery_end import held_back, run_end_budget
from flowhooks._delivery_scope import RunScope
from flowhooks._dispatcher import event_from_args
from flowhooks._events import Event, EventType
from flowhooks._handler import BaseCallbackHandler
from flowhooks._hooks import HandlerStats
from flowhooks._validate import ParameterTypeError, check_count

Overflow = Literal["block", "drop_oldest", "drop_newest"]

_OVERFLOWS: Final = ("block", "drop_oldest", "drop_newest")
_DROP_LOG_INTERVAL: Final = 1.0  # seconds between two "dropped events" warnings
_WORKFLOW_END: Final = EventType.WORKFLOW_END


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


_Item = tuple[EventType, tuple[Any, ...], Event, RunScope]  # Event and scope: taken when queued


class _BackgroundLane(Lane[_Item]):
    """A lane with the producers waiting for room in its full ``block`` queue."""

    __slots__ = ("space",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.space: deque[asyncio.Future[None]] = deque()


@final
class BackgroundCallback(DeferredDelivery[_Item, _BackgroundLane]):
    """Delivers events to ``wrapped`` from a background task, so the workflow does not wait.

    Events are queued in order and delivered one at a time, in that order, by
    one worker task (one per event loop, when runs in several threads share
    the instance). Each event is delivered in the context of the dispatch
    that queued it: inside the wrapped handler, ``current_run()`` is the run
    whose event it is, never another run's. An event the handler sends
    (``current_run().emit(...)``) is queued behind that run's current event
    instead of waiting for the run's turn, so it never deadlocks, whatever the
    ``overflow`` policy and the queue's fill; an event dispatched by the
    worker itself is admitted to a full ``block`` queue. Before its
    ``workflow_end``, a run waits until the events queued so far were
    delivered (within ``close_timeout``, shared with the flush after
    ``workflow_end``, and the runner's ``cancel_grace``; not for a run being
    cancelled or suspended; a cancellation of the task awaiting the run cuts
    it short), so that what the wrapped handler sends in reply goes out in
    the run. The wrapped
    handler's own failures are
    isolated and counted by an inner manager (see ``handler_stats``). With
    ``raise_error`` on the wrapped handler, its exception is kept for the run
    of the event it failed on and raised from ``flush()`` in that run, i.e. at
    the end of the run (``run`` re-raises it once the remaining callbacks have
    run); the node whose event it was is not failed, since the node went on
    without waiting. For events sent by hand outside a run it is raised from
    the next ``flush()`` or ``aclose()`` called outside any run. Dispatch
    never raises it. An error
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
        ValueError: for a bad ``max_queue``, ``overflow`` or ``close_timeout``;
            a ``TypeError`` too when its type is wrong.
    """

    _noun = "events"
    _redeliver_interrupted = False

    def __init__(
        self,
        wrapped: BaseCallbackHandler,
        *,
        max_queue: int = 10_000,
        overflow: Overflow = "block",
        close_timeout: float | None = 30.0,
    ) -> None:
        max_queue = check_count("max_queue", max_queue, minimum=1, owner="BackgroundCallback")
        if not isinstance(overflow, str) or overflow not in _OVERFLOWS:
            msg = (
                f"BackgroundCallback: overflow must be one of "
                f"{', '.join(repr(o) for o in _OVERFLOWS)}, got {overflow!r}"
            )
            if not isinstance(overflow, str):
                msg += f" ({type(overflow).__name__})"
                raise ParameterTypeError(msg)
            raise ValueError(msg)
        super().__init__(close_timeout=close_timeout)
        self._manager = wrap_handlers("BackgroundCallback", (wrapped,))
        self._max_queue = max_queue
        self._overflow = overflow
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
        """Events waiting in the queue now (in every event loop's queue)."""
        return sum(len(lane.queue) for lane in self._lanes_now())

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
        """Return whether the wrapped handler reacts to ``event_type``; ``workflow_end``
        always, so that a run's end, which delivers the events the wrapped handler
        sent during the run, is dispatched (``dispatch`` then drops it if unwanted)."""
        return event_type is _WORKFLOW_END or self._manager.handles(event_type)

    def wants_event(self, event_type: EventType) -> bool:
        """Return True for the types it takes: the ``Event`` is captured when queued."""
        return self._manager.handles(event_type)

    async def dispatch(
        self, event_type: EventType, args: tuple[Any, ...], event: Event | None
    ) -> None:
        """Queue the event for the worker; apply the overflow policy when the queue is full.

        Never raises a stored ``raise_error`` failure: those come from ``flush()``.
        """
        if event_type is _WORKFLOW_END and not self._manager.handles(event_type):
            return  # let through only for what the run delivers before it (see handles)
        if event is None:
            event = event_from_args(event_type, args)
        held = held_back(event_type, event)  # the end of a run whose loop is going away
        lane = self._lane(kick=not held)
        queue = lane.queue
        if not held and len(queue) >= self._max_queue:
            overflow = self._overflow
            if overflow == "block":
                if not self._delivering_here():  # the worker would wait for itself
                    try:
                        await self._wait_for_space(lane)
                    except asyncio.CancelledError:
                        self._count_drop()  # this event never reaches the queue
                        raise
            elif overflow == "drop_newest":
                self._count_drop()
                return
            else:
                queue.popleft()
                lane.finished += 1
                self._count_drop()
                if lane.waiters:  # a flush() may have been waiting for the dropped event
                    self._wake(lane)
        self._enqueue(lane, (event_type, args, event, _delivery_scope.capture()))
        with self._lock:
            self._stats.enqueued += 1
        if not held:
            self._kick(lane)

    # -- lifecycle --------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until everything queued before this call is delivered, then flush ``wrapped``.

        Waits at most ``close_timeout`` seconds; past that, it logs how many
        events are still queued and returns (delivery goes on). Then it raises
        a ``BaseException`` the wrapped handler raised meanwhile, else the
        wrapped handler's ``raise_error`` failure on an event of the run
        calling; called outside any run, that on an event sent by hand.
        """
        await super().flush()

    async def aclose(self) -> None:
        """Flush (bounded by ``close_timeout``), stop the worker, then close ``wrapped``.

        Events still queued then are logged and counted in ``stats.dropped``.
        Every ``raise_error`` failure still kept is reported: the calling run's
        (or that of events sent by hand) or else the oldest is raised, the
        others are logged. The instance can be used again afterwards.
        """
        await super().aclose()

    # -- hooks of DeferredDelivery ----------------------------------------------------

    def _new_lane(self, loop: asyncio.AbstractEventLoop) -> _BackgroundLane:
        return _BackgroundLane(loop)

    def _below(self) -> tuple[BaseCallbackHandler, ...]:
        return (self._manager,)

    def _holds_events(self) -> bool:
        lane = self._lanes.get(asyncio.get_running_loop())
        return lane is not None and lane.finished < lane.accepted

    async def _settle(self, limit: float | None) -> None:
        lane = self._lane()
        close_timeout = self._close_timeout
        budget = run_end_budget.get()
        if budget is not None and close_timeout is not None:
            budget.until[id(self)] = lane.loop.time() + close_timeout
        if close_timeout is not None and (limit is None or close_timeout < limit):
            limit = close_timeout
        target = lane.accepted
        if not await self._finished(lane, target, limit):
            logger.warning(
                "BackgroundCallback: {n} events of the loop still undelivered after {t:.3g}s at "
                "the end of a run; what the wrapped handler sends in reply to them is not "
                "part of that run",
                n=target - lane.finished,
                t=limit,
            )

    async def _deliver(self, item: _Item) -> None:
        """Dispatch one event to the inner manager, in the context of its run."""
        event_type, args, event, scope = item
        tokens = _delivery_scope.enter(scope)
        try:
            await self._manager.dispatch(event_type, args, event)
        except Exception as exc:  # only raise_error failures get past the manager
            self._errors.keep(event, exc)
        except BaseException as exc:
            task = asyncio.current_task()
            if not isinstance(exc, asyncio.CancelledError) or not (task and task.cancelling()):
                self._count_delivered()  # else cut short: neither delivered nor dropped
            raise
        finally:
            _delivery_scope.leave(tokens)
        self._count_delivered()

    def _taken(self, lane: _BackgroundLane) -> None:
        """Let one producer waiting for room in: the worker has just made some."""
        space = lane.space
        while space:
            fut = space.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def _after_drain(self, lane: _BackgroundLane) -> None:
        self._report_drops()
        await self._manager.flush()

    async def _undelivered(self, items: list[_Item]) -> None:
        with self._lock:
            self._stats.dropped += len(items)
        logger.error(
            "BackgroundCallback closed with {n} events undelivered "
            "(close_timeout={t}s); they are dropped",
            n=len(items),
            t=self._close_timeout,
        )

    async def _after_shut(self, lane: _BackgroundLane) -> None:
        while lane.space:
            fut = lane.space.popleft()
            if not fut.done():
                fut.set_result(None)
        await self._manager.aclose()

    # -- internals --------------------------------------------------------------------

    async def _wait_for_space(self, lane: _BackgroundLane) -> None:
        while len(lane.queue) >= self._max_queue:
            self._kick(lane)
            fut: asyncio.Future[None] = lane.loop.create_future()
            lane.space.append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._taken(lane)  # let in, then cancelled: the room goes to the next one
                else:
                    fut.cancel()
                raise

    def _count_delivered(self) -> None:
        with self._lock:
            self._stats.delivered += 1

    def _count_drop(self) -> None:
        with self._lock:
            self._stats.dropped += 1
            self._unlogged_drops += 1
            due = monotonic() - self._last_drop_log >= _DROP_LOG_INTERVAL
        if due:
            self._report_drops()

    def _report_drops(self) -> None:
        if not self._unlogged_drops:
            return
        with self._lock:
            n, self._unlogged_drops = self._unlogged_drops, 0
            self._last_drop_log = monotonic()
            total = self._stats.dropped
        logger.warning(
            "BackgroundCallback({wrapped}): queue full (max_queue={max_queue}), "
            "{overflow} dropped {n} events; {total} dropped so far",
            wrapped=", ".join(type(h).__name__ for h in self.handlers),
            max_queue=self._max_queue,
            overflow=self._overflow,
            n=n,
            total=total,
        )

    def __repr__(self) -> str:
        wrapped = ", ".join(type(h).__name__ for h in self.handlers)
        return (
            f"BackgroundCallback({wrapped}, max_queue={self._max_queue}, "
            f"overflow={self._overflow!r})"
        )
