"""DaskRunner on a real LocalCluster (2 worker processes): what only a cluster runner does.

The runner semantics shared with every runner are tested in ``tests/test_runner.py``,
parametrised over ``DaskRunner`` too. Node functions here are defined inside the
tests, so they travel to the workers by value.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flowhooks import Workflow, WorkflowError, current_run, node
from flowhooks.testing import RecordingCallback

distributed = pytest.importorskip("distributed")

from flowhooks.runners import DaskRunner, WorkerError  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
async def runner(dask_cluster: Any) -> AsyncIterator[DaskRunner]:
    """A DaskRunner on the session cluster, open for one test."""
    async with DaskRunner(dask_cluster.scheduler_address) as opened:
        yield opened


def kinds(rec: RecordingCallback) -> list[tuple[str, str | None, Any]]:
    """(type, node id, custom event name) of each recorded event."""
    return [(e.type.value, e.node_id, e.name) for e in rec.events]


async def test_current_run_on_a_worker_is_a_snapshot_of_the_run(runner: DaskRunner) -> None:
    """On a worker, current_run() has the run's ids, inputs, headers and the node's outputs."""

    @node
    def first(x: int) -> int:
        return x + 1

    @node
    async def probe(first: int) -> dict[str, Any]:
        ctx = current_run()
        return {
            "pid": os.getpid(),
            "ids": (ctx.run_id, ctx.workflow_name, ctx.resource_id, ctx.parent_run_id),
            "inputs": dict(ctx.inputs),
            "init": ctx.get_init_data(),
            "metadata": ctx.metadata,
            "outputs": dict(ctx.outputs),
            "node_count": ctx.node_count,
            "state": ctx.state,  # type: ignore[attr-defined]
        }

    result = await Workflow("snap", nodes=[first, probe]).run(
        {"x": 1}, runner=runner, run_id="run-1", resource_id="tenant", metadata={"k": "v"}
    )
    seen = result.raise_for_status().outputs["probe"]
    assert seen["pid"] != os.getpid()
    assert seen["ids"] == ("run-1", "snap", "tenant", None)
    assert seen["inputs"] == seen["init"] == {"x": 1}
    assert seen["metadata"] == {"k": "v"}
    assert seen["outputs"] == {"first": 2}
    assert seen["node_count"] == 2
    assert seen["state"] == {}


async def test_a_resumed_node_on_a_worker_gets_its_resume_data(runner: DaskRunner) -> None:
    """A run resumed on a cluster: the node that suspended sees the data on its worker."""
    from flowhooks import RunStatus, Suspend

    @node
    def approve(x: int) -> dict[str, Any]:
        ctx = current_run()
        if ctx.resume_data is None:
            raise Suspend("approval")
        return {"pid": os.getpid(), "data": ctx.resume_data, "from": ctx.resumed_from}

    @node
    def later(approve: dict[str, Any]) -> Any:
        return current_run().resume_data  # another node: not its data

    wf = Workflow("approved", nodes=[approve, later])
    first = await wf.run({"x": 1}, runner=runner)
    assert first.status is RunStatus.SUSPENDED
    resumed = await wf.resume(first.run_id, {"approved": True}, runner=runner)
    seen = resumed.raise_for_status().outputs
    assert seen["approve"]["pid"] != os.getpid()
    assert seen["approve"]["data"] == {"approved": True}
    assert seen["approve"]["from"] == first.run_id
    assert seen["later"] is None


async def test_an_exception_that_cannot_be_rebuilt_keeps_the_attempts_events(
    runner: DaskRunner,
) -> None:
    """An exception that pickles but cannot be unpickled (its __init__ takes other
    arguments) travels by name: the custom events sent before it still arrive."""

    class BadInit(Exception):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(f"{a}-{b}")

    @node
    def fails() -> int:
        current_run().emit_sync("before", 1)
        raise BadInit(1, 2)

    rec = RecordingCallback()
    result = await Workflow("w", nodes=[fails]).run(runner=runner, callbacks=[rec])
    assert result.status == "failed"
    assert ("custom_event", "fails", "before") in kinds(rec)
    assert result.error is not None
    assert "BadInit" in result.error.type
    assert "1-2" in result.error.message


async def test_custom_events_from_workers_arrive_in_order_before_node_end(
    runner: DaskRunner,
) -> None:
    """emit (async bodies) and emit_sync (sync bodies) reach the driver's handlers in order."""
    rec = RecordingCallback()

    @node
    async def chatty() -> int:
        ctx = current_run()
        for step in range(3):
            await ctx.emit(f"step{step}", step)
        return 3

    @node
    def quiet(chatty: int) -> int:
        current_run().emit_sync("sync", chatty)  # type: ignore[attr-defined]
        raise ValueError("after the event")

    result = await Workflow("emits", nodes=[chatty, quiet]).run(callbacks=[rec], runner=runner)
    assert kinds(rec) == [
        ("workflow_start", None, None),
        ("node_start", "chatty", None),
        ("custom_event", "chatty", "step0"),
        ("custom_event", "chatty", "step1"),
        ("custom_event", "chatty", "step2"),
        ("node_end", "chatty", None),
        ("node_start", "quiet", None),
        ("custom_event", "quiet", "sync"),
        ("error", "quiet", None),
        ("workflow_end", None, None),
    ]
    assert [e.payload for e in rec.custom_events()] == [0, 1, 2, 3]
    assert all(e.attempt == 1 for e in rec.custom_events())
    assert result.error is not None
    assert "raised by node 'quiet' on worker" in result.error.stack_trace


async def test_a_node_timeout_frees_the_run_at_once(runner: DaskRunner) -> None:
    """A sync body stuck on a worker: its timeout fails the node without waiting for it."""

    @node(timeout=0.2)
    def stuck() -> None:
        time.sleep(3)

    started = time.perf_counter()
    result = await Workflow("t", nodes=[stuck]).run(runner=runner)
    assert time.perf_counter() - started < 2
    assert result.error is not None
    assert (result.error.type, result.error.node_id) == ("TimeoutError", "stuck")


async def test_a_cancel_stops_an_async_body_on_its_worker(
    runner: DaskRunner, tmp_path: Path
) -> None:
    """Cancelling the run frees it at once; the dropped async body is cancelled on the worker."""
    marker = tmp_path / "finished"
    rec = RecordingCallback()

    @node
    async def slow() -> None:
        await asyncio.sleep(2)
        marker.write_text("the body ran to its end")

    class Started(RecordingCallback):
        def __init__(self) -> None:
            super().__init__()
            self.started = asyncio.Event()

        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            self.started.set()

    watch = Started()
    handle = Workflow("c", nodes=[slow]).start(callbacks=[rec, watch], runner=runner)
    await asyncio.wait_for(watch.started.wait(), 5)
    await asyncio.sleep(0.2)  # the task has reached its worker
    started = time.perf_counter()
    assert handle.cancel("stop") is True
    result = await handle
    assert time.perf_counter() - started < 1.0  # not the rest of the body's 2 s
    assert result.status == "cancelled"
    assert result.nodes["slow"].status == "cancelled"
    await asyncio.sleep(2.5)  # past the moment the body would have finished
    assert not marker.exists()


async def test_base_exceptions_on_a_worker_are_node_failures(runner: DaskRunner) -> None:
    """SystemExit and KeyboardInterrupt in a body fail the node; the worker processes live on."""
    pids_before = await runner.client.run(os.getpid)

    @node
    def leave() -> None:
        raise SystemExit(3)

    @node
    async def interrupt() -> None:
        raise KeyboardInterrupt

    for body, name in ((leave, "SystemExit"), (interrupt, "KeyboardInterrupt")):
        result = await Workflow("exit", nodes=[body]).run(runner=runner)  # does not raise
        assert result.status == "failed"
        assert result.error is not None
        assert result.error.type == name
        assert isinstance(result.error.exception, WorkerError)
        assert result.error.exception.type_name == f"builtins.{name}"
        assert name in result.error.stack_trace
    assert (
        result.error.message == "a BaseException builtins.KeyboardInterrupt was raised on a worker"
    )
    assert await runner.client.run(os.getpid) == pids_before


async def test_an_exception_that_cannot_be_pickled_comes_back_by_name(runner: DaskRunner) -> None:
    """An exception a worker cannot send back fails the node under its own class name."""

    @node
    def odd() -> None:
        class LocalError(Exception):
            pass

        error = LocalError("held a lock")
        error.lock = threading.Lock()  # type: ignore[attr-defined]
        raise error

    result = await Workflow("odd", nodes=[odd]).run(runner=runner)
    assert result.error is not None
    assert (result.error.type, result.error.message) == ("LocalError", "held a lock")
    exc = result.error.exception
    assert isinstance(exc, WorkerError)
    assert exc.original is None
    assert "LocalError" in exc.worker_traceback
    assert isinstance(pickle.loads(pickle.dumps(exc)), WorkerError)


async def test_an_output_that_cannot_be_pickled_fails_the_node(runner: DaskRunner) -> None:
    """A return value that cannot travel back is a TypeError naming the node."""

    @node
    def lock() -> threading.Lock:
        return threading.Lock()

    result = await Workflow("out", nodes=[lock]).run(runner=runner)
    assert result.error is not None
    assert result.error.type == "TypeError"
    assert "node 'lock' returned a value that cannot be pickled" in result.error.message


async def test_an_unpicklable_node_is_rejected_before_any_event(runner: DaskRunner) -> None:
    """check(wf), and every run, names the node whose function cannot be pickled."""
    lock = threading.Lock()
    rec = RecordingCallback()

    @node
    def fine() -> int:
        return 1

    @node
    def locked(fine: int) -> int:
        with lock:
            return fine

    wf = Workflow("bad", nodes=[fine, locked])
    with pytest.raises(WorkflowError, match=r"node 'locked' cannot run on Dask workers"):
        runner.check(wf)
    with pytest.raises(WorkflowError, match=r"node 'locked'.*cannot be pickled"):
        await wf.run(callbacks=[rec], runner=runner)
    assert rec.events == []


async def test_large_outputs_travel_between_nodes(runner: DaskRunner) -> None:
    """Outputs of a few MB flow to a downstream node and back to the driver."""

    @node
    def blob() -> bytes:
        return os.urandom(4 * 2**20)

    @node
    def size(blob: bytes) -> int:
        return len(blob)

    result = await Workflow("big", nodes=[blob, size]).run(runner=runner)
    assert result.raise_for_status().outputs["size"] == 4 * 2**20
    assert len(result.outputs["blob"]) == 4 * 2**20


async def test_a_worker_lost_mid_node_reruns_the_body(runner: DaskRunner, tmp_path: Path) -> None:
    """A body that kills its worker once runs again elsewhere; the node still has one attempt."""
    marker = tmp_path / "killed-once"
    rec = RecordingCallback()

    @node
    def fragile() -> str:
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return f"ran again in {os.getpid()}"

    try:
        result = await asyncio.wait_for(
            Workflow("lost", nodes=[fragile]).run(callbacks=[rec], runner=runner), 60
        )
        assert result.status == "succeeded"
        killed = int(marker.read_text())
        assert result.outputs["fragile"].startswith("ran again in ")
        assert result.outputs["fragile"] != f"ran again in {killed}"
        assert result.nodes["fragile"].attempts == 1
        assert [e.type.value for e in rec.events] == [
            "workflow_start",
            "node_start",
            "node_end",
            "workflow_end",
        ]
    finally:
        await runner.client.wait_for_workers(2, timeout=60)


async def test_sub_workflow_nodes_run_in_the_driver(runner: DaskRunner) -> None:
    """A Workflow.as_node node runs its child run in the driver, events and all."""
    child_pids: list[int] = []
    rec = RecordingCallback()

    @node
    def inner(x: int) -> int:
        child_pids.append(os.getpid())
        return x * 2

    @node
    def x() -> int:
        return 21

    @node
    def outer(sub: dict[str, int]) -> int:
        return sub["inner"]

    child = Workflow("child", nodes=[inner])
    result = await Workflow("parent", nodes=[x, child.as_node(name="sub"), outer]).run(
        callbacks=[rec], runner=runner
    )
    assert result.raise_for_status().outputs["outer"] == 42
    assert child_pids == [os.getpid()]
    assert {e.workflow_name for e in rec.events} == {"parent", "child"}


async def test_a_run_opens_and_closes_a_runner_it_was_given_closed(dask_cluster: Any) -> None:
    """A passed client is used as is and not closed; the run closes only what it opened."""
    async with distributed.Client(
        dask_cluster.scheduler_address, asynchronous=True, set_as_default=False
    ) as client:
        runner = DaskRunner(client)
        seen: list[bool] = []

        class Probe(RecordingCallback):
            async def on_workflow_start(self, workflow_id: str, input_data: Any) -> None:
                seen.append(runner.client is client)

        result = await Workflow("l", nodes=[node(lambda: 1, name="one")]).run(
            callbacks=[Probe()], runner=runner
        )
        assert result.outputs == {"one": 1}
        assert seen == [True]
        assert not runner.is_open
        assert client.status == "running"
        with pytest.raises(RuntimeError, match="not open"):
            _ = runner.client


async def test_an_owned_local_cluster_is_started_and_closed() -> None:
    """DaskRunner() starts a local cluster in open() and closes it, client and all, in aclose()."""
    async with DaskRunner(max_concurrency=2) as runner:
        client = runner.client
        result = await Workflow("own", nodes=[node(os.getpid, name="pid")]).run(runner=runner)
        assert result.outputs["pid"] != os.getpid()
        workers = await client.run(os.getpid)
    assert not runner.is_open
    assert client.status == "closed"
    await asyncio.sleep(0.5)
    for pid in workers.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_bad_arguments_are_named() -> None:
    """Wrong address, resources or options: clear errors naming the parameter."""
    with pytest.raises(TypeError, match="address_or_client"):
        DaskRunner(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty scheduler address"):
        DaskRunner(" ")
    with pytest.raises(ValueError, match=r"resources\['GPU'\].*-1"):
        DaskRunner(resources={"GPU": -1})
    with pytest.raises(TypeError, match=r"resources\['GPU'\] takes a number"):
        DaskRunner(resources={"GPU": True})
    with pytest.raises(TypeError, match="mapping"):
        DaskRunner(resources=["GPU"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrency"):
        DaskRunner(max_concurrency=0)


def test_cluster_example_runs_on_a_scheduler_address(dask_cluster: Any, tmp_path: Path) -> None:
    """examples/cluster_dask.py: nodes on the workers, the handler's lines in the driver."""
    from example_runs import run_example

    proc = run_example("cluster_dask.py", tmp_path, dask_cluster.scheduler_address)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "node_end     load"
    assert [line.split(" (")[0] for line in out[1:4]] == [
        "custom_event progress 50 rows",
        "custom_event progress 100 rows",
        "custom_event progress 120 rows",
    ]
    assert out[4:6] == ["node_end     score", "node_end     report"]
    driver = out[6].split(":")[0].removeprefix("driver process ")
    assert out[6].startswith(
        f"driver process {driver}: sum of squares 568820 (computed in process "
    )
    assert f"process {driver})" not in out[6]


@pytest.mark.slow
async def test_a_run_stopped_while_its_runner_starts_a_local_cluster_leaves_no_process() -> None:
    """The stop ends the run; the half-started cluster finishes starting and is closed."""
    import multiprocessing

    before = {p.pid for p in multiprocessing.active_children()}
    runner = DaskRunner()
    result = await Workflow("l", nodes=[node(lambda: 1, name="one")]).run(
        runner=runner, timeout=0.2
    )
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "TimeoutError"
    assert not runner.is_open
    left = {p.pid for p in multiprocessing.active_children()} - before
    assert left == set()
