"""ExternalRun: a run of code that is not a Workflow, reported with a Workflow run's events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from stream_checks import Editing

from flowhooks import (
    BaseCallbackHandler,
    CallbackManager,
    DuplicateRunError,
    ErrorInfo,
    Event,
    ExternalRun,
    RunContext,
    SequentialRunner,
    Workflow,
    current_run,
    node,
)
from flowhooks.testing import RecordingCallback

SAME_FIELDS = ("type", "seq", "node_id", "attempt", "status", "name", "workflow_name")


def _shape(events: list[Event]) -> list[tuple[Any, ...]]:
    """What must match between two runs' streams: every field but ids, times and durations."""
    rows = []
    for e in events:
        payload = e.payload
        if isinstance(payload, ErrorInfo):
            payload = (payload.type, payload.message, payload.node_id, payload.attempt)
        rows.append((*(getattr(e, f) for f in SAME_FIELDS), payload, e.duration is None))
    return rows


async def test_events_match_a_workflow_run_of_the_same_steps() -> None:
    """Handlers get the same stream from an ExternalRun as from the equivalent Workflow run."""

    @node
    async def extract(day: int) -> list[int]:
        await current_run().emit("rows", 3)
        return [day, day + 1]

    @node
    async def load(extract: list[int]) -> int:
        raise ValueError("bad row")

    wf = Workflow("nightly", nodes=[extract, load])
    from_workflow = RecordingCallback()
    wf_result = await wf.run({"day": 1}, callbacks=[from_workflow], runner=SequentialRunner())

    from_external = RecordingCallback()
    run = ExternalRun(from_external, workflow_name="nightly", inputs={"day": 1})

    async def pipeline() -> None:
        async with run:
            async with run.node("extract", {"day": 1}) as n:
                await run.emit("rows", 3)
                n.output = [1, 2]
            async with run.node("load", {"extract": [1, 2]}):
                raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        await pipeline()

    assert _shape(from_external.events) == _shape(from_workflow.events)
    assert [e.seq for e in from_external.events] == list(range(1, 8))
    assert {e.run_id for e in from_external.events} == {run.run_id}
    assert from_external.events[0].args == (run.run_id, {"day": 1})
    result = run.result
    assert result is not None
    assert (result.status, result.final_node, result.outputs) == (
        wf_result.status,
        wf_result.final_node,
        wf_result.outputs,
    )
    assert result.error is not None
    assert result.error.type == "ValueError"
    assert result.error.node_id == "load"
    assert result.error.attempt == 1
    assert result.nodes["extract"].status == "succeeded"
    assert result.nodes["load"].status == "failed"


async def test_identity_fields_reach_every_event() -> None:
    """run_id, resource_id, metadata and parent_run_id given to ExternalRun are on each event."""
    recorder = RecordingCallback()
    async with (
        ExternalRun(
            [recorder],
            workflow_name="sync-orders",
            run_id="run-42",
            resource_id="tenant-7",
            metadata={"trigger": "cron"},
            parent_run_id="parent-1",
        ) as run,
        run.node("fetch") as n,
    ):
        n.output = 1
    assert run.run_id == "run-42"
    for event in recorder.events:
        assert event.run_id == "run-42"
        assert event.workflow_name == "sync-orders"
        assert event.resource_id == "tenant-7"
        assert event.metadata == {"trigger": "cron"}
        assert event.parent_run_id == "parent-1"
    assert run.result is not None
    assert run.result.parent_run_id == "parent-1"


async def test_a_fresh_run_id_per_run() -> None:
    """Without run_id=, each run gets a fresh 32-hex id, known before it starts."""
    first = ExternalRun(None, workflow_name="w")
    second = ExternalRun(None, workflow_name="w")
    assert first.run_id != second.run_id
    assert len(first.run_id) == 32
    assert int(first.run_id, 16) >= 0
    assert first.result is None


async def test_succeeded_run_result_and_workflow_end() -> None:
    """workflow_end carries the status, the duration and {node: output} of succeeded nodes."""
    recorder = RecordingCallback()
    async with ExternalRun(recorder, workflow_name="w", inputs={"n": 2}) as run:
        async with run.node("a", {"n": 2}) as n:
            n.output = 4
        async with run.node("b", {"a": 4}) as n:
            await asyncio.sleep(0.01)
            n.output = "done"
    end = recorder.events[-1]
    assert end.type == "workflow_end"
    assert end.status == "succeeded"
    assert end.payload == {"a": 4, "b": "done"}
    assert end.duration is not None
    assert end.duration >= 0.01
    b_end = recorder.events_for("b")[-1]
    assert b_end.type == "node_end"
    assert b_end.duration is not None
    assert b_end.duration >= 0.01
    result = run.result
    assert result is not None
    assert result.succeeded
    assert result.final_node == "b"
    assert result.inputs == {"n": 2}
    assert result.nodes["b"].attempts == 1
    assert result.nodes["b"].started_at is not None
    assert result.nodes["b"].ended_at is not None
    assert result.started_at <= result.nodes["a"].started_at <= result.ended_at  # type: ignore[operator]
    recorder.assert_called("workflow_end", times=1)
    recorder.assert_no_duplicates()


async def test_an_exception_escaping_the_block_fails_the_run_and_is_reraised() -> None:
    """Raised outside any node: failed, with that exception's ErrorInfo, and no error event."""
    recorder = RecordingCallback()
    with pytest.raises(RuntimeError, match="no config"):
        async with ExternalRun(recorder, workflow_name="w") as run:
            raise RuntimeError("no config")
    result = run.result
    assert result is not None
    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.type, result.error.message, result.error.node_id) == (
        "RuntimeError",
        "no config",
        None,
    )
    assert result.error.severity == "critical"
    assert result.final_node is None
    recorder.assert_types(["workflow_start", "workflow_end"])
    assert recorder.events[-1].status == "failed"


async def test_a_node_error_the_caller_catches_still_fails_the_run() -> None:
    """A node whose last attempt failed fails the run even when the block goes on."""
    async with ExternalRun(None, workflow_name="w") as run:
        try:
            async with run.node("optional"):
                raise KeyError("missing")
        except KeyError:
            pass
        async with run.node("after") as n:
            n.output = 1
    result = run.result
    assert result is not None
    assert result.status == "failed"
    assert result.final_node == "optional"
    assert result.error is not None
    assert result.error.type == "KeyError"
    assert result.outputs == {"after": 1}


async def test_a_later_attempt_that_succeeds_clears_the_failure() -> None:
    """attempt= numbers the attempts; will_retry=True marks a retried failure as a warning."""
    recorder = RecordingCallback()
    async with ExternalRun(recorder, workflow_name="w") as run:
        for attempt in (1, 2, 3):
            try:
                async with run.node("fetch", attempt=attempt, will_retry=attempt < 3) as n:
                    if attempt < 3:
                        raise ConnectionError(f"try {attempt}")
                    n.output = "page"
                break
            except ConnectionError:
                continue
    result = run.result
    assert result is not None
    assert result.succeeded
    assert result.nodes["fetch"].attempts == 3
    assert result.outputs == {"fetch": "page"}
    errors = recorder.errors
    assert [(e.attempt, e.severity, e.will_retry) for e in errors] == [
        (1, "warning", True),
        (2, "warning", True),
    ]
    assert [e.attempt for e in recorder.events_of("node_start")] == [1, 2, 3]


async def test_critical_nodes_report_critical_errors() -> None:
    """critical=True gives the node's error severity critical (what alerting handlers page on)."""
    recorder = RecordingCallback()
    run = ExternalRun(recorder, workflow_name="w")

    async def pay() -> None:
        async with run, run.node("pay", critical=True):
            raise OSError("gateway down")

    with pytest.raises(OSError, match="gateway down"):
        await pay()
    [error] = recorder.errors
    assert error.severity == "critical"
    assert error.node_id == "pay"
    assert error.run_id == run.run_id
    assert error.workflow_name == "w"
    assert isinstance(error.exception, OSError)
    assert "gateway down" in error.stack_trace


async def test_an_async_generator_closed_by_its_consumer_cancels_the_run() -> None:
    """``aclose()`` of a generator whose block was still open: cancelled, no ``error``."""
    recorder = RecordingCallback()
    runs: list[ExternalRun] = []

    async def rows() -> AsyncGenerator[int, None]:
        async with ExternalRun(recorder, workflow_name="stream") as run:
            runs.append(run)
            for i in range(5):
                async with run.node(f"row{i}"):
                    yield i

    stream = rows()
    async for row in stream:
        if row == 1:
            break
    await stream.aclose()
    result = runs[0].result
    assert result is not None
    assert result.status == "cancelled"
    assert result.nodes["row1"].status == "cancelled"
    assert not recorder.errors
    assert recorder.events[-1].status == "cancelled"


async def test_an_async_generator_abandoned_by_its_consumer_cancels_the_run() -> None:
    """``break`` without ``aclose()``: asyncio's finalizer hook closes the generator in a task
    (and a context) of its own. The run still ends cancelled and its id is free again."""
    recorder = RecordingCallback()

    async def rows() -> AsyncGenerator[int, None]:
        async with (
            ExternalRun(recorder, workflow_name="stream", run_id="abandoned") as run,
            run.node("row"),
        ):
            yield 1

    async for _ in rows():
        break
    for _ in range(100):
        if recorder.events_of("workflow_end"):
            break
        await asyncio.sleep(0.01)
    assert [e.status for e in recorder.events_of("workflow_end")] == ["cancelled"]
    async with ExternalRun(recorder, workflow_name="again", run_id="abandoned"):
        pass


async def test_cancelling_the_task_cancels_the_run_and_reraises() -> None:
    """A CancelledError escaping the block ends the run cancelled; handlers still get the end."""
    recorder = RecordingCallback()
    started = asyncio.Event()
    holder: dict[str, ExternalRun] = {}

    async def pipeline() -> None:
        async with ExternalRun(recorder, workflow_name="w") as run:
            holder["run"] = run
            async with run.node("slow"):
                started.set()
                await asyncio.sleep(30)

    task = asyncio.create_task(pipeline())
    await started.wait()
    task.cancel("operator stop")
    with pytest.raises(asyncio.CancelledError):
        await task
    result = holder["run"].result
    assert result is not None
    assert result.status == "cancelled"
    assert result.cancel_reason == "operator stop"
    assert result.nodes["slow"].status == "cancelled"
    recorder.assert_types(["workflow_start", "node_start", "workflow_end"])
    assert recorder.events[-1].status == "cancelled"


async def test_a_caller_timeout_becomes_timeout_error_after_the_end() -> None:
    """asyncio.timeout around the block: the run ends cancelled and the caller gets TimeoutError."""
    recorder = RecordingCallback()
    run = ExternalRun(recorder, workflow_name="w")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05), run, run.node("slow"):
            await asyncio.sleep(30)
    assert run.result is not None
    assert run.result.status == "cancelled"
    recorder.assert_called("workflow_end", times=1)


async def test_a_cancellation_during_the_end_lets_it_complete() -> None:
    """Cancelled while workflow_end is being dispatched: the handler still finishes it."""
    finished: list[str] = []
    entered = asyncio.Event()

    class SlowEnd(BaseCallbackHandler):
        async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
            entered.set()
            await asyncio.sleep(0.05)
            finished.append(workflow_id)

    async def pipeline() -> None:
        async with ExternalRun(SlowEnd(), workflow_name="w", run_id="r-end"):
            pass

    task = asyncio.create_task(pipeline())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == ["r-end"]


async def test_current_run_inside_the_block() -> None:
    """current_run() is the run's RunContext inside the block, its nodes and its handlers."""
    seen: list[RunContext] = []

    class Peek(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            seen.append(current_run())

    async with ExternalRun(Peek(), workflow_name="w", inputs={"k": 1}) as run:
        ctx = current_run()
        assert ctx is run.context
        assert (ctx.run_id, ctx.workflow_name, dict(ctx.inputs)) == (run.run_id, "w", {"k": 1})
        async with run.node("a") as n:
            assert current_run() is ctx
            n.output = 5
        assert ctx.outputs == {"a": 5}
    assert seen == [ctx]
    with pytest.raises(LookupError):
        current_run()
    assert ctx.result is run.result


async def test_events_sent_by_handlers_come_right_after_the_current_one() -> None:
    """A handler's current_run().emit() during node_start is dispatched next, re-entrantly."""
    recorder = RecordingCallback()

    class Echo(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            await current_run().emit("echo", node_id)

    async with (
        ExternalRun(CallbackManager([Echo(), recorder]), workflow_name="w") as run,
        run.node("a") as n,
    ):
        n.output = 1
    recorder.assert_types(
        ["workflow_start", "node_start", "custom_event", "node_end", "workflow_end"]
    )
    echo = recorder.custom_events("echo")[0]
    assert (echo.node_id, echo.attempt, echo.payload) == ("a", 1, "a")


async def test_concurrent_nodes_keep_one_ordered_stream() -> None:
    """Node blocks in concurrent tasks: seq is consecutive and each node starts before it ends."""
    recorder = RecordingCallback()

    class Slow(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            await asyncio.sleep(0.001)

    async def step(run: ExternalRun, i: int) -> None:
        async with run.node(f"n{i}", {"i": i}) as n:
            await asyncio.sleep(0.001 * (i % 3))
            await run.emit("progress", i)
            n.output = i

    async with ExternalRun(CallbackManager([Slow(), recorder]), workflow_name="fan") as run:
        await asyncio.gather(*(step(run, i) for i in range(20)))
    assert [e.seq for e in recorder.events] == list(range(1, len(recorder.events) + 1))
    for i in range(20):
        kinds = [e.type for e in recorder.events_for(f"n{i}")]
        assert kinds == ["node_start", "custom_event", "node_end"]
    assert run.result is not None
    assert run.result.outputs == {f"n{i}": i for i in range(20)}


async def test_duplicate_run_ids_are_refused_while_live() -> None:
    """A run id in use by a live run is DuplicateRunError on entering; free again after."""
    recorder = RecordingCallback()
    async with ExternalRun(recorder, workflow_name="w", run_id="same"):
        with pytest.raises(DuplicateRunError, match="same"):
            async with ExternalRun(recorder, workflow_name="w", run_id="same"):
                pass
        wf = Workflow("wf", nodes=[node(lambda: 1, name="one")])
        with pytest.raises(DuplicateRunError):
            await wf.run(run_id="same")
    assert len(recorder.events) == 2  # the refused runs sent nothing
    async with ExternalRun(recorder, workflow_name="w", run_id="same"):
        pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"workflow_name": ""}, ValueError, "workflow_name"),
        ({"workflow_name": 3}, TypeError, "workflow_name"),
        ({"workflow_name": "w", "inputs": [1]}, TypeError, "inputs="),
        ({"workflow_name": "w", "metadata": "x"}, TypeError, "metadata="),
        ({"workflow_name": "w", "run_id": 5}, TypeError, "run_id="),
        ({"workflow_name": "w", "run_id": " "}, ValueError, "run_id="),
        ({"workflow_name": "w", "resource_id": 1}, TypeError, "resource_id="),
        ({"workflow_name": "w", "parent_run_id": 1}, TypeError, "parent_run_id="),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], error: type, match: str) -> None:
    """Each bad argument is refused when the run is created, naming the parameter."""
    with pytest.raises(error, match=match):
        ExternalRun(None, **kwargs)
    with pytest.raises(error, match=match):
        ExternalRun.sync(None, **kwargs)


def test_bad_handlers_are_refused() -> None:
    """manager_or_handlers must be a manager, a handler or a list of handlers."""
    with pytest.raises(TypeError, match="ExternalRun"):
        ExternalRun(object(), workflow_name="w")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("",), ValueError, "non-empty"),
        ((3,), TypeError, "name"),
        (("a", [1]), TypeError, "input_data="),
        (("a", None, 0), ValueError, "attempt="),
        (("a", None, True), TypeError, "attempt="),
    ],
)
async def test_bad_node_arguments_are_named(args: tuple[Any, ...], error: type, match: str) -> None:
    """run.node() refuses bad arguments before any event."""
    recorder = RecordingCallback()
    async with ExternalRun(recorder, workflow_name="w") as run:
        with pytest.raises(error, match=match):
            run.node(*args)
    recorder.assert_types(["workflow_start", "workflow_end"])


async def test_a_node_name_cannot_run_twice_at_once() -> None:
    """Two concurrent attempts of one node name are refused: names identify running steps."""
    async with ExternalRun(None, workflow_name="w") as run, run.node("a") as n:
        with pytest.raises(ValueError, match="already running"):
            async with run.node("a"):
                pass
        n.output = 1
    assert run.result is not None
    assert run.result.succeeded


async def test_nothing_follows_workflow_end() -> None:
    """After the block, emit() and node() raise instead of sending events."""
    async with ExternalRun(None, workflow_name="w") as run:
        pass
    with pytest.raises(RuntimeError, match="ended"):
        await run.emit("late", 1)
    with pytest.raises(RuntimeError, match="ended"):
        async with run.node("late"):
            pass
    with pytest.raises(RuntimeError, match="already entered"):
        async with run:
            pass


async def test_raise_error_handlers_propagate_where_the_event_was_sent() -> None:
    """A raise_error handler's exception on node_end fails the node and leaves the block."""

    class Guard(BaseCallbackHandler):
        raise_error = True

        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            if output_data is None:
                raise ValueError(f"{node_id} returned nothing")

    with pytest.raises(ValueError, match="returned nothing"):
        async with ExternalRun(Guard(), workflow_name="w") as run, run.node("a"):
            pass
    result = run.result
    assert result is not None
    assert result.status == "failed"
    assert result.nodes["a"].status == "failed"
    assert result.outputs == {}


async def test_a_raise_error_handler_on_workflow_end_is_raised_after_the_end() -> None:
    """Raised from workflow_end: the other handlers still get the event, then it propagates."""
    recorder = RecordingCallback()

    class Guard(BaseCallbackHandler):
        raise_error = True

        async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
            raise RuntimeError("audit refused")

    with pytest.raises(RuntimeError, match="audit refused"):
        async with ExternalRun(CallbackManager([Guard(), recorder]), workflow_name="w"):
            pass
    recorder.assert_called("workflow_end", times=1)


async def test_a_raise_error_handler_on_workflow_start_ends_the_run_before_the_block() -> None:
    """Raised from workflow_start: the run ends failed at once and the block does not run."""
    recorder = RecordingCallback()

    class Guard(BaseCallbackHandler):
        raise_error = True

        async def on_workflow_start(self, workflow_id: str, input_data: dict[str, Any]) -> None:
            raise PermissionError("not today")

    ran = []
    run = ExternalRun(CallbackManager([Guard(), recorder]), workflow_name="w")
    with pytest.raises(PermissionError):
        async with run:
            ran.append(1)
    assert ran == []
    assert run.result is not None
    assert run.result.status == "failed"
    recorder.assert_types(["workflow_start", "workflow_end"])


async def test_inside_a_workflow_node_the_outer_node_is_not_this_runs_node() -> None:
    """An ExternalRun opened in a Workflow node: its custom events are its own, not the node's."""
    recorder = RecordingCallback()

    @node
    async def outer() -> str:
        async with ExternalRun(recorder, workflow_name="inner") as run:
            await run.emit("hello", 1)
        return run.run_id

    result = await Workflow("outer", nodes=[outer]).run()
    [hello] = recorder.custom_events("hello")
    assert hello.node_id is None
    assert hello.run_id == result.outputs["outer"]


async def test_opened_inside_another_run_it_is_a_sub_run_of_it() -> None:
    """Inside a Workflow node or an ExternalRun's block, a new ExternalRun is linked to
    that run (parent_run_id, and its resource_id and metadata unless given), as a
    Workflow run started in a node body is; an explicit parent_run_id wins."""
    recorder = RecordingCallback()

    @node
    async def outer() -> tuple[str | None, str | None]:
        async with ExternalRun(recorder, workflow_name="in-workflow") as run:
            pass
        assert run.result is not None
        return run.result.parent_run_id, run.result.resource_id

    result = await Workflow("outer", nodes=[outer]).run(resource_id="tenant-7", metadata={"k": 1})
    assert result.outputs["outer"] == (result.run_id, "tenant-7")
    [inner_start] = [e for e in recorder.events if e.workflow_name == "in-workflow"][:1]
    assert inner_start.metadata == {"k": 1}

    async with ExternalRun(workflow_name="outside", resource_id="t1") as parent:
        async with parent.node("step"), ExternalRun(recorder, workflow_name="in-step") as child:
            pass
        async with ExternalRun(recorder, workflow_name="explicit", parent_run_id="p") as given:
            pass
    assert child.result is not None
    assert (child.result.parent_run_id, child.result.resource_id) == (parent.run_id, "t1")
    assert {e.parent_run_id for e in recorder.events_for_run(child.run_id)} == {parent.run_id}
    assert given.result is not None
    assert given.result.parent_run_id == "p"

    async with ExternalRun(recorder, workflow_name="alone") as alone:
        pass
    assert alone.result is not None
    assert alone.result.parent_run_id is None


async def test_a_workflow_run_inside_it_is_a_sub_run_its_handlers_see() -> None:
    """A Workflow run started in an ExternalRun's block (or a node of it) is a sub-run, as
    inside a Workflow node: parent_run_id, and its events reach the block's handlers."""
    recorder = RecordingCallback()

    @node
    async def leaf() -> int:
        return 1

    child = Workflow("child", nodes=[leaf])
    outer = ExternalRun(recorder, workflow_name="outer", resource_id="t2")
    async with outer as run, run.node("step") as step:
        step.output = await child.run()
    inner = step.output
    assert inner.parent_run_id == run.run_id
    assert inner.resource_id == "t2"
    child_events = recorder.events_for_run(inner.run_id)
    assert [e.type for e in child_events] == [
        "workflow_start",
        "node_start",
        "node_end",
        "workflow_end",
    ]
    assert {e.parent_run_id for e in child_events} == {run.run_id}


async def test_a_keyboard_interrupt_from_workflow_start_still_ends_the_run() -> None:
    """A handler's KeyboardInterrupt on workflow_start: every handler still gets the run's
    one workflow_end, then the interrupt reaches the caller."""
    from flowhooks import BaseCallbackHandler, ExternalRun

    class Interrupting(BaseCallbackHandler):
        async def on_workflow_start(self, workflow_id: str, input_data: Any) -> None:
            raise KeyboardInterrupt("from a handler")

    first, last = RecordingCallback(), RecordingCallback()

    async def pipeline() -> None:
        async with ExternalRun([first, Interrupting(), last], workflow_name="w") as run:
            await step(run)

    async def step(run: Any) -> None:
        async with run.node("x") as n:
            n.output = 1

    with pytest.raises(KeyboardInterrupt):
        await pipeline()
    for rec in (first, last):
        assert [e.type.value for e in rec.events] == ["workflow_start", "workflow_end"]


async def test_a_handler_editing_what_it_is_given_changes_nothing_of_the_block() -> None:
    """As for a Workflow run: the mappings handed over are copies, per event."""
    mine = {"day": 1}
    run = ExternalRun(Editing(), workflow_name="w", inputs={"day": 1})
    async with run, run.node("extract", mine) as n:
        n.output = 2
    assert mine == {"day": 1}
    assert run.result is not None
    assert run.result.inputs == {"day": 1}
    assert run.result.outputs == {"extract": 2}
