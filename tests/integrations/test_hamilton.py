"""FlowhooksAdapter and AsyncFlowhooksAdapter against real Hamilton drivers."""

from __future__ import annotations

import asyncio
import sys
import threading
import types
from typing import Any

import pytest

pytest.importorskip("hamilton")

from hamilton import async_driver, base, driver

from flowhooks import BaseCallbackHandler, Event
from flowhooks.handlers import MetricsCallback
from flowhooks.integrations.hamilton import AsyncFlowhooksAdapter, FlowhooksAdapter
from flowhooks.testing import RecordingCallback


def _module(name: str, source: str) -> types.ModuleType:
    """A real module of Hamilton functions, built from ``source``."""
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    sys.modules[name] = module
    return module


SYNC_SOURCE = """
def rows(day: int) -> list:
    return [day, day + 1, day + 2]

def total(rows: list) -> int:
    return sum(rows)

def count(rows: list) -> int:
    if len(rows) > 100:
        raise ValueError("too many rows")
    return len(rows)

def mean(total: int, count: int) -> float:
    if count == 0:
        raise ZeroDivisionError("no rows")
    return total / count
"""

ASYNC_SOURCE = """
import asyncio

async def rows(day: int) -> list:
    await asyncio.sleep(0)
    return [day, day + 1]

async def total(rows: list) -> int:
    await asyncio.sleep(0)
    if rows[0] < 0:
        raise ValueError("negative day")
    return sum(rows)

def doubled(total: int) -> int:
    return total * 2
"""


def _check_stream(events: list[Event]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "workflow_start"
    assert events[-1].type == "workflow_end"


def test_a_driver_execution_is_a_run() -> None:
    """dr.execute: the execution is the run (Hamilton's run id), each computed node a node."""
    recorder = RecordingCallback()
    features = _module("features", SYNC_SOURCE)
    dr = (
        driver.Builder()
        .with_modules(features)
        .with_adapters(base.DictResult(), FlowhooksAdapter(recorder))
        .build()
    )
    before = set(threading.enumerate())
    assert dr.execute(["mean"], inputs={"day": 1}) == {"mean": 2.0}
    assert set(threading.enumerate()) - before == set()
    events = recorder.events
    _check_stream(events)
    assert events[0].workflow_name == "features"
    assert events[0].payload == {"day": 1}
    assert next(e.node_id for e in recorder.events_of("node_start")) == "rows"
    assert {e.node_id for e in recorder.events_of("node_end")} == {"rows", "total", "count", "mean"}
    rows_start = recorder.events_for("total")[0]
    assert rows_start.payload == {"rows": [1, 2, 3]}
    end = events[-1]
    assert end.status == "succeeded"
    assert end.payload == {"rows": [1, 2, 3], "total": 6, "count": 3, "mean": 2.0}
    assert len({e.run_id for e in events}) == 1


def test_a_failing_node_fails_the_run() -> None:
    """A node that raises: its error event, workflow_end failed, Hamilton re-raises."""
    recorder, metrics = RecordingCallback(), MetricsCallback()
    adapter = FlowhooksAdapter([recorder, metrics], workflow_name="daily-stats", resource_id="t9")
    dr = (
        driver.Builder()
        .with_modules(_module("features_fail", SYNC_SOURCE))
        .with_adapters(base.DictResult(), adapter)
        .build()
    )
    with pytest.raises(ValueError, match="too many rows"):
        dr.execute(["mean"], overrides={"rows": list(range(200))})
    _check_stream(recorder.events)
    [error] = recorder.errors
    assert (error.node_id, error.type) == ("count", "ValueError")
    assert recorder.events[-1].status == "failed"
    assert "mean" not in [e.node_id for e in recorder.events_of("node_start")]
    assert {e.workflow_name for e in recorder.events} == {"daily-stats"}
    assert {e.resource_id for e in recorder.events} == {"t9"}
    [run_id] = set(recorder.run_ids)
    run = metrics.get_run(run_id)
    assert run is not None
    assert run.status == "failed"
    assert run.nodes["count"].status == "failed"


def test_one_adapter_serves_many_executions() -> None:
    """Each execute() is a run of its own; none is left open."""
    recorder = RecordingCallback()
    dr = (
        driver.Builder()
        .with_modules(_module("features_many", SYNC_SOURCE))
        .with_adapters(base.DictResult(), FlowhooksAdapter(recorder))
        .build()
    )
    for day in range(3):
        dr.execute(["total"], inputs={"day": day})
    assert len(set(recorder.run_ids)) == 3
    recorder.assert_called("workflow_end", times=3)
    for run_id in set(recorder.run_ids):
        _check_stream(recorder.events_for_run(run_id))


async def test_the_async_driver() -> None:
    """AsyncDriver with AsyncFlowhooksAdapter: async and sync nodes, on the driver's loop."""
    recorder = RecordingCallback()
    dr = await (
        async_driver.Builder()
        .with_modules(_module("async_features", ASYNC_SOURCE))
        .with_adapters(base.DictResult(), AsyncFlowhooksAdapter(recorder))
        .build()
    )
    assert await dr.execute(["doubled"], inputs={"day": 1}) == {"doubled": 6}
    _check_stream(recorder.events)
    assert [e.node_id for e in recorder.events_of("node_end")] == ["rows", "total", "doubled"]
    assert recorder.events[-1].status == "succeeded"
    assert recorder.events[0].workflow_name == "async_features"


async def test_the_async_driver_on_failure() -> None:
    """A failing async node: error event, failed run, the exception reaches the caller."""
    recorder = RecordingCallback()
    dr = await (
        async_driver.Builder()
        .with_modules(_module("async_features_fail", ASYNC_SOURCE))
        .with_adapters(base.DictResult(), AsyncFlowhooksAdapter(recorder))
        .build()
    )
    with pytest.raises(ValueError, match="negative day"):
        await dr.execute(["doubled"], inputs={"day": -5})
    _check_stream(recorder.events)
    [error] = recorder.errors
    assert error.node_id == "total"
    end = recorder.events[-1]
    assert end.status == "failed"
    assert end.payload == {"rows": [-5, -4]}


def _no_awaitables(events: list[Event]) -> None:
    """No payload holds an asyncio task or another awaitable in place of a value."""
    for event in events:
        payload = event.payload
        values = payload.values() if isinstance(payload, dict) else [payload]
        assert not any(asyncio.isfuture(v) or hasattr(v, "__await__") for v in values), event


async def test_flowhooks_adapter_under_the_async_driver() -> None:
    """FlowhooksAdapter with AsyncDriver: resolved inputs and results, on the driver's loop."""
    recorder, metrics = RecordingCallback(), MetricsCallback()
    dr = await (
        async_driver.Builder()
        .with_modules(_module("async_features_one_adapter", ASYNC_SOURCE))
        .with_adapters(base.DictResult(), FlowhooksAdapter([recorder, metrics]))
        .build()
    )
    before = set(threading.enumerate())
    assert await dr.execute(["doubled"], inputs={"day": 1}) == {"doubled": 6}
    assert set(threading.enumerate()) - before == set()
    events = recorder.events
    _check_stream(events)
    _no_awaitables(events)
    assert [(e.type.value, e.node_id) for e in events[1:-1]] == [
        ("node_start", "rows"),
        ("node_end", "rows"),
        ("node_start", "total"),
        ("node_end", "total"),
        ("node_start", "doubled"),
        ("node_end", "doubled"),
    ]
    assert events[0].payload == {"day": 1}
    assert recorder.events_for("total")[0].payload == {"rows": [1, 2]}
    assert recorder.events_for("doubled")[0].payload == {"total": 3}
    assert [e.payload for e in recorder.events_of("node_end")] == [[1, 2], 3, 6]
    end = events[-1]
    assert end.status == "succeeded"
    assert end.payload == {"rows": [1, 2], "total": 3, "doubled": 6}
    [run_id] = set(recorder.run_ids)
    run = metrics.get_run(run_id)
    assert run is not None
    assert run.status == "succeeded"


async def test_flowhooks_adapter_under_the_async_driver_on_failure() -> None:
    """FlowhooksAdapter with AsyncDriver: a failing node sends its error and fails the run."""
    recorder, metrics = RecordingCallback(), MetricsCallback()
    dr = await (
        async_driver.Builder()
        .with_modules(_module("async_features_one_adapter_fail", ASYNC_SOURCE))
        .with_adapters(base.DictResult(), FlowhooksAdapter([recorder, metrics]))
        .build()
    )
    with pytest.raises(ValueError, match="negative day"):
        await dr.execute(["doubled"], inputs={"day": -5})
    events = recorder.events
    _check_stream(events)
    _no_awaitables(events)
    [error] = recorder.errors
    assert (error.node_id, error.type, error.message) == ("total", "ValueError", "negative day")
    assert [e.node_id for e in recorder.events_of("node_end")] == ["rows"]
    assert "doubled" not in [e.node_id for e in recorder.events_of("node_start")]
    end = events[-1]
    assert end.status == "failed"
    assert end.payload == {"rows": [-5, -4]}
    [run_id] = set(recorder.run_ids)
    run = metrics.get_run(run_id)
    assert run is not None
    assert run.status == "failed"
    assert run.nodes["total"].status == "failed"


async def test_the_sync_driver_called_from_a_coroutine() -> None:
    """The sync Driver run inside an event loop is still reported through the sync hooks."""
    recorder = RecordingCallback()
    dr = (
        driver.Builder()
        .with_modules(_module("features_in_loop", SYNC_SOURCE))
        .with_adapters(base.DictResult(), FlowhooksAdapter(recorder))
        .build()
    )
    assert dr.execute(["total"], inputs={"day": 1}) == {"total": 6}
    _check_stream(recorder.events)
    assert [e.node_id for e in recorder.events_of("node_end")] == ["rows", "total"]
    assert recorder.events[-1].payload == {"rows": [1, 2, 3], "total": 6}


def test_bad_arguments_are_named() -> None:
    """Bad handler lists and options name the adapter and the parameter."""
    with pytest.raises(TypeError, match="FlowhooksAdapter"):
        FlowhooksAdapter(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="workflow_name="):
        AsyncFlowhooksAdapter(None, workflow_name="")
    bad: Any = 3
    with pytest.raises(TypeError, match="resource_id="):
        FlowhooksAdapter(None, resource_id=bad)


PARALLEL_SOURCE = """
import time
from hamilton.htypes import Collect, Parallelizable

def item(count: int) -> Parallelizable[int]:
    yield from range(count)

def squared(item: int) -> int:
    time.sleep(0.02)  # the executor's threads run several at once
    return item * item

def total(squared: Collect[int]) -> int:
    return sum(squared)
"""


@pytest.mark.parametrize("threads", [False, True])
def test_each_execution_in_a_parallel_block_is_a_node_of_its_own(threads: bool) -> None:
    """A node run once per item of a ``Parallelizable`` (several at once in threads) is
    ``squared``, ``squared#2`` ...: the dataflow's result stands and nothing is merged."""
    from hamilton.execution.executors import MultiThreadingExecutor, SynchronousLocalTaskExecutor

    recorder = RecordingCallback()
    executor = MultiThreadingExecutor(max_tasks=4) if threads else SynchronousLocalTaskExecutor()
    dr = (
        driver.Builder()
        .with_modules(_module("parallel_items", PARALLEL_SOURCE))
        .with_adapters(base.DictResult(), FlowhooksAdapter(recorder))
        .enable_dynamic_execution(allow_experimental_mode=True)
        .with_remote_executor(executor)
        .build()
    )
    assert dr.execute(["total"], inputs={"count": 4}) == {"total": 14}
    _check_stream(recorder.events)
    squared = sorted(
        e.node_id or "" for e in recorder.events_of("node_end") if "squared" in (e.node_id or "")
    )
    assert squared == ["squared", "squared#2", "squared#3", "squared#4"]
    end = recorder.events[-1]
    assert end.status == "succeeded"
    assert sorted(v for k, v in end.payload.items() if k.startswith("squared")) == [0, 1, 4, 9]


@pytest.mark.parametrize("event_type", ["node_start", "node_end", "workflow_end"])
@pytest.mark.parametrize("async_driver_", [False, True])
async def test_a_raise_error_handler_reaches_the_caller(
    event_type: str, async_driver_: bool
) -> None:
    """SPEC §4: a raise_error handler's exception propagates; Hamilton's execute raises it."""

    class Guard(BaseCallbackHandler):
        raise_error = True

    async def refuse(self: Any, *args: Any) -> None:
        raise RuntimeError(f"guard refused {event_type}")

    setattr(Guard, f"on_{event_type}", refuse)
    recorder = RecordingCallback()
    adapter = FlowhooksAdapter([Guard(), recorder])
    if async_driver_:
        dr = (
            await async_driver.Builder()
            .with_modules(_module("async_flow_guard", ASYNC_SOURCE))
            .with_adapters(adapter)
            .build()
        )
        execution: Any = dr.execute(["doubled"], inputs={"day": 1})
    else:
        sync_dr = (
            driver.Builder()
            .with_modules(_module("sync_flow_guard", SYNC_SOURCE))
            .with_adapters(adapter)
            .build()
        )
        execution = asyncio.to_thread(sync_dr.execute, ["mean"], inputs={"day": 1})
    with pytest.raises(RuntimeError, match=f"guard refused {event_type}"):
        await execution
    assert [e.type for e in recorder.events_of("workflow_end")] == ["workflow_end"]
    expected = "succeeded" if event_type == "workflow_end" else "failed"
    assert recorder.events[-1].status == expected


class SeesItsRun(BaseCallbackHandler):
    """On every event, what ``current_run()`` says; on a node's end, a custom event."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    def _look(self, what: str) -> None:
        from flowhooks import current_run

        ctx = current_run(None)
        self.seen.append((what, ctx.run_id if ctx else None))

    async def on_workflow_start(self, workflow_id: str, input_data: Any) -> None:
        self._look("workflow_start")

    async def on_node_start(self, node_id: str, input_data: Any) -> None:
        self._look(f"node_start {node_id}")

    async def on_node_end(self, node_id: str, output_data: Any) -> None:
        from flowhooks import current_run

        self._look(f"node_end {node_id}")
        await current_run().emit("seen", node_id)

    async def on_error(self, error_info: Any) -> None:
        self._look(f"error {error_info.node_id}")


@pytest.mark.parametrize("failing", [False, True], ids=["succeeds", "fails"])
def test_handlers_see_the_run_as_current_on_node_events(failing: bool) -> None:
    """current_run() in a handler is the bridged run on every event, nodes' included: a
    handler can send a custom event from node_end, and it is that node's."""
    looker, recorder = SeesItsRun(), RecordingCallback()
    dr = (
        driver.Builder()
        .with_modules(_module(f"features_current_{failing}", SYNC_SOURCE))
        .with_adapters(base.DictResult(), FlowhooksAdapter([looker, recorder]))
        .build()
    )
    if failing:
        with pytest.raises(ValueError, match="too many rows"):
            dr.execute(["count"], overrides={"rows": list(range(200))})
    else:
        dr.execute(["total"], inputs={"day": 1})
    [run_id] = set(recorder.run_ids)
    assert looker.seen[0] == ("workflow_start", run_id)
    assert all(seen_run == run_id for _, seen_run in looker.seen), looker.seen
    if not failing:
        customs = recorder.events_of("custom_event")
        assert [(e.node_id, e.payload) for e in customs] == [("rows", "rows"), ("total", "total")]
    else:
        assert ("error count", run_id) in looker.seen


async def test_handlers_see_the_run_as_current_under_the_async_driver() -> None:
    looker, recorder = SeesItsRun(), RecordingCallback()
    dr = await (
        async_driver.Builder()
        .with_modules(_module("async_features_current", ASYNC_SOURCE))
        .with_adapters(base.DictResult(), AsyncFlowhooksAdapter([looker, recorder]))
        .build()
    )
    await dr.execute(["doubled"], inputs={"day": 1})
    [run_id] = set(recorder.run_ids)
    assert [seen_run for _, seen_run in looker.seen] == [run_id] * 7  # start, 3 x 2 node events
    customs = recorder.events_of("custom_event")
    assert [(e.node_id, e.payload) for e in customs] == [
        (n, n) for n in ("rows", "total", "doubled")
    ]


INTERRUPTED_SOURCE = """
def ok(day: int) -> int:
    return day

def stopped(ok: int) -> int:
    raise KeyboardInterrupt
"""


def test_a_keyboard_interrupt_in_a_node_cancels_the_run() -> None:
    """Ctrl-C in a node: Hamilton's hooks say success=True; the run ends cancelled."""
    recorder = RecordingCallback()
    dr = (
        driver.Builder()
        .with_modules(_module("interrupted", INTERRUPTED_SOURCE))
        .with_adapters(base.DictResult(), FlowhooksAdapter(recorder))
        .build()
    )
    with pytest.raises(KeyboardInterrupt):
        dr.execute(["stopped"], inputs={"day": 1})
    _check_stream(recorder.events)
    assert [e.node_id for e in recorder.events_of("node_end")] == ["ok"]
    assert recorder.events[-1].status == "cancelled"


def test_an_execution_inside_an_except_block_is_not_taken_for_its_exception() -> None:
    """The exception the caller is handling is not the execution's own."""
    recorder = RecordingCallback()
    dr = (
        driver.Builder()
        .with_modules(_module("in_handler", SYNC_SOURCE))
        .with_adapters(base.DictResult(), FlowhooksAdapter(recorder))
        .build()
    )
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        assert dr.execute(["mean"], inputs={"day": 1}) == {"mean": 2.0}
    assert recorder.events[-1].status == "succeeded"
    assert {e.node_id for e in recorder.events_of("node_end")} == {"rows", "total", "count", "mean"}


SLOW_SOURCE = """
import asyncio

async def quick(day: int) -> int:
    return day

async def slow(quick: int) -> int:
    await asyncio.sleep(30)
    return quick
"""


@pytest.mark.parametrize("adapter", [FlowhooksAdapter, AsyncFlowhooksAdapter])
async def test_a_cancelled_async_driver_execution_ends_cancelled(adapter: Any) -> None:
    """Cancelled while a node waits: no node_end for it, the run ends cancelled."""
    recorder = RecordingCallback()
    dr = await (
        async_driver.Builder()
        .with_modules(_module(f"slow_{adapter.__name__}", SLOW_SOURCE))
        .with_adapters(base.DictResult(), adapter(recorder))
        .build()
    )
    execution = asyncio.ensure_future(dr.execute(["slow"], inputs={"day": 1}))
    while not recorder.events_for("slow"):
        await asyncio.sleep(0.01)
    execution.cancel()
    with pytest.raises(asyncio.CancelledError):
        await execution
    _check_stream(recorder.events)
    assert [e.node_id for e in recorder.events_of("node_end")] == ["quick"]
    assert recorder.events[-1].status == "cancelled"
