"""How a node attempt ends other than by succeeding: retried, failed, suspended, cancelled.

``NodeOutcomes`` is a slot-less mixin of ``RunState`` (``_execution``): the
hot loop of a node's attempts (``RunState.run_node``) stays in one function,
and leaves it through these methods on every path but success.
"""

from __future__ import annotations

import asyncio
import contextlib
from time import perf_counter
from typing import TYPE_CHECKING, Any

from loguru import logger

from flowhooks._dispatcher import clear_propagating, must_propagate
from flowhooks._errors import Suspend
from flowhooks._events import ErrorInfo, EventType, NodeStatus, RunStatus, Severity
from flowhooks._function_callbacks import call_function_callback
from flowhooks._logs import failure_text
from flowhooks._results import NodeResult
from flowhooks._sequencer import set_frame

if TYPE_CHECKING:
    from flowhooks._context import RunContext
    from flowhooks._graph import RunPlan
    from flowhooks._node import Node
    from flowhooks._runner import Runner
    from flowhooks._sequencer import EventSequencer, TaskFrame

_ERROR = EventType.ERROR


def task_cancelled() -> bool:
    """Whether the current task was really cancelled (not a handler raising ``CancelledError``)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _log_stray_cancel(run_id: str, what: str, exc: BaseException) -> None:
    logger.bind(run_id=run_id).error(
        "a handler raised CancelledError on {what} without its task being cancelled; "
        "isolated (run {run_id}): {error}",
        what=what,
        run_id=run_id,
        error=failure_text(exc, with_traceback=False),
    )


class NodeOutcomes:
    """The ways out of a node's attempt loop that are not a success."""

    __slots__ = ()

    # Provided by RunState.
    forced: bool
    outputs: dict[str, Any]
    runner: Runner
    bodies: set[asyncio.Task[Any]]
    injected: set[asyncio.Task[Any]]
    callback_tasks: set[asyncio.Task[BaseException | None]]
    events: EventSequencer
    ctx: RunContext
    run_id: str
    workflow_name: str
    stopping: RunStatus | None
    nodes_settled: bool
    plan: RunPlan
    results: list[NodeResult]

    if TYPE_CHECKING:

        def fail(self, node: str | None, info: ErrorInfo) -> None: ...

        def request_stop(self, status: RunStatus, reason: str | None) -> None: ...

        def remember_raised(self, exc: BaseException) -> None: ...

        def _node_suspended(
            self, node: Node, result: NodeResult, suspend: Suspend, first_start: float
        ) -> bool: ...

    async def _cancelled_by_someone_else(
        self,
        node: Node,
        result: NodeResult,
        task: asyncio.Task[Any],
        exc: BaseException,
        emitted: bool = False,
    ) -> bool:
        """The node's task was cancelled, not by the run's stop: the node fails.

        ``emitted``: it happened while the attempt's closing event (``node_end``,
        or the ``error`` of a retried attempt) was being sent; that event ended
        the attempt, so no other follows, and an output it had is dropped.

        A handler that raises ``CancelledError`` or cancels its own task, or
        code that cancels a node's task, cannot make a node vanish from a run
        that then reports success: the node fails with a ``CancelledError``.
        """
        task.uncancel()
        self.bodies.discard(task)
        self.injected.discard(task)
        if result.status is NodeStatus.FAILED:  # it had already failed: its error was sent
            return False
        self.outputs.pop(node.name, None)
        started = result._started if result._started is not None else perf_counter()
        attempt = result.attempts or 1
        return await self._node_failed(node, result, exc, attempt, 0.0, started, emitted=emitted)

    async def _cancel_left_pending(
        self, node: Node, result: NodeResult, task: asyncio.Task[Any], *, emitted: bool
    ) -> bool:
        """The node's body or a handler of its events cancelled the node's task, and
        nothing waited since: the cancellation would land on whatever the task awaits
        next, or be lost. It is taken here, and the node fails with it: with its
        ``error`` event when the body returned (``emitted`` False), or after the
        ``node_end`` during which a handler cancelled."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)  # delivered now, to this node
        return await self._cancelled_by_someone_else(
            node, result, task, asyncio.CancelledError(), emitted=emitted
        )

    async def _attempt_failed(
        self,
        node: Node,
        result: NodeResult,
        exc: Exception,
        attempt: int,
        start: float,
        first_start: float,
    ) -> bool | None:
        """An attempt's body raised: retry (``None``), or end the node (``False``)."""
        elapsed = perf_counter() - start
        task = asyncio.current_task()
        assert task is not None
        if task in self.injected:
            await self._absorb_injected_cancel(task)
            return self._node_cancelled(result, first_start)
        if isinstance(exc, Suspend):
            return self._node_suspended(node, result, exc, first_start)
        # A raise_error handler's exception (from a custom event the node sent)
        # fails the node for good, like one raised on any other node event.
        will_retry = attempt <= node.retries and not must_propagate(exc)
        message = None
        if isinstance(exc, TimeoutError) and node.timeout is not None and not str(exc):
            message = f"node {node.name!r} timed out after {node.timeout:g}s (attempt {attempt})"
        info = self.error_info(exc, node, attempt, will_retry=will_retry, message=message)
        if not will_retry:
            return await self._node_failed(node, result, exc, attempt, elapsed, first_start, info)
        try:
            await self.events.emit(_ERROR, (info,), node.name, attempt, elapsed)
        except asyncio.CancelledError as cancel:
            if self.forced:
                raise
            return await self._cancelled_by_someone_else(node, result, task, cancel, True)
        except BaseException as handler_exc:  # a raise_error handler's, KeyboardInterrupt, ...
            return await self._node_failed(
                node, result, handler_exc, attempt, elapsed, first_start, emitted=True
            )
        if self.stopping is not None:
            return self._node_cancelled(result, first_start)
        if not await self._wait_before_retry(node, attempt, task):
            return self._node_cancelled(result, first_start)
        return None

    async def _wait_before_retry(self, node: Node, attempt: int, task: asyncio.Task[Any]) -> bool:
        """Sleep the retry delay of ``attempt``; False when the run's stop interrupted it."""
        delay = node.retry_delay * node.backoff ** (attempt - 1)
        if delay <= 0:
            return True
        self.bodies.add(task)
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if not self._consume_own_cancellation(task):
                raise
            return False
        finally:
            self.bodies.discard(task)
        return True

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
        """Consume a cancellation we requested that the body did not let through."""
        self.injected.discard(task)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)
        task.uncancel()
        if task.cancelling():
            raise asyncio.CancelledError

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
        """Fail ``node`` for good: emit its error (unless its event already ended the attempt).

        A ``BaseException`` that is no cancellation (``KeyboardInterrupt``, ``SystemExit``,
        from the body or a handler of the node's events) fails it the same way, and also
        stops the run, which raises it once its end is delivered.
        """
        raised = not isinstance(exc, Exception | asyncio.CancelledError)
        if raised:
            self.remember_raised(exc)
        clear_propagating(exc)
        if info is None:
            info = self.error_info(exc, node, attempt)
        result.status = NodeStatus.FAILED
        result.error = info
        result._ended = perf_counter()
        result.duration = result._ended - first_start
        self.fail(node.name, info)
        if not emitted:
            await self.emit_error_isolated(
                info, node.name, attempt, duration, f"the error event of failing node {node.name!r}"
            )
        if node.on_failure is not None:
            self._spawn_callback(
                node.on_failure, (node.name, info, self.ctx), f"on_failure of {node.name!r}", _ERROR
            )
        if raised or self.runner.fail_fast:
            self.request_stop(RunStatus.FAILED, None)
        return False

    def _body_left(self, task: asyncio.Task[Any], frame: TaskFrame | None) -> None:
        """The body of an attempt returned or raised: it can no longer be cancelled as one."""
        self.bodies.discard(task)
        if frame is not None:
            set_frame(frame)

    async def emit_error_isolated(
        self,
        info: ErrorInfo,
        node_id: str | None,
        attempt: int | None,
        duration: float | None,
        what: str,
    ) -> None:
        """Emit an ``error`` event of a run that already fails with ``info``.

        A ``raise_error`` handler's exception cannot change that outcome: it
        is logged, and the run keeps its first error. A ``BaseException`` stops
        the run and reaches the caller once the run's end completed.
        """
        try:
            await self.events.emit(_ERROR, (info,), node_id, attempt, duration)
        except asyncio.CancelledError as handler_exc:
            if task_cancelled():
                raise
            _log_stray_cancel(self.run_id, what, handler_exc)
        except BaseException as handler_exc:
            if not isinstance(handler_exc, Exception):
                self.remember_raised(handler_exc)
                self.request_stop(RunStatus.FAILED, None)
                return
            clear_propagating(handler_exc)
            logger.bind(run_id=self.run_id).error(
                "a raise_error handler raised {error} on {what}; the run fails with "
                "its first error (run {run_id})",
                error=failure_text(handler_exc, with_traceback=False),
                what=what,
                run_id=self.run_id,
            )

    def error_info(
        self,
        exc: BaseException,
        node: Node | None,
        attempt: int | None,
        *,
        will_retry: bool = False,
        message: str | None = None,
    ) -> ErrorInfo:
        """The ``ErrorInfo`` of ``exc`` in this run (``node`` ``None``: a run-level error)."""
        if will_retry:
            severity = Severity.WARNING
        elif node is None or node.critical:
            severity = Severity.CRITICAL
        else:
            severity = Severity.ERROR
        return ErrorInfo.from_exception(
            exc,
            node_id=node.name if node is not None else None,
            attempt=attempt,
            run_id=self.run_id,
            workflow_name=self.workflow_name,
            will_retry=will_retry,
            severity=severity,
            message=message,
        )

    def never_started(self, position: int) -> None:
        """The task of the node at ``position`` was cancelled before it began: no event of
        it went out; it fails with a ``CancelledError``, as a node whose task someone
        else cancels does (it cannot vanish from a run that then reports success)."""
        node, result = self.plan.steps[position], self.results[position]
        exc = asyncio.CancelledError("its task was cancelled before the node started")
        result.status = NodeStatus.FAILED
        result.error = self.error_info(exc, node, 1)
        self.fail(node.name, result.error)
        if self.runner.fail_fast:
            self.request_stop(RunStatus.FAILED, None)

    def _spawn_callback(
        self, fn: Any, args: tuple[Any, ...], what: str, event_type: EventType
    ) -> None:
        task = asyncio.get_running_loop().create_task(
            call_function_callback(fn, args, what, self.run_id, event_type)
        )
        self.callback_tasks.add(task)
        task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Task[BaseException | None]) -> None:
        """A node callback ended; one that raised a ``KeyboardInterrupt`` or ``SystemExit``
        stops the run, which raises it once its end is delivered (as a handler's would)."""
        self.callback_tasks.discard(task)
        if not task.cancelled() and (escaped := task.result()) is not None:
            self.remember_raised(escaped)
            self.fail(None, self.error_info(escaped, None, None))  # the run's error, if first
            if not self.nodes_settled:  # else the run's end already waits for it, then raises
                self.request_stop(RunStatus.FAILED, None)


class Settled:
    """The schedule of a run that has ended with every node settled: nothing to walk,
    wait for, stop or abandon. It takes the place of the run's walk, which refers back
    to the run: a cycle that would leave every run to the garbage collector."""

    __slots__ = ()

    async def walk(self) -> None:
        return None

    def busy(self) -> bool:
        return False

    async def wait_idle(self) -> None:
        return None

    def force_stop(self, message: object = None) -> None:
        return None

    def abandon(self) -> None:
        return None


SETTLED = Settled()
"""The one ``Settled`` schedule (it holds nothing)."""
