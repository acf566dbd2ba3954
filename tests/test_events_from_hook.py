"""Tests for Event.from_hook: an Event built from a hook's positional arguments."""

from __future__ import annotations

from typing import Any

import pytest

from flowhooks import BaseCallbackHandler, CallbackManager, ErrorInfo, Event, EventType


@pytest.mark.parametrize(
    ("event_type", "args", "expected"),
    [
        ("node_start", ("a", {"x": 1}), {"node_id": "a", "payload": {"x": 1}}),
        ("on_node_end", ("a", 3), {"node_id": "a", "payload": 3}),
        (EventType.WORKFLOW_START, ("run-1", {}), {"run_id": "run-1", "payload": {}}),
        ("workflow_end", ("run-1", {"a": 3}), {"run_id": "run-1", "payload": {"a": 3}}),
        ("custom_event", ("ping", [1]), {"name": "ping", "payload": [1]}),
    ],
    ids=["node_start", "on_node_end", "workflow_start", "workflow_end", "custom_event"],
)
def test_from_hook_fills_the_fields_the_arguments_give(
    event_type: str | EventType, args: tuple[Any, ...], expected: dict[str, Any]
) -> None:
    """node_id, run_id, name and payload come from the hook's arguments; seq is 0."""
    event = Event.from_hook(event_type, *args)
    assert {key: getattr(event, key) for key in expected} == expected
    assert event.type == EventType(str(event_type).removeprefix("on_"))
    assert event.seq == 0
    assert event.args == args
    assert event.timestamp.tzinfo is not None


def test_from_hook_takes_run_details_from_an_error_info() -> None:
    """For error, the ErrorInfo gives node_id, run_id, workflow_name and attempt."""
    info = ErrorInfo(type="ValueError", message="bad", node_id="n", run_id="r", attempt=2)
    event = Event.from_hook("error", info, workflow_name="etl")
    assert (event.node_id, event.run_id, event.attempt, event.payload) == ("n", "r", 2, info)
    assert event.workflow_name == "etl"


def test_from_hook_validates_given_fields() -> None:
    """Event fields given by keyword are set and validated like Event(...)."""
    event = Event.from_hook("node_end", "a", 1, run_id="r", duration=0.5, metadata={"k": "v"})
    assert (event.run_id, event.duration, event.metadata) == ("r", 0.5, {"k": "v"})
    with pytest.raises(ValueError, match="duration"):
        Event.from_hook("node_end", "a", 1, duration="slow")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Event.from_hook("node_start", "a"), r"takes the 2 positional arguments"),
        (lambda: Event.from_hook("error"), r"on_error \(error_info\), got 0"),
        (lambda: Event.from_hook("node_end", "a", 1, colour="red"), r"\['colour'\]"),
        (lambda: Event.from_hook("node_end", 5, 1), r"takes a str node_id, got 5"),
    ],
    ids=["too-few", "none", "unknown-field", "non-str-node-id"],
)
def test_from_hook_rejects_what_a_hook_would_not_get(call: Any, message: str) -> None:
    """Wrong arguments or unknown fields are a TypeError saying what the hook takes."""
    with pytest.raises(TypeError, match=message):
        call()


def test_from_hook_rejects_unknown_event_types() -> None:
    """An unknown event type is a ValueError listing the known ones."""
    with pytest.raises(ValueError, match="unknown event type 'node_done'"):
        Event.from_hook("node_done", "a", 1)


async def test_handler_called_without_event_can_build_its_own() -> None:
    """The documented pattern: `event or Event.from_hook(...)` gives the same fields either way."""
    seen: list[Event] = []

    class Keeps(BaseCallbackHandler):
        async def on_node_end(  # type: ignore[override]
            self, node_id: str, output_data: Any, *, event: Event | None = None
        ) -> None:
            seen.append(event or Event.from_hook("node_end", node_id, output_data))

    handler = Keeps()
    await handler.on_node_end("a", 1)
    await CallbackManager([handler]).trigger("node_end", node_id="a", output_data=1)
    built, passed = seen
    assert (built.node_id, built.payload) == (passed.node_id, passed.payload) == ("a", 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attempt", 0),
        ("attempt", -2),
        ("attempt", True),
        ("attempt", 1.5),
        ("duration", float("nan")),
        ("duration", float("inf")),
        ("duration", -1.0),
        ("duration", True),
        ("seq", -7),
        ("seq", False),
    ],
)
async def test_given_numbers_are_checked_wherever_an_event_is_made(field: str, value: Any) -> None:
    """attempt is 1-based, duration finite seconds, seq not negative; none is a bool.
    The error names the field, from Event(...), Event.from_hook and trigger alike."""
    with pytest.raises(ValueError, match=field):
        Event(type=EventType.NODE_END, node_id="a", **{field: value})
    with pytest.raises(ValueError, match=field):
        Event.from_hook("node_end", "a", 1, **{field: value})
    got: list[Event] = []

    class Keeps(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any, *, event: Event) -> None:
            got.append(event)

    if field != "seq":  # trigger numbers nothing: seq is not one of its fields
        with pytest.raises(ValueError, match=field):
            await CallbackManager([Keeps()]).trigger("node_end", "a", 1, **{field: value})
        assert got == []
    with pytest.raises(ValueError, match=field):
        ErrorInfo(type="E", message="m", attempt=value) if field == "attempt" else Event(
            type=EventType.NODE_END, **{field: value}
        )


def test_timestamps_are_always_utc() -> None:
    """A given timestamp is converted to UTC; a naive one is taken as UTC (SPEC: aware UTC)."""
    from datetime import UTC, datetime, timedelta, timezone

    naive = datetime(2026, 1, 1, 12, 0)
    plus_two = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    made = [
        Event.from_hook("node_start", "a", {}, timestamp=naive),
        Event(type=EventType.NODE_START, timestamp=naive),
        Event.model_validate_json(
            Event(type=EventType.NODE_START, timestamp=naive).model_dump_json()
        ),
    ]
    for event in made:
        assert event.timestamp == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        assert event.timestamp.tzinfo is UTC
    moved = Event.from_hook("node_start", "a", {}, timestamp=plus_two)
    assert moved.timestamp == plus_two
    assert moved.timestamp.tzinfo is UTC
    assert moved.timestamp.hour == 10
    error = ErrorInfo(type="E", message="m", timestamp=plus_two)
    assert error.timestamp.tzinfo is UTC
    assert error.timestamp.hour == 10
