"""``DeliveryThread``: blocking sends run in order on their own thread, awaited up to a deadline.

Some backends are reached through a synchronous client (openlineage-python's
transports post with ``requests``, write files, talk to Kafka). Calling one on
the event loop would stall every run of the process; calling it in a fresh
worker per event would lose the order of a run's events. A ``DeliveryThread``
runs the sends one after another on one daemon thread, and the handler that
queued a send waits for it at most ``deadline`` seconds:

* a send that ends in time returns (or raises) to its caller, so the manager
  logs and counts a failing backend like any handler error;
* a send still running at the deadline goes on in the background; from then
  on, while the thread is behind, callers queue their sends and do not wait
  at all, so a backend that never answers costs a run one deadline, not one
  per event; once the thread has caught up, callers wait again;
* a send that fails with nobody waiting is logged (the first of a streak;
  the rest are counted until a send succeeds again);
* the queue is bounded: when it is full a send is dropped with a warning and
  counted in ``dropped``.

The thread starts on the first send and stops after a while without work, so
an idle handler holds no thread. It is a daemon: a send stuck in a backend
never keeps the process from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from loguru import logger

from flowhooks.handlers._handler_call import error_text
from flowhooks.handlers._validate import positive_int

__all__ = ["DeliveryThread"]

_IDLE_EXIT: Final = 30.0
"""Seconds without work after which the thread stops (a later send starts a new one)."""
_DRAIN_POLL: Final = 0.01
"""Seconds between two looks at the queue while draining (``aclose`` only)."""


@dataclass(slots=True, eq=False)
class _Send:
    """One queued send and how its caller learns the outcome."""

    call: Callable[[], object]
    what: str
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[BaseException | None]
    waited: bool = True  # the caller is still waiting for it
    finished: bool = False


class DeliveryThread:
    """Runs blocking sends in order on one daemon thread; callers wait up to a deadline.

    Safe to share between threads, each with its own event loop: a send
    reports back to the loop that queued it.

    Args:
        name: the name of the thread and of the handler in log messages.
        max_queue: how many sends may wait; beyond, new sends are dropped.
    """

    def __init__(self, name: str, *, max_queue: int = 1000) -> None:
        self.name = name
        self.max_queue = positive_int("max_queue", max_queue)
        self.dropped = 0
        self._queue: queue.Queue[_Send] = queue.Queue(max_queue)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._overdue = 0  # queued or running sends that nobody waits for
        self._pending = 0  # queued or running sends
        self._failed_in_background = 0  # the current streak, logged once (thread-only)

    @property
    def behind(self) -> bool:
        """Whether a send is still running (or queued) that its caller stopped waiting for."""
        return self._overdue > 0

    async def send(self, call: Callable[[], object], *, deadline: float, what: str) -> None:
        """Queue ``call`` and wait for it at most ``deadline`` seconds (not at all while behind).

        Raises:
            Exception: what ``call`` raised, when it ended within the deadline.
        """
        job = self._enqueue(call, what, wait=False)
        if job is None or not job.waited:
            return
        error = await self._wait(job, deadline)
        if error is not None:
            raise error

    async def drain(self, deadline: float) -> bool:
        """Wait up to ``deadline`` seconds for every queued send to end; return whether they did."""
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline
        while self._pending:
            if loop.time() >= until:
                return False
            await asyncio.sleep(_DRAIN_POLL)
        return True

    def _enqueue(self, call: Callable[[], object], what: str, *, wait: bool) -> _Send | None:
        """Queue a send (``None`` when the queue is full); it is waited for unless behind."""
        loop = asyncio.get_running_loop()
        job = _Send(call, what, loop, loop.create_future())
        with self._lock:
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                self.dropped += 1
                logger.warning(
                    "{}: {} sends are waiting for a slow backend; dropped {}",
                    self.name,
                    self.max_queue,
                    what,
                )
                return None
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            if self._overdue and not wait:  # the backend is slow: do not wait behind it
                job.waited = False
                self._overdue += 1
        return job

    async def _wait(self, job: _Send, deadline: float) -> BaseException | None:
        """Wait for ``job`` up to ``deadline``; past it, leave it to finish in the background."""
        try:
            return await asyncio.wait_for(asyncio.shield(job.done), deadline)
        except TimeoutError:
            with self._lock:
                if job.finished:
                    return None
                job.waited = False
                self._overdue += 1
            logger.warning(
                "{}: {} took longer than {:g}s; it goes on in the background and "
                "the next sends do not wait until it ends",
                self.name,
                job.what,
                deadline,
            )
            return None

    def _work(self) -> None:
        """The thread: run sends in order; stop after ``_IDLE_EXIT`` seconds without one."""
        while True:
            try:
                job = self._queue.get(timeout=_IDLE_EXIT)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            error: BaseException | None = None
            try:
                job.call()
            except BaseException as exc:  # a send never kills the thread
                error = exc
            with self._lock:
                job.finished = True
                waited = job.waited
                if not waited:
                    self._overdue -= 1
            self._note_background(job, error, waited=waited)
            with self._lock:
                self._pending -= 1
            if waited:
                # RuntimeError: that loop is closed, nobody is left to tell
                with contextlib.suppress(RuntimeError):
                    job.loop.call_soon_threadsafe(_settle, job.done, error)

    def _note_background(self, job: _Send, error: BaseException | None, *, waited: bool) -> None:
        """Log the first of a streak of failed background sends, and the recovery after it."""
        if error is None:
            if self._failed_in_background:
                logger.warning(
                    "{}: sending works again after {} failed background sends",
                    self.name,
                    self._failed_in_background,
                )
                self._failed_in_background = 0
        elif not waited:  # nobody else will report it
            if not self._failed_in_background:
                logger.warning(
                    "{}: {} failed in the background: {} (the next failures are counted, "
                    "not logged, until a send succeeds)",
                    self.name,
                    job.what,
                    error_text(error),
                )
            self._failed_in_background += 1


def _settle(done: asyncio.Future[BaseException | None], error: BaseException | None) -> None:
    """Hand a send's outcome to its waiting caller (on the caller's loop)."""
    if not done.done():
        done.set_result(error)
