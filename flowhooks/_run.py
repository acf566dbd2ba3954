"""One run while it executes: ``RunState`` drives a workflow's nodes and emits its events.

A run's events are dispatched one at a time in ``seq`` order through a
per-run dispatch turn, however many nodes run at once. Cancellation
(fail-fast, the run timeout, ``RunHandle.cancel``) only ever interrupts node
*bodies*, never a handler in the middle of an event, so no handler loses an
event. The run's end (``workflow_end``, function callbacks, the managers'
flush) runs to completion even if the awaiting task is cancelled once more
meanwhile; a further cancellation abandons it, so shutdown never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections import deque
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

from loguru import logger

from flowhooks._context import RunContext
from flowhooks._dispatcher import _generation, clear_propagating, must_propagate
from flowhooks._events import (
    ErrorInfo,
    Event,
    EventType,
    NodeStatus,
    RunStatus,
    Severity,
    trusted_event,
)
from flowhooks._ids import new_id
from flowhooks._logs import failure_text
from flowhooks._manager import CallbackManager
from flowhooks._node import Node
from flowhooks._results import NodeResult, RunResult
from flowhooks._runner import Runner
from flowhooks._turn import DispatchTurn
from flowhooks._workflow import RunPlan, Workflow

_WORKFLOW_START = EventType.WORKFLOW_START
_WORKFLOW_END = EventType.WORKFLOW_END
_NODE_START = EventType.NODE_START
_NODE_END = EventType.NODE_END
_ERROR = EventType.ERROR
_CUSTOM = EventType.CUSTOM_EVENT
_SUCCEEDED = NodeStatus.SUCCEEDED
_RUNNING = NodeStatus.RUNNING
_PENDING = NodeStatus.PENDING


class TaskFrame:
    """What a run knows about the code running in a task: its node, and its dispatch.

    The frame in a task's context (``_frame``) is copied by the tasks it
    starts. ``dispatching`` is the run whose event is being dispatched with
    this frame in context: an event sent while it is set, by a handler or a
    task a handler started, joins that dispatch instead of waiting for the
    turn the dispatch itself holds.

    A node's task has one frame for its node events, marked by a plain
    attribute write per event instead of a context variable set and reset
    per event (which costs as much as the rest of the dispatch). The node's
    body runs with just the node's name in context instead, which no dispatch
    marks, so tasks the body starts wait for their turn as any other code
    does. Every other dispatch (custom, error and workflow events) sets a
    fresh frame for its duration.
    """

    __slots__ = ("dispatching", "node", "owner")

    def __init__(self, node: str | None, owner: asyncio.Task[Any]) -> None:
        self.node = node
        self.owner = owner
        self.dispatching: RunState | None = None


_frame: ContextVar[TaskFrame | str | None] = ContextVar("flowhooks_task_frame", default=None)
"""The current task's frame; a node's name alone while the node's body runs."""


def enter_run_task() -> Token[TaskFrame | str | None]:
    """Mark the calling task as a run's own (no node of it is current); reset the token after."""
    return _frame.set(None)


def leave_run_task(token: Token[TaskFrame | str | None]) -> None:
    """Give the calling task back what ``enter_run_task`` replaced."""
    _frame.reset(token)


def current_node() -> str | None:
    """The node of the current run whose code this is (``None`` outside its nodes)."""
    frame = _frame.get()
    return frame.node if isinstance(frame, TaskFrame) else frame


class RunControl:
    """Cancellation requested through a ``RunHandle``, possibly before the run started."""

    __slots__ = ("reason", "requested", "state")

    def __init__(self) -> None:
        self.requested = False
        self.reason: str | None = None
        self.state: RunState | None = None

    def cancel(self, reason: str | None) -> None:
        if self.requested:
            return
        self.requested = True
        self.reason = reason
        if self.state is not None:
            self.state.request_stop(RunStatus.CANCELLED, reason)


def _error_info(
    exc: BaseException,
    *,
    run_id: str,
    workflow_name: str,
    node: Node | None,
    attempt: int | None,
    will_retry: bool,
    message: str | None = None,
) -> ErrorInfo:
    if will_retry:
        severity = Severity.WARNING
    elif node is None or node.critical:
        severity = Severity.CRITICAL
    else:
        severity = Severity.ERROR
    return ErrorInfo(
        type=type(exc).__name__,
        message=message if message is not None else str(exc),
        stack_trace="".join(traceback.format_exception(exc)),
        severity=severity,
        node_id=node.name if node is not None else None,
        run_id=run_id,
        workflow_name=workflow_name,
        attempt=attempt,
        will_retry=will_retry,
        exception=exc,
    )


async def _call_function_callback(fn: Any, args: tuple[Any, ...], what: str, run_id: str) -> None:
    """Call a user function callback (sync in a worker thread), logging its failure."""
    try:
        if asyncio.iscoroutinefunction(fn):
            await fn(*args)
        else:
            outcome = await asyncio.to_thread(fn, *args)
            if asyncio.iscoroutine(outcome):
                await outcome
    except Exception as exc:
        logger.bind(run_id=run_id).error(
            "{what} raised {error} (run {run_id}); isolated",
            what=what,
            error=failure_text(exc, with_traceback=True),
            run_id=run_id,
        )


class RunState:
    """Everything about one run while it executes; the runners drive it.

    Slotted: the runners call its methods for every node, and with this many
    attributes (30 or more) CPython 3.11 gives up its fast method lookup on an
    instance that keeps them in a ``__dict__``.
    """

    __slots__ = (
        "_force_timer",
        "_modes",
        "_modes_generation",
        "_pending",
        "_turn",
        "active",
        "bodies",
        "callback_tasks",
        "closed",
        "ctx",
        "default_submit",
        "done",
        "error",
        "failed_node",
        "forced",
        "has_handlers",
        "indegree",
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
        "ready",
        "resource_id",
        "result",
        "results",
        "run_id",
        "runner",
        "seq",
        "started_at",
        "stop_reason",
        "stopping",
        "t0",
        "tasks",
        "timed_out",
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
        parent: RunState | None,
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
        self.parent_run_id = parent.run_id if parent is not None else None
        # A sub-workflow run starts inside its parent's node: that node is current here.
        self.parent_node_id = current_node() if parent is not None else None
        self.resource_id = resource_id
        self.metadata = metadata
        self.outputs: dict[str, Any] = {}
        self.started_at = datetime.now(UTC)
        self.t0 = perf_counter()
        offset = self.started_at.timestamp() - self.t0  # perf_counter() readings to wall time
        self.results = [NodeResult(name, offset) for name in plan.order]
        self.nodes: dict[str, NodeResult] = dict(zip(plan.order, self.results, strict=True))
        self.seq = 0
        self._turn = DispatchTurn()
        self._modes: dict[EventType, int] = {}
        self._modes_generation = -1
        # A run whose manager has no handlers can get none (``run`` gives it a shared
        # empty manager): its node events are only numbered, without a lookup.
        self.has_handlers = bool(manager.entries)
        self._pending: deque[tuple[Any, ...]] = deque()
        self.closed = False
        self.stopping: RunStatus | None = None
        self.stop_reason: str | None = None
        self.timed_out = False
        self.error: ErrorInfo | None = None
        self.failed_node: str | None = None
        self.last_success: str | None = None
        self.raised: BaseException | None = None
        self.result: RunResult | None = None
        self.main: asyncio.Task[Any] | None = None
        self.forced = False
        self.nodes_settled = False
        self._force_timer: asyncio.TimerHandle | None = None
        self.bodies: set[asyncio.Task[Any]] = set()
        self.injected: set[asyncio.Task[Any]] = set()
        self.callback_tasks: set[asyncio.Task[None]] = set()
        self.done: asyncio.Future[None] | None = None
        self.active = 0
        self.ready: deque[int] = deque()  # positions in plan.order
        self.tasks: set[asyncio.Task[None]] = set()
        self.default_submit = type(runner).submit is Runner.submit
        self.ctx = RunContext(
            run_id=run_id,
            workflow_name=workflow.name,
            inputs=inputs,
            outputs=self.outputs,
            emit=self.emit_custom,
            logger=logger.bind(run_id=run_id, workflow_name=workflow.name),
            started_at=self.started_at,
            parent_run_id=self.parent_run_id,
            resource_id=resource_id,
            metadata=metadata,
            node_count=len(plan.order),
            run=self,
            parent_node_id=self.parent_node_id,
        )

    # -- events -----------------------------------------------------------------------

    def _refresh_modes(self) -> None:
        """Cache, per event type, 0: no handler takes it; 1: some do; 2: some also want
        the ``Event``. Refreshed when any handler anywhere is added or removed."""
        manager = self.manager
        self._modes = {
            t: (2 if manager.wants_event(t) else 1) if manager.handles(t) else 0 for t in EventType
        }
        self._modes_generation = _generation[0]

    async def emit(
        self,
        event_type: EventType,
        args: tuple[Any, ...],
        node_id: str | None = None,
        attempt: int | None = None,
        duration: float | None = None,
        status: str | None = None,
        name: str | None = None,
        frame: TaskFrame | None = None,
    ) -> None:
        """Dispatch one event of this run, after every earlier one, in ``seq`` order.

        ``frame`` is given for a node's own events: the node task's frame,
        in its context now (see ``TaskFrame``).
        """
        if self._modes_generation != _generation[0]:
            self._refresh_modes()
        mode = self._modes[event_type]
        if not mode:
            self.seq += 1
            return
        if frame is None:
            inherited = _frame.get()
            if isinstance(inherited, TaskFrame) and inherited.dispatching is self:
                # Sent while this run's current dispatch runs, by one of its handlers or
                # a task sharing its frame: it goes right after the event, in the same turn.
                self._pending.append((event_type, args, node_id, attempt, duration, status, name))
                return
            task = asyncio.current_task()
            assert task is not None
        else:
            task = frame.owner
        turn = self._turn
        if turn.holder is None and not turn.waiters:  # DispatchTurn.try_take, inlined
            turn.holder = task
        else:
            await turn.take(task)
            # Handlers may have been added or removed while this event waited.
            if self._modes_generation != _generation[0]:
                self._refresh_modes()
            mode = self._modes[event_type]
        token = None
        if frame is None:  # only what this dispatch's handlers start may share its frame
            frame = TaskFrame(current_node(), task)
            token = _frame.set(frame)
        frame.dispatching = self
        try:
            # Events left queued by a dispatch that was cancelled go first: they were sent
            # earlier. Then this event, then what handlers send while it is dispatched.
            error = await self._deliver_queued() if self._pending else None
            self.seq += 1
            event = (
                self._event(event_type, args, node_id, attempt, duration, status, name)
                if mode == 2
                else None
            )
            try:
                await self.manager.dispatch(event_type, args, event)
            except Exception as exc:  # a raise_error handler: raised once the queue is empty
                error = exc
            if self._pending:
                error = await self._deliver_queued() or error
            if error is not None:
                raise error
        finally:
            frame.dispatching = None
            if token is not None:
                _frame.reset(token)
            if turn.waiters:
                turn.release()
            else:
                turn.holder = None

    async def _deliver_queued(self) -> Exception | None:
        """Dispatch the events handlers sent during a dispatch, in order; return the first
        ``raise_error`` exception instead of stopping at it. A cancellation stops here and
        leaves the rest queued, for the run's next event to deliver first."""
        first: Exception | None = None
        pending = self._pending
        while pending:
            queued = pending.popleft()
            self.seq += 1
            try:
                await self.manager.dispatch(queued[0], queued[1], self._event(*queued))
            except Exception as exc:
                first = first or exc
        return first

    def _event(
        self,
        event_type: EventType,
        args: tuple[Any, ...],
        node_id: str | None,
        attempt: int | None,
        duration: float | None,
        status: str | None,
        name: str | None,
    ) -> Event | None:
        """Build the ``Event`` numbered ``self.seq``, when some handler asked for it."""
        if self._modes[event_type] != 2:
            return None
        return trusted_event(
            id=new_id(),
            type=event_type,
            seq=self.seq,
            run_id=self.run_id,
            workflow_name=self.workflow_name,
            parent_run_id=self.parent_run_id,
            resource_id=self.resource_id,
            metadata=self.metadata,
            node_id=node_id,
            attempt=attempt,
            timestamp=datetime.now(UTC),
            duration=duration,
            status=status,
            name=name,
            payload=args[-1],
        )

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
        await self.emit(_CUSTOM, (name, data), node_id=node_id, attempt=attempt, name=name)

    # -- stopping ---------------------------------------------------------------------

    def request_stop(self, status: RunStatus, reason: str | None) -> None:
        """Stop the run: cancel running node bodies; nodes not started are skipped."""
        if self.stopping is not None:
            return
        self.stopping = status
        self.stop_reason = reason
        for task in list(self.bodies):
            if task not in self.injected:
                self.injected.add(task)
                task.cancel()
        grace = self.runner.cancel_grace
        if grace is not None and self.main is not None:
            self._force_timer = asyncio.get_running_loop().call_later(grace, self._force_stop)

    def _force_stop(self) -> None:
        """The grace after a stop ran out: cancel node tasks still running, wherever they are.

        A node left running that long is stuck outside its body, in a handler of one
        of its events; it ends cancelled (without its closing event).
        """
        if self.nodes_settled:
            return
        self.forced = True
        if self.runner.sequential:
            if self.main is not None and self.main not in self.injected:
                self.main.cancel()
        else:
            for task in list(self.tasks):
                task.cancel()
        logger.bind(run_id=self.run_id).warning(
            "run {run_id} of workflow {workflow!r}: nodes still running {grace:g}s after the "
            "run was stopped were cancelled (give handlers a timeout to avoid this)",
            run_id=self.run_id,
            workflow=self.workflow_name,
            grace=self.runner.cancel_grace,
        )

    def _on_timeout(self, timeout: float) -> None:
        if self.stopping is None:
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

    def _error_info(
        self,
        exc: BaseException,
        node: Node | None,
        attempt: int | None,
        *,
        will_retry: bool = False,
        message: str | None = None,
    ) -> ErrorInfo:
        return _error_info(
            exc,
            run_id=self.run_id,
            workflow_name=self.workflow_name,
            node=node,
            attempt=attempt,
            will_retry=will_retry,
            message=message,
        )

    def _fail(self, node: str | None, info: ErrorInfo) -> None:
        if self.error is None:
            self.error = info
            self.failed_node = node

    # -- one node ---------------------------------------------------------------------

    def _consume_own_cancellation(self, task: asyncio.Task[Any]) -> bool:
        """Whether a ``CancelledError`` in ``task`` was only the run's own stop request.

        The request is consumed; False means someone else cancelled the task
        too (or only someone else did), so the error must propagate.
        """
        if task not in self.injected:
            return False
        self.injected.discard(task)
        task.uncancel()
        return not task.cancelling()

    async def _absorb_injected_cancel(self, task: asyncio.Task[Any]) -> None:
        """Consume a cancellation we requested that arrived after the body had finished."""
        self.injected.discard(task)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)
        task.uncancel()
        if task.cancelling():
            raise asyncio.CancelledError

    def _enter_node(self, name: str, task: asyncio.Task[Any]) -> TaskFrame | None:
        """Make ``name`` the calling task's current node; return the frame its events mark.

        A run without handlers dispatches nothing: its node's name is all the
        task's context needs.
        """
        if not self.has_handlers:
            _frame.set(name)
            return None
        frame = TaskFrame(name, task)
        _frame.set(frame)
        return frame

    async def run_node(
        self, node: Node, result: NodeResult, task: asyncio.Task[Any], frame: TaskFrame | None
    ) -> bool:
        """Run every attempt of ``node`` in ``task``; return whether it succeeded.

        ``frame`` is the one ``_enter_node`` gave ``task`` (``None`` without handlers).
        """
        name = node.name
        outputs, inputs = self.outputs, self.inputs
        kwargs: dict[str, Any] = {}
        for p in node.params:  # a parameter no dependency or input provides keeps its default
            if p in outputs:
                kwargs[p] = outputs[p]
            elif p in inputs:
                kwargs[p] = inputs[p]
        result.status = _RUNNING
        result._started = first_start = start = perf_counter()
        direct = node.is_async and self.default_submit
        # While the body runs, its tasks must not count as inside the node's dispatches
        # (see TaskFrame): the node's name alone stands in for the frame meanwhile.
        swap = frame is not None
        attempt = 0
        while True:
            attempt += 1
            result.attempts = attempt
            try:
                if self.has_handlers and (
                    self._modes_generation != _generation[0] or self._modes[_NODE_START]
                ):
                    await self.emit(_NODE_START, (name, kwargs), name, attempt, frame=frame)
                    # Durations measure the node's body, not the handlers around it.
                    start = perf_counter()
                else:
                    self.seq += 1
            except Exception as exc:  # a raise_error handler: the node fails without retry
                return await self._node_failed(node, result, exc, attempt, 0.0, first_start)
            if self.stopping is not None:
                return self._node_cancelled(result, first_start)
            if attempt == 1:
                first_start = start
            self.bodies.add(task)
            if swap:
                _frame.set(name)
            try:
                if direct and node.timeout is None:
                    output = await node.fn(**kwargs)
                elif node.timeout is None:
                    output = await self.runner.submit(node, kwargs)
                else:
                    async with asyncio.timeout(node.timeout):
                        output = await self.runner.submit(node, kwargs)
            except asyncio.CancelledError:
                self.bodies.discard(task)
                if not self._consume_own_cancellation(task):
                    raise
                return self._node_cancelled(result, first_start)
            except Exception as exc:
                elapsed = perf_counter() - start
                self.bodies.discard(task)
                if task in self.injected:
                    await self._absorb_injected_cancel(task)
                    return self._node_cancelled(result, first_start)
                # A raise_error handler's exception (from a custom event the node sent)
                # fails the node for good, like one raised on any other node event.
                will_retry = attempt <= node.retries and not must_propagate(exc)
                message = None
                if isinstance(exc, TimeoutError) and node.timeout is not None and not str(exc):
                    message = f"node {name!r} timed out after {node.timeout:g}s (attempt {attempt})"
                info = self._error_info(exc, node, attempt, will_retry=will_retry, message=message)
                if not will_retry:
                    return await self._node_failed(
                        node, result, exc, attempt, elapsed, first_start, info
                    )
                try:
                    await self.emit(_ERROR, (info,), name, attempt, elapsed)
                except Exception as handler_exc:
                    return await self._node_failed(
                        node, result, handler_exc, attempt, elapsed, first_start, emitted=True
                    )
                if self.stopping is not None:
                    return self._node_cancelled(result, first_start)
                delay = node.retry_delay * node.backoff ** (attempt - 1)
                if delay > 0:
                    self.bodies.add(task)
                    try:
                        await asyncio.sleep(delay)
                    except asyncio.CancelledError:
                        if not self._consume_own_cancellation(task):
                            raise
                        return self._node_cancelled(result, first_start)
                    finally:
                        self.bodies.discard(task)
                if swap:
                    _frame.set(frame)
                start = perf_counter()
                continue
            end = perf_counter()
            if swap:
                _frame.set(frame)
            self.bodies.discard(task)
            if task in self.injected:
                await self._absorb_injected_cancel(task)
            self.outputs[name] = output
            result.duration = end - first_start
            try:
                if self.has_handlers and (
                    self._modes_generation != _generation[0] or self._modes[_NODE_END]
                ):
                    await self.emit(
                        _NODE_END, (name, output), name, attempt, end - start, frame=frame
                    )
                else:
                    self.seq += 1
            except Exception as exc:
                del self.outputs[name]
                return await self._node_failed(
                    node, result, exc, attempt, end - start, first_start, emitted=True
                )
            result.output = output
            result.status = _SUCCEEDED
            result._ended = end
            self.last_success = name
            if node.on_success is not None:
                self._spawn_callback(node.on_success, (name, self.ctx), f"on_success of {name!r}")
            return True

    def _node_cancelled(self, result: NodeResult, first_start: float) -> bool:
        result.status = NodeStatus.CANCELLED
        result._ended = perf_counter()
        result.duration = result._ended - first_start
        return False

    async def _node_failed(
        self,
        node: Node,
        result: NodeResult,
        exc: BaseException,
        attempt: int,
        duration: float,
        first_start: float,
        info: ErrorInfo | None = None,
        *,
        emitted: bool = False,
    ) -> bool:
        """Fail ``node`` for good: emit its error (unless its event already ended the attempt)."""
        clear_propagating(exc)
        if info is None:
            info = self._error_info(exc, node, attempt)
        result.status = NodeStatus.FAILED
        result.error = info
        result._ended = perf_counter()
        result.duration = result._ended - first_start
        self._fail(node.name, info)
        if not emitted:
            try:
                await self.emit(_ERROR, (info,), node.name, attempt, duration)
            except Exception as handler_exc:  # the run already fails; its first error stays
                clear_propagating(handler_exc)
                logger.bind(run_id=self.run_id).error(
                    "a raise_error handler raised {error} on the error event of failing node "
                    "{node!r}; the run fails with the node's error (run {run_id})",
                    error=failure_text(handler_exc, with_traceback=False),
                    node=node.name,
                    run_id=self.run_id,
                )
        if node.on_failure is not None:
            self._spawn_callback(
                node.on_failure, (node.name, info, self.ctx), f"on_failure of {node.name!r}"
            )
        return False

    def _remember_raised(self, exc: BaseException) -> None:
        clear_propagating(exc)
        if self.raised is None:
            self.raised = exc

    def _spawn_callback(self, fn: Any, args: tuple[Any, ...], what: str) -> None:
        task = asyncio.get_running_loop().create_task(
            _call_function_callback(fn, args, what, self.run_id)
        )
        self.callback_tasks.add(task)
        task.add_done_callback(self.callback_tasks.discard)

    # -- scheduling -------------------------------------------------------------------

    async def run_sequential(self) -> None:
        """Run the nodes one at a time in the calling task, in topological order."""
        deps = self.plan.deps
        nodes = self.nodes
        fail_fast = self.runner.fail_fast
        task = asyncio.current_task()
        assert task is not None
        outer = _frame.get()  # the run's own frame, given back at the end
        has_handlers = self.has_handlers
        try:
            for node, result in zip(self.plan.steps, self.results, strict=True):
                if self.stopping is not None:
                    return
                name = node.name
                if not fail_fast and any(nodes[d].status is not _SUCCEEDED for d in deps[name]):
                    continue  # an ancestor failed (continue mode): skipped
                if has_handlers:
                    frame = self._enter_node(name, task)
                else:  # _enter_node's own shortcut, without the call (5 % of a node here)
                    frame = None
                    _frame.set(name)
                try:
                    ok = await self.run_node(node, result, task, frame)
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # as in _drive: end the run, re-raise after it
                    self.bodies.discard(task)  # the run's own task: not to be cancelled
                    self._remember_raised(exc)
                    self.request_stop(RunStatus.FAILED, None)
                    return
                if not ok and fail_fast and self.error is not None:
                    self.request_stop(RunStatus.FAILED, None)
        finally:
            _frame.set(outer)

    async def run_concurrent(self) -> None:
        """Run ready nodes as asyncio tasks, up to ``max_concurrency`` at once."""
        self.indegree = list(self.plan.waits)
        self.loop = asyncio.get_running_loop()
        self.done = self.loop.create_future()
        self.ready.extend(i for i, waits in enumerate(self.indegree) if waits == 0)
        self._start_ready()
        if self.active:
            # Shielded: cancelling the awaiting task must not cancel the shared future
            # that wait_idle() and the node tasks still use to finish the run.
            await asyncio.shield(self.done)

    def _start_ready(self) -> None:
        limit = self.runner.max_concurrency
        create_task = self.loop.create_task
        ready = self.ready
        tasks = self.tasks
        while ready and self.stopping is None and (limit is None or self.active < limit):
            self.active += 1
            tasks.add(create_task(self._drive(ready.popleft())))

    async def _drive(self, position: int) -> None:
        node = self.plan.steps[position]
        ok = False
        task = asyncio.current_task()
        assert task is not None
        frame = self._enter_node(node.name, task)
        try:
            ok = await self.run_node(node, self.results[position], task, frame)
        except asyncio.CancelledError:
            if not self.forced:  # nobody but the run cancels its node tasks
                raise
        except BaseException as exc:  # a propagating BaseException: stop the run
            self._remember_raised(exc)
            self.request_stop(RunStatus.FAILED, None)
        finally:
            if frame is not None:  # the frame refers to the task: no cycle through its context
                _frame.set(None)
            self.tasks.discard(task)  # the strong reference that kept the task alive
            self.active -= 1
            if ok:
                indegree = self.indegree
                for dependent in self.plan.successors[position]:
                    indegree[dependent] -= 1
                    if indegree[dependent] == 0:
                        self.ready.append(dependent)
            elif self.runner.fail_fast and self.error is not None:
                self.request_stop(RunStatus.FAILED, None)
            self._start_ready()
            if self.active == 0 and self.done is not None and not self.done.done():
                self.done.set_result(None)

    async def wait_idle(self) -> None:
        """Wait until no node of this run is executing (after a stop was requested)."""
        if self.done is not None and self.active:
            await asyncio.shield(self.done)

    # -- the whole run ----------------------------------------------------------------

    async def execute(self, timeout: float | None, control: RunControl | None) -> RunResult:
        """Run the workflow start to end; see ``Workflow.run``."""
        loop = asyncio.get_running_loop()
        timer = None
        self.main = asyncio.current_task()
        if control is not None:
            control.state = self
            if control.requested:
                self.request_stop(RunStatus.CANCELLED, control.reason)
        if timeout is not None:
            timer = loop.call_later(timeout, self._on_timeout, timeout)
        external_cancel: asyncio.CancelledError | None = None
        try:
            try:
                await self.emit(_WORKFLOW_START, (self.run_id, self.inputs))
            except Exception as exc:  # a raise_error handler fails the run before any node
                clear_propagating(exc)
                self._fail(None, self._error_info(exc, None, None))
                self.stopping = RunStatus.FAILED
            if self.stopping is None:
                if self.runner.sequential:
                    await self.run_sequential()
                else:
                    await self.run_concurrent()
        except asyncio.CancelledError as exc:
            main = self.main
            if self.forced and main is not None and main.uncancel() == 0:
                pass  # only the run's own forced stop (SequentialRunner): its end goes on
            else:
                external_cancel = exc
                reason = str(exc) or "the task awaiting the run was cancelled"
                self.request_stop(RunStatus.CANCELLED, reason)
        finally:
            self.nodes_settled = True
            if timer is not None:
                timer.cancel()
            if self._force_timer is not None:
                self._force_timer.cancel()
        result, cancelled_meanwhile = await self._end(
            patience=0 if external_cancel is not None else 1
        )
        if external_cancel is not None:
            raise external_cancel
        if cancelled_meanwhile:
            raise asyncio.CancelledError
        if self.raised is not None:
            raise self.raised
        return result

    async def _end(self, *, patience: int) -> tuple[RunResult, bool]:
        """Run the end of the run (``_finish``) to completion, within limits.

        The end runs in its own task, so a cancellation of the awaiting task
        (up to ``patience`` of them) does not interrupt a handler mid-event; it
        is reported instead, to be re-raised. Once the run was stopped
        (cancelled or timed out), the end may take ``runner.cancel_grace``
        seconds; after that, or after one more cancellation, what is left is
        abandoned, so a hanging handler can never hang shutdown.

        Returns:
            The run's result and whether a cancellation arrived meanwhile.
        """
        loop = asyncio.get_running_loop()
        finish = loop.create_task(self._finish())
        grace = self.runner.cancel_grace
        deadline = None
        if grace is not None and (self.stopping is RunStatus.CANCELLED or self.timed_out):
            deadline = loop.time() + grace
        cancellations = 0
        while True:
            try:
                if deadline is None:
                    return await asyncio.shield(finish), cancellations > 0
                async with asyncio.timeout_at(deadline):
                    return await asyncio.shield(finish), cancellations > 0
            except TimeoutError:
                if finish.done():  # it ended as the grace ran out: its result stands
                    return finish.result(), cancellations > 0
                self._abandon(finish, f"after the {grace:g}s grace period")
                return self._build_result(), cancellations > 0
            except asyncio.CancelledError:
                if finish.done():
                    raise
                cancellations += 1
                if cancellations > patience:
                    self._abandon(finish, "after a further cancellation")
                    raise
                if deadline is None and grace is not None:
                    deadline = loop.time() + grace

    def _abandon(self, finish: asyncio.Task[RunResult], why: str) -> None:
        """Give up on the end of a stopped run: cancel it and any node still executing."""
        finish.cancel()
        for task in list(self.tasks):
            task.cancel()
        self.closed = True
        logger.bind(run_id=self.run_id).warning(
            "run {run_id} of workflow {workflow!r}: the end of the run was abandoned {why}; "
            "callbacks still running were cancelled (give handlers a timeout to avoid this)",
            run_id=self.run_id,
            workflow=self.workflow_name,
            why=why,
        )

    async def _finish(self) -> RunResult:
        await self.wait_idle()
        if self.callback_tasks:
            await asyncio.gather(*list(self.callback_tasks))
        if self.timed_out and self.error is not None:
            info = self.error
            try:
                await self.emit(_ERROR, (info,))
            except Exception as exc:  # the run already fails with the timeout
                clear_propagating(exc)
                logger.bind(run_id=self.run_id).error(
                    "a raise_error handler raised {error} on the run timeout's error event; "
                    "the run fails with the timeout (run {run_id})",
                    error=failure_text(exc, with_traceback=False),
                    run_id=self.run_id,
                )
        result = self._build_result()
        status = result.status
        self.closed = True  # nothing may follow workflow_end
        try:
            await self.emit(
                _WORKFLOW_END,
                (self.run_id, self.outputs),
                duration=result.duration,
                status=status.value,
            )
        except Exception as exc:
            self._remember_raised(exc)
        hook = {
            RunStatus.SUCCEEDED: self.workflow.on_workflow_complete,
            RunStatus.FAILED: self.workflow.on_workflow_failure,
            RunStatus.CANCELLED: self.workflow.on_workflow_cancel,
        }[status]
        if hook is not None:
            await _call_function_callback(
                hook,
                (result,),
                f"workflow callback {getattr(hook, '__name__', hook)!r}",
                self.run_id,
            )
        try:
            await self.manager.flush()
        except Exception as exc:
            self._remember_raised(exc)
        return result

    def _build_result(self) -> RunResult:
        """Settle every node's final status and build the run's ``RunResult`` (once)."""
        if self.result is not None:
            return self.result
        for res in self.nodes.values():
            node_status = res.status
            if node_status is _SUCCEEDED:
                continue
            if node_status is _PENDING:
                res.status = NodeStatus.SKIPPED
            elif node_status is _RUNNING:
                # Interrupted in the run's own task (SequentialRunner) when the task
                # awaiting the run was cancelled, or abandoned after the grace period:
                # the attempt ends silently, cancelled.
                res.status = NodeStatus.CANCELLED
                self.outputs.pop(res.node_id, None)  # its node_end dispatch was interrupted
                res._ended = perf_counter()
                if res._started is not None:
                    res.duration = res._ended - res._started
        if self.stopping is RunStatus.CANCELLED:
            status = RunStatus.CANCELLED
        elif self.error is not None or self.stopping is RunStatus.FAILED:
            status = RunStatus.FAILED
        else:
            status = RunStatus.SUCCEEDED
        duration = perf_counter() - self.t0
        final_node = {
            RunStatus.SUCCEEDED: self.last_success,
            RunStatus.FAILED: self.failed_node,
        }.get(status)
        result = RunResult(
            run_id=self.run_id,
            workflow_name=self.workflow_name,
            status=status,
            inputs=self.inputs,
            outputs=self.outputs,
            nodes=self.nodes,
            error=self.error,
            final_node=final_node,
            cancel_reason=self.stop_reason if status is RunStatus.CANCELLED else None,
            started_at=self.started_at,
            ended_at=datetime.now(UTC),
            duration=duration,
            parent_run_id=self.parent_run_id,
            resource_id=self.resource_id,
            metadata=self.metadata,
        )
        self.ctx.result = result
        self.result = result
        return result
