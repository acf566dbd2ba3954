"""``CallbackManager``: registers handlers and drives them, one event at a time.

Place in the chain: events -> handler -> hooks -> **manager** -> composites.

The only place that awaits handler methods. Per event it executes the ``Plan``
built when handlers last changed (``_hooks.build_plan``: handlers not overriding
the event are left out, call kinds are told apart once), building the ``Event``
only for handlers asking for ``event=``. Failures are isolated here (logged,
counted, dispatch goes on) unless the handler set ``raise_error``. The clock is
read per call only while timing is on (``timing=True``, or a hook monitor).
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import threading
from collections.abc import Iterable
from inspect import isawaitable
from time import perf_counter
from typing import Any, Final, Self

from loguru import logger

from flowhooks._breaker import CircuitBreaker, check_breaker
from flowhooks._context import run_id_for_logs
from flowhooks._dispatcher import (
    CallerShortcuts,
    Dispatcher,
    _mark_propagating,
    clear_propagating,
    forwards_to,
    is_abandonment,
    must_propagate,
)
from flowhooks._events import Event, EventType, event_from_args
from flowhooks._handler import BaseCallbackHandler
from flowhooks._hooks import (
    CallKind,
    Entry,
    EventStats,
    HandlerStats,
    HookCall,
    Plan,
    PlanStep,
    build_plan,
    check_handler,
    make_entry,
    sort_entries,
)
from flowhooks._invoke import HandlerStillBusy, call_other, count_failure
from flowhooks._logs import failure_text, traceback_suffix
from flowhooks._monitors import hook_monitors, notify_monitors
from flowhooks._plan_cache import PlanTable, _generation, bump_generation, current_generation
from flowhooks._serialize import repr_text

_registering = threading.RLock()
"""Held while a handler is added or removed, by any manager: two threads changing one
manager's handlers at once would each replace the list the other just changed.
Registration is rare; one lock for all keeps managers free of a lock to pickle."""

NOBODY, SOME, WANT_EVENT = 0, 1, 2
"""Who takes an event type (``CallbackManager.modes``): nobody, some, some want ``Event``."""

# The call kinds as module constants: the dispatch loop compares one per call.
_ASYNC: Final = CallKind.ASYNC
_SYNC: Final = CallKind.SYNC
_DISPATCHER: Final = CallKind.DISPATCHER
_ASYNC_EVENT: Final = CallKind.ASYNC_EVENT


def _slot_values(obj: object) -> dict[str, Any]:
    """The values of ``obj``'s slots (a subclass may declare some), by name."""
    names = copyreg._slotnames(type(obj))  # type: ignore[attr-defined]
    return {name: getattr(obj, name) for name in names if hasattr(obj, name)}


class CallbackManager(CallerShortcuts):
    """Holds handlers and dispatches events to them in priority order.

    Handlers for one event run one after another, highest ``priority`` first,
    equal priorities in the order they were added. A handler's exception or
    timeout is logged (handler, event type, run id), counted in ``stats`` and
    isolated, unless the handler sets ``raise_error``. A manager is itself a
    handler, so managers nest.

    Args:
        handlers: handlers to add, each with priority 0.
        timing: measure each call's duration into ``stats`` (``seconds``).
            Off by default: one clock read costs more than a no-op handler
            call. Calls are timed anyway while a hook monitor is registered
            (``flowhooks.add_hook_monitor``).

    Raises:
        TypeError: when ``timing`` is not a bool, or a handler is not valid
            (see ``add_handler``).
    """

    def __init__(
        self, handlers: Iterable[BaseCallbackHandler] | None = None, *, timing: bool = False
    ) -> None:
        if not isinstance(timing, bool):
            msg = f"CallbackManager(timing=...) must be True or False, got {timing!r}"
            raise TypeError(msg)
        self._timing = timing
        self._entries: list[Entry] = []
        self._order = 0
        self._plan_generation: int
        self._planned: bool
        """Whether plans were ever built (from the start of the first build): from then on
        a change must invalidate them, and plans above it, at once."""
        self._plans: dict[EventType, Plan]
        self._modes: dict[EventType, int]
        self._table: PlanTable
        self._plan_entries: dict[EventType, tuple[tuple[PlanStep, ...], bool, bool]]
        """Per event type, what ``dispatch`` needs: ``(steps, wants_event, untimed)``;
        emptied in place when plans go stale (``PlanTable``)."""
        self._plan_afresh()
        self._combinations: list[Any] | None = None
        """This manager's last combinations with workflows' managers (``flowhooks._combined``)."""
        if isinstance(handlers, BaseCallbackHandler) or not isinstance(handlers, Iterable | None):
            what = "one handler: " if isinstance(handlers, BaseCallbackHandler) else ""
            msg = (
                f"CallbackManager takes a list of handlers, got {what}{type(handlers).__name__}"
                f" ({handlers!r}); write CallbackManager([handler])"
            )
            raise TypeError(msg)
        for handler in handlers or ():
            self.add_handler(handler)

    @property
    def timing(self) -> bool:
        """Whether this manager times every call into ``stats`` (set at construction)."""
        return self._timing

    # -- registration -----------------------------------------------------------------

    def add_handler(
        self,
        handler: BaseCallbackHandler,
        priority: int = 0,
        *,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """Register ``handler``; higher ``priority`` runs first, ties in insertion order.

        Args:
            handler: the handler instance.
            priority: higher runs first; equal priorities in insertion order.
            breaker: a ``CircuitBreaker`` guarding ``handler``; ``None`` uses the
                handler's ``breaker`` attribute (``None`` on most handlers, one by
                default on the built-in handlers that call a network service). Its
                state for ``handler`` is kept by the breaker, shared by every run and
                every manager the handler is registered with.

        Raises:
            TypeError: when ``handler`` is not a handler instance, one of its
                ``on_*`` overrides cannot take the event's documented arguments,
                or ``breaker`` is not a ``CircuitBreaker``.
            ValueError: when adding the manager to itself or to something it
                holds (a manager or composite that already forwards events to
                it: each would pass every event to the other forever), a handler
                instance that is already registered (it would get every event
                twice; remove it first to change its priority), or a breaker
                for a manager or composite.
        """
        checked = check_handler(handler)
        breaker = check_breaker(breaker, "add_handler(breaker=...)")
        with _registering:
            self._add(checked, priority, breaker)
        self._changed()

    def _add(self, checked: BaseCallbackHandler, priority: int, breaker: Any) -> None:
        if checked is self:
            msg = "cannot add a CallbackManager to itself"
            raise ValueError(msg)
        if forwards_to(checked, self, set()):
            msg = (
                f"cannot add {repr_text(checked)}: it already forwards events to this "
                "CallbackManager (through the managers or composites it holds), so the two "
                "would pass every event to each other forever"
            )
            raise ValueError(msg)
        for entry in self._entries:
            if entry.handler is checked:
                msg = (
                    f"{entry.label} ({repr_text(checked)}) is already registered with this "
                    f"CallbackManager (priority {entry.priority}); a handler is added once, "
                    "remove it first to change its priority"
                )
                raise ValueError(msg)
        label = self._label_for(checked)
        added = make_entry(
            checked, priority=priority, order=self._order, label=label, breaker=breaker
        )
        self._order += 1
        # A new list, never the old one changed: whoever kept the old one (a combination
        # of managers, a dispatch under way) knows by its identity that it is stale.
        self._entries = sort_entries([*self._entries, added])

    def remove_handler(self, handler: BaseCallbackHandler) -> None:
        """Unregister ``handler``.

        Raises:
            ValueError: when ``handler`` was never added (or already removed).
        """
        with _registering:
            self._remove(handler)
        self._changed()

    def _remove(self, handler: BaseCallbackHandler) -> None:
        for i, entry in enumerate(self._entries):
            if entry.handler is handler:
                self._entries = self._entries[:i] + self._entries[i + 1 :]
                return
        registered = ", ".join(e.handler.__class__.__name__ for e in self._entries) or "none"
        msg = (
            f"{repr_text(handler)} is not registered with this CallbackManager "
            f"(registered: {registered})"
        )
        raise ValueError(msg)

    def _changed(self) -> None:
        """Invalidate this manager's plans, and those of managers it is nested in.

        A manager whose plans were never built cannot be cached by any parent
        yet (the usual case: a manager being built), so it invalidates nothing
        else. One whose plans are being built right now (a handler added from
        another thread) invalidates them too: that build is then not kept.
        """
        if self._planned:
            self._plan_generation = -1
            bump_generation()

    def __copy__(self) -> Self:
        """A manager with the same registrations (shared, with their stats) and plans of its
        own: adding or removing a handler on either one leaves the other as it was."""
        cls = type(self)
        twin = cls.__new__(cls)
        twin.__dict__.update(self.__dict__)
        for name, value in _slot_values(self).items():  # a subclass's slots
            setattr(twin, name, value)
        twin._entries = list(self._entries)
        twin._combinations = None
        twin._plan_afresh()
        return twin

    def __getstate__(self) -> dict[str, Any] | tuple[dict[str, Any], dict[str, Any]]:
        """Pickled and deep-copied without its caches: combinations, plans and plan table.

        Plans are per process (the plan generation counts this process's
        changes), so a copy plans afresh. A subclass's slots come along, as the
        second item of a ``(state, slots)`` pair.
        """
        state = self.__dict__.copy()
        for cache in ("_table", "_plan_entries", "_plans", "_modes", "_combinations"):
            state.pop(cache, None)
        slots = _slot_values(self)
        return (state, slots) if slots else state

    def __setstate__(
        self, state: dict[str, Any] | tuple[dict[str, Any] | None, dict[str, Any]]
    ) -> None:
        """Restored with its registrations; it plans afresh at its first event."""
        slots: dict[str, Any] = {}
        if isinstance(state, tuple):
            given, slots = state
            state = given or {}
        self.__dict__.update(state)
        for name, value in slots.items():
            setattr(self, name, value)
        self._combinations = None
        self._plan_afresh()

    def _plan_afresh(self) -> None:
        """Forget every plan: a new plan table, rebuilt at the next event or ``modes()``."""
        self._plan_generation = -1
        self._planned = False
        self._plans, self._modes = {}, {}
        self._table = PlanTable(self._replan)
        self._plan_entries = self._table.entries

    @property
    def handlers(self) -> tuple[BaseCallbackHandler, ...]:
        """The registered handlers, in dispatch order."""
        return tuple(e.handler for e in self._entries)

    def _below(self) -> tuple[BaseCallbackHandler, ...]:
        return tuple(e.handler for e in self._entries)

    @property
    def entries(self) -> tuple[Entry, ...]:
        """The registrations (handler, priority, order), in dispatch order."""
        return tuple(self._entries)

    @property
    def stats(self) -> HandlerStats:
        """Calls, errors, timeouts and total seconds per handler and event type.

        Keys are handler labels: the class name, with ``#2``, ``#3`` ... for
        further handlers of the same class; the handler object works as a key
        too. Per handler, keys are event types (``EventType.NODE_START``,
        ``"node_start"`` or ``"on_node_start"``); only overridden events appear.
        ``calls``, ``errors`` and ``timeouts`` are exact; ``seconds`` grows
        only while timing is on (``timing=True``, or a hook monitor registered).
        """
        return HandlerStats(
            (e.handler, e.label, EventStats({t: c.stats for t, c in e.calls.items()}))
            for e in self._entries
        )

    def _label_for(self, handler: BaseCallbackHandler) -> str:
        base = type(handler).__name__
        taken = {e.label for e in self._entries}
        if base not in taken:
            return base
        n = 2
        while f"{base}#{n}" in taken:
            n += 1
        return f"{base}#{n}"

    @classmethod
    def combine(cls, *managers: CallbackManager | None) -> CallbackManager:
        """Return a manager dispatching to the handlers of ``managers`` in one order.

        The order is by priority, then the managers' order, then each
        manager's own order. A handler registered with several of them is
        kept once, where it comes first. The registrations (and so their
        stats) are shared with the given managers, not copied.
        """
        present = [m for m in managers if m is not None and m._entries]
        if len(present) == 1:
            return present[0]
        combined = cls(timing=any(m._timing for m in present))
        ranked: list[tuple[int, int, int, Entry]] = []
        for rank, manager in enumerate(present):
            ranked.extend((-e.priority, rank, e.order, e) for e in manager._entries)
        ranked.sort(key=lambda item: item[:3])
        seen: set[int] = set()
        for *_, entry in ranked:  # a handler given twice (workflow and run) gets each event once
            if id(entry.handler) not in seen:
                seen.add(id(entry.handler))
                combined._entries.append(entry)
        return combined

    # -- dispatch ---------------------------------------------------------------------

    def _replan(self) -> dict[EventType, tuple[tuple[PlanStep, ...], bool, bool]]:
        """Rebuild the plan of every event type (after a handler change, not per event).

        Returns what ``dispatch`` looks up per event type (its ``PlanTable``
        is filled with it): the steps, whether to build the ``Event``, and
        whether the untimed two-argument loop takes the event (timing off, no
        hook monitor, not ``error``).
        """
        self._planned = True
        generation = current_generation()
        entries = self._entries
        self._plans = plans = {t: build_plan(entries, t) for t in EventType}
        self._modes = {
            t: (WANT_EVENT if plan.wants_event else SOME) if plan.calls else NOBODY
            for t, plan in plans.items()
        }
        self._plan_generation = generation
        untimed = not (self._timing or hook_monitors)
        return {
            t: (plan.steps, plan.wants_event, untimed and len(t.arg_names) == 2)
            for t, plan in plans.items()
        }

    def _ensure_plans(self) -> None:
        """Rebuild ``_plans`` and ``_modes`` if a change made them stale (dispatch reads the
        table, which rebuilds itself)."""
        if self._plan_generation != _generation[0]:
            self._table.refresh()

    def modes(self) -> dict[EventType, int]:
        """Per event type: ``NOBODY`` takes it, ``SOME`` handler does, or some also
        ``WANT_EVENT`` (the ``Event``). Each run's sequencer reads it once, not per type."""
        self._ensure_plans()
        return self._modes

    def handles(self, event_type: EventType) -> bool:
        """Return whether any registered handler reacts to ``event_type``."""
        self._ensure_plans()
        return bool(self._plans[event_type].calls)

    def wants_event(self, event_type: EventType) -> bool:
        """Return whether any handler (at any depth) asked for ``event=`` on ``event_type``."""
        self._ensure_plans()
        return self._plans[event_type].wants_event

    async def dispatch(  # noqa: C901 - the hot loop of every event, dense on purpose
        self,
        event_type: EventType,
        args: tuple[Any, ...],
        event: Event | None,
        caller: bool = False,
    ) -> None:
        """Call every handler of ``event_type`` in order, isolating their failures.

        Two loops. The fast one takes the events of a run with timing off (the
        default; every event type but ``error`` has two arguments): no clock,
        and the arguments passed as two names, since a ``fn(*args)`` call of a
        bound method costs a tenth of a no-op handler call more. The general
        one takes the rest: timing on, hook monitors, ``error`` events. Async
        ``event=`` handlers (the built-in handlers are) are called in both; the
        less common call kinds (sync ``event=``, breaker, timeout, thread) go
        through ``call_other``.
        """
        try:
            steps, wants_event, untimed = self._plan_entries[event_type]
        except KeyError:  # emptied by a handler change (or never filled): rebuilt here
            steps, wants_event, untimed = self._table.lookup(event_type)
        if not steps:
            return
        if wants_event and event is None:
            event = event_from_args(event_type, args)
        deferred: Exception | None = None
        halted: BaseException | None = None
        if untimed:
            try:
                first, second = args
            except ValueError:  # a hand-made call with other arguments: the general loop
                untimed = False
        if untimed:
            for kind, fn, stats, call in steps:
                try:
                    if kind is _ASYNC:
                        await fn(first, second)
                    elif kind is _SYNC:
                        fn(first, second)  # (its first call, SYNC_FIRST, checked what it returns)
                    elif kind is _ASYNC_EVENT:
                        await fn(first, second, event=event)
                    elif kind is _DISPATCHER:
                        await fn(event_type, args, event)
                    elif not await call_other(kind, call, args, event):
                        continue  # skipped by its circuit breaker
                except Exception as exc:
                    if self._failed(call, exc, event, 0.0):
                        # Every handler still gets the event; the first such error is raised after.
                        deferred = deferred or exc
                    continue
                except BaseException as exc:  # CancelledError, KeyboardInterrupt, SystemExit, ...
                    # Never swallowed, but raised only once every handler has had the event
                    # (no handler sees a run's end without its start, nor a gap in its seq),
                    if is_abandonment(exc):  # unless its run ended without its node: at once
                        raise
                    halted = halted or exc
                    stats.calls += 1
                    stats.errors += 1
                    continue
                stats.calls += 1
        else:
            # Timed (truthy): one clock read per call, each call ends where the next
            # starts (a monitor's own time and a failure's log record are nobody's).
            # hook_monitors is a list, truthy while a monitor is registered.
            monitors = hook_monitors
            timed = self._timing or monitors
            last = perf_counter() if timed else 0.0
            for kind, fn, stats, call in steps:
                try:
                    if kind is _ASYNC:
                        await fn(*args)
                    elif kind is _SYNC:
                        fn(*args)
                    elif kind is _ASYNC_EVENT:
                        await fn(*args, event=event)
                    elif kind is _DISPATCHER:
                        await fn(event_type, args, event)
                    elif not await call_other(kind, call, args, event):
                        if timed:
                            last = perf_counter()
                        continue
                except Exception as exc:
                    elapsed = perf_counter() - last if timed else 0.0
                    if self._failed(call, exc, event, elapsed):
                        deferred = deferred or exc
                    if monitors and kind is not _DISPATCHER:
                        notify_monitors(call, elapsed if timed else None, exc)
                    if timed:
                        last = perf_counter()
                    continue
                except BaseException as exc:
                    if is_abandonment(exc):
                        raise
                    halted = halted or exc
                    stats.calls += 1
                    stats.errors += 1
                    if monitors and kind is not _DISPATCHER:
                        notify_monitors(call, perf_counter() - last if timed else None, exc)
                    if timed:
                        last = perf_counter()
                    continue
                stats.calls += 1
                if timed:
                    now = perf_counter()
                    stats.seconds += now - last
                    if monitors and kind is not _DISPATCHER:
                        notify_monitors(call, now - last, None)
                        now = perf_counter()
                    last = now
        if halted is not None:
            raise halted
        if deferred is not None:
            if caller:  # it leaves the managers here, for the caller
                clear_propagating(deferred)
            raise deferred

    def _failed(self, call: HookCall, exc: Exception, event: Event | None, elapsed: float) -> bool:
        """Count and log a failed call; return True when ``exc`` must propagate."""
        timed_out = count_failure(call, exc, elapsed)
        if call.raise_error or must_propagate(exc):
            _mark_propagating(exc)
            return True
        run_id = event.run_id if event is not None else run_id_for_logs()
        if isinstance(exc, HandlerStillBusy):
            what, trace = "was skipped (its earlier call timed out and still runs)", ""
        elif timed_out:
            what, trace = "timed out", ""
        else:
            # The traceback ends the record of a handler's first failure on an event
            # type; later failures are one line each (stats keep the count).
            what = "raised " + failure_text(exc, with_traceback=False)
            trace = traceback_suffix(exc) if call.stats.errors == 1 else ""
        logger.bind(handler=call.label, event_type=call.event_type.value, run_id=run_id).error(
            "Callback {handler} {what} on {event_type} (run {run_id}); "
            "isolated, dispatch goes on{trace}",
            handler=call.label,
            what=what,
            event_type=call.event_type.value,
            run_id=run_id or "-",
            trace=trace,
        )
        return False

    # -- lifecycle --------------------------------------------------------------------

    async def flush(self) -> None:
        """Deliver everything buffered by the handlers (batches, background queues)."""
        await self._call_closers("flush")

    async def aclose(self) -> None:
        """Flush, then release every handler's resources (timers, tasks, connections); every
        handler is closed even when a flush raised, and the flush's error is raised after."""
        try:
            await self._call_closers("flush")
        except asyncio.CancelledError:
            raise  # the caller stops waiting: closing now would keep it waiting
        except BaseException:
            with contextlib.suppress(Exception):  # the flush's error is the one to raise
                await self._call_closers("aclose")
            raise
        await self._call_closers("aclose")

    async def _call_closers(self, name: str) -> None:
        """Call every handler's ``flush``/``aclose``; what one raises is raised once all were
        called (a handler's batch is never left behind because an earlier one failed)."""
        deferred: BaseException | None = None
        for entry in list(self._entries):
            if name not in entry.closers and not isinstance(entry.handler, Dispatcher):
                continue
            try:
                returned = getattr(entry.handler, name)()
                if isawaitable(returned):  # a plain `def flush(self)` override is fine too
                    await returned
            except Exception as exc:
                if entry.handler.raise_error or must_propagate(exc):
                    _mark_propagating(exc)
                    deferred = deferred or exc
                    continue
                logger.error(
                    "Callback {handler}.{method}() raised {error}; isolated",
                    handler=type(entry.handler).__name__,
                    method=name,
                    error=failure_text(exc, with_traceback=True),
                )
            except BaseException as exc:  # CancelledError, KeyboardInterrupt: after the others
                if deferred is None or isinstance(deferred, Exception):
                    deferred = exc  # the first of these wins over any Exception
        if deferred is not None:
            raise deferred

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        names = ", ".join(type(h).__name__ for h in self.handlers)
        return f"{type(self).__name__}([{names}])"


class PriorityCallbackManager(CallbackManager):
    """The same as ``CallbackManager``; priorities are built in. Kept as a name."""
