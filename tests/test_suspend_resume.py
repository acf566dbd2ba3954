"""Suspend and resume (SPEC §12), with every runner: a node raises ``Suspend``, the run
ends ``suspended`` with exactly one ``workflow_end``, and ``resume`` continues it as a
new, linked run in which completed nodes are restored and the suspending node runs again."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from stream_checks import assert_well_formed

from flowhooks import (
    AsyncioRunner,
    MemoryRunStore,
    NodeStatus,
    NotResumable,
    Runner,
    RunResult,
    RunStatus,
    SequentialRunner,
    Suspend,
    Workflow,
    WorkflowSuspended,
    current_run,
    node,
)
from flowhooks.testing import RecordingCallback

RUNNERS = {"asyncio": AsyncioRunner, "sequential": SequentialRunner}


@pytest.fixture(params=list(RUNNERS.values()), ids=list(RUNNERS))
def runner(request: pytest.FixtureRequest) -> Runner:
    made: Runner = request.param()
    made.cancel_grace = 0.5
    return made


def approval_workflow(calls: Counter[str], **options: Any) -> Workflow:
    """quote -> approve (suspends until resumed with a decision) -> ship."""

    @node
    async def quote(total: int) -> dict[str, int]:
        calls["quote"] += 1
        return {"total": total}

    @node
    async def approve(quote: dict[str, int]) -> bool:
        calls["approve"] += 1
        ctx = current_run()
        if ctx.resume_data is None:
            ctx.state["asked"] = True
            raise Suspend("needs a manager's approval", payload={"amount": quote["total"]})
        return bool(ctx.resume_data["approved"])

    @node
    async def ship(approve: bool) -> str:
        calls["ship"] += 1
        return "shipped" if approve else "held"

    return Workflow("orders", nodes=[quote, approve, ship], **options)


async def test_a_suspended_run_ends_once_and_resumes_as_a_linked_run(runner: Runner) -> None:
    calls: Counter[str] = Counter()
    suspended: list[RunResult] = []
    wf = approval_workflow(calls, on_workflow_suspend=suspended.append)
    first = RecordingCallback()
    result = await wf.run({"total": 120}, callbacks=[first], runner=runner)

    assert result.status is RunStatus.SUSPENDED
    assert result.error is None
    assert result.suspension is not None
    assert result.suspension.node_id == "approve"
    assert result.suspension.payload == {"amount": 120}
    assert result.final_node == "approve"
    assert result.nodes["approve"].status is NodeStatus.SUSPENDED
    assert result.nodes["ship"].status is NodeStatus.PENDING
    assert result.state == {"asked": True}
    assert suspended == [result]
    assert_well_formed(first.events)
    assert first.events[-1].status == "suspended"
    assert first.errors == []  # a suspension is not an error
    with pytest.raises(WorkflowSuspended, match="needs a manager's approval"):
        result.raise_for_status()

    second = RecordingCallback()
    later = await wf.resume(result.run_id, {"approved": True}, callbacks=[second], runner=runner)
    assert later.status is RunStatus.SUCCEEDED
    assert later.resumed_from == result.run_id
    assert later.run_id != result.run_id
    assert later.outputs == {"quote": {"total": 120}, "approve": True, "ship": "shipped"}
    assert later.state == {"asked": True}
    assert calls == {"quote": 1, "approve": 2, "ship": 1}  # quote is restored, not run again
    assert_well_formed(second.events)
    assert [e.node_id for e in second.events_of("node_start")] == ["approve", "ship"]
    assert second.events[0].payload == {"total": 120}  # workflow_start: the original inputs


async def test_a_second_resume_names_the_run_that_resumed_it(runner: Runner) -> None:
    wf = approval_workflow(Counter())
    result = await wf.run({"total": 5}, runner=runner)
    later = await wf.resume(result.run_id, {"approved": False}, runner=runner)
    assert later.outputs["ship"] == "held"
    with pytest.raises(NotResumable, match=f"already resumed by run '{later.run_id}'"):
        await wf.resume(result.run_id, {"approved": True}, runner=runner)


async def test_concurrent_resumes_claim_the_run_once(runner: Runner) -> None:
    wf = approval_workflow(Counter())
    result = await wf.run({"total": 5}, runner=runner)
    outcomes = await asyncio.gather(
        *(wf.resume(result.run_id, {"approved": True}, runner=runner) for _ in range(5)),
        return_exceptions=True,
    )
    resumed = [o for o in outcomes if isinstance(o, RunResult)]
    refused = [o for o in outcomes if isinstance(o, NotResumable)]
    assert len(resumed) == 1
    assert len(refused) == 4


async def test_a_changed_graph_is_refused_unless_forced_and_the_refusal_consumes_nothing(
    runner: Runner,
) -> None:
    calls: Counter[str] = Counter()
    store = MemoryRunStore()
    result = await approval_workflow(calls).run({"total": 7}, runner=runner, store=store)

    @node
    async def audit(ship: str) -> str:
        return ship

    changed = approval_workflow(calls)
    changed.add_node(audit)
    with pytest.raises(NotResumable, match="different graph"):
        await changed.resume(result.run_id, {"approved": True}, store=store, runner=runner)
    later = await changed.resume(
        result.run_id, {"approved": True}, store=store, runner=runner, force=True
    )
    assert later.outputs["audit"] == "shipped"


async def test_resuming_an_unknown_run_is_refused() -> None:
    with pytest.raises(NotResumable, match="'nope' is not a suspended run"):
        await approval_workflow(Counter()).resume("nope")


async def test_an_expired_suspension_cannot_be_resumed(runner: Runner) -> None:
    @node
    async def wait_briefly() -> None:
        raise Suspend("short wait", expires_in=0.01)

    wf = Workflow("brief", nodes=[wait_briefly])
    result = await wf.run(runner=runner)
    assert result.suspension is not None
    assert result.suspension.expires_at is not None
    await asyncio.sleep(0.05)
    with pytest.raises(NotResumable, match="expired"):
        await wf.resume(result.run_id, runner=runner)


async def test_running_siblings_finish_and_keep_their_outputs(runner: Runner) -> None:
    @node
    async def waits() -> None:
        await asyncio.sleep(0.01)
        raise Suspend("later")

    @node
    async def slow() -> str:
        await asyncio.sleep(0.05)
        return "kept"

    @node
    async def after(waits: None, slow: str) -> str:
        return slow

    result = await Workflow("fan", nodes=[waits, slow, after]).run(runner=runner)
    assert result.status is RunStatus.SUSPENDED
    if runner.sequential:  # one node at a time: slow had not started, so it waits too
        assert result.nodes["slow"].status is NodeStatus.PENDING
        assert result.outputs == {}
    else:
        assert result.nodes["slow"].status is NodeStatus.SUCCEEDED
        assert result.outputs == {"slow": "kept"}
    assert result.nodes["after"].status is NodeStatus.PENDING


async def test_a_failure_meanwhile_wins_over_the_suspension() -> None:
    runner = AsyncioRunner(fail_fast=False)

    @node
    async def waits() -> None:
        raise Suspend("later")

    @node
    async def breaks() -> None:
        await asyncio.sleep(0.02)
        raise ValueError("broken")

    recorder = RecordingCallback()
    result = await Workflow("race", nodes=[waits, breaks]).run(callbacks=[recorder], runner=runner)
    assert result.status is RunStatus.FAILED
    assert result.suspension is None
    assert result.error is not None
    assert result.error.type == "ValueError"
    assert [e.status for e in recorder.events_of("workflow_end")] == ["failed"]


async def test_a_cancel_meanwhile_wins_over_the_suspension() -> None:
    started = asyncio.Event()

    @node
    async def waits() -> None:
        await started.wait()
        raise Suspend("later")

    @node
    async def long() -> None:
        started.set()
        await asyncio.sleep(30)

    handle = Workflow("race", nodes=[waits, long]).start()
    await started.wait()
    await asyncio.sleep(0.01)
    assert handle.cancel("operator") is True
    result = await handle
    assert result.status is RunStatus.CANCELLED
    assert result.cancel_reason == "operator"


async def test_a_suspended_sub_workflow_suspends_its_parent_and_resumes_with_it(
    runner: Runner,
) -> None:
    calls: Counter[str] = Counter()
    child = approval_workflow(calls)

    @node
    async def report(orders: dict[str, Any]) -> str:
        return orders["ship"]

    parent = Workflow("parent", nodes=[child.as_node(name="orders"), report])
    result = await parent.run({"total": 9}, runner=runner)
    assert result.status is RunStatus.SUSPENDED
    assert result.suspension is not None
    assert result.suspension.node_id == "orders"
    assert result.suspension.payload["node_id"] == "approve"
    later = await parent.resume(result.run_id, {"approved": True}, runner=runner)
    assert later.status is RunStatus.SUCCEEDED
    assert later.outputs["report"] == "shipped"
    assert calls == {"quote": 1, "approve": 2, "ship": 1}


async def test_two_nodes_suspending_give_one_suspension(runner: Runner) -> None:
    @node
    async def one() -> None:
        raise Suspend("first")

    @node
    async def two() -> None:
        raise Suspend("second")

    recorder = RecordingCallback()
    result = await Workflow("two", nodes=[one, two]).run(callbacks=[recorder], runner=runner)
    assert result.status is RunStatus.SUSPENDED
    assert result.suspension is not None
    assert result.suspension.node_id in {"one", "two"}
    assert len(recorder.events_of("workflow_end")) == 1


def test_suspend_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="reason"):
        Suspend(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expires_in"):
        Suspend("x", expires_in=float("nan"))


def test_resume_sync_from_sync_code() -> None:
    wf = approval_workflow(Counter())
    result = wf.run_sync({"total": 3})
    later = wf.resume_sync(result.run_id, {"approved": True})
    assert later.status is RunStatus.SUCCEEDED
