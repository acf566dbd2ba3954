"""``Dispatcher``: a handler that forwards whole events to other handlers.

The manager and every composite are dispatchers. A parent manager hands a
dispatcher the event type, the positional arguments and (when somebody below
asked for it) the ``Event`` in one call, instead of calling its ``on_*``
methods, so nesting costs one call per level and builds the ``Event`` once.
"""

from __future__ import annotations

import contextlib
import inspect
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from flowhooks._events import ErrorInfo, Event, EventType, parse_event_type
from flowhooks._events import (  # re-exported: the delivery composites import it from here
    event_from_args as event_from_args,
)
from flowhooks._handler import BaseCallbackHandler

# Event types as module constants: reading an enum member (EventType.X) costs an
# attribute lookup on the enum class at every use.
_WORKFLOW_START: Final = EventType.WORKFLOW_START
_WORKFLOW_END: Final = EventType.WORKFLOW_END
_NODE_START: Final = EventType.NODE_START
_NODE_END: Final = EventType.NODE_END
_ERROR: Final = EventType.ERROR
_CUSTOM_EVENT: Final = EventType.CUSTOM_EVENT

_PROPAGATE: Final = "__flowhooks_propagate__"


class Abandoned:
    """What a run cancels the tasks of the nodes it abandons with: a dispatch of that run
    that such a cancellation reaches stops at once (``is_abandonment``), since the run's
    ``workflow_end`` has gone out, and nothing may follow it. ``events`` is the run's
    sequencer: a dispatch of another run in the same task (a run the node started) goes
    on as for any cancellation."""

    __slots__ = ("events",)

    def __init__(self, events: object) -> None:
        self.events = events

    def __str__(self) -> str:
        return "flowhooks: the run ended without this node"


def is_abandonment(exc: BaseException) -> bool:
    """Whether ``exc`` is the abandonment of the run whose event is being dispatched."""
    token = exc.args[0] if exc.args else None
    if not isinstance(token, Abandoned):
        return False
    from flowhooks._sequencer import TaskFrame, get_frame  # a layer above: the rare path only

    frame = get_frame()
    return isinstance(frame, TaskFrame) and frame.dispatching is token.events


def _mark_propagating(exc: BaseException) -> None:
    with contextlib.suppress(AttributeError, TypeError):  # exceptions with __slots__
        setattr(exc, _PROPAGATE, True)


def clear_propagating(exc: BaseException) -> None:
    """Remove the mark once the exception has left the managers (run or caller boundary)."""
    with contextlib.suppress(AttributeError):
        delattr(exc, _PROPAGATE)


def must_propagate(exc: BaseException) -> bool:
    """Return whether ``exc`` came from a ``raise_error`` handler and must not be isolated."""
    return getattr(exc, _PROPAGATE, False) is True


class Dispatcher(BaseCallbackHandler):
    """Base class of managers and composites: handlers that forward events.

    Subclasses implement ``dispatch`` and ``wants_event``. The ``on_*``
    methods are the typed shortcuts: ``await manager.on_node_start("a", {})``.
    Each awaits ``dispatch`` itself (every level of ``await`` costs as much as
    a no-op handler call) and clears the ``raise_error`` mark of an exception
    leaving to the caller.
    """

    _builds_events: bool = False
    """Whether ``dispatch`` builds the ``Event`` itself when it gets ``None`` and some
    handler asked for ``event=`` (the manager does); otherwise the typed shortcuts build
    it first, so a dispatcher that calls its handlers more than once gives them one."""

    @abstractmethod
    async def dispatch(
        self, event_type: EventType, args: tuple[Any, ...], event: Event | None
    ) -> None:
        """Forward one event. ``event`` may be ``None`` when no handler asked for it."""

    @abstractmethod
    def wants_event(self, event_type: EventType) -> bool:
        """Return whether something below needs the ``Event`` object for ``event_type``."""

    def handles(self, event_type: EventType) -> bool:
        """Return whether anything below reacts to ``event_type`` (cheap pre-check)."""
        return True

    def _below(self) -> tuple[BaseCallbackHandler, ...]:
        """The handlers it forwards to: a run's end walks them for background deliveries."""
        return ()

    async def _settle(self, limit: float | None) -> None:
        """Wait (at most ``limit`` seconds, and its own ``close_timeout``) until the events
        of the running loop it holds undelivered were handled, so that what their handlers
        send in reply (a custom event) is still part of the run; ``BackgroundCallback``
        does. Called by a run's end just before ``workflow_end``."""

    def _holds_events(self) -> bool:
        """Whether ``_settle`` has anything to wait for now."""
        return False

    async def trigger(self, event_type: str | EventType, *args: Any, **kwargs: Any) -> None:
        """Send one event by name, as if a run had emitted it.

        ``event_type`` is ``"node_start"`` or ``"on_node_start"`` (or an
        ``EventType``); the event's arguments come positionally or by their
        documented names. Optional keywords ``run_id``, ``workflow_name``,
        ``node_id``, ``attempt``, ``duration``, ``status``, ``metadata``,
        ``resource_id`` and ``parent_run_id`` fill in the ``Event`` handlers
        receive; ``event=`` passes a ready-made one.

        Raises:
            ValueError: for an unknown event type, an ``event=`` of another type, or a
                field value an ``Event`` does not take (naming the field).
            TypeError: for missing or unexpected arguments, naming them, an ``event=``
                that is not an ``Event``, or Event fields given besides ``event=``.
        """
        etype = parse_event_type(event_type)
        event = kwargs.pop("event", None)
        if event is not None and not isinstance(event, Event):
            msg = (
                f"trigger(event=...) takes a flowhooks.Event (e.g. Event.from_hook(...)), "
                f"got {type(event).__name__}; pass run_id=..., node_id=... to fill one in"
            )
            raise TypeError(msg)
        names = etype.arg_names
        values = list(args)
        if len(values) > len(names):
            msg = (
                f"{etype.method_name} takes {len(names)} arguments "
                f"({', '.join(names)}), got {len(values)}"
            )
            raise TypeError(msg)
        for name in names[len(values) :]:
            if name not in kwargs:
                msg = (
                    f"trigger({etype.value!r}) is missing the argument {name!r}; "
                    f"pass {', '.join(f'{n}=...' for n in names)}"
                )
                raise TypeError(msg)
            values.append(kwargs.pop(name))
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k in _EVENT_FIELDS}
        if kwargs:
            msg = (
                f"trigger({etype.value!r}) got unexpected keyword arguments "
                f"{sorted(kwargs)}; it takes {', '.join(names)} and the Event fields "
                f"{', '.join(sorted(_EVENT_FIELDS))}"
            )
            raise TypeError(msg)
        if event is not None and event.type is not etype:
            msg = (
                f"trigger({etype.value!r}) got an event= of type {event.type.value!r}; "
                f"pass an Event of type {etype.value!r}, or trigger {event.type.value!r}"
            )
            raise ValueError(msg)
        if event is not None and fields:
            msg = (
                f"trigger(event=...) sends the Event as it is, so {sorted(fields)} cannot be "
                f"given too; pass event=event.model_copy(update={{...}}) instead"
            )
            raise TypeError(msg)
        argt = tuple(values)
        # Event fields given by hand (run_id, ...) must reach the logs too, not only
        # handlers that asked for event=; hand triggers are off the hot path.
        if event is None and (fields or self.wants_event(etype)):
            event = event_from_args(etype, argt, **fields)
        try:
            await self.dispatch(etype, argt, event)
        except Exception as exc:
            clear_propagating(exc)
            raise

    async def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Dispatch ``workflow_start`` to the handlers."""
        args = (workflow_id, input_data)
        if event is None and not self._builds_events and self.wants_event(_WORKFLOW_START):
            event = event_from_args(_WORKFLOW_START, args)
        try:
            await self.dispatch(_WORKFLOW_START, args, event)
        except Exception as exc:
            clear_propagating(exc)  # it leaves the managers here, for the caller
            raise

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Dispatch ``workflow_end`` to the handlers."""
        args = (workflow_id, output_data)
        if event is None and not self._builds_events and self.wants_event(_WORKFLOW_END):
            event = event_from_args(_WORKFLOW_END, args)
        try:
            await self.dispatch(_WORKFLOW_END, args, event)
        except Exception as exc:
            clear_propagating(exc)  # it leaves the managers here, for the caller
            raise

    async def on_node_start(
        self, node_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Dispatch ``node_start`` to the handlers."""
        args = (node_id, input_data)
        if event is None and not self._builds_events and self.wants_event(_NODE_START):
            event = event_from_args(_NODE_START, args)
        try:
            await self.dispatch(_NODE_START, args, event)
        except Exception as exc:
            clear_propagating(exc)  # it leaves the managers here, for the caller
            raise

    async def on_node_end(
        self, node_id: str, output_data: Any, *, event: Event | None = None
    ) -> None:
        """Dispatch ``node_end`` to the handlers."""
        args = (node_id, output_data)
        if event is None and not self._builds_events and self.wants_event(_NODE_END):
            event = event_from_args(_NODE_END, args)
        try:
            await self.dispatch(_NODE_END, args, event)
        except Exception as exc:
            clear_propagating(exc)  # it leaves the managers here, for the caller
            raise

    async def on_error(self, error_info: ErrorInfo, *, event: Event | None = None) -> None:
        """Dispatch ``error`` to the handlers."""
        args = (error_info,)
        if event is None and not self._builds_events and self.wants_event(_ERROR):
            event = event_from_args(_ERROR, args)
        try:
            await self.dispatch(_ERROR, args, event)
        except Exception as exc:
            clear_propagating(exc)  # it leaves the managers here, for the caller
            raise

    async def on_custom_event(self, name: str, data: Any, *, event: Event | None = None) -> None:
        """Dispatch a custom event to the handlers."""
        args = (name, data)
        if event is None and not self._builds_events and self.wants_event(_CUSTOM_EVENT):
            event = event_from_args(_CUSTOM_EVENT, args)
        try:
            await self.dispatch(_CUSTOM_EVENT, args, event)
        except Exception as exc:
            clear_propagating(exc)  # it leaves the managers here, for the caller
            raise


def forwards_to(handler: object, target: Dispatcher, seen: set[int]) -> bool:
    """Whether ``handler`` is ``target`` or holds it, at any depth of managers and composites."""
    if handler is target:
        return True
    if not isinstance(handler, Dispatcher) or id(handler) in seen:
        return False
    seen.add(id(handler))
    try:
        inner = tuple(getattr(handler, "handlers", ()))
    except Exception:  # a composite of someone else's whose property fails: nothing to see
        return False
    return any(forwards_to(h, target, seen) for h in inner)


class CallerShortcuts(Dispatcher):
    """A dispatcher whose typed shortcuts hand back ``dispatch``'s own coroutine.

    ``await manager.on_node_start("a", {})`` then costs one coroutine, not two:
    a coroutine level costs about as much as a no-op handler call. Such a
    ``dispatch`` builds a missing ``Event`` itself and takes a fourth argument,
    ``caller``: true when the call comes from user code, so that the
    ``raise_error`` mark comes off an exception leaving to it. The shortcuts
    are plain methods returning a coroutine: awaitable as ever, though
    ``inspect.iscoroutinefunction`` is false for them.

    A subclass whose ``dispatch`` (its own or a mixin's) has the three-argument
    form gets it wrapped so that it takes ``caller`` too: the shortcuts, and a
    ``super()`` call to them from the subclass's own, work with it unchanged.
    """

    _builds_events = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dispatch = cls.dispatch  # through the MRO: a mixin's counts
        parameters = inspect.signature(dispatch, follow_wrapped=False).parameters
        caller = parameters.get("caller")
        if caller is None or caller.kind is inspect.Parameter.KEYWORD_ONLY:
            cls.dispatch = _taking_caller(dispatch)  # type: ignore[method-assign]

    @abstractmethod
    async def dispatch(
        self,
        event_type: EventType,
        args: tuple[Any, ...],
        event: Event | None,
        caller: bool = False,
    ) -> None:
        """Forward one event; ``caller``: clear the ``raise_error`` mark of what leaves."""

    def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> Coroutine[Any, Any, None]:
        """Dispatch ``workflow_start`` to the handlers."""
        return self.dispatch(_WORKFLOW_START, (workflow_id, input_data), event, True)

    def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> Coroutine[Any, Any, None]:
        """Dispatch ``workflow_end`` to the handlers."""
        return self.dispatch(_WORKFLOW_END, (workflow_id, output_data), event, True)

    def on_node_start(
        self, node_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> Coroutine[Any, Any, None]:
        """Dispatch ``node_start`` to the handlers."""
        return self.dispatch(_NODE_START, (node_id, input_data), event, True)

    def on_node_end(
        self, node_id: str, output_data: Any, *, event: Event | None = None
    ) -> Coroutine[Any, Any, None]:
        """Dispatch ``node_end`` to the handlers."""
        return self.dispatch(_NODE_END, (node_id, output_data), event, True)

    def on_error(
        self, error_info: ErrorInfo, *, event: Event | None = None
    ) -> Coroutine[Any, Any, None]:
        """Dispatch ``error`` to the handlers."""
        return self.dispatch(_ERROR, (error_info,), event, True)

    def on_custom_event(
        self, name: str, data: Any, *, event: Event | None = None
    ) -> Coroutine[Any, Any, None]:
        """Dispatch a custom event to the handlers."""
        return self.dispatch(_CUSTOM_EVENT, (name, data), event, True)


def _taking_caller(
    dispatch: Callable[..., Awaitable[None]],
) -> Callable[..., Coroutine[Any, Any, None]]:
    """``dispatch`` (the three-argument form a subclass wrote) taking ``caller`` as well."""

    async def with_caller(
        self: Dispatcher,
        event_type: EventType,
        args: tuple[Any, ...],
        event: Event | None,
        caller: bool = False,
    ) -> None:
        try:
            await dispatch(self, event_type, args, event)
        except Exception as exc:
            if caller:  # it leaves the managers here, for the caller
                clear_propagating(exc)
            raise

    with_caller.__name__ = getattr(dispatch, "__name__", "dispatch")
    with_caller.__qualname__ = getattr(dispatch, "__qualname__", "dispatch")
    with_caller.__doc__ = dispatch.__doc__
    return with_caller


_EVENT_FIELDS = frozenset(
    {
        "run_id",
        "workflow_name",
        "parent_run_id",
        "resource_id",
        "metadata",
        "node_id",
        "attempt",
        "duration",
        "status",
        "timestamp",
    }
)
