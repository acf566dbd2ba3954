"""The run guarantees on the exit paths that hostile handlers and cancellation take.

Each test is one scenario of SPEC §2/§6 (v2), run with every runner: a run
reports ``succeeded`` only when every planned node succeeded, the caller's
cancellation is honoured, a node that swallows or ignores the run's
cancellation is recorded ``cancelled`` (or abandoned), and every handler still
gets its ``workflow_end`` exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from stream_checks import Editing, assert_well_formed

from flowhooks import (
    AsyncioRunner,
    BaseCallbackHandler,
    BatchedCallback,
    CallbackManager,
    DuplicateRunError,
    Event,
    NodeStatus,
    Runner,
    RunStatus,
    SequentialRunner,
    Workflow,
    node,
)
from flowhooks.testing import RecordingCallback

RUNNERS = {"asyncio": AsyncioRunner, "sequential": SequentialRunner}


@pytest.fixture(params=list(RUNNERS.values()), ids=list(RUNNERS))
def runner(request: pytest.FixtureRequest) -> Runner:
    """Each runner in turn, with a short grace so abandonment tests end quickly."""
    made: Runner = request.param()
    made.cancel_grace = 0.3
    return made


@node
async def source() -> int:
    await asyncio.sleep(0)  # a real node awaits something: where a pending cancel lands
    return 1


@node
async def sink(source: int) -> int:
    return source + 1


async def swallow_cancellation_until(release: asyncio.Event) -> None:
    """What a node or handler that ignores cancellation does: go on until ``release``."""
    while not release.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.01)


def pair() -> Workflow:
    return Workflow("pair", nodes=[source, sink])


class RaisesCancelled(BaseCallbackHandler):
    """Raises ``CancelledError`` on node_start of ``source`` (it awaits a cancelled future)."""

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        if node_id == "source":
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.cancel()
            await fut


class CancelsOwnTask(BaseCallbackHandler):
    """Cancels the task it runs in, on node_start of ``source``."""

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        if node_id == "source":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()


@pytest.mark.parametrize("hostile", [RaisesCancelled, CancelsOwnTask])
async def test_a_handler_cancelling_a_node_cannot_make_the_run_succeed(
    runner: Runner, hostile: type[BaseCallbackHandler]
) -> None:
    recorder = RecordingCallback()
    result = await pair().run(callbacks=[hostile(), recorder], runner=runner)
    assert result.status is RunStatus.FAILED
    assert result.nodes["source"].status is NodeStatus.FAILED
    assert result.error is not None
    assert result.error.type == "CancelledError"
    assert result.error.node_id == "source"
    assert "sink" not in result.outputs
    assert_well_formed(recorder.events)
    assert [e.type for e in recorder.events].count("workflow_end") == 1


async def test_a_node_that_swallows_the_runs_cancellation_is_recorded_cancelled(
    runner: Runner,
) -> None:
    """It returns anyway: no node_end, no on_success, no output."""
    entered = asyncio.Event()
    successes: list[str] = []

    def on_success(node_id: str, ctx: object) -> None:
        successes.append(node_id)

    @node(on_success=on_success)
    async def stubborn() -> str:
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        return "ignored the stop"

    recorder = RecordingCallback()
    wf = Workflow("stubborn", nodes=[stubborn])
    handle = wf.start(callbacks=[recorder], runner=runner)
    await entered.wait()
    assert handle.cancel("stop") is True
    result = await handle
    assert result.status is RunStatus.CANCELLED
    assert result.nodes["stubborn"].status is NodeStatus.CANCELLED
    assert result.outputs == {}
    assert successes == []
    assert [e.type for e in recorder.events] == ["workflow_start", "node_start", "workflow_end"]


async def test_the_callers_cancellation_is_honoured_when_a_node_swallows_it(
    runner: Runner,
) -> None:
    entered = asyncio.Event()

    @node
    async def swallow() -> str:
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        return "done anyway"

    recorder = RecordingCallback()
    task = asyncio.create_task(
        Workflow("swallow", nodes=[swallow]).run(callbacks=[recorder], runner=runner)
    )
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ends = recorder.events_of("workflow_end")
    assert len(ends) == 1
    assert ends[0].status == "cancelled"


async def test_an_asyncio_timeout_around_run_fires(runner: Runner) -> None:
    @node
    async def slow() -> None:
        await asyncio.sleep(30)

    recorder = RecordingCallback()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await Workflow("slow", nodes=[slow]).run(callbacks=[recorder], runner=runner)
    assert [e.status for e in recorder.events_of("workflow_end")] == ["cancelled"]


async def test_a_node_ignoring_cancellation_is_abandoned_and_workflow_end_still_fires(
    runner: Runner,
) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    @node
    async def deaf() -> None:
        entered.set()
        await swallow_cancellation_until(release)

    recorder = RecordingCallback()
    task = asyncio.create_task(
        Workflow("deaf", nodes=[deaf]).run(callbacks=[recorder], runner=runner)
    )
    await entered.wait()
    task.cancel()
    try:
        async with asyncio.timeout(10):  # bounded by the grace, not by the deaf node
            await asyncio.wait([task])
    finally:
        release.set()
    assert task.cancelled()
    ends = recorder.events_of("workflow_end")
    assert len(ends) == 1
    assert ends[0].status == "cancelled"
    await asyncio.sleep(0.05)  # the abandoned node ends by itself; nothing follows the end
    assert recorder.events[-1].type == "workflow_end"


def deaf_workflow(
    entered: asyncio.Event, release: asyncio.Event, *, sibling: bool = False
) -> Workflow:
    """A node that swallows every cancellation until ``release`` (and, with ``sibling``, a
    node beside it that fails once the deaf one is running: fail-fast stops the run)."""

    @node
    async def deaf() -> None:
        entered.set()
        await swallow_cancellation_until(release)

    @node
    async def fails() -> None:
        await entered.wait()
        raise ValueError("boom")

    return Workflow("deaf", nodes=[deaf, fails] if sibling else [deaf])


async def _within(seconds: float, awaitable: Any, release: asyncio.Event) -> Any:
    try:
        async with asyncio.timeout(seconds):  # bounded by two graces, not by the deaf node
            return await awaitable
    finally:
        release.set()


@pytest.mark.parametrize("stop", ["handle.cancel", "timeout"])
async def test_a_run_stopped_from_inside_ends_without_a_node_that_ignores_the_stop(
    runner: Runner, stop: str
) -> None:
    """RunHandle.cancel and the run's timeout=: the node is cancelled, then cancelled again
    after the grace, then left behind after a second grace; the run ends without it."""
    entered, release = asyncio.Event(), asyncio.Event()
    recorder = RecordingCallback()
    wf = deaf_workflow(entered, release)
    if stop == "timeout":
        handle = wf.start(callbacks=[recorder], runner=runner, timeout=0.05)
    else:
        handle = wf.start(callbacks=[recorder], runner=runner)
        await entered.wait()
        assert handle.cancel("operator") is True
    result = await _within(10, handle, release)
    expected = RunStatus.CANCELLED if stop == "handle.cancel" else RunStatus.FAILED
    assert result.status is expected
    assert result.nodes["deaf"].status is NodeStatus.CANCELLED
    ends = recorder.events_of("workflow_end")
    assert [e.status for e in ends] == [expected.value]
    await asyncio.sleep(0.05)  # the abandoned node ends by itself; nothing follows the end
    assert recorder.events[-1].type == "workflow_end"


@pytest.mark.parametrize("stop", ["handle.cancel", "timeout", "caller", "fail-fast"])
@pytest.mark.parametrize("runner_type", [AsyncioRunner, SequentialRunner])
async def test_a_node_that_ignores_the_stop_is_abandoned_after_one_grace(
    runner_type: type[Runner], stop: str
) -> None:
    """SPEC: "a node ignores cancellation: after cancel_grace it is abandoned", however the
    run was stopped. The grace is long against this machine's noise, and the bound sits
    between one grace and two (where a second grace would end it)."""
    if stop == "fail-fast" and runner_type is SequentialRunner:
        pytest.skip("one node at a time: the failing sibling never starts beside the deaf one")
    grace = 2.0
    runner = runner_type()
    runner.cancel_grace = grace
    entered, release = asyncio.Event(), asyncio.Event()
    wf = deaf_workflow(entered, release, sibling=stop == "fail-fast")
    loop = asyncio.get_running_loop()
    awaitable: Any
    if stop == "timeout":
        stopped = loop.time() + 0.05
        awaitable = wf.run(runner=runner, timeout=0.05)
    elif stop == "handle.cancel":
        awaitable = wf.start(runner=runner)
        await entered.wait()
        stopped = loop.time()
        awaitable.cancel("operator")
    else:  # the caller cancels the task awaiting the run; or a sibling fails (fail-fast)
        awaitable = asyncio.ensure_future(wf.run(runner=runner))
        await entered.wait()
        stopped = loop.time()
        if stop == "caller":
            awaitable.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await _within(10, awaitable, release)
    waited = loop.time() - stopped
    assert waited >= grace * 0.45  # it was not given up on at once
    assert waited < grace * 1.6, f"abandoned {waited:.2f}s after the stop"


@pytest.mark.parametrize("stop", ["handle.cancel", "timeout", "caller"])
async def test_a_node_cleaning_up_after_the_stop_has_the_whole_grace(stop: str) -> None:
    """A node that honours the stop but cleans up first is not cut short before the grace
    is over: its cleanup, shorter than the grace, completes."""
    runner = AsyncioRunner()
    runner.cancel_grace = 2.0
    entered, cleaned = asyncio.Event(), asyncio.Event()

    @node
    async def tidy() -> None:
        entered.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(1.0)  # the cleanup: half of the grace
            cleaned.set()
            raise

    wf = Workflow("tidy", nodes=[tidy])
    awaitable: Any
    if stop == "timeout":
        awaitable = wf.run(runner=runner, timeout=0.05)
    elif stop == "caller":
        awaitable = asyncio.ensure_future(wf.run(runner=runner))
        await entered.wait()
        awaitable.cancel()
    else:
        awaitable = wf.start(runner=runner)
        await entered.wait()
        awaitable.cancel("operator")
    with contextlib.suppress(asyncio.CancelledError):
        result = await asyncio.wait_for(awaitable, 10)
        assert result.nodes["tidy"].status is NodeStatus.CANCELLED
    assert cleaned.is_set()


async def test_fail_fast_ends_without_a_node_that_ignores_the_stop() -> None:
    runner = AsyncioRunner()
    runner.cancel_grace = 0.3
    entered, release = asyncio.Event(), asyncio.Event()
    recorder = RecordingCallback()
    wf = deaf_workflow(entered, release, sibling=True)
    result = await _within(10, wf.run(callbacks=[recorder], runner=runner), release)
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.type == "ValueError"
    assert result.nodes["deaf"].status is NodeStatus.CANCELLED
    assert [e.status for e in recorder.events_of("workflow_end")] == ["failed"]


async def test_the_callers_timeout_fires_after_fail_fast_met_a_node_that_ignores_it() -> None:
    runner = AsyncioRunner()
    runner.cancel_grace = 0.3
    entered, release = asyncio.Event(), asyncio.Event()
    recorder = RecordingCallback()
    wf = deaf_workflow(entered, release, sibling=True)

    async def run_with_a_deadline() -> None:
        async with asyncio.timeout(0.15):  # fires while fail-fast waits for the deaf node
            await wf.run(callbacks=[recorder], runner=runner)

    with pytest.raises(TimeoutError):
        await _within(10, run_with_a_deadline(), release)
    assert [e.status for e in recorder.events_of("workflow_end")] == ["failed"]


@pytest.mark.parametrize("stop", ["handle.cancel", "caller"])
async def test_workflow_end_goes_out_when_a_handler_ignores_the_stop_mid_event(
    runner: Runner, stop: str
) -> None:
    """A handler stuck in the middle of a node's event, swallowing every cancellation, holds
    the run's dispatch turn; once its node is abandoned the turn is taken back, so the other
    handlers still get the run's workflow_end."""
    release = asyncio.Event()
    stuck = asyncio.Event()

    class Deaf(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            stuck.set()
            await swallow_cancellation_until(release)

    @node
    async def quick() -> int:
        return 1

    @node
    async def slow() -> None:
        await asyncio.sleep(30)

    recorder = RecordingCallback()  # before Deaf: it has had the stuck event already
    wf = Workflow("deaf-handler", nodes=[quick, slow])
    try:
        async with asyncio.timeout(10):  # bounded by the graces, not by the deaf handler
            if stop == "handle.cancel":
                handle = wf.start(callbacks=[recorder, Deaf()], runner=runner)
                await stuck.wait()
                handle.cancel("operator")
                result = await handle
                assert result.status is RunStatus.CANCELLED
            else:
                task = asyncio.create_task(wf.run(callbacks=[recorder, Deaf()], runner=runner))
                await stuck.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
    finally:
        release.set()
    ends = recorder.events_of("workflow_end")
    assert [e.status for e in ends] == ["cancelled"]
    await asyncio.sleep(0.05)  # the deaf handler returns; nothing reaches the recorder after
    assert recorder.events[-1].type == "workflow_end"


@pytest.mark.parametrize("stop", ["handle.cancel", "task.cancel", "twice"])
async def test_nothing_of_an_abandoned_event_reaches_handlers_after_the_run_end(
    runner: Runner, stop: str
) -> None:
    """A handler hangs in a node's event (it would honour a cancellation), so the stopped
    run abandons the node after its grace and ends without it: the handlers after the
    hung one do not get the rest of that event after workflow_end, nor an error event of
    the abandoned attempt (after a second cancel, when the end itself is given up on)."""
    hung = asyncio.Event()

    class Hangs(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            hung.set()
            await asyncio.sleep(3600)

    @node
    async def only() -> int:
        return 1

    recorder = RecordingCallback()
    manager = CallbackManager()
    manager.add_handler(Hangs(), priority=1)
    manager.add_handler(recorder)
    wf = Workflow("abandoned", nodes=[only])
    async with asyncio.timeout(10):
        if stop == "handle.cancel":
            handle = wf.start(callbacks=manager, runner=runner)
            await hung.wait()
            handle.cancel("operator")
            assert (await handle).status is RunStatus.CANCELLED
        else:
            task = asyncio.create_task(wf.run(callbacks=manager, runner=runner))
            await hung.wait()
            task.cancel()
            if stop == "twice":
                await asyncio.sleep(0.05)
                task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    for _ in range(5):  # the abandoned task's turns
        await asyncio.sleep(0.01)
    seqs = [e.seq for e in recorder.events]
    assert seqs == sorted(set(seqs))
    assert "error" not in recorder.types  # an abandoned attempt sends nothing
    if stop == "twice":  # the end was given up on too: no workflow_end, and nothing else
        assert recorder.types[0] == "workflow_start"
    else:
        assert recorder.types.count("workflow_end") == 1
        assert recorder.events[-1].type == "workflow_end"


async def test_handle_cancel_says_whether_this_call_stopped_the_run(runner: Runner) -> None:
    entered = asyncio.Event()

    @node
    async def waits() -> None:
        entered.set()
        await asyncio.sleep(30)

    handle = Workflow("waits", nodes=[waits]).start(runner=runner)
    await entered.wait()
    assert handle.cancel("first") is True
    assert handle.cancel("second") is False
    result = await handle
    assert result.cancel_reason == "first"
    assert handle.cancel("after the end") is False


async def test_handle_cancel_before_the_run_started_counts_once(runner: Runner) -> None:
    handle = pair().start(runner=runner)
    assert handle.cancel("early") is True
    assert handle.cancel("again") is False
    result = await handle
    assert result.status is RunStatus.CANCELLED


async def test_two_live_runs_cannot_share_a_run_id(runner: Runner) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    @node
    async def hold() -> None:
        entered.set()
        await release.wait()

    wf = Workflow("hold", nodes=[hold])
    recorder = RecordingCallback()
    first_run = wf.start(run_id="order-1", callbacks=[recorder], runner=runner)
    await entered.wait()
    with pytest.raises(DuplicateRunError, match="'order-1' is already used"):
        await wf.run(run_id="order-1", callbacks=[recorder], runner=runner)
    release.set()
    assert (await first_run).status is RunStatus.SUCCEEDED
    assert {e.run_id for e in recorder.events} == {"order-1"}
    assert_well_formed(recorder.events)
    again = await wf.run(run_id="order-1", runner=runner)  # free once the first ended
    assert again.run_id == "order-1"


async def test_a_run_cancelled_before_it_started_frees_its_id() -> None:
    handle = pair().start(run_id="early")
    handle._task.cancel()  # before its first step: the run's own code never runs
    with pytest.raises(asyncio.CancelledError):
        await handle
    assert (await pair().run(run_id="early")).status is RunStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("run_id", "error"),
    [(123, TypeError), (b"id", TypeError), ("", ValueError), ("   ", ValueError)],
)
async def test_a_run_id_must_be_a_non_empty_str(run_id: object, error: type[Exception]) -> None:
    recorder = RecordingCallback()
    with pytest.raises(error, match="run_id= takes a non-empty str"):
        await pair().run(run_id=run_id, callbacks=[recorder])  # type: ignore[arg-type]
    assert recorder.events == []


class Interrupt(BaseException):
    """A custom BaseException, as pytest.fail raises."""


class RaisesOn(BaseCallbackHandler):
    """Raises ``exc`` on one event type."""

    def __init__(self, event_type: str, exc: BaseException) -> None:
        self.event_type = event_type
        self.exc = exc

    async def on_workflow_start(self, workflow_id: str, input_data: dict[str, Any]) -> None:
        if self.event_type == "workflow_start":
            raise self.exc

    async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
        if self.event_type == "workflow_end":
            raise self.exc


@pytest.mark.parametrize("event_type", ["workflow_start", "workflow_end"])
@pytest.mark.parametrize(
    "exc", [KeyboardInterrupt(), SystemExit(3), GeneratorExit(), Interrupt()], ids=repr
)
async def test_a_base_exception_from_a_handler_still_ends_the_run_for_everyone(
    runner: Runner, event_type: str, exc: BaseException
) -> None:
    before, after = RecordingCallback(), RecordingCallback()
    batches: list[list[Event]] = []
    batched = BatchedCallback(batches.append, batch_size=1000, flush_interval=60)
    callbacks = [before, RaisesOn(event_type, exc), after, batched]
    with pytest.raises(type(exc)):
        await pair().run(callbacks=callbacks, runner=runner)
    for recorder in (before, after):
        assert_well_formed(recorder.events)
        ends = recorder.events_of("workflow_end")
        assert len(ends) == 1
    delivered = [e for batch in batches for e in batch]
    assert [e.seq for e in delivered] == [e.seq for e in after.events]
    if event_type == "workflow_start":
        assert after.events_of("workflow_end")[0].status == "failed"
        assert after.events_of("node_start") == []


class RaisesOnNode(BaseCallbackHandler):
    """Raises ``exc`` on one event of node ``source``: ``node_start``, ``node_end``, a
    custom event it sends, or its retried attempt's ``error``."""

    def __init__(self, event_type: str, exc: BaseException) -> None:
        self.event_type = event_type
        self.exc = exc

    def _maybe(self, event_type: str) -> None:
        if event_type == self.event_type:
            raise self.exc

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        self._maybe("node_start")

    async def on_node_end(self, node_id: str, output_data: Any) -> None:
        self._maybe("node_end")

    async def on_custom_event(self, name: str, data: Any) -> None:
        self._maybe("custom_event")

    async def on_error(self, error_info: Any) -> None:
        self._maybe("error")


@pytest.mark.parametrize("event_type", ["node_start", "node_end", "custom_event", "error", "body"])
@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3), Interrupt()], ids=repr)
async def test_a_base_exception_on_a_node_event_fails_that_node_as_the_runs_error(
    runner: Runner, event_type: str, exc: BaseException
) -> None:
    """As a raise_error handler's exception on a node event does: the node fails with
    it, it is the run's error and ``final_node``; each attempt ends with one ``node_end``
    or one ``error``; the exception reaches the caller after ``workflow_end``."""
    attempts: list[int] = []

    @node(retries=1)
    async def source() -> int:
        from flowhooks import current_run

        attempts.append(1)
        if event_type == "body":
            raise exc
        if event_type == "custom_event":
            await current_run().emit("progress", 1)
        if event_type == "error" and len(attempts) == 1:
            raise ValueError("first attempt fails; its error event will_retry")
        return 1

    ended: list[Any] = []
    recorder = RecordingCallback()
    wf = Workflow("pair", nodes=[source, sink], on_workflow_failure=ended.append)
    with pytest.raises(type(exc)):
        await wf.run(callbacks=[RaisesOnNode(event_type, exc), recorder], runner=runner)
    assert_well_formed(recorder.events)
    (result,) = ended
    assert result.status is RunStatus.FAILED
    assert result.final_node == "source"
    assert result.nodes["source"].status is NodeStatus.FAILED
    assert result.error is not None
    assert result.error.type == type(exc).__name__
    assert result.nodes["sink"].status is not NodeStatus.SUCCEEDED
    tried = max(len(attempts), 1)  # a node_start handler's raise: the body never ran
    starts = recorder.events_of("node_start")
    assert [e.node_id for e in starts] == ["source"] * tried
    last_attempt_ends = [
        e
        for e in recorder.events
        if e.node_id == "source" and e.attempt == tried and e.type in ("node_end", "error")
    ]
    assert len(last_attempt_ends) == 1
    assert recorder.events[-1].type == "workflow_end"
    assert recorder.events[-1].status == "failed"


async def test_a_refused_store_does_not_keep_the_run_id() -> None:
    with pytest.raises(TypeError, match="store="):
        await pair().run(run_id="kept", store=42)  # type: ignore[arg-type]
    assert (await pair().run(run_id="kept")).status is RunStatus.SUCCEEDED


@pytest.mark.parametrize("on", ["node_start", "node_end", "custom_event"])
@pytest.mark.parametrize("sync_handler", [False, True], ids=["async", "sync"])
async def test_a_handler_that_cancels_its_own_task_and_returns_fails_that_node(
    runner: Runner, on: str, sync_handler: bool
) -> None:
    """A handler calls ``asyncio.current_task().cancel()`` and returns without waiting,
    on an event of node ``a`` whose body never waits either: the cancellation is not
    lost, nor charged to the next node. ``a`` fails with a CancelledError, ``b`` does
    not run, the run fails, every handler gets ``workflow_end``."""

    def cancel_own_task(name: str) -> None:
        if name == "a":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()

    method = f"on_{on}"
    if sync_handler:

        def hook(self: Any, name: str, data: Any) -> None:
            cancel_own_task(name)

    else:

        async def hook(self: Any, name: str, data: Any) -> None:  # type: ignore[misc]
            cancel_own_task(name)

    Cancels = type("Cancels", (BaseCallbackHandler,), {method: hook})

    @node
    async def a() -> int:
        from flowhooks import current_run

        run = current_run()
        assert run is not None
        await run.emit("a", None)  # the custom event's name: the node's own
        return 1

    @node
    async def b(a: int) -> int:
        return a + 1

    recorder = RecordingCallback()
    result = await Workflow("self-cancel", nodes=[a, b]).run(
        callbacks=[Cancels(), recorder], runner=runner
    )
    assert result.status is RunStatus.FAILED
    error = result.nodes["a"].error
    assert error is not None
    assert error.type == "CancelledError"
    assert result.nodes["b"].status is NodeStatus.SKIPPED
    assert_well_formed(recorder.events)
    assert recorder.events[-1].status == "failed"
    assert [e.node_id for e in recorder.events if e.type == "node_start"] == ["a"]
    # Cancelled before node_end (its node_start or custom event): the attempt ends with its
    # error event, not node_end; cancelled during node_end: node_end was its last event.
    ended = [e.type.value for e in recorder.events if e.node_id == "a"][-1]
    assert ended == ("node_end" if on == "node_end" else "error")


@pytest.mark.parametrize("with_handler", [False, True], ids=["no handler", "recorded"])
async def test_a_body_that_cancels_its_own_task_and_returns_fails_with_an_error_event(
    runner: Runner, with_handler: bool
) -> None:
    """An async body that calls ``asyncio.current_task().cancel()`` and returns fails its
    node with a CancelledError, reported by an ``error`` event (no ``node_end``): handlers
    and the result agree."""

    @node
    async def a() -> int:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        return 1

    recorder = RecordingCallback()
    result = await Workflow("body-self-cancel", nodes=[a]).run(
        callbacks=[recorder] if with_handler else None, runner=runner
    )
    assert result.status is RunStatus.FAILED
    error = result.nodes["a"].error
    assert error is not None
    assert error.type == "CancelledError"
    if with_handler:
        assert [e.type.value for e in recorder.events] == [
            "workflow_start",
            "node_start",
            "error",
            "workflow_end",
        ]


@pytest.mark.parametrize("which", ["on_success", "on_failure", "on_workflow_complete"])
@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(4)], ids=repr)
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_a_base_exception_from_a_function_callback_ends_the_run_then_is_raised(
    runner: Runner, which: str, exc: BaseException, is_async: bool
) -> None:
    """A KeyboardInterrupt or SystemExit from a node's or a workflow's function callback
    is not let out of the event loop before the run's end: every handler gets its
    ``workflow_end``, then ``run`` raises it. From a node callback it stops the run."""

    def raising(*args: Any) -> None:
        raise exc

    async def raising_async(*args: Any) -> None:
        raise exc

    callback = raising_async if is_async else raising
    recorder = RecordingCallback()
    fails = which == "on_failure"

    async def first() -> int:
        if fails:
            raise ValueError("first fails")
        return 1

    async def later(first: int) -> int:
        return first + 1

    node_options = {which: callback} if which != "on_workflow_complete" else {}
    wf_options = {which: callback} if which == "on_workflow_complete" else {}
    wf = Workflow(
        "callbacks",
        nodes=[node(first, name="first", **node_options), node(later, name="later")],
        **wf_options,
    )
    with pytest.raises(type(exc)):
        await wf.run(callbacks=[recorder], runner=runner)
    assert_well_formed(recorder.events)
    assert recorder.types.count("workflow_end") == 1
    assert recorder.events[-1].type == "workflow_end"
    if which == "on_workflow_complete":  # after workflow_end: the run's outcome stands
        assert recorder.events[-1].status == "succeeded"
    else:
        assert recorder.events[-1].status == "failed"


async def test_a_run_started_from_a_handler_is_a_run_of_its_own() -> None:
    """A handler that starts a run (a cleanup workflow on failure, or one in a worker thread
    with ``run_sync``) starts an independent run: not a sub-run of the run whose event it
    handles, whose handlers (itself among them) would get its events, and recurse."""
    cleanup_wf = Workflow("cleanup", nodes=[node(sink.fn, name="tidy")])
    ended: list[tuple[str, str | None]] = []
    cleanups: list[Any] = []

    class RunsCleanup(BaseCallbackHandler):
        async def on_workflow_end(self, workflow_id: str, output_data: Any, *, event: Any) -> None:
            ended.append((event.workflow_name, event.parent_run_id))
            if event.workflow_name == "pair":
                cleanups.append(await cleanup_wf.run(inputs={"source": 1}))

    class RunsInThread(BaseCallbackHandler):
        run_in_thread = True
        timeout = 10

        def on_node_end(self, node_id: str, output_data: Any) -> None:
            if node_id == "sink":
                cleanups.append(cleanup_wf.run_sync(inputs={"source": 1}))

    result = await pair().run(callbacks=[RunsCleanup(), RunsInThread()])
    assert result.succeeded
    assert ended == [("pair", None)]  # the cleanup runs' events are not the pair run's
    assert len(cleanups) == 2
    assert all(c.succeeded and c.parent_run_id is None for c in cleanups)


def siblings() -> Workflow:
    """Two independent nodes, ``x`` and ``y``: ``y``'s task is made while ``x`` starts."""

    @node
    async def x() -> int:
        return 1

    @node
    async def y() -> int:
        return 2

    return Workflow("siblings", nodes=[x, y])


async def test_a_node_task_cancelled_before_its_first_step_fails_its_node() -> None:
    """A handler (or a node) cancelling another node's task before that task has run a
    single step: the node fails with a CancelledError, the run ends failed; it never
    waits for a node that will never run."""
    main = asyncio.current_task()

    class CancelsTheOthers(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            if node_id == "x":
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task() and task is not main:
                        task.cancel()

    recorder = RecordingCallback()
    async with asyncio.timeout(10):
        result = await siblings().run(
            callbacks=[CancelsTheOthers(), recorder], runner=AsyncioRunner()
        )
    assert result.status is RunStatus.FAILED
    assert result.nodes["y"].status is NodeStatus.FAILED
    assert result.error is not None
    assert result.error.type == "CancelledError"
    assert_well_formed(recorder.events)
    assert recorder.events[-1].type == "workflow_end"


async def test_abandoning_a_node_leaves_a_run_it_started_to_end_whole() -> None:
    """The abandonment of run A's node stops A's dispatch in that node's task, not the
    dispatch of an ExternalRun the node's body opened: that run's handlers get its events
    without a gap."""
    entered = asyncio.Event()

    class Stubborn(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            entered.set()
            ignored = 0
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    ignored += 1
                    if ignored >= 3:
                        raise

    from flowhooks import ExternalRun

    inner = RecordingCallback()
    manager = CallbackManager()
    manager.add_handler(Stubborn(), priority=1)
    manager.add_handler(inner)

    @node
    async def opens_a_run() -> int:
        async with ExternalRun(manager, workflow_name="inner") as run, run.node("s"):
            pass
        return 1

    runner = AsyncioRunner()
    runner.cancel_grace = 0.1
    handle = Workflow("outer", nodes=[opens_a_run]).start(runner=runner)
    await entered.wait()
    handle.cancel("stop")
    async with asyncio.timeout(5):
        await handle
    for _ in range(20):
        await asyncio.sleep(0.01)
    seqs = [e.seq for e in inner.events]
    assert seqs == list(range(1, len(seqs) + 1)), inner.types


@pytest.mark.parametrize("grace", [None, 30.0])
async def test_a_node_task_cancelled_before_its_first_step_with_the_caller_ends_soon(
    grace: float | None,
) -> None:
    """As an "on shutdown, cancel every task" routine does: a not yet started node task
    and the task awaiting the run cancelled in one turn. The run's end does not wait the
    grace (or for ever, without one) for the node that never started."""
    holder: list[asyncio.Task[Any]] = []

    class CancelsEverything(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            if node_id == "x":
                me = asyncio.current_task()
                for task in asyncio.all_tasks():
                    if task is not me and task not in holder:
                        task.cancel()
                holder[0].cancel()

    runner = AsyncioRunner()
    runner.cancel_grace = grace
    run = asyncio.create_task(siblings().run(callbacks=[CancelsEverything()], runner=runner))
    holder.extend([run, asyncio.current_task()])  # type: ignore[list-item]
    done, _ = await asyncio.wait({run}, timeout=5)
    assert done, "the run still waited for a node that never started"
    assert run.cancelled()


LEFT_BEHIND = """
import asyncio
from flowhooks import AsyncioRunner, BaseCallbackHandler, Workflow, node

class Stubborn(BaseCallbackHandler):
    timeout = 0.1
    async def on_node_end(self, node_id, output_data):
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass

@node
async def a():
    return 1

@node
async def deaf():
    while True:
        try:
            await asyncio.sleep(10)
        except BaseException:  # a bare except: GeneratorExit too
            pass

cleaned = []

class Spawner(BaseCallbackHandler):
    async def on_workflow_end(self, workflow_id, output_data):
        async def tidy():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                await asyncio.sleep(1.5)  # cleanup longer than the wait at the end
                cleaned.append(True)
                raise
        asyncio.get_running_loop().create_task(tidy())

runner = AsyncioRunner()
runner.cancel_grace = 0.5
handled = Workflow("w", nodes=[a]).run_sync(callbacks=[Stubborn()], runner=runner)
print("handler", handled.status, flush=True)
print("node", Workflow("w2", nodes=[deaf]).run_sync(timeout=0.2, runner=runner).status)
print("spawner", Workflow("w3", nodes=[a]).run_sync(callbacks=[Spawner()]).status, flush=True)
import time
time.sleep(2)
print("cleaned", cleaned == [True], flush=True)
"""


def test_run_sync_returns_though_a_handler_or_node_ignores_cancellation(tmp_path: Path) -> None:
    """``run_sync`` does not wait for ever on what the run abandoned: a handler call past its
    timeout, a node past the grace, both swallowing every cancellation, are waited for the
    runner's ``cancel_grace`` and then go on in a background thread (the process still
    exits: they are not finalised in a loop); a task a handler started finishes its
    cleanup, within the grace, before the call returns."""
    script = tmp_path / "left_behind.py"
    script.write_text(LEFT_BEHIND)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "handler",
        "succeeded",
        "node",
        "failed",
        "spawner",
        "succeeded",
        "cleaned",
        "True",
    ]
    assert "go on in a background thread" in done.stderr
    assert "Task was destroyed" not in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("runner_type", [AsyncioRunner, SequentialRunner])
async def test_a_handler_editing_what_it_is_given_changes_nothing_of_the_run(
    runner_type: type[Runner],
) -> None:
    """Inputs, node arguments and the result's outputs are the run's, not the handler's."""

    @node
    async def start(seed: int) -> int:
        return seed + 1

    @node
    async def after(start: int) -> int:
        return start * 10

    recorder = RecordingCallback()
    wf = Workflow("editing", nodes=[start, after])
    result = await wf.run({"seed": 1}, callbacks=[Editing(), recorder], runner=runner_type())
    assert result.status is RunStatus.SUCCEEDED, result.error
    assert result.inputs == {"seed": 1}
    assert result.outputs == {"start": 2, "after": 20}
    assert result.nodes["after"].inputs == {"start": 2}
