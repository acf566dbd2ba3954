"""Hook calls, their stats, and dispatch plans: pure, synchronous decisions.

Place in the chain: events -> handler -> **hooks** -> manager -> composites.

When a handler is added, each of its ``on_*`` overrides is inspected once and
turned into a ``HookCall``: the bound method, whether it is async, whether it
wants ``event=``, its timeout and thread settings, and its ``HookStats``.
``build_plan`` turns the registered entries into the ``Plan`` for one event
type: which calls, in what order, and whether an ``Event`` must be built.
The manager executes exactly that plan (rebuilt only when handlers change,
never per event), so the property tests of ``build_plan`` test what runs.
Nothing here awaits.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from flowhooks._breaker import BreakerState, CircuitBreaker, check_breaker
from flowhooks._events import EVENT_ARGS, EventType, parse_event_type
from flowhooks._handler import BaseCallbackHandler
from flowhooks._hook_names import HookNameWarning as HookNameWarning
from flowhooks._hook_names import warn_misspelled_hooks
from flowhooks._serialize import repr_text
from flowhooks._validate import ParameterTypeError, check_seconds

if TYPE_CHECKING:
    from flowhooks._dispatcher import Dispatcher


class CallKind(IntEnum):
    """How the manager invokes one hook; decided once per hook when it is added."""

    ASYNC = 0  # await fn(*args)
    SYNC = 1  # fn(*args), inline on the loop
    DISPATCHER = 2  # a nested manager or composite: await dispatcher.dispatch(...)
    ASYNC_EVENT = 3  # await fn(*args, event=event)
    SYNC_EVENT = 4  # fn(*args, event=event), inline on the loop
    GENERAL = 5  # needs a timeout or a worker thread
    GUARDED = 6  # has a circuit breaker: admitted first, then called as GENERAL
    SYNC_FIRST = 7  # a plain def's first call: SYNC after it, or ASYNC if it returned a coroutine


@dataclass(slots=True)
class HookStats:
    """Counters for one handler and one event type.

    ``calls``, ``errors`` and ``timeouts`` are always exact. ``seconds`` is
    measured only while timing is on (``CallbackManager(timing=True)``, or
    while any hook monitor is registered); otherwise it stays ``0.0``.

    Attributes:
        calls: how many times the handler was called for this event type.
        errors: calls that raised.
        timeouts: calls that exceeded the handler's ``timeout``.
        seconds: total time spent in those calls, while timing was on.
        skipped: events not delivered because the handler's circuit breaker
            was open, or because its earlier threaded call timed out and still
            ran when this one's ``timeout`` ran out too (not counted in ``calls``).
    """

    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    seconds: float = 0.0
    skipped: int = 0

    @property
    def total_seconds(self) -> float:
        """Total time spent in the handler for this event type (same as ``seconds``)."""
        return self.seconds


class EventStats(dict[EventType, HookStats]):
    """One handler's ``HookStats`` per event type.

    Keys are ``EventType`` members; ``"node_start"`` and ``"on_node_start"``
    work as keys too.
    """

    def __getitem__(self, key: object) -> HookStats:
        return super().__getitem__(_event_key(key))

    def __contains__(self, key: object) -> bool:
        try:
            return super().__contains__(_event_key(key))
        except KeyError:
            return False

    def get(self, key: object, default: Any = None) -> Any:
        """Return the stats for ``key``, or ``default`` when the handler does not take it."""
        try:
            return self[key]
        except KeyError:
            return default


class HandlerStats(dict[str, EventStats]):
    """``EventStats`` per registered handler, keyed by its label.

    The handler object itself works as a key too: ``manager.stats[handler]``.
    """

    def __init__(self, items: Iterable[tuple[BaseCallbackHandler, str, EventStats]]) -> None:
        rows = list(items)
        super().__init__((label, stats) for _, label, stats in rows)
        self._labels = {id(handler): label for handler, label, _ in rows}

    def __getitem__(self, key: object) -> EventStats:
        if isinstance(key, BaseCallbackHandler):
            if id(key) not in self._labels:
                raise KeyError(key)
            key = self._labels[id(key)]
        return super().__getitem__(key)  # type: ignore[index]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, BaseCallbackHandler):
            return id(key) in self._labels
        return super().__contains__(key)

    def get(self, key: object, default: Any = None) -> Any:
        """Return the stats for ``key`` (label or handler), or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default


def _event_key(key: object) -> EventType:
    if isinstance(key, EventType):
        return key
    if isinstance(key, str):
        try:
            return parse_event_type(key)
        except ValueError:
            raise KeyError(key) from None
    raise KeyError(key)


class ThreadSlot:
    """One handler's worker-thread state, shared by its hooks.

    A threaded call that timed out keeps running in its thread (``stuck`` is
    set meanwhile); the handler's later calls wait for it within their own
    ``timeout`` and are skipped when it does not return in that time, so they
    never overlap it, except ``workflow_end``, which runs at once in a thread
    of its own (``_invoke``). Calls that did not time out are not affected.
    """

    __slots__ = ("stuck",)

    def __init__(self) -> None:
        self.stuck: ThreadCall | None = None


class ThreadCall:
    """One threaded call; ``finished`` is set by its thread when it returns."""

    __slots__ = ("finished",)

    def __init__(self) -> None:
        self.finished = False


@dataclass(slots=True, eq=False)
class HookCall:
    """One handler method, ready to be invoked for one event type."""

    handler: BaseCallbackHandler
    label: str
    event_type: EventType
    fn: Callable[..., Any]
    kind: CallKind
    is_async: bool
    wants_event: bool
    raise_error: bool
    timeout: float | None
    in_thread: bool
    stats: HookStats = field(default_factory=HookStats)
    thread_slot: ThreadSlot | None = None
    breaker: BreakerState | None = None  # set for CallKind.GUARDED

    @property
    def dispatcher(self) -> Dispatcher:
        """The nested dispatcher, for ``CallKind.DISPATCHER`` calls."""
        return self.handler  # type: ignore[return-value]


@dataclass(slots=True, eq=False)
class Entry:
    """A handler registered with one manager: its priority, order and hook calls."""

    handler: BaseCallbackHandler
    label: str
    priority: int
    order: int
    calls: dict[EventType, HookCall]
    closers: tuple[str, ...]  # "flush" / "aclose" when overridden
    breaker: BreakerState | None = None


def _overrides(handler: BaseCallbackHandler, name: str) -> bool:
    if name in getattr(handler, "__dict__", {}):
        return True
    return getattr(type(handler), name, None) is not getattr(BaseCallbackHandler, name)


def _accepts_event(sig: inspect.Signature) -> bool:
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return True
        if p.name == "event" and p.kind is not inspect.Parameter.POSITIONAL_ONLY:
            return True
    return False


def _describe(handler: BaseCallbackHandler, method: str) -> str:
    return f"{type(handler).__name__}.{method}"


_Shape = tuple[Any, Any, Any, bool, bool]
"""A function's code, defaults and keyword defaults, then whether it takes ``event=``
and whether it is async."""

_shapes: weakref.WeakKeyDictionary[Callable[..., Any], dict[EventType, _Shape]] = (
    weakref.WeakKeyDictionary()
)
"""``_call_shape``'s answers for plain functions bound to a handler, by function: a
handler class registered again (a ``callbacks=[...]`` list makes a manager per run)
is not inspected again, unless its function was edited in place since (a reloader
swapping ``__code__``)."""


def _unwrapped(fn: Callable[..., Any]) -> object:
    """What ``functools.wraps`` decorators around ``fn`` wrap (``fn`` when none; never raises)."""
    try:
        return inspect.unwrap(fn)
    except Exception:  # a cycle of __wrapped__, or an attribute that raises
        return fn


def _call_shape(
    handler: BaseCallbackHandler, method_name: str, fn: Callable[..., Any], event_type: EventType
) -> tuple[bool, bool]:
    """Whether ``fn`` takes ``event=`` and whether it is async, after checking that it can
    take the event's positional arguments (a ``TypeError`` saying how to fix it if not)."""
    func = getattr(fn, "__func__", None)
    if (
        getattr(fn, "__self__", None) is not handler
        or not inspect.isfunction(func)
        or hasattr(func, "__wrapped__")
        or hasattr(func, "__signature__")
    ):
        func = None  # not a plain function bound to the handler: inspected each time
    if func is not None:
        known = _shapes.get(func, {}).get(event_type)
        if (
            known is not None
            and known[0] is func.__code__
            and known[1] is func.__defaults__
            and known[2] is func.__kwdefaults__
        ):
            return known[3], known[4]
    arg_names = EVENT_ARGS[event_type]
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        sig = None
    wants_event = sig is not None and _accepts_event(sig)
    if sig is not None:
        try:
            if wants_event:
                sig.bind(*arg_names, event=None)
            else:
                sig.bind(*arg_names)
        except TypeError as exc:
            expected = ", ".join(arg_names)
            msg = (
                f"{_describe(handler, method_name)}{sig} cannot be called with the "
                f"arguments of the {event_type.value!r} event ({expected}): {exc}. "
                f"Define it as `def {method_name}(self, {expected})`, optionally "
                "with a keyword-only `event` parameter to receive the full Event."
            )
            raise ParameterTypeError(msg) from None
    is_async = (
        inspect.iscoroutinefunction(fn)
        or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )
        or inspect.iscoroutinefunction(_unwrapped(fn))  # an async method behind a decorator
    )
    if func is not None:
        shape = (func.__code__, func.__defaults__, func.__kwdefaults__, wants_event, is_async)
        _shapes.setdefault(func, {})[event_type] = shape
    return wants_event, is_async


_NO_DEFAULT: Any = object()


def read_attribute(
    handler: object, name: str, default: Any = _NO_DEFAULT, *, as_bool: bool = False
) -> Any:
    """``handler.name`` (``default`` when missing), read when the handler is added.

    A property or ``__getattr__`` of the handler's that raises (or an option whose
    truth cannot be told) is refused with a ``TypeError`` naming the handler and
    the attribute, not let out as the handler's own exception.
    """
    try:
        if default is _NO_DEFAULT:
            value = getattr(handler, name)
        else:
            value = getattr(handler, name, default)
    except Exception as exc:
        msg = (
            f"cannot add {type(handler).__name__}: reading its {name!r} raised "
            f"{type(exc).__name__}: {exc}; a handler's methods and options must be "
            "readable when it is added"
        )
        raise ParameterTypeError(msg) from exc
    if as_bool and not isinstance(value, bool):
        msg = (
            f"cannot add {type(handler).__name__}: its {name!r} must be True or False, "
            f"got {repr_text(value)} ({type(value).__name__})"
        )
        raise ParameterTypeError(msg)
    return value


def inspect_hook(
    handler: BaseCallbackHandler,
    event_type: EventType,
    label: str,
    thread_slot: ThreadSlot | None = None,
) -> HookCall:
    """Check one overridden method's signature and turn it into a ``HookCall``.

    Raises:
        TypeError: when the method cannot take the event's documented
            positional arguments, saying which arguments it must accept.
    """
    method_name = event_type.method_name
    fn = read_attribute(handler, method_name)
    if not callable(fn):
        msg = f"{_describe(handler, method_name)} must be a method, got {fn!r}"
        raise ParameterTypeError(msg)
    wants_event, is_async = _call_shape(handler, method_name, fn, event_type)
    timeout = read_attribute(handler, "timeout", None)
    in_thread = read_attribute(handler, "run_in_thread", False, as_bool=True) and not is_async
    try:
        timeout = check_seconds(f"{type(handler).__name__}.timeout", timeout, allow_none=True)
    except ValueError as exc:  # reported as a TypeError by add_handler, as every handler flaw
        raise ParameterTypeError(str(exc)) from None
    if in_thread or (timeout is not None and is_async):
        kind = CallKind.GENERAL
    elif wants_event:
        kind = CallKind.ASYNC_EVENT if is_async else CallKind.SYNC_EVENT
    else:
        kind = CallKind.ASYNC if is_async else CallKind.SYNC_FIRST
    return HookCall(
        handler=handler,
        label=label,
        event_type=event_type,
        fn=fn,
        kind=kind,
        is_async=is_async,
        wants_event=wants_event,
        raise_error=read_attribute(handler, "raise_error", False, as_bool=True),
        timeout=float(timeout) if timeout is not None else None,
        in_thread=in_thread,
        thread_slot=(thread_slot or ThreadSlot()) if in_thread else None,
    )


def check_handler(handler: object) -> BaseCallbackHandler:
    """Return ``handler`` if it is a handler instance, else raise a helpful ``TypeError``."""
    if isinstance(handler, BaseCallbackHandler):
        return handler
    if isinstance(handler, type) and issubclass(handler, BaseCallbackHandler):
        msg = (
            f"expected a BaseCallbackHandler instance, got the class {handler.__name__}; "
            f"did you mean {handler.__name__}()?"
        )
        raise TypeError(msg)
    msg = (
        f"expected a BaseCallbackHandler instance, got {repr_text(handler)} "
        f"({type(handler).__name__}); subclass flowhooks.BaseCallbackHandler and "
        "override the on_* methods you need"
    )
    raise TypeError(msg)


def make_entry(
    handler: BaseCallbackHandler,
    *,
    priority: int,
    order: int,
    label: str,
    breaker: CircuitBreaker | None = None,
) -> Entry:
    """Inspect ``handler`` once: which events it handles and how each is called.

    ``breaker`` (else the handler's ``breaker`` attribute) guards its own
    methods: they become ``CallKind.GUARDED`` calls sharing the handler's
    ``BreakerState`` under that breaker (the same for every registration of
    the handler, so an open breaker stays open across runs and managers). A
    nested manager or composite is not guarded itself (it isolates its
    handlers' failures); the handlers inside it carry their own.

    Raises:
        TypeError: for a bad priority or breaker, a method with a wrong signature, or an
            attribute that raises when read.
        ValueError: when ``breaker`` is given for a manager or composite.
    """
    from flowhooks._dispatcher import Dispatcher  # composites subclass the handler base

    if isinstance(priority, bool) or not isinstance(priority, int):
        msg = f"priority must be an int (higher runs first; may be negative), got {priority!r}"
        raise ParameterTypeError(msg)
    if not isinstance(handler, Dispatcher):
        warn_misspelled_hooks(type(handler))
    try:
        return _inspected(handler, priority, order, label, breaker)
    except ParameterTypeError:  # what flowhooks found wrong, said already
        raise
    except Exception as exc:  # the handler's own code, run while it was looked at
        msg = (
            f"cannot add {label}: looking at its methods and options raised "
            f"{type(exc).__name__}: {exc}; a handler's methods and options must be "
            "readable when it is added"
        )
        raise ParameterTypeError(msg) from exc


def _inspected(
    handler: BaseCallbackHandler,
    priority: int,
    order: int,
    label: str,
    breaker: CircuitBreaker | None,
) -> Entry:
    """``make_entry``'s inspection of a handler whose priority was checked."""
    from flowhooks._dispatcher import Dispatcher

    calls: dict[EventType, HookCall] = {}
    thread_slot = ThreadSlot()  # one per handler: its hooks share one worker-thread lane
    for event_type in EventType:
        if isinstance(handler, Dispatcher):
            calls[event_type] = HookCall(
                handler=handler,
                label=label,
                event_type=event_type,
                fn=handler.dispatch,
                kind=CallKind.DISPATCHER,
                is_async=True,
                wants_event=False,
                raise_error=read_attribute(handler, "raise_error", False, as_bool=True),
                timeout=None,
                in_thread=False,
            )
        elif _overrides(handler, event_type.method_name):
            calls[event_type] = inspect_hook(handler, event_type, label, thread_slot)
    closers = tuple(name for name in ("flush", "aclose") if _overrides(handler, name))
    state = _guard(handler, label, breaker, calls)
    return Entry(
        handler=handler,
        label=label,
        priority=priority,
        order=order,
        calls=calls,
        closers=closers,
        breaker=state,
    )


def _guard(
    handler: BaseCallbackHandler,
    label: str,
    breaker: CircuitBreaker | None,
    calls: dict[EventType, HookCall],
) -> BreakerState | None:
    """Put ``calls`` under one breaker state, when the handler has a breaker."""
    from flowhooks._dispatcher import Dispatcher

    if isinstance(handler, Dispatcher):
        if breaker is not None:
            msg = (
                f"add_handler(breaker=...) guards a handler's own methods, not a manager or "
                f"composite ({label}); give the breaker to the handlers inside it"
            )
            raise ParameterTypeError(msg)
        return None
    if breaker is None:
        breaker = check_breaker(
            read_attribute(handler, "breaker", None), f"{type(handler).__name__}.breaker"
        )
        if breaker is None:
            return None
    state = breaker.state_for(handler, label)  # shared by every registration of handler
    for call in calls.values():
        call.kind = CallKind.GUARDED
        call.breaker = state
    return state


PlanStep = tuple[CallKind, Callable[..., Any], HookStats, HookCall]
"""One call of a plan as the manager's loop unpacks it: kind, function, stats, call."""


class Plan:
    """What a manager does for one event type: the calls in order, and whether to build an Event.

    Attributes:
        calls: the hook calls to make, in dispatch order.
        wants_event: whether any of them (or any handler below a nested
            manager or composite among them) asked for ``event=``.
        steps: ``calls`` as ``(kind, fn, stats, call)`` tuples, which the
            manager's loop unpacks in one step instead of reading four attributes.
    """

    __slots__ = ("calls", "steps", "wants_event")

    def __init__(self, calls: tuple[HookCall, ...], wants_event: bool) -> None:
        self.calls = calls
        self.wants_event = wants_event
        self.steps: tuple[PlanStep, ...] = tuple((c.kind, c.fn, c.stats, c) for c in calls)

    def __repr__(self) -> str:
        labels = ", ".join(c.label for c in self.calls)
        return f"Plan([{labels}], wants_event={self.wants_event})"


def build_plan(entries: Iterable[Entry], event_type: EventType) -> Plan:
    """Return the plan for ``event_type``: highest priority first, ties in the order given.

    ``entries`` come in registration order (or any order to keep among equal
    priorities, as ``CallbackManager.combine`` gives). A handler that does not
    override the event is left out, and so is a nested manager or composite
    with nothing below it that handles the event.
    """
    calls: list[HookCall] = []
    wants_event = False
    for entry in sorted(entries, key=_by_priority):
        call = entry.calls.get(event_type)
        if call is None:
            continue
        if call.kind is CallKind.DISPATCHER:
            dispatcher = call.dispatcher
            if not dispatcher.handles(event_type):
                continue
            wants_event = wants_event or dispatcher.wants_event(event_type)
        else:
            wants_event = wants_event or call.wants_event
        calls.append(call)
    return Plan(tuple(calls), wants_event)


def _by_priority(entry: Entry) -> int:
    return -entry.priority


def sort_entries(entries: Sequence[Entry]) -> list[Entry]:
    """Return ``entries`` in dispatch order: priority descending, then registration order."""
    return sorted(entries, key=lambda e: (-e.priority, e.order))
