"""DaskRunner on a real LocalCluster: what travels between the driver and the workers.

Values that cannot be pickled (arguments, run inputs, ``ctx.state``, custom
events) and what a body asks of its run from a worker (``cancel``, ``state``
changes before ``Suspend``, ``emit_sync`` in an async body). Node functions are
defined inside the tests, so they travel to the workers by value.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from flowhooks import (
    BaseCallbackHandler,
    RunStatus,
    Suspend,
    Workflow,
    WorkflowError,
    current_run,
    node,
)
from flowhooks.testing import RecordingCallback

pytest.importorskip("distributed")

from flowhooks.runners import DaskRunner

pytestmark = pytest.mark.slow


@pytest.fixture
async def runner(dask_cluster: Any) -> AsyncIterator[DaskRunner]:
    """A DaskRunner on the session cluster, open for one test."""
    async with DaskRunner(dask_cluster.scheduler_address) as opened:
        yield opened


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    """The WARNING lines flowhooks logs during one test."""
    lines: list[str] = []
    sink = logger.add(
        lambda m: lines.append(str(m).rstrip("\n")), level="WARNING", format="{message}"
    )
    try:
        yield lines
    finally:
        logger.remove(sink)


# -- values that cannot be pickled -----------------------------------------------------


async def test_a_run_input_the_node_does_not_take_stays_in_the_driver(runner: DaskRunner) -> None:
    """An input that cannot be pickled is not sent to nodes that do not take it."""

    @node
    def uses(n: int) -> dict[str, Any]:
        return {"n": n + 1, "inputs": sorted(current_run().inputs)}

    result = await Workflow("ui", nodes=[uses]).run(
        {"n": 1, "lock": threading.Lock()}, runner=runner
    )
    assert result.raise_for_status().outputs["uses"] == {"n": 2, "inputs": ["n"]}


async def test_an_argument_that_cannot_be_pickled_is_named(runner: DaskRunner) -> None:
    """An argument from a driver-side node, or a run input the node takes: a clear TypeError."""

    @node
    def make_lock() -> Any:
        return threading.Lock()

    @node
    def consume(sub: dict[str, Any]) -> str:
        return repr(sub)

    @node
    def takes(lock: Any) -> str:
        return repr(lock)

    child = Workflow("child", nodes=[make_lock])
    result = await Workflow("p", nodes=[child.as_node(name="sub"), consume]).run(runner=runner)
    assert result.error is not None
    assert (result.error.type, result.error.node_id) == ("TypeError", "consume")
    assert result.error.message.startswith(
        "node 'consume' cannot run on a Dask worker: its argument 'sub' (the output of node "
        "'sub', a dict) cannot be pickled with cloudpickle (TypeError: cannot pickle "
        "'_thread.lock' object)"
    )

    result = await Workflow("i", nodes=[takes]).run({"lock": threading.Lock()}, runner=runner)
    assert result.error is not None
    assert "its argument 'lock' (a run input, a _thread.lock) cannot be pickled" in (
        result.error.message
    )


async def test_a_state_value_that_cannot_be_pickled_is_named(runner: DaskRunner) -> None:
    """A handler's lock in ctx.state fails the node with a TypeError naming the key."""

    class Opener(BaseCallbackHandler):
        async def on_workflow_start(self, workflow_id: str, input_data: Any) -> None:
            current_run().state["conn"] = threading.Lock()

    @node
    def a() -> int:
        return 1

    result = await asyncio.wait_for(
        Workflow("st", nodes=[a]).run(runner=runner, callbacks=[Opener()]), 30
    )
    assert result.error is not None
    assert result.error.type == "TypeError"
    assert (
        "node 'a' cannot run on a Dask worker: ctx.state['conn'] (a _thread.lock) cannot be "
        in (result.error.message)
    )
    assert "keep locks, connections and clients out of ctx.state" in result.error.message


async def test_a_custom_event_that_cannot_be_pickled_arrives_as_json(
    runner: DaskRunner, warnings: list[str]
) -> None:
    """The node's output is fine: it succeeds; the event's data comes as its JSON form."""
    rec = RecordingCallback()

    @node
    def ev() -> int:
        ctx = current_run()
        ctx.emit_sync("progress", {"step": 1, "lock": threading.Lock()})  # type: ignore[attr-defined]
        ctx.emit_sync("plain", 2)  # type: ignore[attr-defined]
        return 1

    result = await Workflow("uev", nodes=[ev]).run(runner=runner, callbacks=[rec])
    assert result.raise_for_status().outputs == {"ev": 1}
    progress, plain = rec.custom_events()
    assert progress.payload["step"] == 1
    assert "_thread.lock" in progress.payload["lock"]
    assert plain.payload == 2
    assert [line for line in warnings if "custom event" in line] == [
        "custom event 'progress' of node 'ev': its data cannot be pickled on the worker "
        "(TypeError: cannot pickle '_thread.lock' object); the driver's handlers get its JSON "
        "form (to_jsonable) instead"
    ]


# -- what a body asks of its run from a worker -----------------------------------------


async def test_ctx_cancel_on_a_worker_cancels_the_run(runner: DaskRunner) -> None:
    """A sync body's current_run().cancel() stops the run when the attempt ends."""

    @node
    def stopper() -> bool:
        return current_run().cancel("from a worker")

    @node
    def after(stopper: bool) -> str:
        return "ran anyway"

    rec = RecordingCallback()
    result = await Workflow("cc", nodes=[stopper, after]).run(runner=runner, callbacks=[rec])
    assert result.status == "cancelled"
    assert result.cancel_reason == "from a worker"
    assert result.nodes["stopper"].status == "cancelled"
    assert result.nodes["after"].status == "skipped"
    assert result.outputs == {}
    assert [e.type.value for e in rec.events][-1] == "workflow_end"


async def test_ctx_cancel_stops_an_async_body_at_its_next_await(
    runner: DaskRunner, tmp_path: Path
) -> None:
    """As in one process: the async body that cancels its run is cancelled itself."""
    marker = tmp_path / "went-on"

    @node
    async def stopper() -> None:
        assert current_run().cancel() is True
        assert current_run().cancel() is False  # asked already
        await asyncio.sleep(3)
        marker.write_text("the body went on")

    started = time.perf_counter()
    result = await Workflow("ca", nodes=[stopper]).run(runner=runner)
    assert time.perf_counter() - started < 2.5
    assert result.status == "cancelled"
    assert result.cancel_reason == "cancelled from inside the run"
    assert result.nodes["stopper"].status == "cancelled"
    assert not marker.exists()


async def test_state_set_before_suspend_on_a_worker_is_saved(
    runner: DaskRunner, tmp_path: Path
) -> None:
    """A suspending body's ctx.state changes come back and are saved; other bodies' do not."""

    class Seed(BaseCallbackHandler):
        async def on_workflow_start(self, workflow_id: str, input_data: Any) -> None:
            state = current_run().state
            if not state:
                state.update({"keep": 1, "drop": 2, "driver": "d"})

    @node
    def other() -> int:
        current_run().state["other"] = "stays on the worker"
        return 1

    @node
    def approve(other: int) -> dict[str, Any]:
        ctx = current_run()
        if ctx.resume_data is None:
            ctx.state["asked"] = os.getpid()
            ctx.state["keep"] = 10
            del ctx.state["drop"]
            raise Suspend("wait")
        return dict(ctx.state)

    store = f"sqlite:///{tmp_path}/s.db"
    wf = Workflow("sx", nodes=[other, approve])
    first = await wf.run(runner=runner, store=store, callbacks=[Seed()])
    assert first.status is RunStatus.SUSPENDED
    asked = first.state.pop("asked")
    assert asked != os.getpid()
    assert first.state == {"keep": 10, "driver": "d"}
    later = await wf.resume(first.run_id, True, runner=runner, store=store)
    assert later.raise_for_status().outputs["approve"] == {
        "keep": 10,
        "driver": "d",
        "asked": asked,
    }


async def test_emit_sync_in_an_async_body_raises_as_in_one_process(runner: DaskRunner) -> None:
    """emit_sync on an async body's own loop is a RuntimeError on a worker too."""

    @node
    async def a() -> str:
        try:
            current_run().emit_sync("x", 1)
        except RuntimeError as exc:
            return str(exc)
        return "allowed"

    here = await Workflow("l", nodes=[a]).run()
    there = await Workflow("l", nodes=[a]).run(runner=runner)
    assert there.outputs["a"] == here.outputs["a"]
    assert "use 'await ctx.emit(...)'" in there.outputs["a"]


async def test_a_coroutine_a_sync_body_returns_is_awaited_on_the_worker(
    runner: DaskRunner,
) -> None:
    """A plain decorator around an ``async def`` returns a coroutine: its value is the output,
    as in one process, and the coroutine can still reach its run."""

    async def inner(x: int) -> str:
        await asyncio.sleep(0)
        await current_run().emit("inside", x)
        return f"awaited {x}"

    def plain_wrapper(x: int) -> Any:  # not async: it returns inner's coroutine
        return inner(x)

    wf = Workflow("w", nodes=[node(plain_wrapper, name="wrapped")])
    here = await wf.run(inputs={"x": 2})
    recorder = RecordingCallback()
    there = await wf.run(inputs={"x": 2}, runner=runner, callbacks=[recorder])
    assert there.status == RunStatus.SUCCEEDED, there.error
    assert there.outputs["wrapped"] == here.outputs["wrapped"] == "awaited 2"
    assert [e.payload for e in recorder.events if e.type == "custom_event"] == [2]


async def test_check_takes_the_outputs_a_run_selects(runner: DaskRunner) -> None:
    """check(wf, outputs=...) looks only at the nodes such a run executes."""
    lock = threading.Lock()

    @node
    def fine() -> int:
        return 1

    @node
    def other(fine: int) -> int:
        with lock:
            return fine

    wf = Workflow("sel", nodes=[fine, other])
    runner.check(wf, outputs=["fine"])
    with pytest.raises(WorkflowError, match=r"node 'other' cannot run on Dask workers"):
        runner.check(wf, outputs=["other"])
    with pytest.raises(WorkflowError, match=r"node 'other'"):
        runner.check(wf)
    result = await wf.run(runner=runner, outputs=["fine"])  # a run checks its own nodes only
    assert result.status == "succeeded"
    assert result.outputs == {"fine": 1}
    with pytest.raises(WorkflowError, match=r"node 'other'"):
        await wf.run(runner=runner)


async def test_an_argument_the_workers_cannot_unpickle_fails_its_node_clearly(
    runner: DaskRunner,
) -> None:
    """A class from a module only the driver has: a node failure saying so, not an engine
    error."""
    import sys
    import types

    module = types.ModuleType("flowhooks_driver_only")
    exec("class Order:\n    def __init__(self, n):\n        self.n = n\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:

        @node
        def total(order: Any) -> int:
            return int(order.n)

        result = await Workflow("orders", nodes=[total]).run(
            {"order": module.Order(3)}, runner=runner
        )
    finally:
        del sys.modules[module.__name__]
    assert result.status == "failed"
    assert result.error is not None
    assert "could not be unpickled on the worker" in result.error.message
    assert "flowhooks_driver_only" in result.error.message
