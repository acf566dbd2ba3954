"""Run controls from inside a run (SPEC §6 v2): ``ctx.cancel``, ``ctx.state``,
``ctx.emit_sync``, ``NodeResult.inputs``, and function callbacks seen by hook monitors."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from stream_checks import assert_well_formed

from flowhooks import (
    AsyncioRunner,
    HookCallReport,
    NodeStatus,
    Runner,
    RunResult,
    RunStatus,
    SequentialRunner,
    Workflow,
    add_hook_monitor,
    current_run,
    node,
)
from flowhooks.testing import RecordingCallback

RUNNERS = {"asyncio": AsyncioRunner, "sequential": SequentialRunner}


@pytest.fixture(params=list(RUNNERS.values()), ids=list(RUNNERS))
def runner(request: pytest.FixtureRequest) -> Runner:
    made: Runner = request.param()
    return made


async def test_a_node_cancels_its_own_run(runner: Runner) -> None:
    answers: list[bool] = []

    @node
    async def check(limit: int) -> int:
        ctx = current_run()
        answers.append(ctx.cancel(f"limit {limit} reached"))
        answers.append(ctx.cancel("again"))
        await asyncio.sleep(1)
        return limit

    @node
    async def after(check: int) -> int:
        return check

    recorder = RecordingCallback()
    result = await Workflow("self-stop", nodes=[check, after]).run(
        {"limit": 3}, callbacks=[recorder], runner=runner
    )
    assert answers == [True, False]
    assert result.status is RunStatus.CANCELLED
    assert result.cancel_reason == "limit 3 reached"
    assert result.nodes["check"].status is NodeStatus.CANCELLED
    assert result.nodes["after"].status is NodeStatus.SKIPPED
    assert_well_formed(recorder.events)


async def test_a_sync_node_cancels_its_own_run_from_its_worker_thread(runner: Runner) -> None:
    """``current_run().cancel()`` from a sync node (in a worker thread) stops the run as
    from an async node: the stop is requested on the run's loop, the answer comes back."""
    answers: list[bool] = []
    answered = threading.Event()

    @node
    def check(limit: int) -> int:  # a sync node, in a worker thread
        ctx = current_run()
        answers.append(ctx.cancel(f"limit {limit} reached"))
        answers.append(ctx.cancel("again"))
        answered.set()
        return limit

    @node
    async def after(check: int) -> int:
        return check

    recorder = RecordingCallback()
    result = await Workflow("self-stop-sync", nodes=[check, after]).run(
        {"limit": 3}, callbacks=[recorder], runner=runner
    )
    # The run does not wait for a cancelled sync body's thread; the thread goes on.
    assert await asyncio.to_thread(answered.wait, 10)
    assert answers == [True, False]
    assert result.status is RunStatus.CANCELLED
    assert result.cancel_reason == "limit 3 reached"
    assert result.nodes["after"].status is NodeStatus.SKIPPED
    assert_well_formed(recorder.events)


async def test_state_is_shared_by_nodes_and_handlers_and_kept_in_the_result(
    runner: Runner,
) -> None:
    seen_at_end: list[dict[str, Any]] = []

    @node
    async def count() -> None:
        current_run().state["rows"] = 10

    @node
    def double(count: None) -> None:  # a sync node, in a worker thread
        current_run().state["rows"] *= 2

    def on_complete(result: RunResult) -> None:
        seen_at_end.append(dict(result.state))

    wf = Workflow("state", nodes=[count, double], on_workflow_complete=on_complete)
    result = await wf.run(runner=runner)
    assert result.state == {"rows": 20}
    assert seen_at_end == [{"rows": 20}]


async def test_emit_sync_from_a_sync_node_reaches_handlers_in_order(runner: Runner) -> None:
    @node
    def load(n: int) -> int:
        ctx = current_run()
        for i in range(n):
            ctx.emit_sync("progress", {"done": i + 1})
            time.sleep(0.001)
        return n

    recorder = RecordingCallback()
    result = await Workflow("sync-emit", nodes=[load]).run(
        {"n": 3}, callbacks=[recorder], runner=runner
    )
    assert result.status is RunStatus.SUCCEEDED
    customs = recorder.custom_events("progress")
    assert [e.payload for e in customs] == [{"done": 1}, {"done": 2}, {"done": 3}]
    assert {e.node_id for e in customs} == {"load"}
    assert_well_formed(recorder.events)


async def test_emit_sync_on_the_loop_thread_says_to_await_emit() -> None:
    errors: list[str] = []

    @node
    async def wrong() -> None:
        try:
            current_run().emit_sync("x", 1)
        except RuntimeError as exc:
            errors.append(str(exc))

    await Workflow("wrong", nodes=[wrong]).run()
    assert errors
    assert "await ctx.emit" in errors[0]


async def test_node_result_keeps_the_inputs_of_the_last_attempt(runner: Runner) -> None:
    @node
    async def source() -> int:
        return 4

    @node
    async def fails(source: int, factor: int) -> int:
        raise ValueError(source * factor)

    result = await Workflow("inputs", nodes=[source, fails]).run({"factor": 2}, runner=runner)
    assert result.nodes["fails"].inputs == {"source": 4, "factor": 2}
    assert result.nodes["source"].inputs == {}
    assert result.to_dict()["nodes"]["fails"]["inputs"] == {"source": 4, "factor": 2}


def succeeded_callback(node_id: str, ctx: Any) -> None:
    return None


def failed_callback(node_id: str, error: Any, ctx: Any) -> None:
    raise RuntimeError("alerting is down")


def completed_callback(result: RunResult) -> None:
    return None


async def test_function_callbacks_are_reported_to_hook_monitors(runner: Runner) -> None:
    reports: list[HookCallReport] = []
    remove = add_hook_monitor(reports.append)

    @node(on_success=succeeded_callback)
    async def fine() -> int:
        return 1

    @node(on_failure=failed_callback)
    async def broken(fine: int) -> int:
        raise ValueError("no")

    try:
        await Workflow(
            "monitored", nodes=[fine, broken], on_workflow_failure=completed_callback
        ).run(runner=runner)
    finally:
        remove()
    by_label = {r.label.rsplit(".", 1)[-1]: r for r in reports}
    assert by_label["succeeded_callback"].event_type == "node_end"
    assert by_label["succeeded_callback"].error is None
    assert by_label["failed_callback"].event_type == "error"
    assert isinstance(by_label["failed_callback"].error, RuntimeError)
    assert by_label["completed_callback"].event_type == "workflow_end"
    assert all(r.seconds is not None for r in reports)
