"""A run frees what it used by reference counting alone: no cyclic garbage per run.

Every run whose state formed a reference cycle (the run and its context, the run
and its walk) waited for the cycle collector: the run's nodes, results and
events' state stayed in memory until then, and a service running many runs paid
for frequent collections, the full ones growing with its heap.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Iterator
from datetime import UTC, datetime
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


def _garbage_of_flowhooks() -> list[str]:
    """What a collection now would free that flowhooks made: objects of its classes and the
    frames and coroutines of its code (threads of other libraries in this test process, a
    Dask cluster's, may leave cyclic garbage of their own meanwhile: not counted)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = [_describe(o) for o in gc.garbage if _made_by_flowhooks(o)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found


def _made_by_flowhooks(obj: object) -> bool:
    """An instance of a flowhooks class, or a frame or coroutine running flowhooks code (or
    this module's): what a run's own cycle holds. Plain functions are left out: another
    library's garbage may refer to one (a Dask future's callback to a runner function)."""
    if type(obj).__module__.startswith("flowhooks"):
        return True
    code = getattr(obj, "f_code", None) or getattr(obj, "cr_code", None)
    filename = getattr(code, "co_filename", "")
    return f"{os.sep}flowhooks{os.sep}" in filename or filename == __file__


def _describe(obj: object) -> str:
    code = getattr(obj, "f_code", None) or getattr(obj, "cr_code", None)
    return f"{type(obj).__qualname__} {getattr(code, 'co_qualname', '')}".strip()


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
    assert _garbage_of_flowhooks() == []


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
    assert _garbage_of_flowhooks() == []
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


@pytest.mark.parametrize("freed", [True, False], ids=["parent-freed", "parent-kept"])
async def test_a_run_a_left_task_starts_later_is_a_sub_run_whether_or_not_freed(
    freed: bool,
) -> None:
    """A task a node leaves running that starts a workflow after the run ended starts
    a sub-run of it, with its handlers and headers, whether or not the ended run's
    state is still in memory (the context keeps what a sub-run inherits)."""
    go = asyncio.Event()
    left: list[asyncio.Task[Any]] = []

    @node
    async def step() -> int:
        return 1

    child = Workflow("child", nodes=[step])

    async def later() -> Any:
        await go.wait()
        return await child.run()

    @node
    async def spawn() -> int:
        left.append(asyncio.create_task(later()))
        return 1

    recorder = RecordingCallback()
    result = await Workflow("parent", nodes=[spawn]).run(
        callbacks=[recorder], resource_id="tenant", metadata={"trace": "t"}
    )
    parent_id = result.run_id
    if freed:
        del result
        gc.collect()
    go.set()
    child_result = await left[0]
    assert child_result.status is RunStatus.SUCCEEDED
    assert child_result.parent_run_id == parent_id
    starts = [e for e in recorder.events if e.type == "workflow_start" and e.run_id != parent_id]
    assert [(e.workflow_name, e.parent_run_id, e.resource_id, e.metadata) for e in starts] == [
        ("child", parent_id, "tenant", {"trace": "t"})
    ]


async def test_a_context_can_be_made_for_a_run_object_without_weak_references() -> None:
    """``RunContext`` is public: a run object of any kind is accepted (held strongly
    when it cannot be held weakly), with its methods as ``emit`` and ``cancel``."""

    class Slotted:
        __slots__ = ("sent",)

        def __init__(self) -> None:
            self.sent: list[str] = []

        async def emit(self, name: str, data: Any) -> None:
            self.sent.append(name)

        def cancel(self, reason: str | None) -> bool:
            return True

    for run in (Slotted(), {}):
        target = run if isinstance(run, Slotted) else Slotted()
        ctx = RunContext(
            run_id="r",
            workflow_name="w",
            inputs={},
            outputs={},
            emit=target.emit,
            cancel=target.cancel,
            started_at=datetime.now(UTC),
            run=run,
        )
        await ctx.emit("hello")
        assert target.sent == ["hello"]
        assert ctx.cancel() is True


async def test_a_context_takes_a_built_in_method_of_its_run_object() -> None:
    """A built-in type's bound method (``set.add``) as ``cancel`` is held as given."""
    seen: set[Any] = set()
    ctx = RunContext(
        run_id="r",
        workflow_name="w",
        inputs={},
        outputs={},
        emit=RecordingCallback().on_custom_event,
        cancel=seen.add,
        started_at=datetime.now(UTC),
        run=seen,
    )
    assert ctx.cancel("stop") is False  # set.add returns None
    assert seen == {"stop"}
