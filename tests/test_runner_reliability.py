"""Reliability at the edges: raise_error guards, re-entrant emits, repeated cancellation."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest
from stream_checks import assert_well_formed

from flowhooks import (
    AsyncioRunner,
    BaseCallbackHandler,
    CallbackManager,
    Event,
    EventType,
    Runner,
    RunStatus,
    SequentialRunner,
    Workflow,
    current_run,
    node,
)
from flowhooks.testing import RecordingCallback

RUNNERS = {"asyncio": AsyncioRunner, "sequential": SequentialRunner}


@pytest.fixture(params=list(RUNNERS.values()), ids=list(RUNNERS))
def runner(request: pytest.FixtureRequest) -> Runner:
    """Each runner in turn."""
    return request.param()


@node
async def first() -> int:
    return 1


@node
async def second(first: int) -> int:
    return first + 1


def two_nodes() -> Workflow:
    return Workflow("pair", nodes=[first, second])


class GuardOn(BaseCallbackHandler):
    """A raise_error guard that trips on one event type for one node."""

    raise_error = True

    def __init__(self, event_type: str, node_id: str) -> None:
        self.event_type = event_type
        self.node_id = node_id

    def _check(self, event_type: str, node_id: str | None) -> None:
        if event_type == self.event_type and node_id == self.node_id:
            raise RuntimeError(f"guard tripped on {event_type} of {node_id}")

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        self._check("node_start", node_id)

    async def on_node_end(self, node_id: str, output_data: Any) -> None:
        self._check("node_end", node_id)

    async def on_error(self, error_info: Any) -> None:
        self._check("error", error_info.node_id)


@pytest.mark.parametrize("event_type", ["node_start", "node_end"])
async def test_handlers_after_a_tripped_guard_still_see_a_well_formed_stream(
    runner: Runner, event_type: str
) -> None:
    """A raise_error guard fails the node, but later handlers still get every event, well formed."""
    after = RecordingCallback()
    result = await two_nodes().run(callbacks=[GuardOn(event_type, "first"), after], runner=runner)
    assert result.status is RunStatus.FAILED
    assert result.final_node == "first"
    assert result.error is not None
    assert result.error.type == "RuntimeError"
    assert "guard tripped" in result.error.message
    assert_well_formed(after.events)
    assert after.events_for("first")[0].type is EventType.NODE_START
    assert result.nodes["second"].status == "skipped"


async def test_guard_tripping_on_the_final_error_is_logged_and_later_handlers_get_it(
    runner: Runner,
) -> None:
    """A guard raising on a failing node's error event leaves that error with every handler."""
    from loguru import logger

    @node
    async def broken() -> None:
        raise ValueError("body failed")

    messages: list[str] = []
    sink = logger.add(messages.append, format="{message}", level="ERROR")
    after = RecordingCallback()
    try:
        result = await Workflow("broken", nodes=[broken]).run(
            callbacks=[GuardOn("error", "broken"), after], runner=runner
        )
    finally:
        logger.remove(sink)
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.type == "ValueError"
    assert [e.type for e in after.events].count(EventType.ERROR) == 1
    assert any("guard tripped" in m for m in messages)


async def test_handler_emitting_from_child_tasks_does_not_deadlock(runner: Runner) -> None:
    """Custom events sent from tasks a handler starts and awaits are delivered, without a hang."""

    class FanOutEmitter(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            ctx = current_run()
            await asyncio.gather(ctx.emit("a", node_id), ctx.emit("b", node_id))

    rec = RecordingCallback()
    result = await asyncio.wait_for(
        two_nodes().run(callbacks=[FanOutEmitter(), rec], runner=runner), timeout=10
    )
    assert result.status is RunStatus.SUCCEEDED
    assert_well_formed(rec.events)
    customs = [(e.name, e.payload) for e in rec.events if e.type is EventType.CUSTOM_EVENT]
    assert sorted(customs) == [("a", "first"), ("a", "second"), ("b", "first"), ("b", "second")]


async def test_handler_awaiting_a_task_it_started_on_an_earlier_event_does_not_deadlock(
    runner: Runner,
) -> None:
    """A task a handler started on node_start, awaited by the node_end handler, may emit.

    The task sends its event while the node's task dispatches node_end: the
    event joins that dispatch (right after node_end) instead of waiting for
    the turn node_end holds, which would never come.
    """
    release = asyncio.Event()

    class StartsThenAwaits(BaseCallbackHandler):
        pending: dict[str, asyncio.Task[None]]

        def __init__(self) -> None:
            self.pending = {}

        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            ctx = current_run()

            async def report() -> None:
                await release.wait()
                await ctx.emit("report", node_id)

            self.pending[node_id] = asyncio.get_running_loop().create_task(report())

        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            release.set()
            await self.pending.pop(node_id)
            release.clear()

    rec = RecordingCallback()
    result = await asyncio.wait_for(
        two_nodes().run(callbacks=[StartsThenAwaits(), rec], runner=runner), timeout=10
    )
    assert result.status is RunStatus.SUCCEEDED
    assert_well_formed(rec.events)
    order = [(e.type.value, e.node_id) for e in rec.events[1:-1]]
    assert order == [
        ("node_start", "first"),
        ("node_end", "first"),
        ("custom_event", "first"),
        ("node_start", "second"),
        ("node_end", "second"),
        ("custom_event", "second"),
    ]


async def test_task_started_by_a_node_body_waits_for_its_turn_during_the_nodes_event(
    runner: Runner,
) -> None:
    """A body-started task emitting while its node's node_end is dispatched waits for its turn.

    Its emit returns once the event is delivered, as any emit outside a
    dispatch does: sharing the node's task does not make it part of the
    node's own dispatch.
    """
    go = asyncio.Event()
    rec = RecordingCallback()
    delivered_when_emit_returned: list[bool] = []
    started: list[asyncio.Task[None]] = []

    @node
    async def spawner() -> int:
        ctx = current_run()

        async def later() -> None:
            await go.wait()
            await ctx.emit("late", 1)
            delivered_when_emit_returned.append(
                any(e.type is EventType.CUSTOM_EVENT for e in rec.events)
            )

        started.append(asyncio.get_running_loop().create_task(later()))
        return 1

    class LingersOnNodeEnd(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            go.set()
            await asyncio.sleep(0.05)  # the task sends its event meanwhile

    result = await asyncio.wait_for(
        Workflow("spawns", nodes=[spawner]).run(callbacks=[LingersOnNodeEnd(), rec], runner=runner),
        timeout=10,
    )
    await asyncio.wait_for(asyncio.gather(*started), timeout=5)
    assert result.status is RunStatus.SUCCEEDED
    assert delivered_when_emit_returned == [True]
    types = [e.type for e in rec.events]
    assert types.index(EventType.NODE_END) < types.index(EventType.CUSTOM_EVENT)
    assert types.index(EventType.CUSTOM_EVENT) < types.index(EventType.WORKFLOW_END)
    custom = next(e for e in rec.events if e.type is EventType.CUSTOM_EVENT)
    assert custom.node_id == "spawner"
    assert_well_formed(rec.events)


async def test_a_second_cancellation_abandons_a_hanging_end_of_run(runner: Runner) -> None:
    """A workflow_end handler that hangs cannot hang shutdown: cancelling twice gets out."""
    entered = asyncio.Event()

    class HangsAtEnd(BaseCallbackHandler):
        async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(two_nodes().run(callbacks=[HangsAtEnd()], runner=runner))
    await asyncio.wait_for(entered.wait(), timeout=5)
    task.cancel()  # first: held back, the end of the run goes on
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()  # second: the end of the run is abandoned
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)


async def test_guard_tripping_on_a_custom_event_fails_the_node_without_retry(
    runner: Runner,
) -> None:
    """A raise_error handler failing on a node's custom event fails that node for good."""
    attempts: list[int] = []

    class GuardOnCustom(BaseCallbackHandler):
        raise_error = True

        async def on_custom_event(self, name: str, data: Any) -> None:
            raise RuntimeError(f"guard tripped on {name}")

    @node(retries=2)
    async def chatty() -> int:
        attempts.append(1)
        await current_run().emit("progress", 50)
        return 1

    after = RecordingCallback()
    result = await Workflow("chatty", nodes=[chatty]).run(
        callbacks=[GuardOnCustom(), after], runner=runner
    )
    assert result.status is RunStatus.FAILED
    assert len(attempts) == 1
    assert result.error is not None
    assert result.error.will_retry is False
    assert "guard tripped on progress" in result.error.message
    assert not hasattr(result.error.exception, "__flowhooks_propagate__")
    assert_well_formed(after.events)


async def test_task_started_by_a_handler_emits_in_order_after_that_dispatch(
    runner: Runner,
) -> None:
    """Events a handler-started task sends after the dispatch arrive before workflow_end."""
    delivered = asyncio.Event()
    rec = RecordingCallback()
    seen_when_emit_returned: list[bool] = []

    class StartsBackgroundWork(BaseCallbackHandler):
        async def on_workflow_start(self, workflow_id: str, input_data: dict[str, Any]) -> None:
            ctx = current_run()

            async def later() -> None:
                await asyncio.sleep(0.02)
                await ctx.emit("progress", 1)
                custom = [e for e in rec.events if e.type is EventType.CUSTOM_EVENT]
                seen_when_emit_returned.append(bool(custom))
                delivered.set()

            self.task = asyncio.get_running_loop().create_task(later())

    @node
    async def slow() -> int:
        await asyncio.sleep(0.2)
        return 1

    starter = StartsBackgroundWork()
    result = await asyncio.wait_for(
        Workflow("bg", nodes=[slow]).run(callbacks=[starter, rec], runner=runner), timeout=10
    )
    assert result.status is RunStatus.SUCCEEDED
    assert delivered.is_set()
    assert seen_when_emit_returned == [True]  # delivered, not parked, once emit returned
    types = [e.type for e in rec.events]
    assert types.index(EventType.CUSTOM_EVENT) < types.index(EventType.WORKFLOW_END)
    assert_well_formed(rec.events)


async def test_one_cancellation_cannot_hang_on_a_handler_stuck_in_a_node_event(
    runner: Runner,
) -> None:
    """A single cancellation (as wait_for sends) ends a run whose handler hangs, after the grace."""
    runner.cancel_grace = 0.2
    entered = asyncio.Event()

    class HangsOnNodeStart(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(two_nodes().run(callbacks=[HangsOnNodeStart()], runner=runner))
    await asyncio.wait_for(entered.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)


async def test_handle_cancel_returns_a_result_even_when_a_handler_hangs(runner: Runner) -> None:
    """RunHandle.cancel() on a run whose end hangs returns a cancelled result after the grace."""
    runner.cancel_grace = 0.2
    entered = asyncio.Event()

    class HangsAtEnd(BaseCallbackHandler):
        async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
            await asyncio.Event().wait()

    @node
    async def waits() -> int:
        entered.set()
        await asyncio.sleep(10)
        return 1

    handle = Workflow("stuck", nodes=[waits]).start(callbacks=[HangsAtEnd()], runner=runner)
    await asyncio.wait_for(entered.wait(), timeout=5)
    handle.cancel("operator asked")
    result = await asyncio.wait_for(handle, timeout=5)
    assert result.status is RunStatus.CANCELLED
    assert result.cancel_reason == "operator asked"
    assert result.nodes["waits"].status == "cancelled"


async def test_a_timed_out_run_returns_even_when_its_end_hangs(runner: Runner) -> None:
    """run(timeout=...) bounds a run whose workflow_end handler hangs, plus the grace."""
    runner.cancel_grace = 0.2

    class HangsAtEnd(BaseCallbackHandler):
        async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
            await asyncio.Event().wait()

    @node
    async def slow() -> int:
        await asyncio.sleep(10)
        return 1

    result = await asyncio.wait_for(
        Workflow("late", nodes=[slow]).run(callbacks=[HangsAtEnd()], runner=runner, timeout=0.1),
        timeout=5,
    )
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.type == "TimeoutError"


async def test_events_queued_behind_a_tripped_guard_still_precede_workflow_end(
    runner: Runner,
) -> None:
    """When a guard fails on one queued custom event, the later queued ones still come first."""

    class EmitsTwo(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            ctx = current_run()
            await ctx.emit("a", 1)
            await ctx.emit("b", 2)

    class GuardOnA(BaseCallbackHandler):
        raise_error = True

        async def on_custom_event(self, name: str, data: Any) -> None:
            if name == "a":
                raise RuntimeError("guard on a")

    rec = RecordingCallback()
    result = await Workflow("queued", nodes=[first]).run(
        callbacks=[EmitsTwo(), GuardOnA(), rec], runner=runner
    )
    assert result.status is RunStatus.FAILED
    assert [(e.type.value, e.name) for e in rec.events][-3:] == [
        ("custom_event", "a"),
        ("custom_event", "b"),
        ("workflow_end", None),
    ]
    assert_well_formed(rec.events)


async def test_a_zero_grace_still_returns_the_result(runner: Runner) -> None:
    """With cancel_grace=0 a timed-out or cancelled run still returns its RunResult."""
    runner.cancel_grace = 0

    @node
    async def slow() -> int:
        await asyncio.sleep(10)
        return 1

    timed_out = await Workflow("zero", nodes=[slow]).run(runner=runner, timeout=0.05)
    assert timed_out.status is RunStatus.FAILED
    handle = Workflow("zero", nodes=[slow]).start(runner=runner)
    await asyncio.sleep(0.05)
    handle.cancel("now")
    cancelled = await asyncio.wait_for(handle, timeout=5)
    assert cancelled.status is RunStatus.CANCELLED


@pytest.mark.parametrize("stop", ["timeout", "handle"])
async def test_a_node_stuck_in_a_handler_cannot_hold_a_stopped_run(
    runner: Runner, stop: str
) -> None:
    """A stopped run whose node hangs in a handler (not its body) ends after the grace."""
    runner.cancel_grace = 0.2

    class HangsOnNodeEnd(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            await asyncio.Event().wait()

    wf = two_nodes()
    if stop == "timeout":
        result = await asyncio.wait_for(
            wf.run(callbacks=[HangsOnNodeEnd()], runner=runner, timeout=0.1), timeout=5
        )
        assert result.status is RunStatus.FAILED
        assert result.error is not None
        assert result.error.type == "TimeoutError"
    else:
        handle = wf.start(callbacks=[HangsOnNodeEnd()], runner=runner)
        await asyncio.sleep(0.1)
        handle.cancel("operator")
        result = await asyncio.wait_for(handle, timeout=5)
        assert result.status is RunStatus.CANCELLED
    assert result.nodes["first"].status == "cancelled"
    assert result.nodes["second"].status == "skipped"
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert leftovers == []


async def test_an_abandoned_timed_out_run_still_reports_its_timeout(runner: Runner) -> None:
    """When a timed-out run's end is abandoned, its result still carries the TimeoutError."""
    runner.cancel_grace = 0.2

    async def stuck_callback(node_id: str, ctx: Any) -> None:
        await asyncio.Event().wait()

    @node(on_success=stuck_callback)
    async def quick() -> int:
        return 1

    @node
    async def slow(quick: int) -> int:
        await asyncio.sleep(10)
        return quick

    result = await asyncio.wait_for(
        Workflow("abandon", nodes=[quick, slow]).run(runner=runner, timeout=0.1), timeout=5
    )
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.type == "TimeoutError"


async def test_a_handler_added_while_an_event_waits_for_its_turn_starts_at_the_next_run() -> None:
    """A handler added while an event waits for the run's turn gets nothing of that run
    (it would have a run without its start); at the next run it gets every event,
    complete (its ``event=`` is built)."""
    entered, release = asyncio.Event(), asyncio.Event()
    seen: list[Event] = []

    class Gate(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            if node_id == "x":
                entered.set()
                await release.wait()  # y's node_start now waits for the turn

    class Late(BaseCallbackHandler):
        async def on_node_start(
            self, node_id: str, input_data: dict[str, Any], *, event: Event
        ) -> None:
            seen.append(event)

    @node
    async def x() -> int:
        return 1

    @node
    async def y() -> int:
        return 2

    manager = CallbackManager([Gate()])
    run = asyncio.create_task(Workflow("late", nodes=[x, y]).run(callbacks=manager))
    await asyncio.wait_for(entered.wait(), timeout=5)
    await asyncio.sleep(0.05)
    manager.add_handler(Late())
    release.set()
    result = await asyncio.wait_for(run, timeout=5)
    assert result.status is RunStatus.SUCCEEDED
    assert seen == []
    release.set()
    again = await asyncio.wait_for(Workflow("late", nodes=[x, y]).run(callbacks=manager), 5)
    assert sorted((e.node_id, e.run_id, e.workflow_name) for e in seen) == [
        ("x", again.run_id, "late"),
        ("y", again.run_id, "late"),
    ]
    assert all(e.seq > 0 for e in seen)


async def test_finished_node_tasks_are_freed_without_the_garbage_collector() -> None:
    """A handled node's task leaves no reference cycle behind, so a wide fan does not
    hold every finished task (about 1 KB each) until the collector runs."""
    tasks: list[weakref.ref[asyncio.Task[Any]]] = []

    class Watch(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.append(weakref.ref(task))

    def middle(i: int) -> Any:
        async def fn(src: int) -> int:
            return src + i

        return node(fn, name=f"m{i}")

    @node
    async def src() -> int:
        return 1

    wf = Workflow("fan", nodes=[src, *(middle(i) for i in range(20))])
    gc.collect()
    gc.disable()
    try:
        result = await wf.run(callbacks=[Watch()], runner=AsyncioRunner())
        await asyncio.sleep(0)  # let the loop drop its last handles on finished tasks
        alive = [ref() for ref in tasks if ref() is not None]
    finally:
        gc.enable()
    assert result.status is RunStatus.SUCCEEDED
    assert len(tasks) == 21
    assert alive == []


async def test_a_task_that_carried_a_chain_is_freed_without_the_garbage_collector() -> None:
    """A task runs each link of a chain it is handed, one frame per link; when it ends
    (here after a link that awaited, and at a join) none of those frames keeps it alive."""
    tasks: list[weakref.ref[asyncio.Task[Any]]] = []

    class Watch(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.append(weakref.ref(task))

    def link(i: int, after: list[str]) -> Any:
        async def fn() -> int:
            if i % 3 == 0:
                await asyncio.sleep(0)
            return i

        return node(fn, name=f"l{i}", depends_on=after)

    chain = [link(0, [])] + [link(i, [f"l{i - 1}"]) for i in range(1, 12)]
    side = [link(100, ["l3"]), link(101, ["l100"])]
    join = link(200, ["l11", "l101"])
    wf = Workflow("links", nodes=[*chain, *side, join])
    gc.collect()
    gc.disable()
    try:
        result = await wf.run(callbacks=[Watch()], runner=AsyncioRunner())
        await asyncio.sleep(0)  # let the loop drop its last handles on finished tasks
        alive = {ref() for ref in tasks} - {None}
    finally:
        gc.enable()
    assert result.status is RunStatus.SUCCEEDED
    assert len(tasks) == 15
    assert alive == set()


async def test_events_a_node_start_handler_sends_go_out_before_its_guard_fails_the_node(
    runner: Runner,
) -> None:
    """A node's own event, dispatched by the node's task itself: what its handlers send
    meanwhile goes out right after it, also when a guard fails the node on it."""
    ran: list[str] = []

    class EmitsOnStart(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            await current_run().emit("noticed", node_id)

    @node
    async def guarded() -> int:
        ran.append("guarded")
        return 1

    rec = RecordingCallback()
    result = await Workflow("start-guard", nodes=[first, guarded]).run(
        callbacks=[EmitsOnStart(), GuardOn("node_start", "guarded"), rec], runner=runner
    )
    assert result.status is RunStatus.FAILED
    assert ran == []  # the guard failed the node before its body
    stream = [
        (e.type.value, e.name if e.type is EventType.CUSTOM_EVENT else e.node_id)
        for e in rec.events
    ]
    assert stream[: stream.index(("error", "guarded"))] == [
        ("workflow_start", None),
        ("node_start", "first"),
        ("custom_event", "noticed"),
        ("node_end", "first"),
        ("node_start", "guarded"),
        ("custom_event", "noticed"),
    ]
    assert_well_formed(rec.events)


def _first_of(rows: list[int]) -> int:
    return next(iter(rows))  # StopIteration when rows is empty


async def test_a_sync_body_raising_stop_iteration_fails_its_node(runner: Any) -> None:
    """``next()`` on an empty iterator in a sync node (run in a worker thread) fails the
    node; asyncio cannot carry a StopIteration through a future, and the run used to wait
    for ever."""

    @node
    def first(rows: list[int]) -> int:
        return _first_of(rows)

    result = await asyncio.wait_for(
        Workflow("stop-iteration", nodes=[first]).run({"rows": []}, runner=runner), 30
    )
    assert result.status is RunStatus.FAILED
    error = result.nodes["first"].error
    assert error is not None
    assert error.type == "RuntimeError"
    assert "raised StopIteration" in error.message


async def test_sync_callbacks_and_threaded_handlers_raising_stop_iteration_are_isolated(
    runner: Any,
) -> None:
    """A sync ``on_success``, a sync workflow callback and a ``run_in_thread`` handler that
    raise StopIteration are logged and isolated like any failure; the run succeeds."""
    calls: list[str] = []

    def on_ok(name: str, ctx: Any) -> None:
        calls.append("on_success")
        _first_of([])

    def on_complete(result: Any) -> None:
        calls.append("on_workflow_complete")
        _first_of([])

    class Threaded(BaseCallbackHandler):
        run_in_thread = True

        def on_node_end(self, node_id: str, output_data: Any) -> None:
            calls.append("handler")
            _first_of([])

    @node(on_success=on_ok)
    def one() -> int:
        return 1

    manager = CallbackManager([Threaded()])
    wf = Workflow("stop-iteration-callbacks", nodes=[one], on_workflow_complete=on_complete)
    result = await asyncio.wait_for(wf.run(callbacks=manager, runner=runner), 30)
    assert result.succeeded
    assert sorted(calls) == ["handler", "on_success", "on_workflow_complete"]
    assert manager.stats["Threaded"]["node_end"].errors == 1
