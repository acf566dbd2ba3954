"""Event vocabulary: ``EventType``, the statuses, ``ErrorInfo`` and the frozen ``Event``.

Everything that leaves a run (history rows, webhook bodies, batches) is one of
these models. Serialisation to JSON (``model_dump_json()``,
``model_dump(mode="json")``) never fails: payloads JSON cannot hold fall back to
``repr()``, every text field is made safe for UTF-8 and every part of an event
is capped (see ``_serialize``).
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator, KeysView
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FieldSerializationInfo,
    StrictInt,
    ValidationError,
    field_serializer,
    model_validator,
)

from flowhooks._ids import new_id
from flowhooks._serialize import LIMITS, exception_text, safe_text, to_jsonable
from flowhooks._validate import ParameterTypeError


class EventType(StrEnum):
    """The kinds of event a run emits; each maps to one handler method."""

    WORKFLOW_START = "workflow_start"
    WORKFLOW_END = "workflow_end"
    NODE_START = "node_start"
    NODE_END = "node_end"
    ERROR = "error"
    CUSTOM_EVENT = "custom_event"

    @property
    def method_name(self) -> str:
        """The handler method called for this event, e.g. ``"on_node_start"``."""
        return _METHOD_NAMES[self]

    @property
    def arg_names(self) -> tuple[str, ...]:
        """The positional arguments the handler method receives, in order."""
        return EVENT_ARGS[self]


EVENT_ARGS: Final[dict[EventType, tuple[str, ...]]] = {
    EventType.WORKFLOW_START: ("workflow_id", "input_data"),
    EventType.WORKFLOW_END: ("workflow_id", "output_data"),
    EventType.NODE_START: ("node_id", "input_data"),
    EventType.NODE_END: ("node_id", "output_data"),
    EventType.ERROR: ("error_info",),
    EventType.CUSTOM_EVENT: ("name", "data"),
}
"""Positional arguments of each event's handler method."""

_METHOD_NAMES: Final = {t: f"on_{t.value}" for t in EventType}
METHOD_TO_EVENT: Final[dict[str, EventType]] = {f"on_{t.value}": t for t in EventType}


def parse_event_type(name: str | EventType) -> EventType:
    """Return the ``EventType`` for ``"node_start"``, ``"on_node_start"`` or an ``EventType``.

    Raises:
        TypeError: when ``name`` is not a str (also a ``ValueError``, what it
            raised before).
        ValueError: naming the accepted values, when ``name`` is none of them.
    """
    if isinstance(name, EventType):
        return name
    if isinstance(name, str):
        if name in METHOD_TO_EVENT:
            return METHOD_TO_EVENT[name]
        try:
            return EventType(name)
        except ValueError:
            pass
    known = ", ".join(repr(t.value) for t in EventType)
    if not isinstance(name, str):
        msg = (
            f"an event type must be a str (one of {known}) or an EventType, "
            f"got {name!r} ({type(name).__name__})"
        )
        raise ParameterTypeError(msg)
    msg = f"unknown event type {name!r}; expected one of {known} (or the same with an 'on_' prefix)"
    raise ValueError(msg)


class RunStatus(StrEnum):
    """How a run ended.

    ``suspended``: a node raised ``Suspend``; the run can be resumed.
    ``crashed``: only ever written by a sweep of a persisted run whose process
    stopped reporting; a live run never reports it.
    """

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUSPENDED = "suspended"
    CRASHED = "crashed"


class NodeStatus(StrEnum):
    """Where a node stands within one run."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    SUSPENDED = "suspended"


class Severity(StrEnum):
    """How bad an error is: ``warning`` when it will be retried."""

    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


def _context_cap(info: FieldSerializationInfo) -> int | None:
    """The ``max_payload_chars`` given in the serialisation context, if any."""
    context = info.context
    return context.get("max_payload_chars") if type(context) is dict else None


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def _in_utc(value: datetime) -> datetime:
    """A given timestamp in UTC: an aware one converted, a naive one taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        msg = "a number of seconds, not a bool"
        raise ValueError(msg)
    return value


UtcTime = Annotated[datetime, AfterValidator(_in_utc)]
"""Timestamps of events and errors: always timezone-aware UTC."""
Attempt = Annotated[StrictInt, Field(ge=1)]
"""A 1-based attempt number (not a bool)."""
Seconds = Annotated[float, BeforeValidator(_no_bool), Field(ge=0, allow_inf_nan=False)]
"""A duration: finite, not negative, not a bool."""


class ErrorInfo(BaseModel):
    """One failure: a node attempt that raised, or the run's timeout.

    Frozen, and also readable like a mapping (``info["message"]``,
    ``info.get("severity")``, ``"type" in info``) so handlers written for
    dict-shaped error payloads keep working.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    type: str
    message: str
    stack_trace: str = ""
    severity: Severity = Severity.ERROR
    node_id: str | None = None
    run_id: str = ""
    workflow_name: str = ""
    attempt: Attempt | None = None
    will_retry: bool = False
    timestamp: UtcTime = Field(default_factory=utcnow)
    exception: BaseException | None = Field(default=None, exclude=True, repr=False)

    @field_serializer(
        "type", "message", "stack_trace", "node_id", "run_id", "workflow_name", when_used="json"
    )
    def _serialize_text(self, value: str | None, info: FieldSerializationInfo) -> Any:
        """Cap the text (a 20 MB message included) and escape lone surrogates."""
        return safe_text(value, max_chars=_context_cap(info))

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        node_id: str | None = None,
        attempt: int | None = None,
        run_id: str = "",
        workflow_name: str = "",
        will_retry: bool = False,
        severity: Severity | str | None = None,
        message: str | None = None,
    ) -> ErrorInfo:
        """Describe ``exc``: its type, message, formatted traceback and the live exception.

        ``severity`` defaults to ``warning`` when the attempt will be retried,
        else ``error``. ``message`` replaces ``str(exc)`` when given (a placeholder
        stands in for ``str(exc)`` when it raises).
        """
        if severity is None:
            severity = Severity.WARNING if will_retry else Severity.ERROR
        return cls(
            type=type(exc).__name__,
            message=message if message is not None else exception_text(exc),
            stack_trace="".join(traceback.format_exception(exc)),
            severity=Severity(severity),
            node_id=node_id,
            run_id=run_id,
            workflow_name=workflow_name,
            attempt=attempt,
            will_retry=will_retry,
            exception=exc,
        )

    def __str__(self) -> str:
        """``"ValueError: bad row (node 'parse', attempt 2)"``: what ``print(error)`` shows."""
        where = [f"node {self.node_id!r}"] if self.node_id else []
        if self.attempt is not None:
            where.append(f"attempt {self.attempt}")
        suffix = f" ({', '.join(where)})" if where else ""
        return f"{self.type}: {self.message}{suffix}"

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """Return the field ``key``, or ``default`` when there is no such field."""
        return getattr(self, key) if key in type(self).model_fields else default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in type(self).model_fields

    def __len__(self) -> int:
        return len(type(self).model_fields)

    def keys(self) -> KeysView[str]:
        """Return the field names, as a mapping would."""
        return type(self).model_fields.keys()

    def values(self) -> Iterator[Any]:
        """Return the field values, in field order."""
        return (getattr(self, k) for k in type(self).model_fields)

    def items(self) -> Iterator[tuple[str, Any]]:
        """Return ``(field, value)`` pairs, in field order."""
        return ((k, getattr(self, k)) for k in type(self).model_fields)


def error_to_json(error: ErrorInfo, *, max_chars: int | None = None) -> Any:
    """``error.model_dump(mode="json")`` with its text capped at ``max_chars``, never raising."""
    context = None if max_chars is None else {"max_payload_chars": max_chars}
    try:
        return error.model_dump(mode="json", context=context)
    except Exception:  # a field replaced by model_construct() with something odd, ...
        return to_jsonable(repr(error), max_chars=max_chars)


class Event(BaseModel):
    """One event of one run, complete: what gets stored, posted and batched.

    ``id`` is unique per event (a fresh uuid4 hex when not given) and serves as
    an idempotency key; ``seq``
    counts 1, 2, 3 ... within a run in emission order (0 for events triggered
    by hand outside any run).
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str = Field(default_factory=new_id)
    type: EventType
    seq: Annotated[StrictInt, Field(ge=0)] = 0
    run_id: str = ""
    workflow_name: str = ""
    parent_run_id: str | None = None
    resource_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    node_id: str | None = None
    attempt: Attempt | None = None
    timestamp: UtcTime = Field(default_factory=utcnow)
    duration: Seconds | None = None
    status: str | None = None
    name: str | None = None
    payload: Any = None

    @model_validator(mode="before")
    @classmethod
    def _revive_error_payload(cls, data: Any) -> Any:
        """Turn a serialised error payload back into an ``ErrorInfo`` on validation.

        A dict that is not a serialised ``ErrorInfo`` (a hand-made, dict-shaped
        error payload) is kept as it is.
        """
        if (
            isinstance(data, dict)
            and data.get("type") in (EventType.ERROR, "error")
            and isinstance(data.get("payload"), dict)
        ):
            with contextlib.suppress(ValidationError):
                data = {**data, "payload": ErrorInfo.model_validate(data["payload"])}
        return data

    @field_serializer("metadata", "payload", when_used="json")
    def _serialize_any(self, value: Any, info: FieldSerializationInfo) -> Any:
        """Any payload as capped JSON data; an ``ErrorInfo`` with its own serialisers."""
        limit = _context_cap(info)
        if issubclass(type(value), ErrorInfo):  # the type, not value.__class__: proxies lie
            return error_to_json(value, max_chars=limit)
        return to_jsonable(value, max_chars=limit)

    @field_serializer(
        "id",
        "run_id",
        "workflow_name",
        "parent_run_id",
        "resource_id",
        "node_id",
        "status",
        "name",
        when_used="json",
    )
    def _serialize_text(self, value: str | None) -> Any:
        """Cap the text and escape lone surrogates (a node named after an odd file name).

        Called for eight fields of every event, so short ASCII text returns at
        once; these fields follow the process-wide cap.
        """
        if value is None or (
            type(value) is str
            and value.isascii()
            and len(value) * 6 <= LIMITS["max_payload_chars"]  # even if all escaped
        ):
            return value
        return safe_text(value)

    def __copy__(self) -> Self:
        """A shallow copy (``model_copy()``) with a set of given fields of its own.

        Events a run builds share one frozen set of given fields (every field
        is given); ``model_copy(update=...)`` adds to the copy's set, so the
        copy gets a mutable one.
        """
        return _with_own_fields_set(super().__copy__())

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        """A deep copy (``model_copy(deep=True)``), with a set of given fields of its own."""
        return _with_own_fields_set(super().__deepcopy__(memo))

    @property
    def args(self) -> tuple[Any, ...]:
        """The positional arguments the handler method for this event receives."""
        if self.type is EventType.ERROR:
            return (self.payload,)
        if self.type is EventType.CUSTOM_EVENT:
            return (self.name, self.payload)
        if self.type in (EventType.WORKFLOW_START, EventType.WORKFLOW_END):
            return (self.run_id, self.payload)
        return (self.node_id, self.payload)

    @classmethod
    def from_hook(cls, event_type: str | EventType, *args: Any, **fields: Any) -> Event:
        """Build the ``Event`` for a hook called with the positional arguments ``args``.

        For a handler that takes ``event=`` optionally and may be called
        without it (triggered by hand, or by code that passes only the
        documented arguments): ``event or Event.from_hook("node_end",
        node_id, output_data)``. ``node_id``, ``name`` and ``payload`` come
        from ``args``; for ``workflow_start``/``workflow_end`` the
        ``workflow_id`` is the ``run_id``; for ``error`` the ``ErrorInfo``
        gives ``node_id``, ``run_id``, ``workflow_name`` and ``attempt``.
        ``seq`` is 0, as for every event made outside a run.

        Args:
            event_type: ``"node_end"``, ``"on_node_end"`` or an ``EventType``.
            *args: the hook's positional arguments, e.g. ``(node_id, output_data)``.
            **fields: further ``Event`` fields (``run_id=``, ``workflow_name=``,
                ``metadata=``, ``duration=``...), validated.

        Raises:
            ValueError: for an unknown event type.
            TypeError: when ``args`` are not the event's positional arguments,
                or ``fields`` names something that is not an ``Event`` field.
        """
        etype = parse_event_type(event_type)
        names = etype.arg_names
        if len(args) != len(names):
            msg = (
                f"Event.from_hook({etype.value!r}, ...) takes the {len(names)} positional "
                f"arguments of {etype.method_name} ({', '.join(names)}), got {len(args)}"
            )
            raise TypeError(msg)
        unknown = sorted(set(fields) - _HOOK_FIELDS)
        if unknown:
            msg = (
                f"Event.from_hook({etype.value!r}, ...) got unexpected keyword arguments "
                f"{unknown}; it takes the Event fields {', '.join(sorted(_HOOK_FIELDS))}"
            )
            raise TypeError(msg)
        return event_from_args(etype, args, **fields)


EVENT_FIELDS: Final = tuple(Event.model_fields)
"""The ``Event`` field names, in the model's order."""
_ALL_EVENT_FIELDS: Final = frozenset(EVENT_FIELDS)
_HOOK_FIELDS: Final = _ALL_EVENT_FIELDS - {"type", "payload"}
_new_object = object.__new__
_set_attribute = object.__setattr__


_Model = TypeVar("_Model", bound=BaseModel)


def _with_own_fields_set(event: _Model) -> _Model:
    fields_set = event.__pydantic_fields_set__
    if type(fields_set) is not set:  # the frozen set run events share
        _set_attribute(event, "__pydantic_fields_set__", set(fields_set))
    return event


def trusted_event(values: dict[str, Any]) -> Event:
    """Build an ``Event`` from values the runner produced itself, without validation.

    ``values`` holds every field, in the fields' order, and becomes the
    event's own ``__dict__`` (the caller hands it over). This skips pydantic's
    validation (the runner's values are already of the right types), which is
    most of the cost of an event; the result is an ordinary frozen ``Event``.
    """
    event = _new_object(Event)
    _set_attribute(event, "__dict__", values)
    _set_attribute(event, "__pydantic_fields_set__", _ALL_EVENT_FIELDS)
    _set_attribute(event, "__pydantic_extra__", None)
    _set_attribute(event, "__pydantic_private__", None)
    return event


def event_from_args(event_type: EventType, args: tuple[Any, ...], **fields: Any) -> Event:
    """Build the ``Event`` for an event sent outside any run: ``seq`` 0 (``Event.from_hook``).

    ``args`` are the hook's positional arguments, trusted to be as many as
    the event type takes. ``fields`` are Event fields the caller gave
    (``run_id=...``); they are validated. Everything else is derived from
    ``args`` and needs no validation.
    """
    values: dict[str, Any] = {
        "id": new_id(),
        "type": event_type,
        "seq": 0,
        "run_id": "",
        "workflow_name": "",
        "parent_run_id": None,
        "resource_id": None,
        "metadata": {},
        "node_id": None,
        "attempt": None,
        "timestamp": None,
        "duration": None,
        "status": None,
        "name": None,
        "payload": args[-1],
    }
    first = args[0]
    if event_type is not EventType.ERROR and not isinstance(first, str):
        name = event_type.arg_names[0]
        msg = f"the {event_type.value!r} event takes a str {name}, got {first!r}"
        raise TypeError(msg)
    if event_type is EventType.NODE_START or event_type is EventType.NODE_END:
        values["node_id"] = first
    elif event_type is EventType.CUSTOM_EVENT:
        values["name"] = first
    elif event_type is EventType.ERROR and isinstance(first, ErrorInfo):
        values.update(
            node_id=first.node_id,
            run_id=first.run_id,
            workflow_name=first.workflow_name,
            attempt=first.attempt,
        )
    elif event_type is EventType.WORKFLOW_START or event_type is EventType.WORKFLOW_END:
        values["run_id"] = first  # workflow_id is the run's id
    if fields:
        values.update(fields)
        if values["timestamp"] is None:
            values["timestamp"] = utcnow()
        return Event(**values)
    values["timestamp"] = utcnow()
    return trusted_event(values)
