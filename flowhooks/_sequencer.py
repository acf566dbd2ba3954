"""The ordering of one run's events: one dispatch at a time, in ``seq`` order, re-entrant.

A run's events go through its ``EventSequencer``, however many nodes run at
once. Three pieces make that hold:

* ``DispatchTurn``: a first-come-first-served turn per run; the task that
  holds it is the one dispatching. Taking a free turn costs no coroutine.
* ``TaskFrame``: what the sequencer knows about the code running in a task
  (its node, and which run's event it is dispatching now). The frame lives in
  a context variable that tasks inherit, so an event sent *during* a dispatch
  (by a handler, or by a task that handler started) is recognised and queued
  right behind the current event instead of waiting for a turn its own
  dispatch holds, which would deadlock.
* ``EventSequencer.emit``: takes the turn, numbers the event, builds the
  ``Event`` only when some handler asked for ``event=``, dispatches it through
  the run's manager, then delivers what was queued meanwhile.

This module knows the manager, not the run: a run hands it its identity and
asks it to emit.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections import deque
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flowhooks._events import EVENT_FIELDS, Event, EventType, trusted_event
from flowhooks._ids import new_id
from flowhooks._manager import NOBODY, WANT_EVENT
from flowhooks._plan_cache import _generation

if TYPE_CHECKING:
    from flowhooks._manager import CallbackManager


class DispatchTurn:
    """A FIFO turn for dispatching a run's events; ``holder`` is the task dispatching now."""

    __slots__ = ("holder", "waiters")

    def __init__(self) -> None:
        self.holder: asyncio.Task[Any] | None = None
        self.waiters: deque[tuple[asyncio.Future[None], asyncio.Task[Any]]] = deque()

    def try_take(self, task: asyncio.Task[Any]) -> bool:
        """Take the turn at once if nobody holds it or waits for it; return whether taken."""
        if self.holder is None and not self.waiters:
            self.holder = task
            return True
        return False

    async def take(self, task: asyncio.Task[Any]) -> None:
        """Wait for the turn, after everybody already waiting."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (waiter, task)
        self.waiters.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the turn was handed to us as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(entry)
            raise

    def release(self) -> None:
        """End the holder's turn and hand it to the next waiting task, if any."""
        while self.waiters:
            waiter, task = self.waiters.popleft()
            if not waiter.done():
                self.holder = task
                waiter.set_result(None)
                return
        self.holder = None


class TaskFrame:
    """What a run knows about the code running in a task: its node, and its dispatch.

    The frame in a task's context is copied by the tasks it starts.
    ``dispatching`` is the sequencer whose event is being dispatched with this
    frame in context: an event sent while it is set joins that dispatch.

    A node's task has one frame for its node events, marked by a plain
    attribute write per event instead of a context variable set and reset per
    event (which costs as much as the rest of the dispatch). The node's body
    runs with just the node's name in context instead, which no dispatch
    marks, so tasks the body starts wait for their turn as any other code
    does. Every other dispatch (custom, error and workflow events) sets a fresh
    frame for its duration.
    """

    __slots__ = ("dispatching", "node", "owner")

    def __init__(self, node: str | None, owner: asyncio.Task[Any]) -> None:
        self.node = node
        self.owner = owner
        self.dispatching: EventSequencer | None = None


_frame: ContextVar[TaskFrame | str | None] = ContextVar("flowhooks_task_frame", default=None)
"""The current task's frame; a node's name alone while the node's body runs."""


def enter_run_task() -> Token[TaskFrame | str | None]:
    """Mark the calling task as a run's own (no node of it is current); reset the token after."""
    return _frame.set(None)


def leave_run_task(token: Token[TaskFrame | str | None]) -> None:
    """Give the calling task back what ``enter_run_task`` replaced."""
    reset_where_set(_frame, token)


def reset_where_set(var: ContextVar[Any], token: Token[Any]) -> bool:
    """Reset ``var`` with ``token``, unless the caller runs in another context than the one
    that set it (a block inside a generator closed by the garbage collector's hook, or
    from another thread: that context is not the caller's to restore, and leaving the
    block must not fail because of it). Returns whether it was reset."""
    try:
        var.reset(token)
    except ValueError:
        return False
    return True


set_frame = _frame.set
"""Make a frame (or a node's bare name) the calling task's frame (per node: no wrapper)."""


def get_frame() -> TaskFrame | str | None:
    """The calling task's frame, or the bare node name its body runs with."""
    return _frame.get()


def in_a_dispatch() -> bool:
    """Whether the calling code is a handler's (or a task it started) during a dispatch."""
    frame = _frame.get()
    return isinstance(frame, TaskFrame) and frame.dispatching is not None


def current_node() -> str | None:
    """The node of the current run whose code this is (``None`` outside its nodes)."""
    frame = _frame.get()
    return frame.node if isinstance(frame, TaskFrame) else frame


SKIPPED, EMIT, TAKEN, TAKEN_WITH_EVENT = 0, 1, 2, 3
"""``EventSequencer.node_turn``'s answers."""


class EventSequencer:
    """Numbers and dispatches one run's events, one at a time, in ``seq`` order.

    Args:
        manager: the run's combined manager.
        identity: the ``Event`` fields every event of the run carries
            (``run_id``, ``workflow_name``, ``parent_run_id``, ``resource_id``,
            ``metadata``).
    """

    __slots__ = (
        "_blank",
        "_generation",
        "_modes",
        "_pending",
        "_started_with",
        "_turn",
        "identity",
        "manager",
        "seq",
    )

    def __init__(self, manager: CallbackManager, identity: dict[str, Any]) -> None:
        self.manager = manager
        self._started_with = manager._entries  # replaced, never changed in place
        self.identity = identity
        self._blank: dict[str, Any] | None = None  # made by the first Event (most runs: none)
        self.seq = 0
        self._turn = DispatchTurn()
        self._pending: deque[tuple[Any, ...]] = deque()
        self._modes: dict[EventType, int] = {}
        self._generation = -1

    def _refresh(self) -> None:
        """Cache, per event type, who takes it; redone when a handler was added or removed.

        A handler added to or removed from the run's own manager while the run
        goes on is not the run's: it dispatches on to the handlers it started
        with, through a copy of the manager as it was, and the change shows at
        the next run. Handlers of managers nested in it change at once.
        """
        manager = self.manager
        if manager._entries is not self._started_with:
            kept = copy.copy(manager)  # shares the registrations, stats included
            kept._entries = self._started_with
            self.manager = manager = kept
        self._modes = manager.modes()
        self._generation = _generation[0]

    def handlers_now(self) -> CallbackManager:
        """The manager the run dispatches to now: the handlers it started with."""
        if self._generation != _generation[0]:
            self._refresh()
        return self.manager

    def node_turn(self, frame: TaskFrame, event_type: EventType) -> int:
        """How a node's own event goes out, decided in one call (twice per node).

        ``SKIPPED``: nobody takes it and nothing is queued: it is numbered here,
        not dispatched. ``TAKEN`` and ``TAKEN_WITH_EVENT``: the turn was free and
        nothing queued: the node's task now holds it, the event is numbered, and
        the node awaits ``manager.dispatch`` itself (with ``node_event``'s
        ``Event`` for ``TAKEN_WITH_EVENT``), then ends with ``give_node_turn``
        (or ``end_node_turn``). ``EMIT``: send it with ``emit``, which waits for
        the turn.
        """
        if self._generation != _generation[0]:
            self._refresh()
        mode = self._modes[event_type]
        pending = self._pending
        if mode == NOBODY and not pending:
            self.seq += 1
            return SKIPPED
        turn = self._turn
        if turn.holder is not None or turn.waiters or pending:
            return EMIT
        turn.holder = frame.owner
        frame.dispatching = self
        self.seq += 1
        return TAKEN_WITH_EVENT if mode == WANT_EVENT else TAKEN

    # -- a node's own events, one coroutine fewer (the hot path of a run) ---------------

    def node_event(
        self,
        event_type: EventType,
        args: tuple[Any, ...],
        node_id: str,
        attempt: int,
        duration: float | None,
    ) -> Event | None:
        """The ``Event`` of a node event whose turn was ``TAKEN_WITH_EVENT`` (so never
        ``None``: some handler of the event type takes ``event=``)."""
        return self._event(event_type, args, node_id, attempt, duration, None, None)

    def give_node_turn(self, frame: TaskFrame) -> bool:
        """End a node event's dispatch under ``node_turn``; False (turn kept) when
        handlers sent events meanwhile: ``end_node_turn`` delivers them first."""
        if self._pending:
            return False
        self._give_turn(frame)
        return True

    async def end_node_turn(self, frame: TaskFrame, error: BaseException | None) -> None:
        """The uncommon end of a node event under ``node_turn``: the events handlers
        sent meanwhile go out (unless the dispatch was interrupted), the turn is given
        back, and the dispatch's error is raised."""
        try:
            if self._pending and (error is None or isinstance(error, Exception)):
                error = await self._deliver_queued() or error
            if error is not None:
                raise error
        finally:
            self._give_turn(frame)

    def revoke_turn(self) -> None:
        """The run ends without its abandoned nodes: a node task stuck in the middle of a
        dispatch (a handler that ignores cancellation) still holds the turn; it is taken
        back, as if that dispatch had ended, so the run's end can dispatch its
        ``workflow_end``. The node's task is cancelled with ``Abandoned``, which ends
        that dispatch where it reaches it; should a stuck handler swallow it too and
        return later, the rest of that event reaches the handlers after it late;
        nothing else of that node does."""
        if self._turn.holder is not None:
            self._turn.release()

    def _give_turn(self, frame: TaskFrame) -> None:
        frame.dispatching = None
        turn = self._turn
        if turn.waiters:
            turn.release()
        else:
            turn.holder = None  # DispatchTurn.release with nobody waiting, inline

    async def emit(
        self,
        event_type: EventType,
        args: tuple[Any, ...],
        node_id: str | None = None,
        attempt: int | None = None,
        duration: float | None = None,
        status: str | None = None,
        name: str | None = None,
        frame: TaskFrame | None = None,
    ) -> None:
        """Dispatch one event, after every earlier one of this run.

        ``frame`` is given for a node's own events: the node task's frame, in
        its context now (see ``TaskFrame``).

        Raises:
            Exception: the first ``raise_error`` handler's exception, after the
                event (and what handlers sent meanwhile) reached every handler.
        """
        if self._generation != _generation[0]:
            self._refresh()
        mode = self._modes[event_type]
        if not mode and not self._pending:
            self.seq += 1
            return
        if frame is None:
            inherited = _frame.get()
            if isinstance(inherited, TaskFrame) and inherited.dispatching is self:
                # Sent while this run's current dispatch runs, by one of its handlers or a
                # task sharing its frame: it goes right after the event, in the same turn.
                self._pending.append((event_type, args, node_id, attempt, duration, status, name))
                return
            task = asyncio.current_task()
            assert task is not None
        else:
            task = frame.owner
        turn = self._turn
        if turn.holder is None and not turn.waiters:  # DispatchTurn.try_take, inline
            turn.holder = task
        else:
            await turn.take(task)
            if self._generation != _generation[0]:  # handlers changed while this event waited
                self._refresh()
            mode = self._modes[event_type]
        token = None
        if frame is None:  # only what this dispatch's handlers start may share its frame
            frame = TaskFrame(current_node(), task)
            token = _frame.set(frame)
        frame.dispatching = self
        try:
            # Events left queued by a dispatch that was cancelled go first: they were sent
            # earlier. Then this event, then what handlers send while it is dispatched.
            error = None
            if self._pending:
                error = await self._deliver_queued()
                if self._generation != _generation[0]:  # a queued event's handler changed them
                    self._refresh()
                mode = self._modes[event_type]
            self.seq += 1
            event = (
                self._event(event_type, args, node_id, attempt, duration, status, name)
                if mode == WANT_EVENT
                else None
            )
            try:
                await self.manager.dispatch(event_type, args, event)
            except Exception as exc:  # a raise_error handler: raised once the queue is empty
                error = exc
            if self._pending:
                error = await self._deliver_queued() or error
            if error is not None:
                raise error
        finally:
            frame.dispatching = None
            if token is not None:
                _frame.reset(token)
            if turn.waiters:
                turn.release()
            else:
                turn.holder = None  # DispatchTurn.release with nobody waiting, inline

    async def _deliver_queued(self) -> Exception | None:
        """Dispatch the events handlers sent during a dispatch, in order.

        Returns the first ``raise_error`` exception instead of stopping at it.
        A cancellation stops here and leaves the rest queued, for the run's next
        event to deliver first.
        """
        first: Exception | None = None
        pending = self._pending
        while pending:
            if self._generation != _generation[0]:  # a handler changed them meanwhile
                self._refresh()
            queued = pending.popleft()
            self.seq += 1
            try:
                await self.manager.dispatch(queued[0], queued[1], self._event(*queued))
            except Exception as exc:
                first = first or exc
        return first

    def _event(
        self,
        event_type: EventType,
        args: tuple[Any, ...],
        node_id: str | None,
        attempt: int | None,
        duration: float | None,
        status: str | None,
        name: str | None,
    ) -> Event | None:
        """Build the ``Event`` numbered ``self.seq``, when some handler asked for it."""
        if self._modes[event_type] != WANT_EVENT:
            return None
        # A copy of the run's blank event, filled in: a dict built from keyword
        # arguments and the identity costs about twice as much, on every event.
        blank = self._blank
        if blank is None:
            blank = self._blank = dict.fromkeys(EVENT_FIELDS)
            blank.update(self.identity)
        values = blank.copy()
        values["id"] = new_id()
        values["type"] = event_type
        values["seq"] = self.seq
        values["node_id"] = node_id
        values["attempt"] = attempt
        values["timestamp"] = datetime.now(UTC)
        values["duration"] = duration
        values["status"] = status
        values["name"] = name
        values["payload"] = args[-1]
        return trusted_event(values)
