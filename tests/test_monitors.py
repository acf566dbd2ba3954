"""Tests for hook monitors: add_hook_monitor, what a monitor receives, isolation, timing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger

from flowhooks import (
    BaseCallbackHandler,
    CallbackManager,
    ChainedCallback,
    EventType,
    HandlerTimeoutError,
    HookCallReport,
    Workflow,
    add_hook_monitor,
    node,
)
from flowhooks._monitors import callback_label, hook_monitors, report_callback_call


@pytest.fixture
def reports() -> Iterator[list[HookCallReport]]:
    """Every hook call reported while the test runs."""
    seen: list[HookCallReport] = []
    remove = add_hook_monitor(seen.append)
    yield seen
    remove()


@pytest.fixture
def logs() -> Iterator[list[Any]]:
    """Capture loguru messages (with their records) for one test."""
    messages: list[Any] = []
    sink_id = logger.add(messages.append, format="{message}", level="DEBUG")
    yield messages
    logger.remove(sink_id)


class Quiet(BaseCallbackHandler):
    async def on_node_start(self, node_id, input_data):  # type: ignore[override]
        await asyncio.sleep(0.01)

    def on_node_end(self, node_id, output_data):  # type: ignore[override]
        pass


class Boom(BaseCallbackHandler):
    async def on_node_start(self, node_id, input_data):  # type: ignore[override]
        raise RuntimeError("boom")


class Hang(BaseCallbackHandler):
    timeout = 0.02

    async def on_node_start(self, node_id, input_data):  # type: ignore[override]
        await asyncio.Event().wait()


async def test_monitor_gets_label_event_type_seconds_and_error(
    reports: list[HookCallReport],
) -> None:
    """Each handler call is reported once, after it ran, with its label, event, seconds, error."""
    quiet, boom = Quiet(), Boom()
    manager = CallbackManager([quiet, boom, Quiet()])
    await manager.trigger("node_start", node_id="n", input_data={})
    assert [(r.label, r.event_type, r.handler) for r in reports] == [
        ("Quiet", EventType.NODE_START, quiet),
        ("Boom", EventType.NODE_START, boom),
        ("Quiet#2", EventType.NODE_START, manager.handlers[2]),
    ]
    first, failed, _ = reports
    assert first.error is None
    assert first.seconds is not None
    assert first.seconds >= 0.009
    assert isinstance(failed.error, RuntimeError)
    assert failed.seconds is not None


async def test_timeout_is_reported_as_a_handler_timeout_error(
    reports: list[HookCallReport],
) -> None:
    """A call cut off by its timeout reaches monitors with a HandlerTimeoutError."""
    await CallbackManager([Hang()]).trigger("node_start", node_id="n", input_data={})
    [report] = reports
    assert isinstance(report.error, HandlerTimeoutError)


async def test_raise_error_handler_is_reported_before_it_propagates(
    reports: list[HookCallReport],
) -> None:
    """A raise_error handler's failure is reported to monitors, then propagates."""
    strict = Boom()
    strict.raise_error = True
    with pytest.raises(RuntimeError, match="boom"):
        await CallbackManager([strict]).trigger("node_start", node_id="n", input_data={})
    assert [type(r.error) for r in reports] == [RuntimeError]


async def test_composites_and_nested_managers_are_not_reported_themselves(
    reports: list[HookCallReport],
) -> None:
    """Only the handlers a composite or nested manager calls are reported, not the composite."""
    manager = CallbackManager([ChainedCallback(Quiet(), Boom()), CallbackManager([Quiet()])])
    await manager.trigger("node_start", node_id="n", input_data={})
    assert [r.label for r in reports] == ["Quiet", "Boom", "Quiet"]


async def test_remove_stops_reports_and_is_idempotent() -> None:
    """The function add_hook_monitor returns removes that registration only, once."""
    first: list[HookCallReport] = []
    second: list[HookCallReport] = []
    remove_first = add_hook_monitor(first.append)
    remove_second = add_hook_monitor(second.append)
    manager = CallbackManager([Quiet()])
    await manager.trigger("node_end", node_id="n", output_data=1)
    remove_first()
    remove_first()
    await manager.trigger("node_end", node_id="n", output_data=2)
    remove_second()
    await manager.trigger("node_end", node_id="n", output_data=3)
    assert len(first) == 1
    assert len(second) == 2
    assert hook_monitors == []


async def test_failing_monitor_is_logged_and_isolated(
    reports: list[HookCallReport], logs: list[Any]
) -> None:
    """A monitor that raises is logged and ignored: handlers and other monitors still run."""

    def broken(call: HookCallReport) -> None:
        raise ValueError("monitor bug")

    remove = add_hook_monitor(broken)
    try:
        handler = Quiet()
        manager = CallbackManager([handler])
        await manager.trigger("node_end", node_id="n", output_data=1)
        await manager.trigger("node_end", node_id="n", output_data=2)
    finally:
        remove()
    assert len(reports) == 2
    assert manager.stats[handler]["node_end"].calls == 2
    warnings = [m for m in logs if m.record["level"].name == "WARNING"]
    assert len(warnings) == 2
    assert "ValueError: monitor bug" in warnings[0]
    assert "Traceback" in warnings[0]
    assert "Traceback" not in warnings[1]  # the traceback once per monitor


def test_monitor_must_be_callable() -> None:
    """add_hook_monitor rejects what cannot be called, naming its parameter."""
    with pytest.raises(TypeError, match=r"add_hook_monitor\(monitor\) takes a callable, got 42"):
        add_hook_monitor(42)  # type: ignore[arg-type]


def test_a_coroutine_function_is_refused_as_a_monitor() -> None:
    """Nothing awaits a monitor: an async one would never run (a 'never awaited' warning)."""

    async def watch(call: HookCallReport) -> None:
        pass

    class Watcher:
        async def __call__(self, call: HookCallReport) -> None:
            pass

    for monitor in (watch, Watcher()):
        with pytest.raises(TypeError, match=r"plain \(synchronous\) function"):
            add_hook_monitor(monitor)  # type: ignore[arg-type]


async def test_a_registered_monitor_turns_timing_on() -> None:
    """While a monitor is registered, stats seconds grow; without one they stay 0.0."""
    handler = Quiet()
    manager = CallbackManager([handler])
    await manager.trigger("node_start", node_id="n", input_data={})
    assert manager.stats[handler]["node_start"].seconds == 0.0
    remove = add_hook_monitor(lambda call: None)
    try:
        await manager.trigger("node_start", node_id="n", input_data={})
    finally:
        remove()
    timed = manager.stats[handler]["node_start"].seconds
    assert timed >= 0.009
    await manager.trigger("node_start", node_id="n", input_data={})
    assert manager.stats[handler]["node_start"].seconds == timed
    assert manager.stats[handler]["node_start"].calls == 3


def test_function_callbacks_are_reported_under_their_qualified_name(
    reports: list[HookCallReport],
) -> None:
    """report_callback_call hands monitors a report with the callback's name and no handler."""

    def notify_failure(error_info: object) -> None:
        pass

    label = callback_label(notify_failure)
    assert label == f"{__name__}.{notify_failure.__qualname__}"
    error = RuntimeError("alert service down")
    report_callback_call(label, EventType.ERROR, 0.25, error)
    assert reports == [HookCallReport(label, EventType.ERROR, 0.25, error, None)]


async def test_monitors_see_the_handler_calls_of_a_run(reports: list[HookCallReport]) -> None:
    """Inside a run, every handler call of every event is reported, in dispatch order."""

    @node
    def only() -> int:
        return 1

    class Ends(BaseCallbackHandler):
        def on_node_end(self, node_id, output_data):  # type: ignore[override]
            pass

        def on_workflow_end(self, workflow_id, output_data):  # type: ignore[override]
            pass

    result = await Workflow("monitored", [only]).run(callbacks=[Ends()])
    assert result.succeeded
    handler_reports = [r for r in reports if r.handler is not None]
    assert [(r.label, r.event_type.value) for r in handler_reports] == [
        ("Ends", "node_end"),
        ("Ends", "workflow_end"),
    ]
    assert all(r.seconds is not None and r.error is None for r in handler_reports)
