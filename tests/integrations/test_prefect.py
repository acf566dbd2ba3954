"""flowhooks_hooks against real local Prefect flow runs (a temporary local API and database).

Prefect starts its local API server once for the module, which takes some
seconds: the module is marked ``slow``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("prefect") is None:
    pytest.skip("prefect is not installed", allow_module_level=True)

from flowhooks import Event, InvalidCallbackError, RunResult, current_run
from flowhooks.testing import RecordingCallback

pytestmark = [
    pytest.mark.slow,
    # Prefect's API client leaves loopback sockets to the garbage collector.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(scope="module", autouse=True)
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Prefect with its home in a temporary folder, no remote API, no telemetry."""
    home = tmp_path_factory.mktemp("prefect-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_HOME", str(home))
        patch.delenv("PREFECT_API_URL", raising=False)
        patch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        patch.setenv("DO_NOT_TRACK", "1")
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            yield home


class ResultRecorder(RecordingCallback):
    """A recorder that also keeps each run's ``RunResult`` (by run id) when the run ends."""

    def __init__(self) -> None:
        super().__init__()
        self.results: dict[str, RunResult] = {}

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        await super().on_workflow_end(workflow_id, output_data, event=event)
        result = current_run().result
        assert result is not None
        self.results[workflow_id] = result


def _hooks(recorder: RecordingCallback, **options: Any) -> Any:
    from flowhooks.integrations.prefect import flowhooks_hooks

    return flowhooks_hooks([recorder], **options)


def _loop_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("flowhooks-prefect-")]


def test_a_flow_run_is_a_run_and_its_task_runs_are_nodes() -> None:
    from prefect import flow, task

    recorder = RecordingCallback()
    hooks = _hooks(recorder, metadata={"team": "sales"})

    @task(**hooks.task)
    def parse(orders: list[str]) -> list[float]:
        return [float(amount) for amount in orders]

    @task(**hooks.task)
    def total(amounts: list[float]) -> float:
        return sum(amounts)

    @flow(**hooks.flow)
    def nightly(orders: list[str]) -> float:
        amounts = parse(orders)
        return total(amounts) + total.submit(amounts).result()

    assert nightly(["10", "20"]) == 60.0
    assert recorder.types == [
        "workflow_start",
        "node_start",
        "node_end",
        "node_start",
        "node_end",
        "node_start",
        "node_end",
        "workflow_end",
    ]
    recorder.assert_no_duplicates()
    events = recorder.events
    assert len(recorder.run_ids) == 1
    assert [e.seq for e in events] == list(range(1, 9))
    assert {e.workflow_name for e in events} == {"nightly"}
    assert events[0].payload == {"orders": ["10", "20"]}
    assert events[0].metadata == {"team": "sales"}
    assert events[1].node_id == "parse"
    assert events[1].payload == {"orders": ["10", "20"]}
    assert events[2].payload == [10.0, 20.0]
    assert [e.node_id for e in recorder.events_of("node_end")] == ["parse", "total", "total#2"]
    assert recorder.events_of("node_end")[-1].payload == 30.0
    end = events[-1]
    assert end.status == "succeeded"
    assert end.payload["total#2"] == 30.0


def test_a_failing_task_sends_its_error_and_the_flow_fails() -> None:
    from prefect import flow, task

    recorder = RecordingCallback()
    hooks = _hooks(recorder, workflow_name="orders")

    @task(**hooks.task)
    def average(amounts: list[float]) -> float:
        if not amounts:
            raise ZeroDivisionError("no orders to average")
        return sum(amounts) / len(amounts)

    @flow(**hooks.flow)
    def nightly(amounts: list[float]) -> float:
        return average(amounts)

    with pytest.raises(ZeroDivisionError, match="no orders to average"):
        nightly([])
    assert recorder.types == ["workflow_start", "node_start", "error", "workflow_end"]
    (error,) = recorder.errors
    assert (error.node_id, error.type, error.message) == (
        "average",
        "ZeroDivisionError",
        "no orders to average",
    )
    assert error.will_retry is False
    end = recorder.events[-1]
    assert (end.status, end.workflow_name) == ("failed", "orders")


def test_retried_task_attempts_are_attempts_of_one_node() -> None:
    from prefect import flow, task

    recorder = RecordingCallback()
    hooks = _hooks(recorder)
    calls: list[int] = []

    @task(retries=2, **hooks.task)
    def fetch() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)}")
        return len(calls)

    @flow(**hooks.flow)
    def prices() -> int:
        return fetch()

    assert prices() == 3
    fetch_events = recorder.events_for("fetch")
    assert [(e.type, e.attempt) for e in fetch_events] == [
        ("node_start", 1),
        ("error", 1),
        ("node_start", 2),
        ("error", 2),
        ("node_start", 3),
        ("node_end", 3),
    ]
    assert [(e.message, e.will_retry, e.severity) for e in recorder.errors] == [
        ("try 1", True, "warning"),
        ("try 2", True, "warning"),
    ]
    assert recorder.events[-1].status == "succeeded"


def test_async_flow_and_tasks() -> None:
    from prefect import flow, task

    recorder = RecordingCallback()
    hooks = _hooks(recorder)

    @task(**hooks.task)
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    @flow(**hooks.flow)
    async def doubled(x: int) -> int:
        return await double(x) + await double(x + 1)

    assert asyncio.run(doubled(1)) == 6
    assert [e.payload for e in recorder.events_of("node_end")] == [2, 4]
    assert recorder.events[-1].status == "succeeded"
    assert recorder.events[-1].payload == {"double": 2, "double#2": 4}


def test_a_flow_that_raises_outside_tasks_fails_and_tasks_without_a_reported_flow_are_dropped() -> (
    None
):
    from prefect import flow, task

    recorder = RecordingCallback()
    hooks = _hooks(recorder)

    @task(**hooks.task)
    def one() -> int:
        return 1

    @flow
    def unreported() -> int:
        return one()

    @flow(**hooks.flow)
    def broken() -> int:
        one()
        raise LookupError("no such day")

    assert unreported() == 1
    assert recorder.types == []
    with pytest.raises(LookupError):
        broken()
    assert recorder.types == ["workflow_start", "node_start", "node_end", "workflow_end"]
    assert recorder.events[-1].status == "failed"


def test_arguments_are_checked() -> None:
    from flowhooks.integrations.prefect import flowhooks_hooks

    with pytest.raises(InvalidCallbackError, match=r"flowhooks_hooks\(manager\)"):
        flowhooks_hooks("nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="workflow_name="):
        flowhooks_hooks(workflow_name="")
    hooks = flowhooks_hooks()
    assert sorted(hooks.flow) == [
        "on_cancellation",
        "on_completion",
        "on_crashed",
        "on_failure",
        "on_running",
    ]
    assert sorted(hooks.task) == ["on_completion", "on_failure", "on_running"]


def test_a_completed_flow_run_succeeds_whatever_its_task_runs_did() -> None:
    import time

    from prefect import flow, task
    from prefect.states import Cancelled

    recorder = ResultRecorder()
    hooks = _hooks(recorder)
    runs: list[int] = []

    @task(**hooks.task)
    def fails() -> None:
        raise ValueError("handled by the flow")

    @task(**hooks.task)
    def cancels() -> Any:
        return Cancelled()

    @task(**hooks.task)
    def slow() -> int:
        time.sleep(0.5)
        return 1

    @flow(**hooks.flow)
    def handles() -> str:
        fails(return_state=True)
        cancels(return_state=True)
        slow.submit()  # never awaited: it ends after the flow run
        return "done"

    @flow(retries=1, **hooks.flow)
    def retried() -> str:
        runs.append(1)
        if len(runs) == 1:
            fails()
        return "second try"

    assert handles() == "done"
    assert retried() == "second try"
    time.sleep(0.7)
    first, second = recorder.run_ids
    assert recorder.events_for_run(first)[-1].type == "workflow_end"  # nothing after it
    assert [e.status for e in recorder.events_of("workflow_end")] == ["succeeded", "succeeded"]
    (handled, _) = recorder.errors
    assert (handled.node_id, handled.type, handled.will_retry) == ("fails", "ValueError", False)
    nodes = recorder.results[first].nodes
    assert {name: node.status.value for name, node in nodes.items()} == {
        "fails": "failed",
        "cancels": "cancelled",
        "slow": "cancelled",
    }
    assert nodes["fails"].error is not None
    assert nodes["fails"].error.message == "handled by the flow"
    assert recorder.results[second].succeeded
    assert recorder.results[second].nodes["fails"].status == "failed"


def test_flow_runs_ending_cancelled_or_paused_end_their_run() -> None:
    from prefect import flow, task
    from prefect.states import Cancelled, Paused

    recorder = ResultRecorder()
    hooks = _hooks(recorder)

    @task(**hooks.task)
    def cancel() -> Any:
        return Cancelled()

    @flow(**hooks.flow)
    def returns_cancelled() -> Any:
        return Cancelled(message="not today")

    @flow(**hooks.flow)
    def returns_a_cancelled_task() -> Any:
        return cancel.submit()

    @flow(**hooks.flow)
    async def returns_cancelled_async() -> Any:
        return Cancelled(message="not today either")

    @flow(**hooks.flow)
    def returns_paused() -> Any:
        return Paused()

    assert returns_cancelled(return_state=True).is_cancelled()
    assert returns_a_cancelled_task(return_state=True).is_cancelled()
    assert asyncio.run(returns_cancelled_async(return_state=True)).is_cancelled()
    assert returns_paused(return_state=True).is_paused()
    ends = recorder.events_of("workflow_end")
    assert [e.status for e in ends] == ["cancelled", "cancelled", "cancelled", "suspended"]
    assert len(recorder.events_of("workflow_start")) == 4
    results = [recorder.results[e.run_id] for e in ends]
    assert [r.cancel_reason for r in results[:3:2]] == ["not today", "not today either"]
    assert results[3].error is None
    assert _loop_threads() == []


class Interrupt(BaseException):
    """A crash of a task run: an exception that is no ``Exception``."""


def test_an_interrupted_task_attempt_is_not_a_retry() -> None:
    from prefect import flow, task

    recorder = RecordingCallback()
    hooks = _hooks(recorder)

    @task(**hooks.task)
    def crashes() -> None:
        raise Interrupt("pulled the plug")

    @flow(**hooks.flow)
    def nightly() -> None:
        crashes()

    with pytest.raises(Interrupt):
        nightly()
    assert recorder.types == ["workflow_start", "node_start", "error", "workflow_end"]
    (error,) = recorder.errors
    assert (error.type, error.message, error.attempt, error.will_retry) == (
        "Interrupt",
        "pulled the plug",
        1,
        False,
    )
    assert recorder.events[-1].status == "failed"


def test_a_delayed_retry_sends_the_failed_attempts_own_error_when_it_fails() -> None:
    from prefect import flow, task

    recorder = RecordingCallback()
    hooks = _hooks(recorder)
    calls: list[int] = []

    @task(retries=1, retry_delay_seconds=0.6, **hooks.task)
    def flaky() -> str:
        calls.append(1)
        if len(calls) % 2:
            raise ValueError(f"boom {len(calls)}")
        return "ok"

    @task(retries=1, retry_delay_seconds=0.6, **hooks.task)
    async def flaky_async() -> str:
        return flaky.fn()

    @flow(**hooks.flow)
    def nightly() -> str:
        return flaky()

    @flow(**hooks.flow)
    async def nightly_async() -> str:
        return await flaky_async()

    assert nightly() == "ok"
    assert asyncio.run(nightly_async()) == "ok"
    errors = recorder.events_of("error")
    assert [(e.node_id, e.attempt) for e in errors] == [("flaky", 1), ("flaky_async", 1)]
    for event, message in zip(errors, ["boom 1", "boom 3"], strict=True):
        info = event.payload
        assert (info.type, info.message, info.will_retry) == ("ValueError", message, True)
        assert isinstance(info.exception, ValueError)
        assert event.duration is not None
        assert event.duration < 0.5  # sent when the attempt failed, not after the delay
    assert [e.status for e in recorder.events_of("workflow_end")] == ["succeeded"] * 2


def test_task_inputs_are_the_values_the_task_is_called_with() -> None:
    from prefect import flow, task

    recorder = RecordingCallback()
    hooks = _hooks(recorder)

    @task(**hooks.task)
    def five() -> int:
        return 5

    @task(**hooks.task)
    def plus_one(x: int) -> int:
        return x + 1

    @flow(**hooks.flow)
    def nightly() -> list[int]:
        upstream = five.submit()
        return [plus_one.submit(upstream).result(), *plus_one.map([upstream]).result()]

    assert nightly() == [6, 6]
    starts = {e.node_id: e.payload for e in recorder.events_of("node_start")}
    assert starts == {"five": {}, "plus_one": {"x": 5}, "plus_one#2": {"x": 5}}


def test_a_subflow_run_is_a_sub_run_of_its_parent_flow_run() -> None:
    from prefect import flow, task

    recorder = RecordingCallback()
    hooks = _hooks(recorder)

    @task(**hooks.task)
    def echo(x: int) -> int:
        return x

    @flow(**hooks.flow)
    def child(x: int) -> int:
        return echo(x)

    @flow(**hooks.flow)
    def parent() -> int:
        return child(1) + echo.submit(2).result()

    assert parent() == 3
    assert child(4) == 4  # called on its own: a root run
    starts = recorder.events_of("workflow_start")
    assert [(e.workflow_name, e.parent_run_id) for e in starts] == [
        ("parent", None),
        ("child", starts[0].run_id),
        ("child", None),
    ]
    child_events = recorder.events_for_run(starts[1].run_id)
    assert {e.parent_run_id for e in child_events} == {starts[0].run_id}
    assert [e.status for e in recorder.events_of("workflow_end")] == ["succeeded"] * 3


def test_a_flow_run_ended_by_sigterm_is_cancelled() -> None:
    import os

    from prefect import flow
    from prefect.exceptions import TerminationSignal

    recorder = ResultRecorder()
    hooks = _hooks(recorder)

    @flow(**hooks.flow)
    def terminated() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    # Prefect passes the signal on to the handler it replaced: keep it from ending pytest.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        with pytest.raises(TerminationSignal):
            terminated()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert recorder.types == ["workflow_start", "workflow_end"]
    assert recorder.events[-1].status == "cancelled"
    assert recorder.results[recorder.run_ids[0]].cancel_reason == "SIGTERM"


def _id_is_free(run_id: str) -> bool:
    from flowhooks import DuplicateRunError, ExternalRun

    try:
        with ExternalRun.sync(workflow_name="probe", run_id=run_id):
            return True
    except DuplicateRunError:
        return False


def test_a_flow_run_that_leaves_its_engine_without_a_final_state_still_ends_its_run() -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.exceptions import Abort, ObjectNotFound, Pause
    from prefect.states import Suspended

    recorder = ResultRecorder()
    hooks = _hooks(recorder)

    def current_id() -> Any:
        context = FlowRunContext.get()
        assert context is not None
        return context.flow_run.id

    @flow(**hooks.flow)
    def deleted() -> int:
        # Prefect then cannot set the final state: the API no longer has the flow run.
        with get_client(sync_client=True) as client:
            client.delete_flow_run(current_id())
        return 1

    @flow(**hooks.flow)
    def aborted() -> None:
        raise Abort("the API said stop")

    @flow(**hooks.flow)
    async def aborted_async() -> None:
        raise Abort("the API said stop, async")

    @flow(**hooks.flow)
    def suspended() -> None:
        raise Pause(state=Suspended())

    with pytest.raises(ObjectNotFound):
        deleted()
    with pytest.raises(Abort):
        aborted()
    with pytest.raises(Abort):
        asyncio.run(aborted_async())
    with pytest.raises(Pause):
        suspended()
    assert recorder.types == ["workflow_start", "workflow_end"] * 4
    recorder.assert_no_duplicates()
    ends = recorder.events_of("workflow_end")
    assert [e.status for e in ends] == ["failed", "cancelled", "cancelled", "suspended"]
    results = [recorder.results[e.run_id] for e in ends]
    assert results[0].error is not None
    assert results[0].error.type == "ObjectNotFound"
    assert [r.cancel_reason for r in results[1:3]] == [
        "the API said stop",
        "the API said stop, async",
    ]
    assert results[3].error is None
    assert _loop_threads() == []
    assert all(_id_is_free(run_id) for run_id in recorder.run_ids)


def test_several_hooks_objects_on_one_flow_each_report_its_runs() -> None:
    from prefect import flow, task
    from prefect.context import FlowRunContext

    first, second = RecordingCallback(), RecordingCallback()
    one, two = _hooks(first), _hooks(second, metadata={"team": "ops"})
    both = {name: [*one.flow[name], *two.flow[name]] for name in one.flow}
    tasks = {name: [*one.task[name], *two.task[name]] for name in one.task}
    flow_run_ids: list[str] = []

    @task(**tasks)
    def double(x: int) -> int:
        return 2 * x

    @flow(**both)
    def child(x: int) -> int:
        context = FlowRunContext.get()
        assert context is not None
        flow_run_ids.append(str(context.flow_run.id))
        return double(x)

    @flow(**both)
    def parent(x: int) -> int:
        context = FlowRunContext.get()
        assert context is not None
        flow_run_ids.append(str(context.flow_run.id))
        return double(x) + child(x)

    assert parent(1) == 4
    parent_id, child_id = flow_run_ids
    shape = ["workflow_start", "node_start", "node_end", "workflow_start"]
    shape += ["node_start", "node_end", "workflow_end", "workflow_end"]
    assert first.types == second.types == shape
    for recorder in (first, second):
        recorder.assert_no_duplicates()
        assert [e.status for e in recorder.events_of("workflow_end")] == ["succeeded"] * 2
    # The first object reports each flow run under its id, the second under one of its own.
    assert first.run_ids == [parent_id, child_id]
    assert [e.metadata for e in first.events_of("workflow_start")] == [{}, {}]
    parent_run, child_run = second.run_ids
    assert not {parent_run, child_run} & {parent_id, child_id}
    starts = second.events_of("workflow_start")
    assert [e.metadata for e in starts] == [
        {"team": "ops", "prefect_flow_run_id": parent_id},
        {"team": "ops", "prefect_flow_run_id": child_id},
    ]
    assert [e.parent_run_id for e in starts] == [None, parent_run]
    assert [e.parent_run_id for e in first.events_of("workflow_start")] == [None, parent_id]
    assert _loop_threads() == []
    assert all(_id_is_free(run_id) for run_id in [*first.run_ids, *second.run_ids])
