"""A whole run, start to end: ``workflow_start``, the runner's walk, and an end that completes.

The end of a run (``workflow_end``, the workflow's function callback, the
managers' flush) runs in a task of its own, so a cancellation of the task
awaiting the run does not interrupt a handler mid-event; it is re-raised
once the end is over. A stopped run's end is bounded by the runner's
``cancel_grace``, and a further cancellation abandons what is left, so a
hanging handler can never hang shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from time import perf_counter
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from loguru import logger

from flowhooks._context import current_run_var
from flowhooks._delivery_end import EndSettle, end_after_deliveries
from flowhooks._dispatcher import Dispatcher, clear_propagating
from flowhooks._eager import Started, start_eagerly, turn_due
from flowhooks._events import EventType, NodeStatus, RunStatus
from flowhooks._function_callbacks import call_function_callback
from flowhooks._manager import CallbackManager
from flowhooks._node_outcomes import task_cancelled
from flowhooks._results import NodeResult, RunResult
from flowhooks._resume import SuspendedRun, graph_fingerprint

if TYPE_CHECKING:
    from flowhooks._execution import RunControl, RunState


async def execute(run: RunState, timeout: float | None, control: RunControl | None) -> RunResult:
    """Run ``run`` start to end in the calling task; see ``Workflow.run``."""
    run.main = asyncio.current_task(run.loop)
    if control is not None:
        control.attach(run)
    if timeout is not None:
        run.timeout_timer = run.loop.call_later(timeout, run.on_timeout, timeout)
    run.finish_in_walk = _finish  # a walk in a task of its own goes on with the end there
    external_cancel: asyncio.CancelledError | None = None
    try:
        if run.stopping is None and run.runner.opens_for_runs:
            external_cancel = await _hold_runner(run)
        try:
            # A copy: a handler that edits what it is given changes no node's inputs.
            await run.events.emit(EventType.WORKFLOW_START, (run.run_id, dict(run.inputs)))
        except asyncio.CancelledError:
            if task_cancelled():
                raise
            stray = asyncio.CancelledError("a handler raised CancelledError on workflow_start")
            run.fail(None, run.error_info(stray, None, None))
            run.stopping = RunStatus.FAILED
        except BaseException as exc:  # a raise_error handler, or a BaseException: no node runs
            if not isinstance(exc, Exception):
                run.remember_raised(exc)  # re-raised once the run's end completed
            clear_propagating(exc)
            run.fail(None, run.error_info(exc, None, None))
            run.stopping = RunStatus.FAILED
        if run.stopping is None:
            await run.schedule.walk()
    except asyncio.CancelledError as exc:
        main = run.main
        if run.gave_up and main is not None and main.uncancel() == 0:
            pass  # the run's own wake-up (RunState._give_up_on_nodes), nobody else's
        else:
            external_cancel = exc
            reason = str(exc) or "the task awaiting the run was cancelled"
            run.request_stop(RunStatus.CANCELLED, reason)
    finally:
        run.nodes_over()
    result, cancelled_meanwhile = await _end(run, patience=0 if external_cancel is not None else 1)
    if external_cancel is not None:
        raise external_cancel
    if cancelled_meanwhile is not None:  # as it came: a cancel scope knows its own by it
        raise cancelled_meanwhile
    if run.raised is not None:
        raise run.raised
    return result


async def _hold_runner(run: RunState) -> asyncio.CancelledError | None:
    """Open the run's runner if nobody has (a cluster runner connects), before
    ``workflow_start`` (handlers find it open) but as part of the run: a stop
    (``RunHandle.cancel``, ``timeout=``) interrupts the opening, a runner that cannot
    open fails the run; either way ``workflow_start`` and ``workflow_end`` still go out.

    Returns:
        The cancellation of the awaiting task, when it came during the opening: the
        run ends cancelled, then it is raised.
    """
    main = run.main
    assert main is not None
    run.bodies.add(main)  # what the run awaits now: a stop request cancels it
    try:
        await run.runner.hold_for_run()
        run.holds_runner = True
    except asyncio.CancelledError as exc:
        run.bodies.discard(main)
        if run.gave_up and main.uncancel() == 0:
            return None  # the run's own wake-up: the opening ignored its stop twice
        if not run._consume_own_cancellation(main):
            reason = str(exc) or "the task awaiting the run was cancelled"
            run.request_stop(RunStatus.CANCELLED, reason)
            return exc
    except Exception as exc:
        run.bodies.discard(main)
        if main in run.injected:  # the stop's cancellation, turned into an error by the opening
            run._consume_own_cancellation(main)
        if run.stopping is None:  # a stop that came first (a cancel) decides the outcome
            run.fail(None, run.error_info(exc, None, None))
            run.stopping = RunStatus.FAILED
    finally:
        run.bodies.discard(main)
    return None


async def _end(run: RunState, *, patience: int) -> tuple[RunResult, asyncio.CancelledError | None]:
    """Wait for the nodes, then run the end of the run (``_finish``) to completion, within limits.

    Up to ``patience`` cancellations of the awaiting task are reported
    instead of interrupting the end; one more abandons what is left and is
    raised. Once the run was stopped (cancelled or timed out), its nodes get
    ``runner.cancel_grace`` seconds to settle, after which those still
    running are abandoned (``cancelled``) and the end goes on without them;
    the end itself then gets the same grace.

    Returns:
        The run's result and the cancellation that arrived meanwhile (the last, if several).
    """
    loop = run.loop
    grace = run.runner.cancel_grace
    deadline = settle_deadline = None
    if grace is not None and (run.stopping is RunStatus.CANCELLED or run.timed_out):
        deadline = settle_deadline = loop.time() + grace
    elif grace is not None and run.stopping is RunStatus.SUSPENDED:
        deadline = loop.time() + 2 * grace  # a grace to finish, then one to end cancelled
        settle_deadline = deadline
    elif grace is not None and run.stopping is RunStatus.FAILED:
        # Fail-fast: the nodes it cancelled get the grace to settle; the end of a failed run
        # (its alerts) is bounded only when the caller cancels it meanwhile.
        settle_deadline = loop.time() + grace
    waiting = _Patience(patience, grace, run)
    if run.end_started is not None:  # the walk went on with the end in its own task
        if run.end_cancels:  # the awaiting task was cancelled during it: it gets the grace
            _cut_settle(run)
            waiting.cancellations = len(run.end_cancels)
            waiting.cancelled = run.end_cancels[-1]
            if deadline is None and grace is not None:
                deadline = loop.time() + grace
        return await _wait_for_end(run, run.end_started, waiting, deadline, grace)
    if run.schedule.busy() and run.gave_up:  # they ignored the stop through two graces
        _abandon_nodes(run, grace)
        deadline = loop.time() + grace if grace is not None else None
    elif run.schedule.busy():  # nodes still settling (a stop): wait for them, within limits
        idle = loop.create_task(run.schedule.wait_idle())
        try:
            settled = await waiting.wait(idle, settle_deadline)
        except asyncio.CancelledError:
            idle.cancel()
            run.forced = True  # an abandoned node's task sends nothing more
            run.schedule.abandon()
            run.closed = True
            raise
        if not settled:
            idle.cancel()
            _abandon_nodes(run, grace)
            deadline = loop.time() + grace if grace is not None else None
        elif waiting.deadline_from_cancel is not None:
            deadline = waiting.deadline_from_cancel
    # Started eagerly: an end whose handlers never wait is over at once, without a turn
    # of the event loop; one that waits goes on in its own task, as the caller waits.
    finish = start_eagerly(_finish(run), (current_run_var,), run.loop)
    return await _wait_for_end(run, finish, waiting, deadline, grace)


async def _wait_for_end(
    run: RunState,
    finish: Started[RunResult],
    waiting: _Patience,
    deadline: float | None,
    grace: float | None,
) -> tuple[RunResult, asyncio.CancelledError | None]:
    """Wait for the started end of the run, within ``waiting``'s patience and ``deadline``."""
    if finish.finished_now():
        # A run that never waited still lets other tasks run, once a millisecond.
        if turn_due(run.main):
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError as exc:
                return finish.result(), exc
        return finish.result(), waiting.cancelled
    try:
        if await waiting.wait(finish.task, deadline):
            return finish.result(), waiting.cancelled
    except asyncio.CancelledError:
        _abandon(run, finish.task, "after a further cancellation")
        raise
    _abandon(run, finish.task, f"after the {grace:g}s grace period")
    return build_result(run), waiting.cancelled


class _Patience:
    """Waits on a task of the run's end, counting the awaiting task's cancellations."""

    def __init__(self, patience: int, grace: float | None, run: RunState) -> None:
        self.patience = patience
        self.grace = grace
        self.run = run
        self.cancellations = 0
        self.cancelled: asyncio.CancelledError | None = None  # the last of them
        self.deadline_from_cancel: float | None = None

    async def wait(self, task: asyncio.Task[object], deadline: float | None) -> bool:
        """Wait for ``task``; False when ``deadline`` passed first.

        Raises:
            asyncio.CancelledError: on a cancellation beyond the patience.
        """
        loop = asyncio.get_running_loop()
        if task.done():  # finished in its first step: a cancellation got meanwhile lands here
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError as exc:
                self.cancellations += 1
                self.cancelled = exc
            return True
        while True:
            try:
                if deadline is None:
                    await asyncio.shield(task)
                    return True
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(task)
                return True
            except TimeoutError:
                return task.done()  # it ended as the grace ran out: its result stands
            except asyncio.CancelledError as exc:
                self.cancellations += 1
                self.cancelled = exc
                if task.done():  # nothing to interrupt: reported once the end is over
                    return True
                _cut_settle(self.run)
                if self.cancellations > self.patience:
                    raise
                if deadline is None and self.grace is not None:
                    deadline = self.deadline_from_cancel = loop.time() + self.grace


def _abandon_nodes(run: RunState, grace: float | None) -> None:
    """The nodes did not settle within the grace: leave them running, cancelled."""
    run.forced = True
    run.schedule.abandon()
    run.events.revoke_turn()
    logger.bind(run_id=run.run_id).warning(
        "run {run_id} of workflow {workflow!r}: nodes still running {grace}s after the run "
        "was stopped were abandoned (they ignore cancellation); the run ends without them",
        run_id=run.run_id,
        workflow=run.workflow_name,
        grace=f"{grace:g}" if grace is not None else "?",
    )


def _abandon(run: RunState, finish: asyncio.Task[RunResult], why: str) -> None:
    """Give up on the end of a stopped run: cancel it and any node still executing."""
    finish.cancel()
    run.forced = True  # an abandoned node's task sends nothing more
    run.schedule.abandon()
    run.closed = True
    log_end_abandoned(run.run_id, run.workflow_name, why)


def log_end_abandoned(run_id: str, workflow_name: str, why: str) -> None:
    """Say that the end of a run (a ``Workflow`` run or an ``ExternalRun``) was given up on."""
    logger.bind(run_id=run_id).warning(
        "run {run_id} of workflow {workflow!r}: the end of the run was abandoned {why}; "
        "callbacks still running were cancelled (give handlers a timeout to avoid this)",
        run_id=run_id,
        workflow=workflow_name,
        why=why,
    )


async def _finish(run: RunState) -> RunResult:
    """Wait for the node callbacks, then send the run's last events.

    Nothing a callback or handler raises here cuts the end short: a
    ``BaseException`` is re-raised to the caller once the end completed (a
    ``CancelledError`` only when this task itself was cancelled), so on Python
    3.12 none escapes the eager start of the task running the end either.
    """
    if run.callback_tasks:
        await _node_callbacks_done(run)
    if run.timed_out and run.error is not None:
        await run.emit_error_isolated(run.error, None, None, None, "the run timeout's error event")
    result = build_result(run)
    run.decided = True
    status = result.status
    if status is RunStatus.SUSPENDED and not await _save_suspended(run, result):
        # Not resumable: the run fails with the store's error, and says so.
        result = build_result(run)
        status = result.status
        assert run.error is not None
        await run.emit_error_isolated(run.error, None, None, None, "the store failure's event")
    manager = run.events.manager  # the handlers the run had
    if not _flushes(manager):  # no composite, nothing to flush: the end alone
        return await _close(run, result, manager, False)

    def settle() -> EndSettle:
        return _settles.get(run) or _settles.setdefault(run, EndSettle())

    return await end_after_deliveries(
        manager,
        settle if _may_settle(run) else None,
        run.runner.cancel_grace,
        run.run_id,
        lambda flush: _close(run, result, manager, flush),
    )


_settles: WeakKeyDictionary[RunState, EndSettle] = WeakKeyDictionary()
"""The end's wait for background deliveries, of runs that have one or whose awaiting task
was cancelled during the end (which cuts that wait short)."""


def _cut_settle(run: RunState) -> None:
    """The task awaiting the run was cancelled during its end: no more waiting for
    background deliveries, ``workflow_end`` goes out at once."""
    settle = _settles.get(run)
    if settle is None and _flushes(run.events.manager):  # else none can begin
        settle = _settles[run] = EndSettle()
    if settle is not None:
        settle.cut()


def _may_settle(run: RunState) -> bool:
    """Whether the end may wait for background deliveries: not that of a run being stopped
    (cancelled, timed out, suspended, abandoned), whose end keeps its grace for
    ``workflow_end``."""
    stopping = run.stopping
    return (
        (stopping is None or stopping is RunStatus.FAILED)
        and not run.timed_out
        and not run.forced
        and not run.end_cancels
    )


async def _close(
    run: RunState, result: RunResult, manager: CallbackManager, flushes: bool
) -> RunResult:
    """Send ``workflow_end``, call the workflow's function callback, flush the handlers."""
    status = result.status
    run.closed = True  # nothing may follow workflow_end
    await _isolated(
        run,
        run.events.emit(
            EventType.WORKFLOW_END,
            (run.run_id, dict(run.outputs)),  # a copy: handlers cannot edit the result's
            duration=result.duration,
            status=status.value,
        ),
    )
    workflow = run.workflow
    hook = {
        RunStatus.SUCCEEDED: workflow.on_workflow_complete,
        RunStatus.FAILED: workflow.on_workflow_failure,
        RunStatus.CANCELLED: workflow.on_workflow_cancel,
        RunStatus.SUSPENDED: workflow.on_workflow_suspend,
    }[status]
    if hook is not None:
        await _isolated(
            run,
            call_function_callback(
                hook,
                (result,),
                f"workflow callback {getattr(hook, '__name__', hook)!r}",
                run.run_id,
                EventType.WORKFLOW_END,
            ),
        )
    if flushes:
        await _isolated(run, manager.flush())
    return result


def _flushes(manager: CallbackManager) -> bool:
    """Whether ``manager.flush()`` may do anything (the run's end skips it otherwise): a
    subclass's or an instance's own ``flush``, a handler overriding ``flush`` or ``aclose``,
    a nested manager or composite."""
    if type(manager).flush is not CallbackManager.flush or "flush" in manager.__dict__:
        return True
    return any(e.closers or isinstance(e.handler, Dispatcher) for e in manager._entries)


async def _isolated(run: RunState, step: Awaitable[object]) -> None:
    """Await one step of the end; what it raises (or returns as escaping, as a function
    callback does) waits for the caller until the end is over (a ``CancelledError`` is
    raised at once only when this task itself was cancelled)."""
    try:
        escaped = await step
        if isinstance(escaped, BaseException):
            run.remember_raised(escaped)
    except asyncio.CancelledError:
        if task_cancelled():
            raise
    except BaseException as exc:
        run.remember_raised(exc)


async def _node_callbacks_done(run: RunState) -> None:
    """Wait for the node callbacks still running (``on_success``, ``on_failure``).

    Their exceptions were logged where they were raised; one that cancelled itself
    does not cut the end short, and a ``BaseException`` is kept for the caller.
    """
    try:
        outcomes = await asyncio.gather(*list(run.callback_tasks), return_exceptions=True)
    except asyncio.CancelledError:
        if task_cancelled():
            raise
        return
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(
            outcome, Exception | asyncio.CancelledError
        ):
            run.remember_raised(outcome)


async def _save_suspended(run: RunState, result: RunResult) -> bool:
    """Keep a suspended run's resumable state in its store, before ``workflow_end``.

    Returns False when the store failed: the run cannot be resumed, so it fails
    instead, with an error naming the store and what it raised (``run.error``;
    its result is built afresh). A ``KeyboardInterrupt`` or ``SystemExit`` of
    the store is re-raised to the caller once the run's end completed.
    """
    suspension = result.suspension
    assert suspension is not None
    assert run.store is not None
    saved = SuspendedRun(
        run_id=run.run_id,
        workflow_name=run.workflow_name,
        fingerprint=graph_fingerprint(run.plan),
        inputs=run.inputs,
        outputs=dict(run.outputs),
        state=run.state,
        suspension=suspension,
        selection=run.selection,
        resource_id=run.resource_id,
        metadata=run.metadata,
    )
    try:
        await run.store.save(saved)
    except asyncio.CancelledError:
        raise
    except (KeyboardInterrupt, SystemExit) as exc:  # re-raised once the end completed
        run.remember_raised(exc)
    except Exception as exc:
        unsaved = RuntimeError(
            f"the run suspended at {suspension.node_id!r}, but its state could not be saved "
            f"to {run.store!r} ({type(exc).__name__}: {exc}); it cannot be resumed"
        )
        unsaved.__cause__ = exc
        run.fail(None, run.error_info(unsaved, None, None))
        run.stopping = RunStatus.FAILED
        run.result = None
        return False
    return True


def build_result(run: RunState) -> RunResult:
    """Settle every node's final status and build the run's ``RunResult`` (once)."""
    if run.result is not None:
        return run.result
    # One pass over the nodes, with the statuses in locals: an enum member read
    # through its class costs ~70 ns on CPython 3.11, per node of the run.
    running, pending, succeeded = NodeStatus.RUNNING, NodeStatus.PENDING, NodeStatus.SUCCEEDED
    unfinished = []
    for res in run.results:
        node_status = res.status
        if node_status is succeeded:
            continue
        if node_status is running:
            # Interrupted when the task awaiting the run was cancelled, or abandoned
            # after the grace period: the attempt ends silently, cancelled.
            res.status = NodeStatus.CANCELLED
            run.outputs.pop(res.node_id, None)  # its node_end dispatch was interrupted
            res._ended = perf_counter()
            if res._started is not None:
                res.duration = res._ended - res._started
        unfinished.append(res)
    if unfinished and run.stopping is None and run.error is None:
        _fail_unfinished(run, unfinished)
    if run.stopping is RunStatus.CANCELLED:
        status = RunStatus.CANCELLED
    elif run.error is not None or run.stopping is RunStatus.FAILED:
        status = RunStatus.FAILED
    elif run.stopping is RunStatus.SUSPENDED:
        status = RunStatus.SUSPENDED
    else:
        status = RunStatus.SUCCEEDED
    if status is not RunStatus.SUSPENDED:  # a suspended run's pending nodes wait for resume
        for res in unfinished:
            if res.status is pending:
                res.status = NodeStatus.SKIPPED
    suspension = run.suspension if status is RunStatus.SUSPENDED else None
    final_node = {
        RunStatus.SUCCEEDED: run.last_success,
        RunStatus.FAILED: run.failed_node,
        RunStatus.SUSPENDED: suspension.node_id if suspension is not None else None,
    }.get(status)
    result = RunResult(
        run_id=run.run_id,
        workflow_name=run.workflow_name,
        status=status,
        inputs=run.inputs,
        outputs=run.outputs,
        nodes=run.nodes,
        error=run.error,
        final_node=final_node,
        cancel_reason=run.stop_reason if status is RunStatus.CANCELLED else None,
        started_at=run.started_at,
        ended_at=datetime.now(UTC),
        duration=perf_counter() - run.t0,
        parent_run_id=run.parent_run_id,
        resource_id=run.resource_id,
        metadata=run.metadata,
        suspension=suspension,
        state=run.state,
        resumed_from=run.resumed_from,
    )
    run.ctx.result = result
    run.result = result
    return result


def _fail_unfinished(run: RunState, unfinished: list[NodeResult]) -> None:
    """A run nobody stopped succeeds only if every node of its plan succeeded.

    Should a node have ended any other way without an error of its own, the
    run fails with a ``CancelledError`` naming it rather than report success.
    """
    names = [r.node_id for r in unfinished]
    exc = asyncio.CancelledError(f"node(s) {names!r} did not complete")
    run.fail(names[0], run.error_info(exc, run.workflow.nodes[names[0]], None))
