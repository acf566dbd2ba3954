"""``start_eagerly``: a coroutine's own task, whose first step runs at once in the caller's turn."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import time
import weakref

import pytest

from flowhooks import BaseCallbackHandler
from flowhooks._eager import TURN_AFTER, start_eagerly, turn_due

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("eager_test_var", default="caller")


async def test_a_coroutine_that_never_waits_is_finished_at_once() -> None:
    seen: list[asyncio.Task[object] | None] = []

    async def work() -> int:
        seen.append(asyncio.current_task())
        return 42

    caller = asyncio.current_task()
    started = start_eagerly(work())
    assert started.finished_now()
    assert started.done()
    assert started.result() == 42
    assert not started.cancelled()
    assert seen == [started.task]  # its own task is current during the step
    assert asyncio.current_task() is caller  # and the caller's again after it
    await asyncio.sleep(0)  # the task's own turn changes nothing
    assert started.result() == 42


async def test_a_coroutine_that_waits_goes_on_in_its_task() -> None:
    gate = asyncio.Event()
    tasks: list[asyncio.Task[object] | None] = []

    async def work() -> str:
        tasks.append(asyncio.current_task())
        await gate.wait()
        tasks.append(asyncio.current_task())
        return "done"

    started = start_eagerly(work())
    assert not started.finished_now()
    assert not started.done()
    gate.set()
    assert await started.task == "done"
    assert started.done()
    assert started.result() == "done"
    assert tasks == [started.task, started.task]


async def test_an_exception_of_the_first_step_is_the_result() -> None:
    async def work() -> None:
        raise ValueError("boom")

    started = start_eagerly(work())
    assert started.finished_now()
    with pytest.raises(ValueError, match="boom"):
        started.result()
    await asyncio.sleep(0)
    assert started.task.done()
    assert not started.task.cancelled()


async def test_context_changes_stay_in_the_tasks_copy() -> None:
    async def work() -> str:
        VAR.set("inside")
        await asyncio.sleep(0)
        return VAR.get()

    started = start_eagerly(work())
    assert VAR.get() == "caller"
    assert await started.task == "inside"
    assert VAR.get() == "caller"


async def test_a_task_cancelling_itself_in_a_step_that_returns_ends_cancelled() -> None:
    async def work() -> int:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        return 1

    caller = asyncio.current_task()
    assert caller is not None
    started = start_eagerly(work())
    assert not started.finished_now()  # as any task: a cancel requested before it returned
    with pytest.raises(asyncio.CancelledError):
        await started.task
    assert started.cancelled()
    assert caller.cancelling() == 0  # the caller was never cancelled


async def test_a_task_cancelling_itself_then_waiting_gets_the_cancellation() -> None:
    reached: list[str] = []

    async def work() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            reached.append("cancelled")
            raise

    started = start_eagerly(work())
    with pytest.raises(asyncio.CancelledError):
        await started.task
    assert reached == ["cancelled"]


async def test_cancelling_the_task_before_its_turn_reaches_what_the_coroutine_waits_on() -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    reached: list[str] = []

    async def work() -> None:
        try:
            await never
        except asyncio.CancelledError:
            reached.append("cancelled")
            raise

    started = start_eagerly(work())
    started.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await started.task
    assert reached == ["cancelled"]
    assert never.cancelled()  # as a task cancels: through the future it waits on


async def test_the_callers_cancellation_does_not_reach_a_shielded_started_task() -> None:
    gate = asyncio.Event()

    async def work() -> str:
        await gate.wait()
        return "finished"

    async def caller() -> None:
        started = start_eagerly(work())
        holder.append(started)
        await asyncio.shield(started.task)

    holder: list[object] = []
    outer = asyncio.get_running_loop().create_task(caller())
    await asyncio.sleep(0)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    gate.set()
    started = holder[0]
    assert await started.task == "finished"  # type: ignore[attr-defined]


async def test_started_eagerly_inside_another_started_task() -> None:
    async def inner() -> asyncio.Task[object] | None:
        return asyncio.current_task()

    async def outer() -> tuple[object, object, object]:
        me = asyncio.current_task()
        nested = start_eagerly(inner())
        return me, nested.result(), asyncio.current_task()

    started = start_eagerly(outer())
    me, nested_task, after = started.result()
    assert me is started.task
    assert after is started.task
    assert nested_task is not me


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is Python 3.12+")
async def test_runs_on_a_loop_whose_task_factory_starts_tasks_eagerly() -> None:
    from flowhooks import CallbackManager, SequentialRunner, Workflow, node

    @node
    async def first() -> int:
        await asyncio.sleep(0)
        return 1

    @node
    async def second(first: int) -> int:
        return first + 1

    seen: list[str] = []

    class Recorder(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: object) -> None:
            await asyncio.sleep(0)
            seen.append(node_id)

    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    try:
        wf = Workflow("eager-loop", nodes=[first, second])
        for runner in (SequentialRunner(), None):
            result = await wf.run(callbacks=CallbackManager([Recorder()]), runner=runner)
            assert result.succeeded
            assert result.outputs["second"] == 2
        assert seen == ["first", "second", "first", "second"]
    finally:
        loop.set_task_factory(None)


async def test_a_finished_start_lets_go_of_the_variables_it_is_told_to_forget() -> None:
    """What those variables referred to is freed at once, not on the task's turn; the
    caller's own values, and variables it was not told of, are left alone."""

    class Big:
        pass

    holder: contextvars.ContextVar[object] = contextvars.ContextVar("eager_test_holder")
    kept: contextvars.ContextVar[object] = contextvars.ContextVar("eager_test_kept")
    refs: list[weakref.ref[Big]] = []
    mine = Big()
    holder.set(mine)

    async def work() -> None:
        big = Big()
        refs.append(weakref.ref(big))
        holder.set(big)
        kept.set("a value of the task's own")

    started = start_eagerly(work(), (holder,))
    assert started.finished_now()
    if sys.version_info < (3, 12):
        assert not started.task.done()  # its own turn has not come yet
    assert refs[0]() is None
    assert holder.get() is mine  # the caller's context is not the task's
    await asyncio.sleep(0)
    assert started.task.done()
    context = started.task.get_context() if sys.version_info >= (3, 12) else None
    if context is not None:
        assert context[holder] is None
        assert context[kept] == "a value of the task's own"


async def test_a_cancel_message_reaches_the_coroutine_through_what_it_waits_on() -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    messages: list[str] = []

    async def work() -> None:
        try:
            await never
        except asyncio.CancelledError as exc:
            messages.append(str(exc))
            raise

    started = start_eagerly(work())
    started.task.cancel("shutting down")
    with pytest.raises(asyncio.CancelledError):
        await started.task
    assert messages == ["shutting down"]


# -- where an eager step would differ from a task, and so is not taken -------------------


async def test_a_caller_handling_an_exception_gets_a_plain_task() -> None:
    """The step would see the caller's exception in sys.exc_info() and chain it to its own."""
    seen: list[object] = []

    async def work() -> None:
        seen.append(sys.exc_info()[1])
        try:
            raise ValueError("inside")
        except ValueError as exc:
            seen.append(exc.__context__)

    try:
        raise KeyError("the caller's")
    except KeyError:
        started = start_eagerly(work())
    assert not started.finished_now()
    await started.task
    assert seen == [None, None]


async def test_a_loop_task_factory_creates_the_task() -> None:
    loop = asyncio.get_running_loop()
    made: list[object] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: object, **kwargs: object) -> object:
        task = asyncio.Task(coro, loop=loop, **kwargs)  # type: ignore[arg-type]
        made.append(task)
        return task

    async def work() -> int:
        return 7

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    try:
        started = start_eagerly(work())
        assert made == [started.task]
        assert await started.task == 7
    finally:
        loop.set_task_factory(None)


async def test_nested_starts_past_the_depth_limit_are_plain_tasks() -> None:
    from flowhooks._eager import MAX_DEPTH

    depths: list[bool] = []

    async def nest(level: int) -> int:
        if level == 0:
            return 0
        started = start_eagerly(nest(level - 1))
        depths.append(started.finished_now())
        if started.finished_now():
            return started.result() + 1
        return await started.task + 1

    assert await nest(MAX_DEPTH + 3) == MAX_DEPTH + 3
    assert depths.count(False) >= 3  # the innermost ones, past the limit, ran as tasks


async def test_the_future_the_first_step_waited_on_is_let_go_once_the_task_runs() -> None:
    class Big:
        pass

    future: asyncio.Future[Big] = asyncio.get_running_loop().create_future()
    gate = asyncio.Event()
    ref = weakref.ref(future)
    box = [future]

    async def work() -> str:
        await box.pop()
        await gate.wait()
        return "done"

    started = start_eagerly(work())
    future.set_result(Big())
    del future
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert ref() is None  # the task no longer refers to it while the coroutine waits on
    gate.set()
    assert await started.task == "done"


async def test_a_started_task_shows_its_coroutine() -> None:
    gate = asyncio.Event()

    async def waiting_for_the_gate() -> None:
        await gate.wait()

    started = start_eagerly(waiting_for_the_gate())
    await asyncio.sleep(0)
    assert "waiting_for_the_gate" in repr(started.task)
    assert "flowhooks/_eager.py" not in repr(started.task)  # it runs in the coroutine
    frames = started.task.get_stack()
    assert [f.f_code.co_name for f in frames] == ["waiting_for_the_gate"]
    gate.set()
    await started.task


async def test_a_turn_is_due_once_a_millisecond_or_for_a_pending_cancellation() -> None:
    me = asyncio.current_task()
    turn_due(None)  # the thread's clock starts now
    assert not turn_due(me)  # less than TURN_AFTER since the last turn
    deadline = time.perf_counter() + TURN_AFTER
    while time.perf_counter() < deadline:
        pass
    assert turn_due(me)
    assert not turn_due(me)
    assert me is not None
    me.cancel()  # asked, not delivered yet: the turn delivers it
    assert turn_due(me)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(0)
    me.uncancel()


async def test_a_step_that_finished_leaves_no_pending_task() -> None:
    async def work() -> int:
        return 3

    started = start_eagerly(work())
    assert started.finished_now()
    assert started.result() == 3
    assert started.task not in asyncio.all_tasks()  # as a finished eager task on 3.12+
    await asyncio.sleep(0)
    assert started.task.done()
