"""Runs whose walk and end start eagerly behave as with tasks started the ordinary way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flowhooks import (
    BaseCallbackHandler,
    CallbackManager,
    ExternalRun,
    SequentialRunner,
    Workflow,
    node,
)


class Ends(BaseCallbackHandler):
    """Records each run's workflow_end status."""

    def __init__(self) -> None:
        self.statuses: list[str | None] = []

    async def on_workflow_end(self, workflow_id: str, output_data: Any, *, event: Any) -> None:
        self.statuses.append(event.status)


async def test_a_cancel_of_the_awaiting_task_during_the_first_step_cancels_the_run() -> None:
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
        return await wf.run(callbacks=[ends], runner=SequentialRunner())

    task = asyncio.get_running_loop().create_task(awaiting())
    caller.append(task)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ends.statuses == ["cancelled"]


async def test_runs_that_never_wait_still_let_other_tasks_run() -> None:
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
    try:
        for _ in range(50):
            assert (await wf.run(runner=SequentialRunner())).succeeded
        assert ticks >= 25  # a turn of the loop per run, at least
    finally:
        beating.cancel()
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert [t for t in pending if t is not beating] == []


async def test_deeply_nested_sequential_sub_runs() -> None:
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
    result = await level(depth).run(callbacks=[ends], runner=SequentialRunner())
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
