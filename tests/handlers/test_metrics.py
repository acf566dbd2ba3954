"""Tests for MetricsCallback: counts, durations, the report, and concurrent runs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from flowhooks import CallbackManager, ErrorInfo, Workflow, node
from flowhooks.handlers import MetricsCallback


async def start(m: CallbackManager, run: str, name: str = "etl", **kw: object) -> None:
    """Send workflow_start for ``run``."""
    await m.trigger("workflow_start", workflow_id=run, input_data={}, workflow_name=name, **kw)


async def end(m: CallbackManager, run: str, status: str, duration: float | None, **kw: object):
    """Send workflow_end for ``run``."""
    await m.trigger(
        "workflow_end", workflow_id=run, output_data={}, status=status, duration=duration, **kw
    )


async def node_ok(m: CallbackManager, run: str, node: str, duration: float, name: str = "etl"):
    """Send one successful node attempt."""
    await m.trigger("node_start", node_id=node, input_data={}, run_id=run, workflow_name=name)
    await m.trigger(
        "node_end", node_id=node, output_data=1, run_id=run, workflow_name=name, duration=duration
    )


async def node_fail(
    m: CallbackManager, run: str, node: str, duration: float, *, retry: bool, attempt: int = 1
) -> None:
    """Send one failed node attempt."""
    await m.trigger(
        "node_start", node_id=node, input_data={}, run_id=run, workflow_name="etl", attempt=attempt
    )
    info = ErrorInfo(
        type="ValueError", message="x", node_id=node, run_id=run, workflow_name="etl",
        will_retry=retry, attempt=attempt,
    )  # fmt: skip
    await m.trigger("error", info, duration=duration)


async def test_report_of_one_run_with_a_retry():
    """A run with a retried node counts nodes once, attempts twice and the failure in error_rate."""
    metrics = MetricsCallback()
    m = CallbackManager([metrics])
    await start(m, "r1")
    await node_ok(m, "r1", "extract", 0.5)
    await node_fail(m, "r1", "load", 0.25, retry=True, attempt=1)
    await node_ok(m, "r1", "load", 0.25)
    await end(m, "r1", "succeeded", 2.0)
    report = metrics.get_report()
    assert report["total_workflows"] == 1
    assert report["active_workflows"] == 0
    assert report["succeeded_workflows"] == 1
    assert report["total_nodes"] == 2
    assert report["total_node_attempts"] == 3
    assert report["node_successes"] == 2
    assert report["node_failures"] == 1
    assert report["retries"] == 1
    assert report["error_rate"] == pytest.approx(1 / 3)
    assert report["avg_workflow_duration"] == 2.0
    assert report["avg_node_duration"] == pytest.approx(1.0 / 3)
    assert report["slowest_nodes"][0] == {
        "run_id": "r1",
        "workflow_name": "etl",
        "node_id": "extract",
        "duration": 0.5,
        "attempts": 1,
        "status": "succeeded",
    }
    assert report["slowest_nodes"][1]["node_id"] == "load"
    assert report["slowest_nodes"][1]["duration"] == 0.5  # both attempts
    assert report["by_node"]["etl.load"] == {
        "executions": 2,
        "successes": 1,
        "failures": 1,
        "avg_duration": 0.25,
        "max_duration": 0.25,
    }


def test_empty_report_has_zeros_and_no_averages():
    """Before any event the counts are zero and the averages are None, not a division error."""
    report = MetricsCallback().get_report()
    assert report["total_workflows"] == 0
    assert report["error_rate"] == 0.0
    assert report["workflow_failure_rate"] == 0.0
    assert report["avg_workflow_duration"] is None
    assert report["avg_node_duration"] is None
    assert report["slowest_nodes"] == []


async def test_failed_and_cancelled_runs_are_counted_by_status():
    """Ended runs are split by status and workflow_failure_rate is failed over ended."""
    metrics = MetricsCallback()
    m = CallbackManager([metrics])
    for run, status in [("a", "succeeded"), ("b", "failed"), ("c", "cancelled"), ("d", "failed")]:
        await start(m, run)
        await end(m, run, status, 1.0)
    await start(m, "e")  # still going
    report = metrics.get_report()
    assert report["total_workflows"] == 5
    assert report["active_workflows"] == 1
    assert report["failed_workflows"] == 2
    assert report["cancelled_workflows"] == 1
    assert report["workflow_failure_rate"] == 0.5
    assert report["max_workflow_duration"] == 1.0


async def test_concurrent_runs_are_kept_apart():
    """Interleaved runs of the same workflow keep separate per-node details."""
    metrics = MetricsCallback()
    m = CallbackManager([metrics])

    async def one(run: str, seconds: float) -> None:
        await start(m, run)
        await asyncio.sleep(0)
        await node_ok(m, run, "step", seconds)
        await asyncio.sleep(0)
        await end(m, run, "succeeded", seconds * 2)

    await asyncio.gather(one("r1", 0.1), one("r2", 0.3), one("r3", 0.2))
    report = metrics.get_report()
    assert report["total_workflows"] == 3
    assert report["total_nodes"] == 3
    assert [n["run_id"] for n in report["slowest_nodes"]] == ["r2", "r3", "r1"]
    run = metrics.get_run("r2")
    assert run is not None
    assert run.nodes["step"].duration == 0.3
    assert run.duration == 0.6
    assert report["by_node"]["etl.step"]["executions"] == 3


def test_concurrent_threads_lose_no_counts():
    """Runs dispatched from several threads (one event loop each) are all counted exactly."""
    metrics = MetricsCallback(max_runs=None)

    def worker(t: int) -> None:
        async def go() -> None:
            m = CallbackManager([metrics])
            for i in range(50):
                run = f"t{t}-{i}"
                await start(m, run)
                await node_ok(m, run, "a", 0.01)
                await end(m, run, "succeeded", 0.02)

        asyncio.run(go())

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = metrics.get_report()
    assert report["total_workflows"] == 200
    assert report["total_nodes"] == 200
    assert report["node_successes"] == 200


async def test_durations_fall_back_to_event_timestamps():
    """Events sent without a duration are timed from their start event's timestamp."""
    metrics = MetricsCallback()
    m = CallbackManager([metrics])
    await start(m, "r")
    await m.trigger("node_start", node_id="a", input_data={}, run_id="r")
    await asyncio.sleep(0.05)
    await m.trigger("node_end", node_id="a", output_data=None, run_id="r")
    await end(m, "r", "succeeded", None)
    report = metrics.get_report()
    assert report["slowest_nodes"][0]["duration"] >= 0.04
    assert report["avg_workflow_duration"] is not None
    assert report["avg_workflow_duration"] >= 0.04


async def test_old_run_details_are_dropped_but_totals_kept():
    """Past max_runs ended runs, the oldest details go; totals still count every run."""
    metrics = MetricsCallback(max_runs=2)
    m = CallbackManager([metrics])
    for i in range(5):
        await start(m, f"r{i}")
        await node_ok(m, f"r{i}", "a", float(i))
        await end(m, f"r{i}", "succeeded", 1.0)
    report = metrics.get_report()
    assert report["total_workflows"] == 5
    assert report["total_nodes"] == 5
    assert metrics.get_run("r0") is None
    assert metrics.get_run("r4") is not None
    assert [n["run_id"] for n in report["slowest_nodes"]] == ["r4", "r3"]


async def test_slowest_nodes_can_be_limited():
    """get_report(slowest=n) lists at most n nodes, slowest first."""
    metrics = MetricsCallback()
    m = CallbackManager([metrics])
    await start(m, "r")
    for i, seconds in enumerate([0.3, 0.1, 0.9, 0.5]):
        await node_ok(m, "r", f"n{i}", seconds)
    assert [n["node_id"] for n in metrics.get_report(slowest=2)["slowest_nodes"]] == ["n2", "n3"]
    assert len(metrics.get_report(slowest=0)["slowest_nodes"]) == 0


async def test_duplicate_workflow_end_counts_once():
    """A second workflow_end for the same run does not count the run twice."""
    metrics = MetricsCallback()
    m = CallbackManager([metrics])
    await start(m, "r")
    await end(m, "r", "failed", 1.0)
    await end(m, "r", "failed", 1.0)
    report = metrics.get_report()
    assert report["failed_workflows"] == 1
    assert report["active_workflows"] == 0


async def test_events_outside_a_run_count_nodes_not_workflows():
    """Node events sent by hand without a run are counted as nodes, not as workflows."""
    metrics = MetricsCallback()
    m = CallbackManager([metrics])
    await m.trigger("node_start", node_id="a", input_data={})
    await m.trigger("node_end", node_id="a", output_data=1, duration=0.1)
    report = metrics.get_report()
    assert report["total_workflows"] == 0
    assert report["total_nodes"] == 1
    assert report["by_node"]["a"]["executions"] == 1


async def test_run_errors_and_custom_events_are_counted():
    """The run timeout counts as a run error (not a node failure); custom events are counted."""
    metrics = MetricsCallback()
    m = CallbackManager([metrics])
    await start(m, "r")
    await m.trigger("custom_event", name="tick", data=1, run_id="r")
    await m.trigger("error", ErrorInfo(type="TimeoutError", message="slow", run_id="r"))
    report = metrics.get_report()
    assert report["run_errors"] == 1
    assert report["node_failures"] == 0
    assert report["custom_events"] == 1
    run = metrics.get_run("r")
    assert run is not None
    assert run.custom_events == 1


async def test_reset_forgets_everything():
    """reset() brings the report back to its empty state."""
    metrics = MetricsCallback()
    m = CallbackManager([metrics])
    await start(m, "r")
    metrics.reset()
    assert metrics.get_report()["total_workflows"] == 0


@pytest.mark.parametrize("kwargs", [{"max_runs": -1}, {"slowest": -2}, {"max_runs": "10"}])
def test_bad_configuration_is_rejected(kwargs):
    """Negative or non-integer limits are rejected when the handler is created."""
    with pytest.raises(ValueError, match="must be"):
        MetricsCallback(**kwargs)


async def test_real_workflow_with_a_retried_node():
    """A real run whose node fails once and is retried is counted like the events say."""
    from flowhooks import Workflow, node

    calls = {"n": 0}

    @node(retries=1)
    async def flaky() -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("first try fails")
        return 1

    @node
    def total(flaky: int) -> int:
        return flaky + 1

    metrics = MetricsCallback()
    wf = Workflow("flaky-etl", nodes=[flaky, total])
    results = [await wf.run(callbacks=[metrics]) for _ in range(2)]
    assert [r.status for r in results] == ["succeeded", "succeeded"]
    report = metrics.get_report()
    assert report["total_workflows"] == 2
    assert report["succeeded_workflows"] == 2
    assert report["total_nodes"] == 4
    assert report["total_node_attempts"] == 5
    assert report["retries"] == 1
    assert report["error_rate"] == pytest.approx(1 / 5)
    assert report["avg_workflow_duration"] is not None
    assert report["by_node"]["flaky-etl.flaky"]["failures"] == 1
    run = metrics.get_run(results[0].run_id)
    assert run is not None
    assert run.nodes["flaky"].attempts == 2


async def test_cancelled_node_is_not_left_running(fail_fast_workflow):
    """A node cancelled by a failing sibling ends with status cancelled in the run's details."""
    metrics = MetricsCallback()
    result = await fail_fast_workflow.run(callbacks=[metrics])
    assert result.status == "failed"
    run = metrics.get_run(result.run_id)
    assert run is not None
    assert {n: m.status for n, m in run.nodes.items()} == {"slow": "cancelled", "bad": "failed"}
    slowest = {s["node_id"]: s["status"] for s in metrics.get_report()["slowest_nodes"]}
    assert slowest["slow"] == "cancelled"


async def test_open_node_of_hand_sent_events_ends_cancelled():
    """Outside a run, a node started and never ended is cancelled at workflow_end."""
    m = CallbackManager([metrics := MetricsCallback()])
    await m.trigger("workflow_start", workflow_id="r", input_data={})
    await m.trigger("node_start", node_id="a", input_data={}, run_id="r")
    await m.trigger("workflow_end", workflow_id="r", output_data={}, status="cancelled")
    run = metrics.get_run("r")
    assert run is not None
    assert run.nodes["a"].status == "cancelled"


async def test_node_stopped_during_its_retry_delay_is_not_left_retrying():
    """A run stopped while a node waits to retry closes that node with its final status."""
    started = asyncio.Event()

    @node(retries=3, retry_delay=5.0)
    async def flaky() -> int:
        started.set()
        raise ValueError("transient")

    metrics = MetricsCallback()
    handle = Workflow("flaky", nodes=[flaky]).start(callbacks=[metrics])
    await asyncio.wait_for(started.wait(), timeout=5)
    await asyncio.sleep(0.05)  # the first attempt failed; the retry delay is under way
    handle.cancel("stop")
    result = await asyncio.wait_for(handle, timeout=5)
    assert result.nodes["flaky"].status == "cancelled"
    run = metrics.get_run(result.run_id)
    assert run is not None
    assert run.nodes["flaky"].status == "cancelled"
