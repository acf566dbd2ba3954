"""Tests for flowhooks.testing: RecordingCallback's queries and assertions, and its fixture."""

from __future__ import annotations

import pytest

from flowhooks import CallbackManager, ErrorInfo, Event, EventType
from flowhooks.testing import RecordingCallback

pytest_plugins = ["pytester"]


async def _sequence(recorder: RecordingCallback, run_id: str = "run-1") -> None:
    """Send a small run's worth of events to ``recorder`` through a manager."""
    manager = CallbackManager([recorder])
    error = ErrorInfo(type="ValueError", message="bad", node_id="load", run_id=run_id)
    await manager.trigger("workflow_start", workflow_id=run_id, input_data={"n": 1})
    await manager.trigger("node_start", node_id="extract", input_data={"n": 1}, run_id=run_id)
    await manager.trigger("node_end", node_id="extract", output_data=[1], run_id=run_id)
    await manager.trigger("custom_event", name="progress", data=0.5, run_id=run_id)
    await manager.trigger("node_start", node_id="load", input_data={}, run_id=run_id)
    await manager.trigger("error", error_info=error)
    await manager.trigger("workflow_end", workflow_id=run_id, output_data={"extract": [1]})


@pytest.fixture
async def recorded() -> RecordingCallback:
    """A recorder that has seen one small failed run."""
    recorder = RecordingCallback()
    await _sequence(recorder)
    return recorder


# -- recording and queries ------------------------------------------------------------


async def test_records_full_events_in_order(recorded: RecordingCallback) -> None:
    """Every event is recorded as a full Event, in the order dispatched."""
    assert all(isinstance(e, Event) for e in recorded.events)
    assert recorded.types == [
        "workflow_start",
        "node_start",
        "node_end",
        "custom_event",
        "node_start",
        "error",
        "workflow_end",
    ]
    assert recorded.events[0].run_id == "run-1"
    assert recorded.events[0].payload == {"n": 1}
    assert len(recorded) == 7


async def test_events_for_node(recorded: RecordingCallback) -> None:
    """events_for(node_id) returns that node's start, end and error events."""
    assert [e.type for e in recorded.events_for("extract")] == ["node_start", "node_end"]
    assert [e.type for e in recorded.events_for("load")] == ["node_start", "error"]
    assert recorded.events_for("missing") == []


async def test_type_and_run_queries(recorded: RecordingCallback) -> None:
    """events_of, events_for_run, run_ids, errors and custom_events filter the record."""
    assert [e.node_id for e in recorded.events_of("on_node_start")] == ["extract", "load"]
    assert len(recorded.events_of(EventType.ERROR)) == 1
    assert recorded.run_ids == ["run-1"]
    assert len(recorded.events_for_run("run-1")) == 7
    assert [info.message for info in recorded.errors] == ["bad"]
    assert [e.payload for e in recorded.custom_events("progress")] == [0.5]
    assert recorded.custom_events("other") == []
    assert len(recorded.custom_events()) == 1


async def test_clear_forgets_everything(recorded: RecordingCallback) -> None:
    """clear() empties the record."""
    recorded.clear()
    assert recorded.events == []
    assert recorded.types == []
    recorded.assert_not_called("node_start")


async def test_direct_calls_are_recorded_without_a_manager() -> None:
    """Calling the on_* methods directly records synthesised Events."""
    recorder = RecordingCallback()
    await recorder.on_node_start("a", {"x": 1})
    await recorder.on_workflow_end("r", {})
    await recorder.on_error(ErrorInfo(type="E", message="m", node_id="a", run_id="r"))
    await recorder.on_custom_event("ping", None)
    assert [e.node_id for e in recorder.events] == ["a", None, "a", None]
    assert recorder.events[1].run_id == "r"
    assert recorder.events[3].name == "ping"
    recorder.assert_no_duplicates()


def test_repr_and_iteration() -> None:
    """repr shows the count; iterating yields the events."""
    recorder = RecordingCallback()
    assert repr(recorder) == "RecordingCallback(0 events)"
    assert list(recorder) == []


# -- assertions: passing --------------------------------------------------------------


async def test_assertions_pass_on_matching_record(recorded: RecordingCallback) -> None:
    """assert_called, assert_not_called, assert_order, assert_types pass when they hold."""
    recorded.assert_called("node_start")
    recorded.assert_called("on_node_start", times=2)
    recorded.assert_called(EventType.WORKFLOW_END, times=1)
    RecordingCallback().assert_not_called("error")
    recorded.assert_order(["workflow_start", "error", "workflow_end"])
    recorded.assert_order([("node_end", "extract"), ("node_start", "load"), "workflow_end"])
    recorded.assert_order([("custom_event", "progress"), ("error", "load")])
    recorded.assert_order([])
    recorded.assert_types(
        [
            "workflow_start",
            "node_start",
            "node_end",
            "custom_event",
            "node_start",
            "error",
            "workflow_end",
        ]
    )
    recorded.assert_no_duplicates()


# -- assertions: failing --------------------------------------------------------------


async def test_assert_called_fails_with_record(recorded: RecordingCallback) -> None:
    """A wrong count fails with the expected and actual counts and the recorded events."""
    with pytest.raises(AssertionError) as info:
        recorded.assert_called("node_end", times=2)
    message = str(info.value)
    assert "expected 2 'node_end' event(s), got 1" in message
    assert "recorded events:" in message
    assert "1. workflow_start" in message
    assert "6. error node=load" in message


async def test_assert_called_fails_when_never_called() -> None:
    """assert_called without times fails when no such event was recorded."""
    recorder = RecordingCallback()
    with pytest.raises(
        AssertionError, match=r"(?s)at least one 'error' event, got none.*no events"
    ):
        recorder.assert_called("error")


async def test_assert_not_called_fails(recorded: RecordingCallback) -> None:
    """assert_not_called fails when the event type was recorded."""
    with pytest.raises(AssertionError, match="expected 0 'custom_event'"):
        recorded.assert_not_called("custom_event")


async def test_assert_order_fails_on_wrong_order(recorded: RecordingCallback) -> None:
    """assert_order names the first step not found after the ones before it."""
    with pytest.raises(AssertionError) as info:
        recorded.assert_order(["workflow_end", "workflow_start"])
    message = str(info.value)
    assert "expected 'workflow_start' (step 2 of 2) after 'workflow_end'" in message
    assert "7. workflow_end" in message


async def test_assert_order_fails_on_wrong_node(recorded: RecordingCallback) -> None:
    """assert_order with (type, node) pairs fails when that node's event is missing."""
    with pytest.raises(AssertionError, match=r"'node_end' for 'load' \(step 1 of 1\)"):
        recorded.assert_order([("node_end", "load")])


async def test_assert_order_needs_each_occurrence(recorded: RecordingCallback) -> None:
    """Each step consumes one event, so repeating a step needs as many occurrences."""
    recorded.assert_order(["node_start", "node_start"])
    with pytest.raises(AssertionError, match="step 3 of 3"):
        recorded.assert_order(["node_start", "node_start", "node_start"])


async def test_assert_types_fails_with_both_sequences(recorded: RecordingCallback) -> None:
    """assert_types shows the expected and the actual types."""
    with pytest.raises(AssertionError, match=r"expected event types \['workflow_start'\], got"):
        recorded.assert_types(["workflow_start"])


async def test_assert_no_duplicates_fails_on_repeated_id() -> None:
    """The same Event delivered twice fails assert_no_duplicates, naming the id."""
    recorder = RecordingCallback()
    manager = CallbackManager([recorder])
    event = Event(id="dup-1", type="node_end", node_id="a", payload=1)
    await manager.trigger("node_end", node_id="a", output_data=1, event=event)
    await manager.trigger("node_end", node_id="a", output_data=1, event=event)
    with pytest.raises(AssertionError, match=r"1 event id\(s\) recorded more than once: dup-1 x2"):
        recorder.assert_no_duplicates()


@pytest.mark.parametrize("bad", ["node_begin", "on_nothing", 3], ids=repr)
def test_unknown_event_type_is_value_error(bad: object) -> None:
    """An unknown event type in an assertion is a ValueError, not a silent pass."""
    recorder = RecordingCallback()
    with pytest.raises(ValueError, match="unknown event type"):
        recorder.assert_called(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown event type"):
        recorder.assert_order([bad])  # type: ignore[list-item]


def test_assert_order_rejects_malformed_step() -> None:
    """A step tuple that is not a pair is a ValueError naming it."""
    with pytest.raises(ValueError, match=r"got \('node_end', 'a', 'b'\)"):
        RecordingCallback().assert_order([("node_end", "a", "b")])  # type: ignore[list-item]


# -- the pytest plugin ----------------------------------------------------------------


async def test_fixture_is_available(callback_recorder: RecordingCallback) -> None:
    """The callback_recorder fixture provides an empty RecordingCallback."""
    assert isinstance(callback_recorder, RecordingCallback)
    assert callback_recorder.events == []
    await CallbackManager([callback_recorder]).trigger("node_start", node_id="a", input_data={})
    callback_recorder.assert_called("node_start", times=1)


def test_fixture_through_entry_point(pytester: pytest.Pytester) -> None:
    """The plugin is loaded through its entry point and gives each test a fresh recorder."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        import asyncio

        from flowhooks import CallbackManager
        from flowhooks.testing import RecordingCallback


        def test_records(callback_recorder):
            assert isinstance(callback_recorder, RecordingCallback)
            manager = CallbackManager([callback_recorder])
            asyncio.run(manager.trigger("node_end", node_id="a", output_data=1))
            callback_recorder.assert_called("node_end", times=1)


        def test_fresh(callback_recorder):
            assert callback_recorder.events == []


        def test_failure_message(callback_recorder):
            callback_recorder.assert_called("workflow_end")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*expected at least one 'workflow_end' event, got none*"])


def test_import_without_pytest(pytester: pytest.Pytester) -> None:
    """flowhooks.testing imports without pytest; only the fixture is then missing."""
    script = pytester.makepyfile(
        check="""
        import sys
        sys.modules["pytest"] = None  # makes `import pytest` raise ImportError
        import flowhooks.testing as t
        assert hasattr(t, "RecordingCallback")
        assert not hasattr(t, "callback_recorder")
        print("ok")
        """
    )
    result = pytester.runpython(script)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["ok"])
