"""A run frees what it used by reference counting alone: no cyclic garbage per run.

Every run whose state formed a reference cycle (the run and its context, the run
and its walk) waited for the cycle collector: the run's nodes, results and
events' state stayed in memory until then, and a service running many runs paid
for frequent collections, the full ones growing with its heap.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from flowhooks import (
    AsyncioRunner,
    BaseCallbackHandler,
    ExternalRun,
    RunContext,
    Runner,
    RunStatus,
    SequentialRunner,
    Workflow,
    current_run,
    node,
)
from flowhooks.testing import RecordingCallback


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The cycle collector off (after a collection), so what a run leaves stays countable."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Emitting(BaseCallbackHandler):
    """A handler that sends a custom event from inside the run, as handlers may."""

    async def on_node_end(self, node_id: str, output_data: Any) -> None:
        await current_run().emit("seen", node_id)


def _workflow() -> Workflow:
    @node
    async def load() -> int:
        await current_run().emit("loading", 1)
        return 1

    @node
    async def left(load: int) -> int:
        await asyncio.sleep(0)
        return load + 1

    @node
    def right(load: int) -> int:
        return load + 2

    @node
    async def join(left: int, right: int) -> int:
        return left + right

    inner = Workflow("inner", nodes=[load])
    return Workflow("garbage", nodes=[load, left, right, join, inner.as_node(name="sub")])


@pytest.mark.parametrize("runner", [AsyncioRunner(), SequentialRunner()], ids=str)
@pytest.mark.parametrize("with_handlers", [True, False], ids=["handlers", "no-handlers"])
@pytest.mark.usefixtures("collector_off")
async def test_a_run_leaves_nothing_for_the_cycle_collector(
    runner: Runner, with_handlers: bool
) -> None:
    wf = _workflow()
    callbacks = [RecordingCallback(), Emitting()] if with_handlers else None
    await wf.run(callbacks=callbacks, runner=runner)  # warm: first-use caches
    gc.collect()
    results = [await wf.run(callbacks=callbacks, runner=runner) for _ in range(3)]
    await asyncio.sleep(0)  # the loop lets go of the finished tasks
    assert [r.status for r in results] == [RunStatus.SUCCEEDED] * 3
    assert gc.collect() == 0


@pytest.mark.usefixtures("collector_off")
async def test_an_external_run_leaves_nothing_for_the_cycle_collector() -> None:
    recorder = RecordingCallback()

    async def one_run() -> None:
        async with ExternalRun([recorder], workflow_name="external") as run:
            for name in ("extract", "load"):
                async with run.node(name) as step:
                    await current_run().emit("progress", name)
                    step.output = name

    await one_run()
    gc.collect()
    for _ in range(3):
        await one_run()
    await asyncio.sleep(0)
    assert gc.collect() == 0
    assert len(recorder.custom_events("progress")) == 8


@pytest.mark.usefixtures("collector_off")
async def test_a_context_kept_after_its_run_refuses_to_send_and_to_cancel() -> None:
    """A ``current_run()`` kept past its run (it no longer keeps the run alive) still
    says what a context of an ended run says: no custom event, no cancel."""
    kept: list[RunContext] = []

    @node
    async def remember() -> int:
        kept.append(current_run())
        return 1

    recorder = RecordingCallback()
    result = await Workflow("kept", nodes=[remember]).run(callbacks=[recorder])
    (ctx,) = kept
    assert ctx.result is result
    with pytest.raises(RuntimeError, match=r"has ended; custom event 'late' cannot be sent"):
        await ctx.emit("late", 1)
    assert ctx.cancel("too late") is False
    assert recorder.custom_events("late") == []
    assert result.status is RunStatus.SUCCEEDED
