"""RayRunner on a local Ray instance: the run semantics and what a cluster runner adds.

Skipped when ray is not installed (it is not in the ``all`` extra; ``make
test-ray`` installs it and runs these tests).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from flowhooks import Workflow, WorkflowError, current_run, node
from flowhooks.testing import RecordingCallback

ray = pytest.importorskip("ray")

from flowhooks.runners import RayRunner, WorkerError  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[2]
INIT = {
    "num_cpus": 2,
    "include_dashboard": False,
    "log_to_driver": False,
    # Workers import flowhooks from this checkout, like the driver.
    "runtime_env": {"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}},
}


def test_an_owned_ray_instance_is_started_and_shut_down() -> None:
    """RayRunner() starts Ray when the process has not joined one, and shuts it down after."""
    if ray.is_initialized():
        pytest.skip("this process already joined a Ray instance")

    @node
    def pid() -> int:
        return os.getpid()

    result = Workflow("own", nodes=[pid]).run_sync(runner=RayRunner(init_options=INIT))
    assert result.raise_for_status().outputs["pid"] != os.getpid()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    """One local Ray instance for the module's tests (not the runner's to shut down)."""
    ray.init(**INIT)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
async def runner(ray_instance: None) -> AsyncIterator[RayRunner]:
    async with RayRunner() as opened:
        yield opened


def kinds(rec: RecordingCallback) -> list[tuple[str, str | None]]:
    return [(e.type.value, e.node_id) for e in rec.events]


async def test_events_outputs_and_custom_events(runner: RayRunner) -> None:
    """A mixed sync/async chain on Ray: the same events as in-process, worker emits in order."""
    rec = RecordingCallback()

    @node
    async def a(source: str) -> str:
        ctx = current_run()
        await ctx.emit("seen", (ctx.run_id, ctx.metadata, os.getpid()))
        return source.upper()

    @node
    def b(a: str) -> str:
        current_run().emit_sync("sync", a)  # type: ignore[attr-defined]
        return a + "!"

    result = await Workflow("linear", nodes=[a, b]).run(
        {"source": "ab"}, callbacks=[rec], runner=runner, metadata={"k": "v"}
    )
    assert result.raise_for_status().outputs == {"a": "AB", "b": "AB!"}
    assert kinds(rec) == [
        ("workflow_start", None),
        ("node_start", "a"),
        ("custom_event", "a"),
        ("node_end", "a"),
        ("node_start", "b"),
        ("custom_event", "b"),
        ("node_end", "b"),
        ("workflow_end", None),
    ]
    run_id, metadata, pid = rec.custom_events("seen")[0].payload
    assert (run_id, metadata) == (result.run_id, {"k": "v"})
    assert pid != os.getpid()
    assert runner.is_open  # a run does not close what it did not open


async def test_retries_and_failures(runner: RayRunner) -> None:
    """Retried attempts and the final failure come back with their types and tracebacks."""
    rec = RecordingCallback()

    @node(retries=1)
    def always() -> None:
        raise RuntimeError("down")

    result = await Workflow("r", nodes=[always]).run(callbacks=[rec], runner=runner)
    assert [(i.type, i.will_retry) for i in rec.errors] == [
        ("RuntimeError", True),
        ("RuntimeError", False),
    ]
    assert result.nodes["always"].attempts == 2
    assert "raised by node 'always' on worker" in rec.errors[-1].stack_trace


async def test_timeout_and_cancel_free_the_run(runner: RayRunner) -> None:
    """A stuck sync body times out at once; a cancelled run ends without waiting for its node."""

    @node(timeout=0.2)
    def stuck() -> None:
        time.sleep(5)

    started = time.perf_counter()
    result = await Workflow("t", nodes=[stuck]).run(runner=runner)
    assert time.perf_counter() - started < 3
    assert result.error is not None
    assert result.error.type == "TimeoutError"

    @node
    async def slow() -> None:
        await asyncio.sleep(5)

    handle = Workflow("c", nodes=[slow]).start(runner=runner)
    await asyncio.sleep(0.5)
    started = time.perf_counter()
    handle.cancel("stop")
    result = await handle
    assert time.perf_counter() - started < 2.5  # not the node's 5 s
    assert result.status == "cancelled"


async def test_system_exit_is_a_node_failure(runner: RayRunner) -> None:
    """SystemExit in a body fails the node; the run neither raises nor loses its worker."""

    @node
    def leave() -> None:
        raise SystemExit(3)

    result = await Workflow("exit", nodes=[leave]).run(runner=runner)
    assert result.error is not None
    assert result.error.type == "SystemExit"
    assert isinstance(result.error.exception, WorkerError)
    again = await Workflow("after", nodes=[node(lambda: 1, name="one")]).run(runner=runner)
    assert again.outputs == {"one": 1}


async def test_an_unpicklable_node_is_rejected_before_any_event(runner: RayRunner) -> None:
    """The run's validation names the node whose function cannot be pickled."""
    lock = threading.Lock()
    rec = RecordingCallback()

    @node
    def locked() -> int:
        with lock:
            return 1

    with pytest.raises(WorkflowError, match=r"node 'locked' cannot run on Ray workers"):
        await Workflow("bad", nodes=[locked]).run(callbacks=[rec], runner=runner)
    assert rec.events == []


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="address"):
        RayRunner(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_cpus"):
        RayRunner(num_cpus=-1)
    with pytest.raises(ValueError, match=r"resources\['GPU'\]"):
        RayRunner(resources={"GPU": float("nan")})
    with pytest.raises(TypeError, match="init_options"):
        RayRunner(init_options=[])  # type: ignore[arg-type]
