"""One run of code that is not a flowhooks ``Workflow``: its events, nodes and outcome.

``ExternalRun`` (async) and its sync twin both drive an ``ExternalRunState``.
It owns what a flowhooks run owns: the run id, the run's ``EventSequencer``
(``seq`` numbering, one dispatch at a time), each node's ``NodeResult``
(attempts, timestamps, durations, status), the ``RunContext`` that
``current_run()`` returns, and the one ``workflow_end``. It knows nothing of
threads: every coroutine of one run runs on the event loop the run started on.

The outcome rule, applied when the block ends:

* an ``asyncio.CancelledError`` or a ``KeyboardInterrupt`` escaped: ``cancelled``;
* any other exception escaped: ``failed``, with that exception's ``ErrorInfo``
  (the failing node's own, when it is the exception a node block raised);
* nothing escaped: ``succeeded`` only if the last attempt of every node entered
  succeeded; else ``failed`` with the error of the first node whose last
  attempt failed (a node whose error the caller caught still fails the run,
  as a failed node fails a ``Workflow`` run; a later attempt that succeeds
  clears it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Set
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

from loguru import logger

from flowhooks._combined import as_manager
from flowhooks._context import ParentLink, RunContext
from flowhooks._delivery_end import EndSettle, end_after_deliveries
from flowhooks._dispatcher import clear_propagating
from flowhooks._events import ErrorInfo, EventType, NodeStatus, RunStatus, Severity
from flowhooks._logs import failure_text
from flowhooks._manager import CallbackManager
from flowhooks._node import InvalidCallbackError
from flowhooks._results import NodeResult, RunResult
from flowhooks._sequencer import EventSequencer, TaskFrame, current_node

_NODE_START = EventType.NODE_START
_NODE_END = EventType.NODE_END
_ERROR = EventType.ERROR
CANCELLING = (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit)
"""Exceptions that end a block (or a node) as cancelled rather than failed: a
cancellation, Ctrl-C, or the generator around the block closed by its consumer
(a stream abandoned early)."""


def _optional_str(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    msg = f"ExternalRun: {name} takes a str or None, got {value!r} ({type(value).__name__})"
    raise TypeError(msg)


def _mapping(name: str, value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        msg = f"ExternalRun: {name} takes a mapping (or None), got {value!r}"
        raise TypeError(msg)
    return dict(value)


def check_node_args(
    name: object,
    input_data: object,
    attempt: object,
    critical: object = False,
    will_retry: object = False,
) -> tuple[str, dict[str, Any], int]:
    """Validate ``run.node(...)``'s arguments; return the first three normalised.

    Raises:
        TypeError: a wrong type, naming the parameter.
        ValueError: an empty name or an attempt below 1.
    """
    if not isinstance(name, str):
        msg = f"run.node() takes the node's name as a str, got {name!r} ({type(name).__name__})"
        raise TypeError(msg)
    if not name:
        msg = "run.node() needs a non-empty node name"
        raise ValueError(msg)
    if input_data is None:
        data: dict[str, Any] = {}
    elif isinstance(input_data, dict):
        data = input_data
    elif isinstance(input_data, Mapping):
        data = dict(input_data)
    else:
        msg = (
            f"run.node({name!r}): input_data= takes a mapping of the node's inputs, "
            f"got {input_data!r}"
        )
        raise TypeError(msg)
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        msg = f"run.node({name!r}): attempt= takes an int >= 1, got {attempt!r}"
        raise TypeError(msg)
    if attempt < 1:
        msg = f"run.node({name!r}): attempt= takes an int >= 1, got {attempt!r}"
        raise ValueError(msg)
    if critical is not False and critical is not True:
        msg = (
            f"run.node({name!r}): critical= takes True or False, "
            f"got {critical!r} ({type(critical).__name__})"
        )
        raise TypeError(msg)
    if will_retry is not False and will_retry is not True:
        msg = (
            f"run.node({name!r}): will_retry= takes True or False, "
            f"got {will_retry!r} ({type(will_retry).__name__})"
        )
        raise TypeError(msg)
    return name, data, attempt


class RunArgs:
    """``ExternalRun``'s arguments, validated when it is created (before any event)."""

    __slots__ = (
        "inputs",
        "manager",
        "metadata",
        "parent_run_id",
        "resource_id",
        "run_id",
        "workflow_name",
    )

    def __init__(
        self,
        manager_or_handlers: Any,
        *,
        workflow_name: object,
        inputs: object,
        run_id: object,
        resource_id: object,
        metadata: object,
        parent_run_id: object,
    ) -> None:
        try:
            manager = as_manager(manager_or_handlers, where="ExternalRun(manager_or_handlers)")
        except TypeError as exc:
            where = "ExternalRun(manager_or_handlers)"
            text = str(exc) if where in str(exc) else f"{where}: {exc}"
            raise InvalidCallbackError(text) from None
        self.manager = manager if manager is not None else CallbackManager()
        if not isinstance(workflow_name, str) or not workflow_name:
            msg = f"ExternalRun: workflow_name= takes a non-empty str, got {workflow_name!r}"
            raise (TypeError if not isinstance(workflow_name, str) else ValueError)(msg)
        self.workflow_name = workflow_name
        self.inputs = _mapping("inputs=", inputs)
        self.metadata = _mapping("metadata=", metadata)
        self.resource_id = _optional_str("resource_id=", resource_id)
        self.parent_run_id = _optional_str("parent_run_id=", parent_run_id)
        if run_id is not None and not isinstance(run_id, str):
            msg = f"run_id= takes a non-empty str, got {run_id!r} ({type(run_id).__name__})"
            raise TypeError(msg)
        if isinstance(run_id, str) and not run_id.strip():
            msg = f"run_id= takes a non-empty str, got {run_id!r}"
            raise ValueError(msg)
        self.run_id = run_id


class NodeAttempt:
    """One attempt of one node, between its ``node_start`` and its closing event."""

    __slots__ = ("attempt", "critical", "frame", "inputs", "name", "result", "start", "will_retry")

    def __init__(
        self,
        name: str,
        inputs: dict[str, Any],
        attempt: int,
        *,
        critical: bool,
        will_retry: bool,
        result: NodeResult,
    ) -> None:
        self.name = name
        self.inputs = inputs
        self.attempt = attempt
        self.critical = critical
        self.will_retry = will_retry
        self.result = result
        self.start = 0.0
        self.frame: TaskFrame | None = None


class ExternalRunState:
    """Everything about one external run while its block executes."""

    def __init__(self, args: RunArgs, run_id: str) -> None:
        self.manager = args.manager
        self.run_id = run_id
        self.workflow_name = args.workflow_name
        self.inputs = args.inputs
        self.metadata = args.metadata
        self.resource_id = args.resource_id
        self.parent_run_id = args.parent_run_id
        self.outputs: dict[str, Any] = {}
        self.nodes: dict[str, NodeResult] = {}
        self.running: set[str] = set()
        self.failures: list[str] = []  # node names in the order their attempts failed
        self.last_success: str | None = None
        self.closed = False
        self.settle = EndSettle()  # the end's wait for background deliveries
        self.result: RunResult | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # set when the run starts
        # A raise_error handler's exception from the end, or a BaseException (KeyboardInterrupt,
        # SystemExit) a handler raised there: re-raised once the end completed.
        self.end_error: BaseException | None = None
        self.started_at = datetime.now(UTC)
        self.t0 = perf_counter()
        self._offset = self.started_at.timestamp() - self.t0
        self.events = EventSequencer(
            self.manager,
            {
                "run_id": run_id,
                "workflow_name": self.workflow_name,
                "parent_run_id": self.parent_run_id,
                "resource_id": self.resource_id,
                "metadata": self.metadata,
            },
        )
        self.ctx = RunContext(
            run_id=run_id,
            workflow_name=self.workflow_name,
            inputs=self.inputs,
            outputs=self.outputs,
            emit=self.emit_from_context,
            logger=logger.bind(run_id=run_id, workflow_name=self.workflow_name),
            started_at=self.started_at,
            parent_run_id=self.parent_run_id,
            resource_id=self.resource_id,
            metadata=self.metadata,
            run=self,
        )
        # A Workflow run started inside this run is a sub-run of it, as inside a node of a
        # Workflow run: linked, and its events reach this run's handlers too.
        self.ctx._parent_link = ParentLink(self.events, None)

    # -- the run ----------------------------------------------------------------------

    async def start(self) -> None:
        """Send ``workflow_start`` (on the loop every later event of the run uses).

        Raises:
            BaseException: a ``raise_error`` handler's exception, or a ``KeyboardInterrupt``
                a handler raised (or a cancel): the run has then ended, with its
                ``workflow_end``.
        """
        self.loop = asyncio.get_running_loop()
        try:
            await self.events.emit(EventType.WORKFLOW_START, (self.run_id, dict(self.inputs)))
        except BaseException as exc:  # a KeyboardInterrupt or a cancel too: the run still ends
            clear_propagating(exc)
            await self.finish(exc)
            raise

    async def finish(self, exc: BaseException | None, grace: float | None = None) -> RunResult:
        """Settle the outcome of a block that ended with ``exc``; send ``workflow_end`` once.

        Before it, background deliveries get (at most ``grace`` seconds) to deliver what
        the run queued, so replies to its events are part of it; a cancellation of the
        task awaiting the end cuts that short (``settle.cut()``).

        A ``raise_error`` handler's exception from ``workflow_end`` or the
        managers' flush, or a ``KeyboardInterrupt``/``SystemExit`` a handler
        raised there, is kept in ``end_error`` for the caller to raise once the
        end (the flush included) completed.
        """
        if self.result is not None:
            return self.result
        result = self._build_result(exc)
        manager = self.events.manager  # the handlers the run had
        await end_after_deliveries(
            manager,
            (lambda: self.settle) if result.status is not RunStatus.CANCELLED else None,
            grace,
            self.run_id,
            lambda flush: self._close(result, manager if flush else None),
        )
        return result

    async def _close(self, result: RunResult, manager: CallbackManager | None) -> None:
        """Send ``workflow_end``, then flush ``manager`` (if any)."""
        self.closed = True  # nothing may follow workflow_end
        try:
            await self.events.emit(
                EventType.WORKFLOW_END,
                (self.run_id, dict(self.outputs)),  # a copy, as a Workflow run gives
                duration=result.duration,
                status=result.status.value,
            )
        except asyncio.CancelledError:
            raise
        except BaseException as handler_exc:
            clear_propagating(handler_exc)
            self.end_error = handler_exc
        if manager is None:
            return
        try:
            await manager.flush()
        except asyncio.CancelledError:
            raise
        except BaseException as handler_exc:
            clear_propagating(handler_exc)
            self.end_error = self.end_error or handler_exc

    def _build_result(self, exc: BaseException | None) -> RunResult:
        error: ErrorInfo | None = None
        failed_node: str | None = None
        cancel_reason: str | None = None
        now = perf_counter()
        for name in self.running:  # node blocks still open: they end cancelled, silently
            node = self.nodes[name]
            self.outputs.pop(name, None)  # its node_end, if it began, was cut short
            node.status = NodeStatus.CANCELLED
            node._ended = now
            if node._started is not None:
                node.duration = now - node._started
        self.running.clear()
        if isinstance(exc, CANCELLING):
            status = RunStatus.CANCELLED
            cancel_reason = str(exc) or f"the run's block raised {type(exc).__name__}"
        elif exc is not None:
            status = RunStatus.FAILED
            failed_node, error = self._error_of(exc)
        else:
            failed_node, error = self._node_failure()
            status = RunStatus.SUCCEEDED if error is None else RunStatus.FAILED
        result = RunResult(
            run_id=self.run_id,
            workflow_name=self.workflow_name,
            status=status,
            inputs=self.inputs,
            outputs=self.outputs,
            nodes=self.nodes,
            error=error,
            final_node=self.last_success if status is RunStatus.SUCCEEDED else failed_node,
            cancel_reason=cancel_reason,
            started_at=self.started_at,
            ended_at=datetime.now(UTC),
            duration=now - self.t0,
            parent_run_id=self.parent_run_id,
            resource_id=self.resource_id,
            metadata=self.metadata,
        )
        self.ctx.result = result
        self.result = result
        return result

    def _error_of(self, exc: BaseException) -> tuple[str | None, ErrorInfo]:
        """The failing node and ``ErrorInfo`` of an exception that escaped the block."""
        for name in self.failures:
            error = self.nodes[name].error
            if error is not None and error.exception is exc:
                return name, error
        info = ErrorInfo.from_exception(
            exc,
            run_id=self.run_id,
            workflow_name=self.workflow_name,
            severity=Severity.CRITICAL,
        )
        return None, info

    def _forgiven(self) -> Set[str]:
        """Nodes whose failure does not fail the run (none here; a bridge's run may have some)."""
        return frozenset()

    def _node_failure(self) -> tuple[str | None, ErrorInfo | None]:
        """The first node whose last attempt failed, or one that did not complete."""
        forgiven = self._forgiven()
        for name in self.failures:
            node = self.nodes[name]
            if name not in forgiven and node.status is NodeStatus.FAILED and node.error is not None:
                return name, node.error
        unfinished = [
            n
            for n, r in self.nodes.items()
            if n not in forgiven and r.status is not NodeStatus.SUCCEEDED
        ]
        if not unfinished:
            return None, None
        exc = asyncio.CancelledError(f"node(s) {unfinished!r} did not complete")
        info = ErrorInfo.from_exception(
            exc, node_id=unfinished[0], run_id=self.run_id, workflow_name=self.workflow_name
        )
        return unfinished[0], info

    # -- nodes ------------------------------------------------------------------------

    def enter_node(
        self,
        name: str,
        inputs: dict[str, Any],
        attempt: int,
        *,
        critical: bool = False,
        will_retry: bool = False,
    ) -> NodeAttempt:
        """Record that an attempt of node ``name`` begins (before its ``node_start``).

        Raises:
            RuntimeError: the run has ended.
            ValueError: an attempt of ``name`` is running already.
        """
        if self.closed:
            msg = (
                f"run {self.run_id} of {self.workflow_name!r} has ended; "
                f"node {name!r} cannot start after workflow_end"
            )
            raise RuntimeError(msg)
        if name in self.running:
            msg = (
                f"node {name!r} of run {self.run_id} is already running; give each "
                "concurrent step its own name"
            )
            raise ValueError(msg)
        result = self.nodes.get(name)
        if result is None:
            result = self.nodes[name] = NodeResult(name, self._offset)
        else:  # a further attempt (or a re-run) of the node: its earlier outcome is replaced
            self.outputs.pop(name, None)
            result.error = None
            result.output = None
        self.running.add(name)
        result.status = NodeStatus.RUNNING
        result.attempts = attempt
        return NodeAttempt(
            name, inputs, attempt, critical=critical, will_retry=will_retry, result=result
        )

    async def node_start(self, step: NodeAttempt) -> None:
        """Send ``node_start``; then the attempt's body may run.

        Raises:
            Exception: a ``raise_error`` handler's; the node has then failed
                (with its ``error`` event) and its body must not run.
        """
        try:
            await self.events.emit(
                _NODE_START,
                (step.name, dict(step.inputs)),
                step.name,
                step.attempt,
                frame=step.frame,
            )
        except Exception as exc:
            clear_propagating(exc)
            step.start = perf_counter()
            if step.result._started is None:
                step.result._started = step.start
            await self.node_failed(step, exc, will_retry=False)
            raise
        step.start = now = perf_counter()
        if step.result._started is None:
            step.result._started = now

    async def node_succeeded(self, step: NodeAttempt, output: Any) -> None:
        """The attempt's body returned ``output``: record it and send ``node_end``.

        Raises:
            Exception: a ``raise_error`` handler's; the node has then failed.
        """
        end = perf_counter()
        result, name = step.result, step.name
        if self.closed:  # the run ended while the block was open: it stays cancelled
            return
        self.outputs[name] = output
        result._ended = end
        result.duration = end - result._started if result._started is not None else None
        try:
            await self.events.emit(
                _NODE_END, (name, output), name, step.attempt, end - step.start, frame=step.frame
            )
        except Exception as exc:
            clear_propagating(exc)
            del self.outputs[name]
            self._record_failure(step, self._error_info(step, exc, will_retry=False))
            raise
        self.running.discard(name)
        result.output = output
        result.status = NodeStatus.SUCCEEDED
        self.last_success = name

    async def node_failed(self, step: NodeAttempt, exc: BaseException, *, will_retry: bool) -> None:
        """The attempt raised ``exc``: the node fails; its ``error`` event is sent.

        A ``raise_error`` handler's exception from that event is logged: the
        node already fails with ``exc``.
        """
        if self.closed:
            return
        elapsed = perf_counter() - step.start
        info = self._error_info(step, exc, will_retry=will_retry)
        self._record_failure(step, info)
        try:
            await self.events.emit(
                _ERROR, (info,), step.name, step.attempt, elapsed, frame=step.frame
            )
        except Exception as handler_exc:
            clear_propagating(handler_exc)
            logger.bind(run_id=self.run_id).error(
                "a raise_error handler raised {error} on the error event of node {node!r}; "
                "the node fails with its own error (run {run_id})",
                error=failure_text(handler_exc, with_traceback=False),
                node=step.name,
                run_id=self.run_id,
            )

    def node_cancelled(self, step: NodeAttempt) -> None:
        """The attempt was cancelled: it ends silently, ``cancelled``."""
        if self.closed:
            return
        result = step.result
        self.running.discard(step.name)
        result.status = NodeStatus.CANCELLED
        result._ended = end = perf_counter()
        result.duration = end - result._started if result._started is not None else None

    def _record_failure(self, step: NodeAttempt, info: ErrorInfo) -> None:
        result = step.result
        self.running.discard(step.name)
        result.status = NodeStatus.FAILED
        result.error = info
        result._ended = end = perf_counter()
        result.duration = end - result._started if result._started is not None else None
        self.failures.append(step.name)

    def _error_info(self, step: NodeAttempt, exc: BaseException, *, will_retry: bool) -> ErrorInfo:
        if will_retry:
            severity = Severity.WARNING
        elif step.critical:
            severity = Severity.CRITICAL
        else:
            severity = Severity.ERROR
        return ErrorInfo.from_exception(
            exc,
            node_id=step.name,
            attempt=step.attempt,
            run_id=self.run_id,
            workflow_name=self.workflow_name,
            will_retry=will_retry,
            severity=severity,
        )

    # -- custom events ----------------------------------------------------------------

    async def emit(self, name: str, data: Any, node_id: str | None) -> None:
        """Send a custom event, from node ``node_id`` (``None``: from the run itself).

        Raises:
            TypeError: ``name`` is not a non-empty str.
            RuntimeError: the run has ended.
            Exception: a ``raise_error`` handler's.
        """
        if not isinstance(name, str) or not name:
            msg = f"emit() needs a non-empty event name, got {name!r}"
            raise TypeError(msg)
        if self.closed:
            msg = (
                f"run {self.run_id} of {self.workflow_name!r} has ended; "
                f"custom event {name!r} cannot be sent after workflow_end"
            )
            raise RuntimeError(msg)
        result = self.nodes.get(node_id) if node_id is not None else None
        attempt = result.attempts if result is not None and result.attempts else None
        await self.events.emit(
            EventType.CUSTOM_EVENT, (name, data), node_id=node_id, attempt=attempt, name=name
        )

    async def emit_from_context(self, name: str, data: Any) -> None:
        """``current_run().emit(...)``: from the node whose code calls it, if any.

        Called on another event loop than the run's (code in another thread
        holding the run's context), the event is handed to the run's loop.
        """
        node_id = current_node()
        node = node_id if node_id in self.nodes else None
        loop = self.loop
        if loop is None or loop is asyncio.get_running_loop():
            await self.emit(name, data, node)
            return
        future = asyncio.run_coroutine_threadsafe(self.emit(name, data, node), loop)
        await asyncio.wrap_future(future)
