"""Tests of running workflows (SPEC §2 and §6), parametrised over every runner."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from stream_checks import assert_well_formed

from flowhooks import (
    AsyncioRunner,
    BaseCallbackHandler,
    CallbackManager,
    ErrorInfo,
    Event,
    NodeStatus,
    RunContext,
    RunHandle,
    Runner,
    RunResult,
    RunStatus,
    SequentialRunner,
    Workflow,
    WorkflowCancelled,
    WorkflowFailed,
    current_run,
    node,
)
from flowhooks.testing import RecordingCallback

RUNNERS: dict[str, Callable[[], Runner]] = {
    "AsyncioRunner()": AsyncioRunner,
    "AsyncioRunner(max_concurrency=2)": lambda: AsyncioRunner(max_concurrency=2),
    "SequentialRunner()": SequentialRunner,
}
CONTINUE_RUNNERS: dict[str, Callable[[], Runner]] = {
    "AsyncioRunner(fail_fast=False)": lambda: AsyncioRunner(fail_fast=False),
    "AsyncioRunner(max_concurrency=2, fail_fast=False)": lambda: AsyncioRunner(
        max_concurrency=2, fail_fast=False
    ),
    "SequentialRunner(fail_fast=False)": lambda: SequentialRunner(fail_fast=False),
}
ALL_RUNNERS = {**RUNNERS, **CONTINUE_RUNNERS}


class OnDask:
    """A ``DaskRunner`` on the session's ``LocalCluster``, opened for one test."""

    def __init__(self, *, fail_fast: bool) -> None:
        self.fail_fast = fail_fast


def with_cluster(runners: dict[str, Callable[[], Runner]], *dask: bool) -> list[Any]:
    """The params of ``runners`` plus a ``DaskRunner`` per ``fail_fast`` value (marked slow)."""
    params = [pytest.param(made, id=name) for name, made in runners.items()]
    params += [
        pytest.param(
            OnDask(fail_fast=fail_fast),
            id=f"DaskRunner(fail_fast={fail_fast})",
            marks=pytest.mark.slow,
        )
        for fail_fast in dask
    ]
    return params


@contextlib.asynccontextmanager
async def opened(request: pytest.FixtureRequest) -> AsyncIterator[Runner]:
    """The runner of ``request.param``: a core runner, or a DaskRunner held open for the test."""
    if not isinstance(request.param, OnDask):
        made: Runner = request.param()
        yield made
        return
    from flowhooks.runners import DaskRunner

    cluster = request.getfixturevalue("dask_cluster")
    async with DaskRunner(cluster.scheduler_address, fail_fast=request.param.fail_fast) as dask:
        yield dask


# Tests that observe only events and RunResult (not state a node body changes in this
# process) also run on a DaskRunner: node bodies run in the cluster's worker processes.


@pytest.fixture(params=with_cluster(RUNNERS, True))
async def runner_or_dask(request: pytest.FixtureRequest) -> AsyncIterator[Runner]:
    """Each runner of the core (fail-fast), and a DaskRunner."""
    async with opened(request) as made:
        yield made


@pytest.fixture(params=with_cluster(ALL_RUNNERS, True, False))
async def any_runner_or_dask(request: pytest.FixtureRequest) -> AsyncIterator[Runner]:
    """Each runner of the core, fail-fast and not, and a DaskRunner of each kind."""
    async with opened(request) as made:
        yield made


@pytest.fixture(params=with_cluster(CONTINUE_RUNNERS, False))
async def continue_runner_or_dask(request: pytest.FixtureRequest) -> AsyncIterator[Runner]:
    """Each runner of the core built with fail_fast=False, and a DaskRunner(fail_fast=False)."""
    async with opened(request) as made:
        yield made


@pytest.fixture(params=list(RUNNERS.values()), ids=list(RUNNERS))
def runner(request: pytest.FixtureRequest) -> Runner:
    """Each runner of the core, with default settings (fail-fast)."""
    made: Runner = request.param()
    return made


@pytest.fixture(params=list(ALL_RUNNERS.values()), ids=list(ALL_RUNNERS))
def any_runner(request: pytest.FixtureRequest) -> Runner:
    """Each runner of the core, fail-fast and not."""
    made: Runner = request.param()
    return made


@pytest.fixture(params=list(CONTINUE_RUNNERS.values()), ids=list(CONTINUE_RUNNERS))
def continue_runner(request: pytest.FixtureRequest) -> Runner:
    """Each runner of the core built with fail_fast=False."""
    made: Runner = request.param()
    return made


def steps(rec: RecordingCallback) -> list[tuple[str, str | None]]:
    """The recorded events as (type, node id) pairs."""
    return [(e.type.value, e.node_id) for e in rec.events]


def linear() -> Workflow:
    """source -> a -> b -> c, mixing sync and async nodes."""

    @node
    async def a(source: str) -> str:
        return source.upper()

    @node
    def b(a: str) -> str:
        return a + "!"

    @node
    async def c(b: str) -> int:
        return len(b)

    return Workflow("linear", nodes=[a, b, c])


# -- event sequences ------------------------------------------------------------------


async def test_success_event_sequence(
    runner_or_dask: Runner, callback_recorder: RecordingCallback
) -> None:
    """A successful run emits start, each node's start and end in order, then one end."""
    wf = linear()
    result = await wf.run({"source": "abc"}, callbacks=[callback_recorder], runner=runner_or_dask)
    assert result.status == "succeeded"
    assert steps(callback_recorder) == [
        ("workflow_start", None),
        ("node_start", "a"),
        ("node_end", "a"),
        ("node_start", "b"),
        ("node_end", "b"),
        ("node_start", "c"),
        ("node_end", "c"),
        ("workflow_end", None),
    ]
    events = callback_recorder.events
    assert_well_formed(events, wf.plan().deps)
    assert {e.run_id for e in events} == {result.run_id}
    assert {e.workflow_name for e in events} == {"linear"}
    assert [e.payload for e in events if e.type == "node_end"] == ["ABC", "ABC!", 4]
    assert all(e.attempt == 1 for e in events if e.node_id)
    assert events[-1].status == "succeeded"
    assert events[-1].duration is not None
    assert all(e.duration is not None for e in events if e.type == "node_end")
    callback_recorder.assert_no_duplicates()


async def test_workflow_id_is_the_run_id(runner_or_dask: Runner) -> None:
    """workflow_start/workflow_end receive the run's id as workflow_id, unique per run."""
    seen: list[str] = []

    class Ids(BaseCallbackHandler):
        async def on_workflow_start(self, workflow_id: str, input_data: dict[str, Any]) -> None:
            seen.append(workflow_id)

        def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
            seen.append(workflow_id)

    wf = linear()
    first = await wf.run({"source": "x"}, callbacks=Ids(), runner=runner_or_dask)
    await wf.run({"source": "x"}, callbacks=Ids(), runner=runner_or_dask, run_id="given")
    assert seen == [first.run_id, first.run_id, "given", "given"]
    assert first.run_id != "given"


async def test_input_data_is_exactly_the_kwargs(
    runner: Runner, callback_recorder: RecordingCallback
) -> None:
    """node_start's input_data holds the call's kwargs; defaults not overridden are left out."""
    calls: list[dict[str, Any]] = []

    @node
    def first(x: int, unused_default: int = 7) -> int:
        return x * 10

    @node
    async def second(first: int, y: int = 1, z: str = "z") -> int:
        calls.append({"first": first, "y": y, "z": z})
        return first + y

    inputs = {"x": 2, "y": 5}
    result = await Workflow("kw", nodes=[first, second]).run(
        inputs, callbacks=[callback_recorder], runner=runner
    )
    starts = {e.node_id: e.payload for e in callback_recorder.events_of("node_start")}
    assert starts == {"first": {"x": 2}, "second": {"first": 20, "y": 5}}
    assert calls == [{"first": 20, "y": 5, "z": "z"}]
    assert callback_recorder.events[0].payload == inputs
    assert result.inputs == inputs


async def test_workflow_end_output_is_run_outputs(
    any_runner_or_dask: Runner, callback_recorder: RecordingCallback
) -> None:
    """workflow_end's output_data equals RunResult.outputs: every node that succeeded."""

    @node
    def ok() -> int:
        return 1

    @node
    def bad() -> int:
        raise ValueError("no")

    result = await Workflow("w", nodes=[ok, bad]).run(
        callbacks=[callback_recorder], runner=any_runner_or_dask
    )
    end = callback_recorder.events[-1]
    assert end.payload == result.outputs
    assert "bad" not in result.outputs
    assert result.status == "failed"


async def test_failing_node_event_sequence(
    any_runner_or_dask: Runner, callback_recorder: RecordingCallback
) -> None:
    """A failing node fires one error, then exactly one workflow_end with status failed."""

    @node
    async def boom(source: str) -> None:
        raise ValueError(f"bad row in {source}")

    @node
    def after(boom: None) -> None:
        return None

    result = await Workflow("fail", nodes=[boom, after]).run(
        {"source": "s.csv"}, callbacks=[callback_recorder], runner=any_runner_or_dask
    )
    assert steps(callback_recorder) == [
        ("workflow_start", None),
        ("node_start", "boom"),
        ("error", "boom"),
        ("workflow_end", None),
    ]
    info = callback_recorder.errors[0]
    assert (info.type, info.message, info.severity) == ("ValueError", "bad row in s.csv", "error")
    assert (info.node_id, info.attempt, info.will_retry) == ("boom", 1, False)
    assert info.run_id == result.run_id
    assert "ValueError: bad row in s.csv" in info.stack_trace
    assert isinstance(info.exception, ValueError)
    assert callback_recorder.events[-1].status == "failed"
    assert result.status == "failed"
    assert result.error == info
    assert result.final_node == "boom"
    assert result.nodes["boom"].status == "failed"
    assert result.nodes["boom"].error == info
    assert result.nodes["after"].status == "skipped"
    assert result.nodes["after"].attempts == 0
    with pytest.raises(WorkflowFailed, match=r"failed at node 'boom': ValueError: bad row") as exc:
        result.raise_for_status()
    assert exc.value.__cause__ is info.exception
    assert exc.value.result is result


# -- retries --------------------------------------------------------------------------


async def test_retry_then_success(runner: Runner, callback_recorder: RecordingCallback) -> None:
    """Each attempt fires node_start; a retried failure is a warning with will_retry."""
    attempts: list[int] = []

    @node(retries=2)
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError(f"try {len(attempts)}")
        return "ok"

    result = await Workflow("r", nodes=[flaky]).run(callbacks=[callback_recorder], runner=runner)
    assert result.status == "succeeded"
    assert [(e.type.value, e.attempt) for e in callback_recorder.events[1:-1]] == [
        ("node_start", 1),
        ("error", 1),
        ("node_start", 2),
        ("error", 2),
        ("node_start", 3),
        ("node_end", 3),
    ]
    assert [(i.severity, i.will_retry, i.attempt) for i in callback_recorder.errors] == [
        ("warning", True, 1),
        ("warning", True, 2),
    ]
    assert result.nodes["flaky"].attempts == 3
    assert result.error is None
    assert_well_formed(callback_recorder.events)


async def test_node_timestamps_are_utc_and_within_the_run(runner_or_dask: Runner) -> None:
    """started_at/ended_at are UTC wall-clock times inside the run, in dependency order."""

    @node
    async def first() -> int:
        await asyncio.sleep(0.02)
        return 1

    @node
    async def second(first: int) -> int:
        await asyncio.sleep(0.02)
        return first + 1

    @node
    async def never(second: int) -> int:
        raise ValueError("boom")

    before = datetime.now(UTC)
    result = await Workflow("ts", nodes=[first, second, never]).run(runner=runner_or_dask)
    after = datetime.now(UTC)
    assert result.status == "failed"
    spans: list[tuple[datetime, datetime]] = []
    for name in ("first", "second", "never"):
        res = result.nodes[name]
        started, ended, duration = res.started_at, res.ended_at, res.duration
        assert started is not None, name
        assert ended is not None, name
        assert duration is not None, name
        assert started.tzinfo is UTC
        assert ended.tzinfo is UTC
        assert before - timedelta(milliseconds=5) <= started <= ended
        assert ended <= after + timedelta(milliseconds=5)
        assert (ended - started).total_seconds() == pytest.approx(duration, abs=0.002)
        assert res.to_dict()["started_at"] == started.isoformat()
        spans.append((started, ended))
    assert result.nodes["first"].duration >= 0.02  # type: ignore[operator]
    assert result.started_at <= spans[0][0]
    assert spans[0][1] <= spans[1][0]  # dependency order
    assert spans[1][1] <= spans[2][0]


@pytest.mark.parametrize(
    ("critical", "last_severity"), [(False, "error"), (True, "critical")], ids=["plain", "critical"]
)
async def test_retries_exhausted_severity(
    any_runner_or_dask: Runner,
    callback_recorder: RecordingCallback,
    critical: bool,
    last_severity: str,
) -> None:
    """Retried attempts are warnings (even for critical nodes); the last is error or critical."""

    @node(retries=1, critical=critical)
    def always() -> None:
        raise RuntimeError("down")

    result = await Workflow("r", nodes=[always]).run(
        callbacks=[callback_recorder], runner=any_runner_or_dask
    )
    assert [(i.severity, i.will_retry) for i in callback_recorder.errors] == [
        ("warning", True),
        (last_severity, False),
    ]
    assert result.status == "failed"
    assert result.error is callback_recorder.errors[-1]
    assert result.nodes["always"].attempts == 2


async def test_retry_delay_and_backoff(runner: Runner) -> None:
    """Attempt n's retry waits retry_delay * backoff ** (n - 1) seconds."""
    stamps: list[float] = []

    @node(retries=2, retry_delay=0.04, backoff=2)
    async def flaky() -> int:
        stamps.append(time.perf_counter())
        if len(stamps) < 3:
            raise OSError("transient")
        return len(stamps)

    result = await Workflow("r", nodes=[flaky]).run(runner=runner)
    assert result.outputs == {"flaky": 3}
    first_wait, second_wait = stamps[1] - stamps[0], stamps[2] - stamps[1]
    # Lower bounds only: a busy machine can stretch any wait. The second one's bound is
    # above the base delay, so it shows the backoff applied.
    assert first_wait >= 0.04 * 0.9
    assert second_wait >= 0.08 * 0.9


# -- timeouts -------------------------------------------------------------------------


async def test_node_timeout_per_attempt(
    runner_or_dask: Runner, callback_recorder: RecordingCallback
) -> None:
    """A node's timeout bounds each attempt; the error says which node timed out and when."""

    @node(timeout=0.05, retries=1)
    async def slow() -> None:
        await asyncio.sleep(10)

    result = await Workflow("t", nodes=[slow]).run(
        callbacks=[callback_recorder], runner=runner_or_dask
    )
    assert result.status == "failed"
    infos = callback_recorder.errors
    assert [(i.type, i.attempt, i.will_retry) for i in infos] == [
        ("TimeoutError", 1, True),
        ("TimeoutError", 2, False),
    ]
    assert infos[1].message == "node 'slow' timed out after 0.05s (attempt 2)"
    assert result.nodes["slow"].status == "failed"
    assert result.duration < 5


async def test_run_timeout(
    any_runner_or_dask: Runner, callback_recorder: RecordingCallback
) -> None:
    """timeout= fails the run with a run-level TimeoutError event and cancels running nodes."""

    @node
    async def slow() -> None:
        await asyncio.sleep(10)

    @node
    def later(slow: None) -> None:
        return None

    result = await Workflow("t", nodes=[slow, later]).run(
        callbacks=[callback_recorder], runner=any_runner_or_dask, timeout=0.05
    )
    assert steps(callback_recorder) == [
        ("workflow_start", None),
        ("node_start", "slow"),
        ("error", None),
        ("workflow_end", None),
    ]
    info = callback_recorder.errors[0]
    assert (info.type, info.node_id, info.severity, info.attempt) == (
        "TimeoutError",
        None,
        "critical",
        None,
    )
    assert "timed out after 0.05s" in info.message
    assert result.status == "failed"
    assert result.error == info
    assert result.final_node is None
    assert result.nodes["slow"].status == "cancelled"
    assert result.nodes["later"].status == "skipped"
    assert callback_recorder.events[-1].status == "failed"
    assert result.duration < 5


# -- fail-fast and fail_fast=False ----------------------------------------------------


async def test_fail_fast_cancels_running_and_skips_the_rest(
    runner_or_dask: Runner, callback_recorder: RecordingCallback
) -> None:
    """With fail-fast, a failure cancels running nodes silently and skips those not started."""

    @node
    async def boom() -> None:
        await asyncio.sleep(0.02)
        raise ValueError("boom")

    @node
    async def slow() -> None:
        await asyncio.sleep(10)

    @node
    def after_boom(boom: None) -> None:
        return None

    @node
    def after_slow(slow: None) -> None:
        return None

    result = await Workflow("ff", nodes=[boom, slow, after_boom, after_slow]).run(
        callbacks=[callback_recorder], runner=runner_or_dask
    )
    statuses = {name: n.status.value for name, n in result.nodes.items()}
    if runner_or_dask.sequential:
        assert statuses == {
            "boom": "failed",
            "slow": "skipped",
            "after_boom": "skipped",
            "after_slow": "skipped",
        }
        assert steps(callback_recorder) == [
            ("workflow_start", None),
            ("node_start", "boom"),
            ("error", "boom"),
            ("workflow_end", None),
        ]
    else:
        assert statuses == {
            "boom": "failed",
            "slow": "cancelled",
            "after_boom": "skipped",
            "after_slow": "skipped",
        }
        assert steps(callback_recorder) == [
            ("workflow_start", None),
            ("node_start", "boom"),
            ("node_start", "slow"),
            ("error", "boom"),
            ("workflow_end", None),
        ]
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.node_id == "boom"
    assert result.duration < 5


async def test_fail_fast_false_lets_independent_branches_finish(
    continue_runner_or_dask: Runner, callback_recorder: RecordingCallback
) -> None:
    """Without fail-fast, independent branches finish, descendants of failures are skipped."""

    @node
    async def boom() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("first")

    @node
    async def ok() -> int:
        await asyncio.sleep(0.03)
        return 1

    @node
    async def boom2() -> None:
        await asyncio.sleep(0.05)
        raise KeyError("second")

    @node
    def after_boom(boom: None) -> None:
        return None

    @node
    def after_ok(ok: int) -> int:
        return ok + 1

    result = await Workflow("cont", nodes=[boom, ok, boom2, after_boom, after_ok]).run(
        callbacks=[callback_recorder], runner=continue_runner_or_dask
    )
    statuses = {name: n.status.value for name, n in result.nodes.items()}
    assert statuses == {
        "boom": "failed",
        "ok": "succeeded",
        "boom2": "failed",
        "after_boom": "skipped",
        "after_ok": "succeeded",
    }
    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.node_id, result.error.message) == ("boom", "first")
    assert result.final_node == "boom"
    assert result.outputs == {"ok": 1, "after_ok": 2}
    assert callback_recorder.events_for("after_boom") == []
    assert [i.node_id for i in callback_recorder.errors] == ["boom", "boom2"]
    assert_well_formed(callback_recorder.events)


# -- cancellation ---------------------------------------------------------------------


async def test_cancel_before_start(
    any_runner_or_dask: Runner, callback_recorder: RecordingCallback
) -> None:
    """A run cancelled before its first node still fires workflow_start and one workflow_end."""
    cancelled: list[RunResult] = []

    @node
    def never() -> None:
        raise AssertionError("must not run")

    wf = Workflow("c", nodes=[never], on_workflow_cancel=cancelled.append)
    handle = wf.start(callbacks=[callback_recorder], runner=any_runner_or_dask)
    assert isinstance(handle, RunHandle)
    assert handle.cancel("changed my mind") is True
    result = await handle
    assert steps(callback_recorder) == [("workflow_start", None), ("workflow_end", None)]
    assert callback_recorder.events[-1].status == "cancelled"
    assert result.status == "cancelled"
    assert result.cancel_reason == "changed my mind"
    assert result.final_node is None
    assert result.nodes["never"].status == "skipped"
    assert cancelled == [result]
    assert handle.done()
    assert handle.result() is result
    assert handle.cancel("again") is False
    with pytest.raises(WorkflowCancelled, match="was cancelled: changed my mind"):
        result.raise_for_status()


async def test_cancel_mid_run(any_runner: Runner, callback_recorder: RecordingCallback) -> None:
    """handle.cancel(reason) cancels the running node silently and skips the rest."""
    started = asyncio.Event()
    cancelled: list[RunResult] = []

    @node
    async def first() -> int:
        return 1

    @node
    async def wait(first: int) -> None:
        started.set()
        await asyncio.sleep(10)

    @node
    def after(wait: None) -> None:
        return None

    wf = Workflow("c", nodes=[first, wait, after], on_workflow_cancel=cancelled.append)
    handle = wf.start(callbacks=[callback_recorder], runner=any_runner)
    assert "running" in repr(handle)
    await asyncio.wait_for(started.wait(), 5)
    with pytest.raises(asyncio.InvalidStateError):
        handle.result()
    handle.cancel("operator asked")
    result = await handle
    assert steps(callback_recorder) == [
        ("workflow_start", None),
        ("node_start", "first"),
        ("node_end", "first"),
        ("node_start", "wait"),
        ("workflow_end", None),
    ]
    assert result.status == "cancelled"
    assert result.cancel_reason == "operator asked"
    assert result.outputs == {"first": 1}
    assert {n: r.status.value for n, r in result.nodes.items()} == {
        "first": "succeeded",
        "wait": "cancelled",
        "after": "skipped",
    }
    assert cancelled == [result]
    assert handle.run_id == result.run_id


async def test_cancel_default_reason(runner_or_dask: Runner) -> None:
    """handle.cancel() without a reason still sets a cancel_reason."""
    wf = Workflow("c", nodes=[node(lambda: None, name="n")])
    handle = wf.start(runner=runner_or_dask)
    handle.cancel()
    result = await handle
    assert result.cancel_reason == "cancelled through RunHandle.cancel()"


async def test_cancelling_the_awaiting_task(
    any_runner: Runner, callback_recorder: RecordingCallback
) -> None:
    """Cancelling the task awaiting run() re-raises CancelledError after callbacks fired."""
    started = asyncio.Event()
    results: list[RunResult] = []

    @node
    async def wait() -> None:
        started.set()
        await asyncio.sleep(10)

    wf = Workflow("c", nodes=[wait], on_workflow_cancel=results.append)
    task = asyncio.create_task(wf.run(callbacks=[callback_recorder], runner=any_runner))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps(callback_recorder) == [
        ("workflow_start", None),
        ("node_start", "wait"),
        ("workflow_end", None),
    ]
    assert callback_recorder.events[-1].status == "cancelled"
    assert len(results) == 1
    assert results[0].status == "cancelled"
    assert results[0].cancel_reason
    assert results[0].nodes["wait"].status == "cancelled"


# -- run_sync, outputs=, threads ------------------------------------------------------


def test_run_sync_outside_a_loop() -> None:
    """run_sync runs the workflow from synchronous code and returns its RunResult."""
    result = linear().run_sync({"source": "ab"}, runner=SequentialRunner())
    assert result.outputs == {"a": "AB", "b": "AB!", "c": 3}
    assert linear().run_sync({"source": "ab"}).status == "succeeded"


def test_run_sync_tracebacks_hold_only_the_node_error() -> None:
    """A node's stack trace under run_sync is its own, not chained to the loop probe."""

    @node
    async def broken() -> None:
        raise ValueError("bad row 7")

    result = Workflow("tb", nodes=[broken]).run_sync()
    assert result.error is not None
    trace = result.error.stack_trace
    assert trace.startswith("Traceback (most recent call last)")
    assert "ValueError: bad row 7" in trace
    assert "no running event loop" not in trace
    assert "During handling of the above exception" not in trace


def test_printing_a_run_error_gives_one_line() -> None:
    """print(result.error) shows type, message, node and attempt; repr keeps everything."""

    @node(retries=1)
    async def parse() -> None:
        raise ValueError("bad row 7")

    error = Workflow("p", nodes=[parse]).run_sync().error
    assert error is not None
    assert str(error) == "ValueError: bad row 7 (node 'parse', attempt 2)"
    assert "stack_trace=" in repr(error)
    assert str(ErrorInfo(type="TimeoutError", message="run timed out")) == (
        "TimeoutError: run timed out"
    )


async def test_run_sync_inside_a_running_loop_is_a_clear_error() -> None:
    """run_sync inside a running loop raises a RuntimeError pointing to await run()."""
    with pytest.raises(RuntimeError, match=r"cannot be used inside a running event loop.*await"):
        linear().run_sync({"source": "x"})


async def test_outputs_subset(runner: Runner, callback_recorder: RecordingCallback) -> None:
    """outputs= runs only those nodes and their ancestors; the result holds only them."""
    ran: list[str] = []

    @node
    def a() -> int:
        ran.append("a")
        return 1

    @node
    def b(a: int) -> int:
        ran.append("b")
        return a + 1

    @node
    def c(a: int) -> int:
        ran.append("c")
        return a + 2

    result = await Workflow("o", nodes=[a, b, c]).run(
        outputs=["b"], callbacks=[callback_recorder], runner=runner
    )
    assert sorted(ran) == ["a", "b"]
    assert result.outputs == {"a": 1, "b": 2}
    assert set(result.nodes) == {"a", "b"}
    assert {e.node_id for e in callback_recorder.events if e.node_id} == {"a", "b"}
    assert result.final_node == "b"


async def test_sync_nodes_run_in_worker_threads(runner: Runner) -> None:
    """Sync node functions run in a worker thread, async ones on the loop's thread."""
    loop_thread = threading.get_ident()
    seen: dict[str, int] = {}

    @node
    def sync_node() -> None:
        seen["sync"] = threading.get_ident()

    @node
    async def async_node() -> None:
        seen["async"] = threading.get_ident()

    await Workflow("th", nodes=[sync_node, async_node]).run(runner=runner)
    assert seen["sync"] != loop_thread
    assert seen["async"] == loop_thread


async def test_independent_nodes_run_concurrently() -> None:
    """The default runner overlaps independent nodes; max_concurrency=1 does not."""
    active = 0
    peak = 0

    async def body() -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1

    wf = Workflow("par", nodes=[node(body, name=f"n{i}") for i in range(4)])
    await wf.run()
    assert peak == 4
    peak = 0
    await wf.run(runner=AsyncioRunner(max_concurrency=2))
    assert peak == 2
    peak = 0
    await wf.run(runner=SequentialRunner())
    assert peak == 1


# -- RunContext -----------------------------------------------------------------------


async def test_current_run_inside_nodes(
    runner: Runner, callback_recorder: RecordingCallback
) -> None:
    """current_run() gives nodes the run's context: ids, inputs, a copy, read-only outputs, emit."""
    seen: dict[str, Any] = {}

    @node
    async def a(config: dict[str, Any]) -> int:
        return 1

    @node
    async def b(a: int) -> int:
        ctx = current_run()
        seen["ctx"] = ctx
        init = ctx.get_init_data()
        init["config"]["mutated"] = True
        seen["init"] = init
        seen["outputs"] = dict(ctx.outputs)
        with pytest.raises(TypeError):
            ctx.outputs["x"] = 1  # type: ignore[index]
        with pytest.raises(TypeError):
            ctx.inputs["x"] = 1  # type: ignore[index]
        await ctx.emit("progress", {"done": 1})
        return a + 1

    @node
    def c(b: int) -> str:
        return current_run().run_id

    config = {"level": 1}
    result = await Workflow("ctx", nodes=[a, b, c]).run(
        {"config": config},
        callbacks=[callback_recorder],
        runner=runner,
        resource_id="tenant-1",
        metadata={"trace": "t1"},
    )
    ctx: RunContext = seen["ctx"]
    assert (ctx.run_id, ctx.workflow_name, ctx.resource_id, ctx.metadata) == (
        result.run_id,
        "ctx",
        "tenant-1",
        {"trace": "t1"},
    )
    assert ctx.parent_run_id is None
    assert ctx.node_count == 3
    assert ctx.result is result
    assert config == {"level": 1}
    assert seen["init"] == {"config": {"level": 1, "mutated": True}}
    assert seen["outputs"] == {"a": 1}
    assert result.outputs["c"] == result.run_id
    custom = callback_recorder.custom_events("progress")
    assert len(custom) == 1
    assert (custom[0].node_id, custom[0].name, custom[0].payload) == ("b", "progress", {"done": 1})
    assert callback_recorder.events[-1].resource_id == "tenant-1"
    assert callback_recorder.events[-1].metadata == {"trace": "t1"}
    assert_well_formed(callback_recorder.events)


async def test_every_event_of_a_run_is_whole_and_its_own(runner: Runner) -> None:
    """The events a run builds for ``event=`` handlers carry every field, in the
    model's order, with the run's identity and an id of their own, and share no
    state: each is an ordinary Event that validates and round-trips as itself."""
    recorder = RecordingCallback()

    @node
    async def a() -> int:
        return 1

    @node
    async def b(a: int) -> int:
        return a + 1

    result = await Workflow("whole", nodes=[a, b]).run(
        callbacks=[recorder], runner=runner, resource_id="r-1", metadata={"m": 1}
    )
    events = recorder.events
    assert len(events) == 6
    assert_well_formed(events)
    assert len({e.id for e in events}) == len(events)
    assert len({id(e.__dict__) for e in events}) == len(events)
    for event in events:
        assert list(event.__dict__) == list(Event.model_fields)
        assert (event.run_id, event.workflow_name, event.resource_id) == (
            result.run_id,
            "whole",
            "r-1",
        )
        assert event.metadata == {"m": 1}
        assert event.timestamp.tzinfo is not None
        assert Event.model_validate(event.model_dump()) == event
        assert Event.model_validate_json(event.model_dump_json()).id == event.id
    assert [e.node_id for e in events] == [None, "a", "a", "b", "b", None]
    assert [e.attempt for e in events] == [None, 1, 1, 1, 1, None]


async def test_a_runs_events_copy_with_changes_like_any_event(runner: Runner) -> None:
    """``model_copy`` of an event a run built, with ``update=`` or deep, gives a changed
    copy and leaves the event (and the run's other events) as they were."""
    recorder = RecordingCallback()

    @node
    async def a() -> int:
        return 1

    await Workflow("copies", nodes=[a]).run(callbacks=[recorder], runner=runner)
    first, second = recorder.events[:2]
    changed = second.model_copy(update={"status": "replayed"})
    deep = second.model_copy(update={"node_id": "b"}, deep=True)
    assert (changed.status, deep.node_id) == ("replayed", "b")
    assert (second.status, second.node_id) == (None, "a")
    assert "status" in changed.model_fields_set
    assert first.model_fields_set == set(Event.model_fields)
    assert copy.copy(second) == second


async def test_current_run_inside_handlers(runner_or_dask: Runner) -> None:
    """Handlers see current_run(); a handler's custom event goes right after the current one."""
    seen: list[tuple[str, str]] = []
    rec = RecordingCallback()

    class Emitter(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            ctx = current_run()
            seen.append((node_id, ctx.run_id))
            await ctx.emit("noted", node_id)

        async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
            ctx = current_run()
            assert ctx.result is not None
            seen.append(("end", ctx.result.status.value))

    result = await linear().run({"source": "x"}, callbacks=[rec, Emitter()], runner=runner_or_dask)
    assert seen == [
        ("a", result.run_id),
        ("b", result.run_id),
        ("c", result.run_id),
        ("end", "succeeded"),
    ]
    pairs = [(e.type.value, e.node_id, e.name) for e in rec.events]
    assert pairs[1:4] == [
        ("node_start", "a", None),
        ("node_end", "a", None),
        ("custom_event", "a", "noted"),
    ]
    assert_well_formed(rec.events)


async def test_emit_after_workflow_end_is_refused(runner_or_dask: Runner) -> None:
    """Nothing follows workflow_end: a handler emitting from it gets a RuntimeError."""
    errors: list[BaseException] = []
    rec = RecordingCallback()

    class Late(BaseCallbackHandler):
        async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
            try:
                await current_run().emit("late", None)
            except RuntimeError as exc:
                errors.append(exc)

    await linear().run({"source": "x"}, callbacks=[rec, Late()], runner=runner_or_dask)
    assert len(errors) == 1
    assert "cannot be sent after workflow_end" in str(errors[0])
    assert rec.events[-1].type == "workflow_end"


def test_current_run_outside_a_run() -> None:
    """current_run() outside any run raises LookupError saying where it works."""
    with pytest.raises(LookupError, match="outside a workflow run"):
        current_run()


async def test_emit_needs_a_name(runner_or_dask: Runner) -> None:
    """RunContext.emit rejects an empty event name."""

    @node
    async def a() -> None:
        await current_run().emit("", 1)

    result = await Workflow("e", nodes=[a]).run(runner=runner_or_dask)
    assert result.error is not None
    assert result.error.type == "TypeError"


# -- function callbacks ---------------------------------------------------------------


async def test_node_callbacks_do_not_block_downstream(runner: Runner) -> None:
    """on_success may wait for a downstream node (it does not block it) and has ended by return."""
    gate = asyncio.Event()
    finished: list[tuple[str, str]] = []

    async def on_success(node_id: str, ctx: RunContext) -> None:
        await asyncio.wait_for(gate.wait(), 5)
        await asyncio.sleep(0.01)
        finished.append((node_id, ctx.run_id))

    @node(on_success=on_success)
    async def upstream() -> int:
        return 1

    @node
    async def downstream(upstream: int) -> int:
        gate.set()
        return upstream + 1

    result = await Workflow("cb", nodes=[upstream, downstream]).run(runner=runner)
    assert result.status == "succeeded"
    assert finished == [("upstream", result.run_id)]


async def test_node_failure_callback(any_runner_or_dask: Runner) -> None:
    """on_failure is called once, after the node failed for good, with its ErrorInfo and context."""
    calls: list[tuple[str, ErrorInfo, str]] = []

    def on_failure(node_id: str, error: ErrorInfo, ctx: RunContext) -> None:
        time.sleep(0.01)
        calls.append((node_id, error, ctx.run_id))

    @node(retries=2, on_failure=on_failure)
    async def bad() -> None:
        raise ValueError("nope")

    result = await Workflow("cb", nodes=[bad]).run(runner=any_runner_or_dask)
    assert len(calls) == 1
    node_id, info, run_id = calls[0]
    assert (node_id, info.attempt, info.will_retry, run_id) == ("bad", 3, False, result.run_id)
    assert info is result.error


async def test_failing_function_callbacks_are_isolated(runner_or_dask: Runner) -> None:
    """A node or workflow callback that raises is logged and does not change the outcome."""

    def broken(*args: Any) -> None:
        raise RuntimeError("callback broke")

    wf = Workflow(
        "cb",
        nodes=[node(lambda: 1, name="one", on_success=broken)],
        on_workflow_complete=broken,
    )
    result = await wf.run(runner=runner_or_dask)
    assert result.status == "succeeded"


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "cancelled"])
async def test_workflow_callbacks(any_runner_or_dask: Runner, outcome: str) -> None:
    """Exactly the workflow callback matching the outcome is called, with the RunResult."""
    calls: list[tuple[str, RunResult]] = []

    async def complete(result: RunResult) -> None:
        calls.append(("complete", result))

    def failure(result: RunResult) -> None:
        calls.append(("failure", result))

    def cancel(result: RunResult) -> None:
        calls.append(("cancel", result))

    @node
    async def body() -> int:
        if outcome == "failed":
            raise ValueError("x")
        if outcome == "cancelled":
            await asyncio.sleep(10)
        return 1

    wf = Workflow(
        "wcb",
        nodes=[body],
        on_workflow_complete=complete,
        on_workflow_failure=failure,
        on_workflow_cancel=cancel,
    )
    handle = wf.start(runner=any_runner_or_dask)
    if outcome == "cancelled":
        await asyncio.sleep(0.01)
        handle.cancel("stop")
    result = await handle
    assert result.status == outcome
    name = {"succeeded": "complete", "failed": "failure", "cancelled": "cancel"}[outcome]
    assert calls == [(name, result)]


# -- raise_error handlers (SPEC §4) -----------------------------------------------------


class Raiser(BaseCallbackHandler):
    """A handler that raises from one hook, with raise_error set."""

    raise_error = True

    def __init__(self, hook: str, node_id: str | None = None) -> None:
        self.hook = hook
        self.node_id = node_id

    def _maybe(self, hook: str, node_id: str | None = None) -> None:
        if hook == self.hook and (self.node_id is None or node_id == self.node_id):
            raise PermissionError(f"{hook} refused")

    async def on_workflow_start(self, workflow_id: str, input_data: dict[str, Any]) -> None:
        self._maybe("workflow_start")

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        self._maybe("node_start", node_id)

    async def on_node_end(self, node_id: str, output_data: Any) -> None:
        self._maybe("node_end", node_id)

    async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
        self._maybe("workflow_end")


async def test_raise_error_on_node_start_fails_node_without_retry(any_runner: Runner) -> None:
    """A raise_error handler failing on node_start fails that node (no retry) and the run."""
    rec = RecordingCallback()
    manager = CallbackManager()
    manager.add_handler(rec, priority=1)
    manager.add_handler(Raiser("node_start", "b"))
    attempts: list[int] = []

    @node
    def a() -> int:
        return 1

    @node(retries=3)
    def b(a: int) -> int:
        attempts.append(1)
        return a

    result = await Workflow("re", nodes=[a, b]).run(callbacks=manager, runner=any_runner)
    assert result.status == "failed"
    assert attempts == []
    assert result.nodes["b"].status == "failed"
    assert result.nodes["b"].attempts == 1
    assert result.error is not None
    assert (result.error.type, result.error.node_id) == ("PermissionError", "b")
    assert result.final_node == "b"
    assert steps(rec)[-3:] == [("node_start", "b"), ("error", "b"), ("workflow_end", None)]
    assert_well_formed(rec.events)


async def test_raise_error_on_node_end_fails_node(runner_or_dask: Runner) -> None:
    """A raise_error handler failing on node_end fails the node; its output is not kept."""

    @node
    def a() -> int:
        return 1

    @node
    def b(a: int) -> int:
        return 2

    result = await Workflow("re", nodes=[a, b]).run(
        callbacks=[Raiser("node_end", "a")], runner=runner_or_dask
    )
    assert result.status == "failed"
    assert result.outputs == {}
    assert result.nodes["a"].status == "failed"
    assert result.nodes["b"].status == "skipped"
    assert result.error is not None
    assert result.error.type == "PermissionError"


async def test_raise_error_on_workflow_start_fails_run(runner_or_dask: Runner) -> None:
    """A raise_error handler failing on workflow_start fails the run before any node."""
    rec = RecordingCallback()
    result = await linear().run(
        {"source": "x"}, callbacks=[rec, Raiser("workflow_start")], runner=runner_or_dask
    )
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "PermissionError"
    assert steps(rec) == [("workflow_start", None), ("workflow_end", None)]


async def test_raise_error_on_workflow_end_is_reraised_after_callbacks(
    runner_or_dask: Runner,
) -> None:
    """A raise_error handler failing on workflow_end: run re-raises after the rest ran."""
    rec = RecordingCallback()
    completed: list[RunResult] = []
    manager = CallbackManager()
    manager.add_handler(Raiser("workflow_end"), priority=5)
    manager.add_handler(rec)
    wf = Workflow("re", nodes=[node(lambda: 1, name="one")], on_workflow_complete=completed.append)
    with pytest.raises(PermissionError, match="workflow_end refused"):
        await wf.run(callbacks=manager, runner=runner_or_dask)
    assert rec.types[-1] == "workflow_end"
    assert len(completed) == 1
    assert completed[0].status == "succeeded"


# -- final_node, callbacks composition --------------------------------------------------


async def test_final_node(runner_or_dask: Runner) -> None:
    """final_node is the last node to succeed of a succeeded run."""
    result = await linear().run({"source": "x"}, runner=runner_or_dask)
    assert result.final_node == "c"
    assert result.raise_for_status() is result
    assert result.succeeded


async def test_callbacks_dispatch_order(runner_or_dask: Runner) -> None:
    """Workflow and run callbacks combine by priority, then the workflow's before the run's."""
    order: list[str] = []

    class Named(BaseCallbackHandler):
        def __init__(self, name: str) -> None:
            self.name = name

        def on_workflow_start(self, workflow_id: str, input_data: dict[str, Any]) -> None:
            order.append(self.name)

    wf_manager = CallbackManager()
    wf_manager.add_handler(Named("wf-low"))
    wf_manager.add_handler(Named("wf-high"), priority=10)
    run_manager = CallbackManager()
    run_manager.add_handler(Named("run-low"))
    run_manager.add_handler(Named("run-mid"), priority=5)
    wf = Workflow("order", nodes=[node(lambda: 1, name="one")], callbacks=wf_manager)
    await wf.run(callbacks=run_manager, runner=runner_or_dask)
    assert order == ["wf-high", "run-mid", "wf-low", "run-low"]


async def test_sequential_runner_order_is_deterministic() -> None:
    """SequentialRunner runs nodes in wf.nodes order, every time."""

    @node
    def root() -> int:
        return 0

    names = [f"n{i}" for i in range(6)]
    nodes = [root] + [node(lambda root: root, name=n) for n in reversed(names)]
    wf = Workflow("seq", nodes=nodes)
    for _ in range(3):
        rec = RecordingCallback()
        await wf.run(callbacks=[rec], runner=SequentialRunner())
        assert [e.node_id for e in rec.events_of("node_start")] == list(wf.nodes)


# -- sub-workflows --------------------------------------------------------------------


def child_workflow(recorder: RecordingCallback, *, fail: bool = False) -> Workflow:
    """A two-node child workflow taking input ``x``."""

    @node
    async def double(x: int) -> int:
        return x * 2

    @node
    def check(double: int) -> int:
        if fail:
            raise ValueError(f"child rejected {double}")
        return double + 1

    return Workflow("child", nodes=[double, check], callbacks=[recorder])


async def test_subworkflow_outputs_and_events(runner_or_dask: Runner) -> None:
    """A sub-workflow node returns the child's outputs; child events reach both recorders."""
    parent_rec = RecordingCallback()
    child_rec = RecordingCallback()

    @node
    def x(n: int) -> int:
        return n + 1

    @node
    def final(sub: dict[str, int]) -> int:
        return sub["check"]

    sub = child_workflow(child_rec).as_node(name="sub")
    assert sub.params == ("x",)
    wf = Workflow("parent", nodes=[x, sub, final])
    result = await wf.run(
        {"n": 1},
        callbacks=[parent_rec],
        runner=runner_or_dask,
        resource_id="tenant",
        metadata={"k": "v"},
    )
    assert result.status == "succeeded"
    assert result.outputs["sub"] == {"double": 4, "check": 5}
    assert result.outputs["final"] == 5
    child_events = [e for e in parent_rec.events if e.run_id != result.run_id]
    assert child_events
    assert [e.id for e in child_events] == [e.id for e in child_rec.events]
    child_run = child_events[0].run_id
    assert {e.run_id for e in child_events} == {child_run}
    assert {e.parent_run_id for e in child_events} == {result.run_id}
    assert {e.workflow_name for e in child_events} == {"child"}
    assert {e.resource_id for e in child_events} == {"tenant"}
    assert all(e.metadata == {"k": "v"} for e in child_events)
    assert_well_formed(child_events)
    parent_events = parent_rec.events_for_run(result.run_id)
    assert_well_formed(parent_events)
    assert all(e.parent_run_id is None for e in parent_events)
    # the child runs entirely inside the sub node's attempt
    ids = [e.id for e in parent_rec.events]
    sub_start = next(e for e in parent_events if e.type == "node_start" and e.node_id == "sub")
    sub_end = next(e for e in parent_events if e.type == "node_end" and e.node_id == "sub")
    positions = [ids.index(e.id) for e in child_events]
    assert ids.index(sub_start.id) < min(positions)
    assert max(positions) < ids.index(sub_end.id)


async def test_subworkflow_run_context_names_its_parent_node(runner: Runner) -> None:
    """RunContext.parent_node_id is the parent's node running the child; None at top level."""
    seen: dict[str, tuple[str | None, str | None]] = {}

    @node
    async def probe() -> int:
        ctx = current_run()
        seen[ctx.workflow_name] = (ctx.parent_run_id, ctx.parent_node_id)
        return 1

    @node
    async def sibling() -> int:
        await asyncio.sleep(0.01)
        return 2

    child = Workflow("child", nodes=[probe])
    parent_probe = node(probe.fn, name="top")
    parent = Workflow("parent", nodes=[sibling, parent_probe, child.as_node(name="via")])
    result = await parent.run(runner=runner)
    assert result.status == "succeeded"
    assert seen["parent"] == (None, None)
    assert seen["child"] == (result.run_id, "via")


async def test_a_handler_on_both_workflow_and_run_gets_each_event_once(runner: Runner) -> None:
    """The same handler object given to Workflow(callbacks=) and run(callbacks=) is called once."""
    rec = RecordingCallback()

    @node(retries=1)
    async def flaky() -> int:
        if not rec.errors:
            raise ValueError("first try")
        await current_run().emit("progress", 1)
        return 1

    wf = Workflow("twice", nodes=[flaky], callbacks=[rec])
    result = await wf.run(callbacks=[rec], runner=runner)
    assert result.status == "succeeded"
    rec.assert_no_duplicates()
    assert [e.type.value for e in rec.events] == [
        "workflow_start",
        "node_start",
        "error",
        "node_start",
        "custom_event",
        "node_end",
        "workflow_end",
    ]
    custom = next(e for e in rec.events if e.type.value == "custom_event")
    assert (custom.node_id, custom.attempt) == ("flaky", 2)  # the attempt that sent it


async def test_events_a_child_run_sends_outside_its_nodes_name_no_parent_node(
    runner_or_dask: Runner,
) -> None:
    """A custom event sent from a child's workflow_start handler has no node_id."""
    rec = RecordingCallback()

    class Announce(BaseCallbackHandler):
        async def on_workflow_start(self, workflow_id: str, input_data: dict[str, Any]) -> None:
            if current_run().parent_run_id is not None:
                await current_run().emit("child_started", workflow_id)

    @node
    async def inner() -> int:  # a child node named like nothing in the parent
        return 1

    child = Workflow("child", nodes=[inner], callbacks=[Announce()])
    parent = Workflow("parent", nodes=[child.as_node(name="runchild")])
    result = await parent.run(callbacks=[rec], runner=runner_or_dask)
    assert result.status == "succeeded"
    [custom] = [e for e in rec.events if e.type.value == "custom_event"]
    assert (custom.name, custom.node_id, custom.attempt) == ("child_started", None, None)
    assert custom.parent_run_id == result.run_id


async def test_subworkflow_failure(any_runner_or_dask: Runner) -> None:
    """A failed child run fails the sub node with WorkflowFailed naming the child's error."""
    child_rec = RecordingCallback()
    sub = child_workflow(child_rec, fail=True).as_node(name="sub")
    result = await Workflow("parent", nodes=[sub]).run({"x": 3}, runner=any_runner_or_dask)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "WorkflowFailed"
    assert "ValueError: child rejected 6" in result.error.message
    assert "workflow 'child'" in result.error.message
    assert isinstance(result.error.exception, WorkflowFailed)
    assert child_rec.events[-1].status == "failed"


async def test_cancelling_parent_cancels_child(any_runner_or_dask: Runner) -> None:
    """Cancelling the parent run cancels the running child run, whose callbacks still fire."""
    started = asyncio.Event()
    child_rec = RecordingCallback()

    @node
    async def hang(x: int) -> None:
        started.set()
        await asyncio.sleep(10)

    child = Workflow("child", nodes=[hang], callbacks=[child_rec])
    parent = Workflow("parent", nodes=[child.as_node(name="sub")])
    handle = parent.start({"x": 1}, runner=any_runner_or_dask)
    await asyncio.wait_for(started.wait(), 5)
    handle.cancel("parent stopped")
    result = await handle
    assert result.status == "cancelled"
    assert result.nodes["sub"].status == "cancelled"
    assert steps(child_rec) == [
        ("workflow_start", None),
        ("node_start", "hang"),
        ("workflow_end", None),
    ]
    assert child_rec.events[-1].status == "cancelled"


# -- many runs at once ----------------------------------------------------------------


async def test_concurrent_runs_keep_their_events_apart(runner_or_dask: Runner) -> None:
    """200 concurrent runs of one workflow: no event lost or mixed, each run well formed."""
    rec = RecordingCallback()

    @node
    async def a(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @node
    def b(a: int) -> int:
        return a * 2

    @node
    async def c(a: int) -> int:
        await asyncio.sleep(0)
        return a * 3

    @node
    async def d(b: int, c: int) -> int:
        return b + c

    wf = Workflow("many", nodes=[a, b, c, d], callbacks=[rec])
    results = await asyncio.gather(*(wf.run({"i": i}, runner=runner_or_dask) for i in range(200)))
    assert all(r.status == "succeeded" for r in results)
    assert [r.outputs["d"] for r in results] == [5 * i for i in range(200)]
    groups: dict[str, list[Event]] = defaultdict(list)
    for e in rec.events:
        groups[e.run_id].append(e)
    assert set(groups) == {r.run_id for r in results}
    deps = wf.plan().deps
    for r in results:
        events = groups[r.run_id]
        assert len(events) == 10
        assert_well_formed(events, deps)
        assert events[0].payload == r.inputs
        assert events[-1].payload == r.outputs
    rec.assert_no_duplicates()


async def test_base_exception_from_a_node_still_ends_the_run(runner: Runner) -> None:
    """A SystemExit from a node body fails that node (its attempt ends with an ``error``
    event) and propagates from run() after workflow_end has fired."""
    rec = RecordingCallback()

    @node
    async def leave() -> None:
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        await Workflow("exit", nodes=[leave]).run(callbacks=[rec], runner=runner)
    assert steps(rec) == [
        ("workflow_start", None),
        ("node_start", "leave"),
        ("error", "leave"),
        ("workflow_end", None),
    ]
    assert rec.events[-1].status == "failed"
    assert rec.events_of("error")[0].payload.type == "SystemExit"


async def test_cancelling_the_awaiting_task_during_a_handler(any_runner_or_dask: Runner) -> None:
    """Cancelling the awaiting task while a handler runs still ends the run with workflow_end."""
    in_handler = asyncio.Event()
    rec = RecordingCallback()

    class SlowEnd(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            in_handler.set()
            await asyncio.sleep(0.05)

    wf = Workflow("c", nodes=[node(lambda: 1, name="a")])
    task = asyncio.create_task(wf.run(callbacks=[SlowEnd(), rec], runner=any_runner_or_dask))
    await asyncio.wait_for(in_handler.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rec.types[0] == "workflow_start"
    assert rec.types[-1] == "workflow_end"
    rec.assert_called("workflow_end", times=1)
    end = rec.events[-1]
    assert end.status == "cancelled"
    node_ended = [e.node_id for e in rec.events_of("node_end")]
    assert end.payload == ({"a": 1} if node_ended else {})
    if not any_runner_or_dask.sequential:
        assert node_ended == ["a"]  # the handler was not interrupted


def test_runner_options_may_be_given_positionally() -> None:
    """``AsyncioRunner(max_concurrency=None, fail_fast=True)`` and
    ``SequentialRunner(fail_fast=True)``, as documented: by position or by name."""
    runner = AsyncioRunner(4, False)
    assert (runner.max_concurrency, runner.fail_fast) == (4, False)
    assert AsyncioRunner(None).max_concurrency is None
    assert SequentialRunner(False).fail_fast is False
    with pytest.raises(TypeError, match="fail_fast"):
        SequentialRunner("no")  # type: ignore[arg-type]


@pytest.mark.parametrize("retries", [0, 1])
async def test_a_fail_fast_run_starts_no_node_once_it_failed(retries: int) -> None:
    """Two roots start in one turn; the first fails for good before the second's task
    ran a step: the second never starts (no node_start) and ends skipped."""

    @node(retries=retries)
    async def bad() -> None:
        raise ValueError("bad")

    @node
    async def other() -> int:
        await asyncio.sleep(0.2)
        return 1

    recorder = RecordingCallback()
    result = await Workflow("fail-fast", nodes=[bad, other]).run(
        callbacks=[recorder], runner=AsyncioRunner()
    )
    assert result.status is RunStatus.FAILED
    assert result.nodes["other"].status is NodeStatus.SKIPPED
    assert result.nodes["other"].attempts == 0
    assert ("node_start", "other") not in [(e.type, e.node_id) for e in recorder.events]
    assert_well_formed(recorder.events)
