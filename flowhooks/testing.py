"""Test helpers: ``RecordingCallback``, also behind the ``callback_recorder`` pytest fixture.

This module sits outside the import chain of the core and uses only the
public API. The fixture comes from the pytest plugin ``pytest_flowhooks``,
which pytest loads through the ``pytest11`` entry point, so it is available in
every test suite once flowhooks is installed; the plugin imports this module
only when a test asks for the fixture. Importing this module without pytest
installed works too.

Example::

    async def test_pipeline(callback_recorder):
        manager = CallbackManager([callback_recorder])
        await manager.trigger("node_start", node_id="a", input_data={})
        callback_recorder.assert_called("node_start", times=1)
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from uuid import uuid4

from flowhooks import BaseCallbackHandler, ErrorInfo, Event, EventType

__all__ = ["RecordingCallback"]

OrderItem = str | EventType | tuple[str | EventType, str | None]
"""One step of ``assert_order``: an event type, or ``(event type, node_id or custom name)``."""


def _parse_type(event_type: str | EventType) -> EventType:
    """Return the ``EventType`` for ``"node_end"``, ``"on_node_end"`` or an ``EventType``."""
    if isinstance(event_type, EventType):
        return event_type
    if isinstance(event_type, str):
        name = event_type.removeprefix("on_")
        try:
            return EventType(name)
        except ValueError:
            pass
    known = ", ".join(repr(t.value) for t in EventType)
    msg = f"unknown event type {event_type!r}; expected one of {known}"
    raise ValueError(msg)


def _label(event: Event) -> str:
    """Return a short, readable description of one recorded event."""
    parts = [event.type.value]
    if event.node_id is not None:
        parts.append(f"node={event.node_id}")
    if event.name is not None:
        parts.append(f"name={event.name}")
    if event.attempt is not None:
        parts.append(f"attempt={event.attempt}")
    if event.status is not None:
        parts.append(f"status={event.status}")
    if event.run_id:
        parts.append(f"run={event.run_id[:8]}")
    parts.append(f"seq={event.seq}")
    return " ".join(parts)


class RecordingCallback(BaseCallbackHandler):
    """A handler that records every event it receives, with assertions over them.

    Each ``on_*`` method takes the full ``Event`` (keyword-only ``event``), so
    ``events`` holds complete events: ids, ``seq``, run ids, timestamps,
    payloads. Use it in tests to assert whole event sequences::

        recorder = RecordingCallback()
        result = await workflow.run(callbacks=[recorder])
        assert recorder.types == ["workflow_start", "node_start", "node_end", "workflow_end"]
        recorder.assert_no_duplicates()

    Failed assertions raise ``AssertionError`` listing what was recorded.

    Attributes:
        events: every recorded ``Event``, in the order received.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []

    # -- recording --------------------------------------------------------------------

    def _record(self, event_type: EventType, args: tuple[Any, ...], event: Event | None) -> None:
        if event is None:  # called directly, not through a manager
            event = self._make_event(event_type, args)
        self.events.append(event)

    @staticmethod
    def _make_event(event_type: EventType, args: tuple[Any, ...]) -> Event:
        fields: dict[str, Any] = {"id": uuid4().hex, "type": event_type, "payload": args[-1]}
        if event_type in (EventType.NODE_START, EventType.NODE_END):
            fields["node_id"] = args[0]
        elif event_type in (EventType.WORKFLOW_START, EventType.WORKFLOW_END):
            fields["run_id"] = args[0]
        elif event_type is EventType.CUSTOM_EVENT:
            fields["name"] = args[0]
        elif isinstance(args[0], ErrorInfo):
            fields.update(
                node_id=args[0].node_id,
                run_id=args[0].run_id,
                workflow_name=args[0].workflow_name,
                attempt=args[0].attempt,
            )
        return Event(**fields)

    async def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Record a ``workflow_start`` event."""
        self._record(EventType.WORKFLOW_START, (workflow_id, input_data), event)

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Record a ``workflow_end`` event."""
        self._record(EventType.WORKFLOW_END, (workflow_id, output_data), event)

    async def on_node_start(
        self, node_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Record a ``node_start`` event."""
        self._record(EventType.NODE_START, (node_id, input_data), event)

    async def on_node_end(
        self, node_id: str, output_data: Any, *, event: Event | None = None
    ) -> None:
        """Record a ``node_end`` event."""
        self._record(EventType.NODE_END, (node_id, output_data), event)

    async def on_error(self, error_info: ErrorInfo, *, event: Event | None = None) -> None:
        """Record an ``error`` event."""
        self._record(EventType.ERROR, (error_info,), event)

    async def on_custom_event(self, name: str, data: Any, *, event: Event | None = None) -> None:
        """Record a custom event."""
        self._record(EventType.CUSTOM_EVENT, (name, data), event)

    # -- queries ----------------------------------------------------------------------

    @property
    def types(self) -> list[EventType]:
        """The type of every recorded event, in order (compares equal to plain strings)."""
        return [e.type for e in self.events]

    @property
    def run_ids(self) -> list[str]:
        """The distinct run ids seen, in order of first appearance."""
        return list(dict.fromkeys(e.run_id for e in self.events))

    @property
    def errors(self) -> list[ErrorInfo]:
        """The ``ErrorInfo`` of every recorded ``error`` event, in order."""
        return [
            e.payload
            for e in self.events
            if e.type is EventType.ERROR and isinstance(e.payload, ErrorInfo)
        ]

    def events_of(self, event_type: str | EventType) -> list[Event]:
        """Return the recorded events of one type (``"node_end"`` or ``"on_node_end"``)."""
        wanted = _parse_type(event_type)
        return [e for e in self.events if e.type is wanted]

    def events_for(self, node_id: str) -> list[Event]:
        """Return the recorded events of one node (starts, ends and errors), in order."""
        return [e for e in self.events if e.node_id == node_id]

    def events_for_run(self, run_id: str) -> list[Event]:
        """Return the recorded events of one run, in order."""
        return [e for e in self.events if e.run_id == run_id]

    def custom_events(self, name: str | None = None) -> list[Event]:
        """Return the recorded custom events, only those called ``name`` when given."""
        return [
            e
            for e in self.events
            if e.type is EventType.CUSTOM_EVENT and (name is None or e.name == name)
        ]

    def clear(self) -> None:
        """Forget every recorded event."""
        self.events.clear()

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        return iter(list(self.events))

    def __repr__(self) -> str:
        return f"RecordingCallback({len(self.events)} events)"

    def summary(self) -> str:
        """Return the recorded events as numbered lines, for failure messages and debugging."""
        if not self.events:
            return "  (no events recorded)"
        return "\n".join(f"  {i}. {_label(e)}" for i, e in enumerate(self.events, 1))

    # -- assertions -------------------------------------------------------------------

    def _fail(self, message: str) -> AssertionError:
        return AssertionError(f"{message}\nrecorded events:\n{self.summary()}")

    def assert_called(self, event_type: str | EventType, times: int | None = None) -> None:
        """Assert that events of ``event_type`` were recorded (exactly ``times`` times when given).

        Args:
            event_type: ``"node_end"``, ``"on_node_end"`` or an ``EventType``.
            times: the exact number expected; ``None`` means at least once.

        Raises:
            AssertionError: listing what was recorded, when the count differs.
            ValueError: for an unknown event type.
        """
        wanted = _parse_type(event_type)
        count = sum(1 for e in self.events if e.type is wanted)
        if times is None:
            if count == 0:
                msg = f"expected at least one {wanted.value!r} event, got none"
                raise self._fail(msg)
        elif count != times:
            msg = f"expected {times} {wanted.value!r} event(s), got {count}"
            raise self._fail(msg)

    def assert_not_called(self, event_type: str | EventType) -> None:
        """Assert that no event of ``event_type`` was recorded.

        Raises:
            AssertionError: listing what was recorded, when there is one.
        """
        self.assert_called(event_type, times=0)

    def assert_order(self, expected: Sequence[OrderItem]) -> None:
        """Assert that ``expected`` occurs in the recorded events in this order.

        The check is for a subsequence: other events may come in between.
        Each item is an event type (``"node_end"``) or a pair of an event type
        and a node id (a custom event's name for ``custom_event``), e.g.
        ``[("node_end", "extract"), ("node_start", "load")]``.

        Raises:
            AssertionError: naming the first step not found after the ones before
                it, and listing what was recorded.
            ValueError: for an unknown event type.
        """
        steps = [self._parse_step(item) for item in expected]
        position = 0
        for index, (etype, key) in enumerate(steps):
            while position < len(self.events) and not self._matches(
                self.events[position], etype, key
            ):
                position += 1
            if position == len(self.events):
                found = ", ".join(self._step_text(s) for s in steps[:index]) or "nothing before it"
                msg = (
                    f"expected {self._step_text((etype, key))} (step {index + 1} of "
                    f"{len(steps)}) after {found}, but it was not recorded in that order"
                )
                raise self._fail(msg)
            position += 1

    @staticmethod
    def _parse_step(item: OrderItem) -> tuple[EventType, str | None]:
        if isinstance(item, tuple):
            pair: tuple[Any, ...] = item  # checked at runtime: callers may pass any tuple
            if len(pair) != 2:
                msg = (
                    "assert_order steps are event types or (event type, node id) pairs, "
                    f"got {item!r}"
                )
                raise ValueError(msg)
            return _parse_type(pair[0]), pair[1]
        return _parse_type(item), None

    @staticmethod
    def _matches(event: Event, etype: EventType, key: str | None) -> bool:
        if event.type is not etype:
            return False
        if key is None:
            return True
        if etype is EventType.CUSTOM_EVENT:
            return event.name == key
        return event.node_id == key

    @staticmethod
    def _step_text(step: tuple[EventType, str | None]) -> str:
        etype, key = step
        return repr(etype.value) if key is None else f"{etype.value!r} for {key!r}"

    def assert_no_duplicates(self) -> None:
        """Assert that no event was recorded twice (by ``Event.id``, the idempotency key).

        Raises:
            AssertionError: naming the duplicated ids and their events.
        """
        counts = Counter(e.id for e in self.events)
        duplicated = {event_id: n for event_id, n in counts.items() if n > 1}
        if duplicated:
            details = ", ".join(
                f"{event_id} x{n} ({self._type_of(event_id)})" for event_id, n in duplicated.items()
            )
            msg = f"{len(duplicated)} event id(s) recorded more than once: {details}"
            raise self._fail(msg)

    def _type_of(self, event_id: str) -> str:
        return next(_label(e) for e in self.events if e.id == event_id)

    def assert_types(self, expected: Iterable[str | EventType]) -> None:
        """Assert that the recorded event types are exactly ``expected``, in order.

        Raises:
            AssertionError: showing both sequences, when they differ.
        """
        wanted = [_parse_type(t) for t in expected]
        if self.types != wanted:
            msg = (
                f"expected event types {[t.value for t in wanted]}, "
                f"got {[t.value for t in self.types]}"
            )
            raise self._fail(msg)


# Loaded as a plugin itself (``-p flowhooks.testing``), this module provides the fixture too.
with contextlib.suppress(ImportError):  # flowhooks.testing works without pytest
    from pytest_flowhooks import callback_recorder  # noqa: F401
