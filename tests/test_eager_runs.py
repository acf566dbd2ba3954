"""Runs whose walk and end start eagerly behave as with tasks started the ordinary way."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from flowhooks import (
    AsyncioRunner,
    BaseCallbackHandler,
    CallbackManager,
    ExternalRun,
    SequentialRunner,
    Workflow,
    node,
)

RUNNERS = pytest.mark.parametrize("make_runner", [SequentialRunner, AsyncioRunner])
"""Both walks start eagerly: the sequential one always, the concurrent one with one ready node."""


class Ends(BaseCallbackHandler):
    """Records each run's workflow_end status."""

    def __init__(self) -> None:
        self.statuses: list[str | None] = []

    async def on_workflow_end(self, workflow_id: str, output_data: Any, *, event: Any) -> None:
        self.statuses.append(event.status)


@RUNNERS
async def test_a_cancel_of_the_awaiting_task_during_the_first_step_cancels_the_run(
    make_runner: Any,
) -> None:
    """The caller's task is asked to cancel while the walk runs in its first step."""
    caller: list[asyncio.Task[Any]] = []

    @node
    async def first() -> int:
        caller[0].cancel()  # nothing here waits: the whole walk is one step
        return 1

    @node
    async def second(first: int) -> int:
        return first + 1

    ends = Ends()
    wf = Workflow("cancelled-in-step", nodes=[first, second])

    async def awaiting() -> Any:
        return await wf.run(callbacks=[ends], runner=make_runner())

    task = asyncio.get_running_loop().create_task(awaiting())
    caller.append(task)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ends.statuses == ["cancelled"]


@RUNNERS
async def test_runs_that_never_wait_still_let_other_tasks_run(make_runner: Any) -> None:
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    @node
    async def step() -> int:
        return 1

    wf = Workflow("busy", nodes=[step])
    beating = asyncio.get_running_loop().create_task(heartbeat())
    await asyncio.sleep(0)
    ticks = 0
    runs = 0
    started = time.perf_counter()
    try:
        while (elapsed := time.perf_counter() - started) < 0.05:
            assert (await wf.run(runner=make_runner())).succeeded
            runs += 1
        # A turn every millisecond of runs (not one per run: see test_eager's turn_due).
        assert elapsed >= 0.05
        assert ticks >= 3
    finally:
        beating.cancel()
    # No task of a run is left pending once it returned (the last runs' included).
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert [t for t in pending if t is not beating] == []


@RUNNERS
async def test_deeply_nested_sub_runs(make_runner: Any) -> None:
    """Nested runs do not pile their eager steps on one stack without limit."""
    depth = 150

    def level(n: int) -> Workflow:
        if n == 0:

            @node
            async def leaf() -> int:
                return 0

            return Workflow("leaf", nodes=[leaf])
        inner = level(n - 1).as_node("inner")

        @node
        async def outer(inner: Any) -> int:
            return 1

        return Workflow(f"level-{n}", nodes=[inner, outer])

    ends = Ends()
    result = await level(depth).run(callbacks=[ends], runner=make_runner())
    assert result.succeeded
    assert ends.statuses == ["succeeded"] * (depth + 1)


@pytest.mark.parametrize("a_handler_waits", [False, True])
async def test_a_keyboard_interrupt_from_an_external_runs_end_comes_after_the_end(
    a_handler_waits: bool,
) -> None:
    flushed: list[str] = []

    class Interrupting(BaseCallbackHandler):
        async def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            if a_handler_waits:
                await asyncio.sleep(0)
            raise KeyboardInterrupt

    class Flushing(BaseCallbackHandler):
        async def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            flushed.append("end")

        async def flush(self) -> None:
            flushed.append("flush")

    manager = CallbackManager([Interrupting(), Flushing()])
    with pytest.raises(KeyboardInterrupt):
        async with ExternalRun(manager, workflow_name="interrupted"):
            pass
    assert flushed == ["end", "flush"]  # the end completed before it was raised


# -- a sequential run's end, in the walk's own task ---------------------------------------


@node
async def one() -> int:
    return 1


@node
async def two(one: int) -> int:
    return one + 1


class SlowEnd(BaseCallbackHandler):
    """A workflow_end handler that waits, then records the status it was given."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.entered = asyncio.Event()
        self.finished: list[str | None] = []
        self.tasks: list[asyncio.Task[Any] | None] = []

    async def on_workflow_end(self, workflow_id: str, output_data: Any, *, event: Any) -> None:
        self.tasks.append(asyncio.current_task())
        self.entered.set()
        await asyncio.sleep(self.seconds)
        self.finished.append(event.status)


async def test_one_cancellation_during_the_end_lets_it_complete_then_is_raised() -> None:
    end = SlowEnd(0.05)
    completed: list[str] = []
    wf = Workflow(
        "end-patience",
        nodes=[one, two],
        on_workflow_complete=lambda result: completed.append(result.status.value),
    )
    task = asyncio.get_running_loop().create_task(
        wf.run(callbacks=[end], runner=SequentialRunner())
    )
    await asyncio.wait_for(end.entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert end.finished == ["succeeded"]  # the end was not interrupted
    assert completed == ["succeeded"]
    assert end.tasks[0] is not task  # the end runs in a task of the run, not the caller's


async def test_a_cancelled_end_that_hangs_is_abandoned_after_the_grace() -> None:
    end = SlowEnd(3600)
    wf = Workflow("end-grace", nodes=[one, two])
    runner = SequentialRunner()
    runner.cancel_grace = 0.1
    task = asyncio.get_running_loop().create_task(wf.run(callbacks=[end], runner=runner))
    await asyncio.wait_for(end.entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)  # the grace, not the hour
    assert end.finished == []
    end_task = end.tasks[0]
    assert end_task is not None
    await asyncio.sleep(0)
    assert end_task.done()  # what was left of the end was cancelled


async def test_the_run_timeout_does_not_reach_a_run_whose_nodes_are_over() -> None:
    end = SlowEnd(0.2)
    result = await Workflow("end-timeout", nodes=[one, two]).run(
        callbacks=[end], runner=SequentialRunner(), timeout=0.05
    )
    assert result.succeeded
    assert result.error is None
    assert end.finished == ["succeeded"]


async def test_a_handle_cancel_during_the_end_finds_the_nodes_over() -> None:
    end = SlowEnd(0.1)
    handle = Workflow("end-handle", nodes=[one, two]).start(
        callbacks=[end], runner=SequentialRunner()
    )
    await asyncio.wait_for(end.entered.wait(), 5)
    assert handle.cancel("too late") is False  # the run has ended: workflow_end is under way
    result = await handle
    assert result.succeeded
    assert end.finished == ["succeeded"]


async def test_context_variables_a_node_sets_are_seen_by_later_nodes_and_the_end() -> None:
    import contextvars

    mark: contextvars.ContextVar[str] = contextvars.ContextVar("eager_runs_mark", default="-")
    seen: list[str] = []

    @node
    async def sets() -> int:
        mark.set("set by a node")
        return 1

    @node
    async def reads(sets: int) -> int:
        seen.append(mark.get())
        return sets

    class ReadsAtEnd(BaseCallbackHandler):
        async def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            seen.append(mark.get())

    result = await Workflow("ctx", nodes=[sets, reads]).run(
        callbacks=[ReadsAtEnd()], runner=SequentialRunner()
    )
    assert result.succeeded
    assert seen == ["set by a node", "set by a node"]
    assert mark.get() == "-"  # never the caller's


class EndAndFlush(BaseCallbackHandler):
    """Records workflow_end (after one turn of the loop) and the managers' flush."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def on_workflow_end(self, workflow_id: str, output_data: Any, *, event: Any) -> None:
        self.log.append(f"end:{event.status}")
        await asyncio.sleep(0)
        self.log.append("end done")

    async def flush(self) -> None:
        self.log.append("flush")


async def test_a_cancel_requested_before_the_run_is_not_swallowed() -> None:
    """The caller's task was asked to cancel just before it awaited the run (the request
    pending): the run ends cancelled and the cancellation is raised, on every Python."""
    ends = EndAndFlush()

    @node
    async def waits() -> int:
        await asyncio.sleep(0)
        return 1

    async def caller() -> Any:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        return await Workflow("pending-cancel", nodes=[waits]).run(
            callbacks=[ends], runner=SequentialRunner()
        )

    task = asyncio.get_running_loop().create_task(caller())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ends.log == ["end:cancelled", "end done", "flush"]


async def test_a_walk_task_asked_to_cancel_by_its_last_node_does_not_cut_the_end_short() -> None:
    """A node_end handler (or the body) cancels its own task without waiting after it:
    the node fails with that cancellation (never lost), and the end still completes."""
    ends = EndAndFlush()

    class CancelsItsTask(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            if node_id == "two":
                task = asyncio.current_task()
                assert task is not None
                task.cancel()

    result = await Workflow("self-cancel", nodes=[one, two]).run(
        callbacks=[CancelsItsTask(), ends], runner=SequentialRunner()
    )
    assert result.status == "failed"
    error = result.nodes["two"].error
    assert error is not None
    assert error.type == "CancelledError"
    assert ends.log == ["end:failed", "end done", "flush"]


@pytest.mark.parametrize("runner", [SequentialRunner, None], ids=["sequential", "asyncio"])
async def test_a_keyboard_interrupt_from_the_workflow_callback_comes_after_the_flush(
    runner: Any,
) -> None:
    ends = EndAndFlush()

    async def interrupts(result: Any) -> None:
        raise KeyboardInterrupt

    wf = Workflow("ki-callback", nodes=[one, two], on_workflow_complete=interrupts)
    with pytest.raises(KeyboardInterrupt):
        await wf.run(callbacks=[ends], runner=runner() if runner else None)
    assert ends.log == ["end:succeeded", "end done", "flush"]


@pytest.mark.parametrize("runner", [SequentialRunner, None], ids=["sequential", "asyncio"])
async def test_a_node_callback_that_cancels_itself_does_not_cut_the_end_short(
    runner: Any,
) -> None:
    ends = EndAndFlush()

    async def gives_up(name: str, ctx: Any) -> None:
        await asyncio.sleep(0)
        raise asyncio.CancelledError("the callback gives up")

    @node(on_success=gives_up)
    async def first() -> int:
        return 1

    result = await Workflow("callback-cancel", nodes=[first]).run(
        callbacks=[ends], runner=runner() if runner else None
    )
    assert result.succeeded
    assert ends.log == ["end:succeeded", "end done", "flush"]


@RUNNERS
@pytest.mark.parametrize("waits", [False, True])
async def test_a_cancellation_during_the_run_s_end_is_raised_as_it_came(
    make_runner: Any, waits: bool
) -> None:
    """The awaiting task is cancelled with a message while ``workflow_end``'s handler
    runs (and waits, or not): the end completes, then ``run`` raises that cancellation,
    message and all (a cancel scope tells its own cancellations by their message)."""
    awaiting: list[asyncio.Task[Any]] = []
    gate = asyncio.Event()

    class CancelsTheCaller(BaseCallbackHandler):
        async def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            awaiting[0].cancel("Cancelled via cancel scope 1234")
            if waits:
                await gate.wait()

    @node
    async def step() -> int:
        return 1

    ends = Ends()
    wf = Workflow("scoped", nodes=[step])

    async def run() -> None:
        await wf.run(callbacks=[CancelsTheCaller(), ends], runner=make_runner())

    task = asyncio.get_running_loop().create_task(run())
    awaiting.append(task)
    await asyncio.sleep(0)
    gate.set()
    with pytest.raises(asyncio.CancelledError) as raised:
        await task
    assert ends.statuses == ["succeeded"]
    assert raised.value.args == ("Cancelled via cancel scope 1234",)


@RUNNERS
async def test_an_anyio_cancel_scope_cancelled_during_the_run_s_end_catches_it(
    make_runner: Any,
) -> None:
    """A handler of ``workflow_end`` cancels the anyio scope around the run: the run
    ends, and the scope takes the cancellation as its own (it does not escape it)."""
    anyio = pytest.importorskip("anyio")
    ends = Ends()

    class CancelsTheScope(BaseCallbackHandler):
        async def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            scope.cancel()

    @node
    async def step() -> int:
        return 1

    wf = Workflow("scoped", nodes=[step])
    with anyio.CancelScope() as scope:
        await wf.run(callbacks=[CancelsTheScope(), ends], runner=make_runner())
    assert scope.cancelled_caught
    assert ends.statuses == ["succeeded"]
