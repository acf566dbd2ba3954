"""flowhooks_hooks against real local Prefect flow runs (a temporary local API and database).

Prefect starts its local API server once for the module, which takes some
seconds: the module is marked ``slow``.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("prefect") is None:
    pytest.skip("prefect is not installed", allow_module_level=True)

from flowhooks import InvalidCallbackError
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


def _hooks(recorder: RecordingCallback, **options: Any) -> Any:
    from flowhooks.integrations.prefect import flowhooks_hooks

    return flowhooks_hooks([recorder], **options)


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
