"""``BackgroundCallback``: delivers events to a handler from a worker task, off the caller.

Place in the chain: events -> handler -> plan -> manager -> composites
(``_composites`` -> ``_delivery`` -> **here**). Loop binding, bounded waits on
shutdown and per-run ``raise_error`` failures are shared with
``BatchedCallback`` and described in ``_delivery``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from time import monotonic
from typing import Any, Final, Literal, final

from loguru import logger

from flowhooks._composites import wrap_handlers
from flowhooks._delivery import _check_timeout, _RunErrors, _stop, _wait
from flowhooks._dispatcher import Dispatcher, event_from_args
from flowhooks._events import Event, EventType
from flowhooks._handler import BaseCallbackHandler
from flowhooks._hooks import HandlerStats

Overflow = Literal["block", "drop_oldest", "drop_newest"]

_OVERFLOWS: Final = ("block", "drop_oldest", "drop_newest")
_DROP_LOG_INTERVAL: Final = 1.0  # seconds between two "dropped events" warnings


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
        calling; called outside any run, that on an event sent by hand.
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
