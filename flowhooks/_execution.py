"""One run while it executes: ``RunState`` runs one node's attempts, stops the run, ends it.

The runner's schedule (``_runner``) decides which node runs when and calls
``RunState.run_step`` for each; the run's events go through its
``EventSequencer`` (``_sequencer``), one at a time in ``seq`` order.
Cancellation (fail-fast, the run timeout, ``RunHandle.cancel``) only ever
interrupts node *bodies*, never a handler in the middle of an event, so no
handler loses an event. The run's end (``workflow_end``, function callbacks,
the managers' flush) runs to completion even if the awaiting task is cancelled
once more meanwhile; a further cancellation abandons it: shutdown never hangs.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from time import perf_counter
from typing import TYPE_CHECKING, Any

from loguru import logger

from flowhooks._context import RunContext
from flowhooks._dispatcher import clear_propagating
from flowhooks._errors import Suspend
from flowhooks._events import ErrorInfo, EventType, NodeStatus, RunStatus, Severity
from flowhooks._node_outcomes import SETTLED, NodeOutcomes
from flowhooks._results import NodeResult, RunResult, Suspension
from flowhooks._sequencer import (
    TAKEN,
    TAKEN_WITH_EVENT,
    EventSequencer,
    TaskFrame,
    current_node,
    set_frame,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from flowhooks._eager import Started
    from flowhooks._graph import RunPlan
    from flowhooks._manager import CallbackManager
    from flowhooks._node import Node
    from flowhooks._resume import RunStore
    from flowhooks._runner import Runner, Schedule
    from flowhooks._workflow import Workflow

# Read per node in the hot loop: a module constant costs ~10 ns, an enum member read
# through its class ~70 ns on CPython 3.11.
_NODE_START = EventType.NODE_START
_NODE_END = EventType.NODE_END
_RUNNING = NodeStatus.RUNNING
_SUCCEEDED = NodeStatus.SUCCEEDED
_ERROR = EventType.ERROR


_SETTLE_AFTER_FORCE = 0.25
"""Seconds (at most a tenth of the grace) that node tasks cancelled once more when the
grace ran out have to end before they are abandoned."""


class RunControl:
    """Cancellation requested through a ``RunHandle``, possibly before the run started."""

    __slots__ = ("reason", "requested", "state")

    def __init__(self) -> None:
        self.requested = False
        self.reason: str | None = None
        self.state: RunState | None = None

    def attach(self, state: RunState) -> None:
        """The run started: a cancel requested before now stops it at once."""
        self.state = state
        if self.requested:
            state.request_stop(RunStatus.CANCELLED, self.reason)

    def cancel(self, reason: str | None) -> bool:
        """Stop the run; False when it was already stopping or had ended."""
        state = self.state
        if self.requested or (state is not None and not state.can_cancel()):
            return False
        self.requested = True
        self.reason = reason
        if state is not None:
            state.request_stop(RunStatus.CANCELLED, reason)
        return True


class RunState(NodeOutcomes):
    """Everything about one run while it executes; its runner's schedule drives it.

    Slotted: the schedules call its methods for every node, and with this many
    attributes CPython 3.11 gives up its fast method lookup on an instance
    that keeps them in a ``__dict__``.
    """

    __slots__ = (
        "__weakref__",
        "bodies",
        "callback_tasks",
        "closed",
        "ctx",
        "decided",
        "default_submit",
        "end_cancels",
        "end_started",
        "error",
        "events",
        "failed_node",
        "finish_in_walk",
        "force_timer",
        "forced",
        "gave_up",
        "has_handlers",
        "holds_runner",
        "injected",
        "inputs",
        "last_success",
        "loop",
        "main",
        "manager",
        "metadata",
        "nodes",
        "nodes_settled",
        "outputs",
        "parent_node_id",
        "parent_run_id",
        "plan",
        "raised",
        "resource_id",
        "restored",
        "result",
        "results",
        "resume_data",
        "resume_force",
        "resumed_from",
        "resuming",
        "run_id",
        "runner",
        "schedule",
        "selection",
        "started_at",
        "state",
        "stop_reason",
        "stopping",
        "store",
        "suspension",
        "t0",
        "timed_out",
        "timeout_timer",
        "workflow",
        "workflow_name",
    )

    def __init__(
        self,
        workflow: Workflow,
        plan: RunPlan,
        manager: CallbackManager,
        runner: Runner,
        inputs: dict[str, Any],
        *,
        run_id: str,
        parent_run_id: str | None,
        resource_id: str | None,
        metadata: dict[str, Any],
    ) -> None:
        self.workflow = workflow
        self.plan = plan
        self.manager = manager
        self.runner = runner
        self.inputs = inputs
        self.run_id = run_id
        self.workflow_name = workflow.name
        self.parent_run_id = parent_run_id
        # A sub-workflow run starts inside its parent's node: that node is current here.
        self.parent_node_id = current_node() if parent_run_id is not None else None
        self.resource_id = resource_id
        self.metadata = metadata
        self.outputs: dict[str, Any] = {}
        self.loop = asyncio.get_running_loop()  # a run lives on the loop it was made on
        self.started_at = datetime.now(UTC)
        self.t0 = perf_counter()
        offset = self.started_at.timestamp() - self.t0  # perf_counter() readings to wall time
        self.results = [NodeResult(name, offset) for name in plan.order]
        self.nodes: dict[str, NodeResult] = dict(zip(plan.order, self.results, strict=True))
        self.events = EventSequencer(
            manager,
            {
                "run_id": run_id,
                "workflow_name": workflow.name,
                "parent_run_id": self.parent_run_id,
                "resource_id": resource_id,
                "metadata": metadata,
            },
        )
        # A run whose manager has no handlers can get none (``run`` gives it a shared
        # empty manager): its node events are only numbered, without a lookup.
        self.has_handlers = bool(manager._entries)
        self.closed = False
        self.stopping: RunStatus | None = None
        self.stop_reason: str | None = None
        self.timed_out = False
        self.error: ErrorInfo | None = None
        self.failed_node: str | None = None
        self.last_success: str | None = None
        self.raised: BaseException | None = None
        self.result: RunResult | None = None
        self.suspension: Suspension | None = None
        self.state: dict[str, Any] = {}
        self.resumed_from: str | None = None
        self.restored: frozenset[str] = frozenset()
        self.resume_data: Any = None
        self.resume_force = False  # a resume with force=True: so are its sub-runs' resumes
        self.decided = False  # the result is built: a cancel can no longer change it
        self.resuming: Suspension | None = None
        self.store: RunStore | None = None
        self.selection: tuple[str, ...] | None = None
        self.main: asyncio.Task[Any] | None = None
        self.forced = False
        self.gave_up = False
        self.holds_runner = False  # opened (or kept open) its runner: releases it when over
        self.nodes_settled = False
        self.force_timer: asyncio.TimerHandle | None = None
        self.timeout_timer: asyncio.TimerHandle | None = None
        # The run's end, when its walk may run it in its own task once the nodes are over
        # (SequentialRunner): its coroutine function, the started end, the cancels meanwhile.
        self.finish_in_walk: Callable[[RunState], Coroutine[Any, Any, RunResult]] | None = None
        self.end_started: Started[RunResult] | None = None
        self.end_cancels: list[asyncio.CancelledError] = []
        self.bodies: set[asyncio.Task[Any]] = set()
        self.injected: set[asyncio.Task[Any]] = set()
        self.callback_tasks: set[asyncio.Task[BaseException | None]] = set()
        self.default_submit = runner.inline_async_bodies
        self.schedule: Schedule = runner.schedule(self)
        self.ctx = RunContext(
            run_id=run_id,
            workflow_name=workflow.name,
            inputs=inputs,
            outputs=self.outputs,
            emit=self.emit_custom,
            started_at=self.started_at,
            parent_run_id=self.parent_run_id,
            resource_id=resource_id,
            metadata=metadata,
            node_count=len(plan.order),
            run=self,
            parent_node_id=self.parent_node_id,
            state=self.state,
            cancel=self.cancel_from_inside,
        )

    def restore(self, outputs: dict[str, Any]) -> None:
        """Mark the nodes of a resumed run that completed before it suspended: done, no events."""
        restored = []
        for res in self.results:
            if res.node_id in outputs:
                res.status = NodeStatus.SUCCEEDED
                res.output = self.outputs[res.node_id] = outputs[res.node_id]
                restored.append(res.node_id)
        self.restored = frozenset(restored)

    async def emit_custom(self, name: str, data: Any) -> None:
        """Send a custom event from a node or handler of this run (``RunContext.emit``)."""
        if self.closed:
            msg = (
                f"run {self.run_id} of workflow {self.workflow_name!r} has ended; "
                f"custom event {name!r} cannot be sent after workflow_end"
            )
            raise RuntimeError(msg)
        node_id = current_node()
        result = self.nodes.get(node_id) if node_id is not None else None
        attempt = result.attempts if result is not None and result.attempts else None
        await self.events.emit(
            EventType.CUSTOM_EVENT, (name, data), node_id=node_id, attempt=attempt, name=name
        )

    def let_go_of_walk(self) -> None:
        """The run has ended: drop its walk, unless a node it abandoned still executes."""
        if not self.schedule.busy():
            self.schedule = SETTLED

    def nodes_over(self) -> None:
        """No node of the run executes any more: its timeout and stop timers are moot."""
        self.nodes_settled = True
        if self.timeout_timer is not None:
            self.timeout_timer.cancel()
            self.timeout_timer = None
        if self.force_timer is not None:
            self.force_timer.cancel()

    # -- stopping ---------------------------------------------------------------------

    def request_stop(self, status: RunStatus, reason: str | None) -> None:
        """Stop the run: cancel running node bodies; nodes not started are skipped.

        A suspension stops the run more gently: nodes not started stay
        pending, running ones may finish within ``cancel_grace`` before they
        are cancelled. A failure or a cancel that comes meanwhile still wins.
        """
        current = self.stopping
        if current is not None and (current is not RunStatus.SUSPENDED or status is current):
            return
        self.stopping = status
        self.stop_reason = reason
        grace = self.runner.cancel_grace
        if self.force_timer is not None:
            self.force_timer.cancel()
            self.force_timer = None
        if status is RunStatus.SUSPENDED:
            if grace is not None and self.main is not None:
                self.force_timer = asyncio.get_running_loop().call_later(grace, self._drain_over)
            return
        self._cancel_bodies()
        if grace is not None and self.main is not None:
            self.force_timer = asyncio.get_running_loop().call_later(grace, self._force_stop)

    def can_cancel(self) -> bool:
        """Whether a cancel would stop the run: not ended, not stopping (but a suspension)."""
        return not self.closed and not self.decided and self.stopping in (None, RunStatus.SUSPENDED)

    def cancel_from_inside(self, reason: str | None) -> bool:
        """``RunContext.cancel``: stop the run, unless it is already stopping or ended."""
        if not self.can_cancel():
            return False
        self.request_stop(RunStatus.CANCELLED, reason or "cancelled from inside the run")
        return True

    def _cancel_bodies(self) -> None:
        for task in list(self.bodies):
            if task not in self.injected:
                self.injected.add(task)
                task.cancel()

    def _drain_over(self) -> None:
        """A suspended run's running nodes had their grace: cancel them like a stop does."""
        self._cancel_bodies()
        grace = self.runner.cancel_grace
        assert grace is not None
        self.force_timer = asyncio.get_running_loop().call_later(grace, self._force_stop)

    def _force_stop(self) -> None:
        """The grace after a stop ran out: cancel node tasks still running, wherever they are
        (in a handler of one of their events, or a body that ignores cancellation), and
        abandon those that this does not end at once (``_give_up_on_nodes``, a moment
        later: a body doing its cleanup had the whole grace for it)."""
        if self.nodes_settled:
            return
        self.forced = True
        self.schedule.force_stop()
        grace = self.runner.cancel_grace
        logger.bind(run_id=self.run_id).warning(
            "run {run_id} of workflow {workflow!r}: nodes still running {grace:g}s after the "
            "run was stopped were cancelled (give handlers a timeout to avoid this)",
            run_id=self.run_id,
            workflow=self.workflow_name,
            grace=grace,
        )
        if grace is not None and self.main is not None:
            settle = min(grace / 10, _SETTLE_AFTER_FORCE)
            self.force_timer = asyncio.get_running_loop().call_later(settle, self._give_up_on_nodes)

    def _give_up_on_nodes(self) -> None:
        """A node ignored the grace and the cancellation after it: wake the task awaiting the
        run with a cancellation of the run's own (``execute`` takes it back); the run ends
        without it."""
        if not self.nodes_settled and self.main is not None and not self.main.done():
            self.gave_up = True
            self.main.cancel("the run's nodes ignored its stop")

    def on_timeout(self, timeout: float) -> None:
        """The run's ``timeout=`` ran out: fail it with a ``TimeoutError`` and stop it
        (a suspension waiting for its running nodes included: the failure wins)."""
        if self.stopping is None or self.stopping is RunStatus.SUSPENDED:
            self.timed_out = True
            reason = f"run timed out after {timeout:g}s"
            # Recorded now, so the result carries it even if the run's end is abandoned.
            self.error = ErrorInfo(
                type="TimeoutError",
                message=f"workflow {self.workflow_name!r} {reason}",
                severity=Severity.CRITICAL,
                run_id=self.run_id,
                workflow_name=self.workflow_name,
                exception=TimeoutError(reason),
            )
            self.failed_node = None
            self.request_stop(RunStatus.FAILED, reason)

    def fail(self, node: str | None, info: ErrorInfo) -> None:
        """Record ``info`` as the run's error, unless an earlier failure already is."""
        if self.error is None:
            self.error = info
            self.failed_node = node

    def remember_raised(self, exc: BaseException) -> None:
        """Keep the first exception to re-raise to the caller once the run has ended."""
        clear_propagating(exc)
        if self.raised is None:
            self.raised = exc

    # -- one node ---------------------------------------------------------------------

    async def run_step(  # noqa: C901 - the hot loop of a run, dense on purpose
        self, position: int, task: asyncio.Task[Any]
    ) -> bool:
        """Run every attempt of the plan's node at ``position`` in ``task``; True if it succeeded.

        A schedule's one call per node. A node that fails for good stops a fail-fast run;
        a ``BaseException`` fails the node, stops the run, and is re-raised to the caller
        after the run's end. The task's frame marks the node's events (``TaskFrame``); the
        body runs under the node's bare name (tasks it starts are not in its dispatches).
        A node whose task first runs once the run failed or was cancelled does not start
        (it ends skipped); a suspension lets the nodes already scheduled run.
        """
        node, result = self.plan.steps[position], self.results[position]
        stopping = self.stopping
        if stopping is not None and stopping is not RunStatus.SUSPENDED:
            return False  # stopped before this node's task first ran: not started
        frame = None
        if self.has_handlers:
            frame = TaskFrame(node.name, task)
            set_frame(frame)
        else:
            set_frame(node.name)
        try:
            # The one hot loop of a run, in one function on purpose (a coroutine per level
            # costs a few percent of a node): per attempt, node_start, the body, and on
            # success node_end; every other way out goes through NodeOutcomes.
            name = node.name
            outputs, inputs = self.outputs, self.inputs
            kwargs: dict[str, Any] = {}
            for p in node.params:  # a parameter no dependency or input provides keeps its default
                if p in outputs:
                    kwargs[p] = outputs[p]
                elif p in inputs:
                    kwargs[p] = inputs[p]
            result.inputs = kwargs
            events, bodies = self.events, self.bodies
            direct = node.is_async and node.timeout is None and self.default_submit
            result.status = _RUNNING
            result._started = first_start = perf_counter()
            attempt = 0
            while True:
                attempt += 1
                result.attempts = attempt
                try:
                    # A run without handlers has no frame: its node events go nowhere.
                    if frame is not None and (how := events.node_turn(frame, _NODE_START)):
                        # A copy: a handler that edits it (pops a password before logging)
                        # changes nothing the node is called with.
                        shown = kwargs.copy()
                        if how >= TAKEN:
                            args = (name, shown)
                            event = (
                                events.node_event(_NODE_START, args, name, attempt, None)
                                if how == TAKEN_WITH_EVENT
                                else None
                            )
                            error = None
                            try:
                                await events.manager.dispatch(_NODE_START, args, event)
                            except BaseException as exc:  # delivered after what was queued
                                error = exc
                            if error is not None or not events.give_node_turn(frame):
                                await events.end_node_turn(frame, error)
                        else:
                            await events.emit(
                                _NODE_START, (name, shown), name, attempt, frame=frame
                            )
                        # Durations measure the node's body, not the handlers around it.
                        start = perf_counter()
                        if attempt == 1:
                            first_start = start
                    else:  # nobody takes it (node_turn numbered it), or nobody can: no handlers
                        start = first_start if attempt == 1 else perf_counter()
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # a raise_error handler's, KeyboardInterrupt, ...
                    return await self._node_failed(node, result, exc, attempt, 0.0, first_start)
                if self.stopping is not None and self.stopping is not RunStatus.SUSPENDED:
                    return self._node_cancelled(result, first_start)
                bodies.add(task)
                if frame is not None:
                    set_frame(name)
                try:
                    if direct:
                        output = await node.fn(**kwargs)
                    elif node.timeout is None:
                        output = await self.runner.submit(node, kwargs)
                    else:
                        async with asyncio.timeout(node.timeout):
                            output = await self.runner.submit(node, kwargs)
                except asyncio.CancelledError:
                    self._body_left(task, frame)
                    if not self._consume_own_cancellation(task):
                        raise
                    return self._node_cancelled(result, first_start)
                except Exception as exc:
                    self._body_left(task, frame)
                    retry = await self._attempt_failed(
                        node, result, exc, attempt, start, first_start
                    )
                    if retry is None:
                        continue
                    return retry
                except BaseException as exc:  # not a cancellation (above): no retry
                    self._body_left(task, frame)
                    elapsed = perf_counter() - start
                    return await self._node_failed(node, result, exc, attempt, elapsed, first_start)
                end = perf_counter()
                bodies.discard(task)  # _body_left, inline
                if frame is not None:
                    set_frame(frame)
                if task in self.injected:  # the body caught the run's own cancellation
                    await self._absorb_injected_cancel(task)
                    return self._node_cancelled(result, first_start)
                if task.cancelling() and not self.forced:  # the body's own, or a handler's
                    return await self._cancel_left_pending(node, result, task, emitted=False)
                outputs[name] = output
                result.duration = end - first_start
                try:
                    if frame is not None and (how := events.node_turn(frame, _NODE_END)):
                        if how >= TAKEN:
                            args = (name, output)
                            event = (
                                events.node_event(_NODE_END, args, name, attempt, end - start)
                                if how == TAKEN_WITH_EVENT
                                else None
                            )
                            error = None
                            try:
                                await events.manager.dispatch(_NODE_END, args, event)
                            except BaseException as exc:  # delivered after what was queued
                                error = exc
                            if error is not None or not events.give_node_turn(frame):
                                await events.end_node_turn(frame, error)
                        else:
                            await events.emit(
                                _NODE_END, (name, output), name, attempt, end - start, frame=frame
                            )
                except asyncio.CancelledError as exc:  # a handler's, or someone else's cancel
                    if self.forced:
                        raise
                    return await self._cancelled_by_someone_else(node, result, task, exc, True)
                except BaseException as exc:  # a raise_error handler's, KeyboardInterrupt, ...
                    del outputs[name]
                    return await self._node_failed(
                        node, result, exc, attempt, end - start, first_start, emitted=True
                    )
                if frame is not None and task.cancelling() and not self.forced:  # node_end's
                    return await self._cancel_left_pending(node, result, task, emitted=True)
                result.output = output
                result.status = _SUCCEEDED
                result._ended = end
                self.last_success = name
                if node.on_success is not None:
                    self._spawn_callback(
                        node.on_success, (name, self.ctx), f"on_success of {name!r}", _NODE_END
                    )
                return True
        except asyncio.CancelledError as exc:
            if self.forced:  # the run's own forced stop: the node ends cancelled
                raise
            return await self._cancelled_by_someone_else(node, result, task, exc)
        except BaseException as exc:
            self.bodies.discard(task)
            self.remember_raised(exc)
            self.request_stop(RunStatus.FAILED, None)
            return False

    def _node_suspended(
        self, node: Node, result: NodeResult, suspend: Suspend, first_start: float
    ) -> bool:
        """The node raised ``Suspend``: not an error, not retried; the run suspends."""
        result.status = NodeStatus.SUSPENDED
        result._ended = perf_counter()
        result.duration = result._ended - first_start
        if self.suspension is None:
            expires_at = None
            if suspend.expires_in is not None:
                expires_at = datetime.now(UTC) + timedelta(seconds=suspend.expires_in)
            self.suspension = Suspension(node.name, suspend.reason, suspend.payload, expires_at)
        self.request_stop(RunStatus.SUSPENDED, suspend.reason)
        return False
