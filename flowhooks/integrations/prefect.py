"""Prefect flow runs reported to flowhooks handlers (extra ``prefect``).

::

    from prefect import flow, task
    from flowhooks.integrations.prefect import flowhooks_hooks

    hooks = flowhooks_hooks([LoggingCallback(), MetricsCallback()])

    @task(**hooks.task)
    def extract(day: int) -> list[int]: ...

    @flow(**hooks.flow)
    def nightly(day: int) -> int: ...

``hooks.flow`` holds Prefect's five flow state hooks (``on_running``,
``on_completion``, ``on_failure``, ``on_cancellation``, ``on_crashed``),
``hooks.task`` the three a task has (``on_running``, ``on_completion``,
``on_failure``); each is also a method (``hooks.on_flow_failure``,
``hooks.on_task_running`` ...).

A flow run is a flowhooks run: its id is the flow run's id, its name
``workflow_name=`` or the flow's name, its inputs the flow's parameters. Its
end follows its final state: ``Completed`` succeeded, ``Failed`` failed with
the flow's exception, ``Cancelled`` cancelled, ``Crashed`` failed with the
crash (an interruption: cancelled). Each task run of it (of a task with the
hooks) is a node: ``node_start`` with the task's parameters, ``node_end``
with its result, or its ``error`` event; a task that Prefect retries sends
one ``node_start`` per attempt (``attempt`` = Prefect's run count), each
failed attempt but the last an ``error`` with ``will_retry``. Nodes are named
after their task, made unique within the run (``extract``, ``extract#2``).
Task runs outside a flow run with the hooks are not reported.

Prefect calls state hooks synchronously (async flows too), and logs and
swallows what they raise: each flow run's events are dispatched on a
private loop thread, in order, the hook returning once they were delivered.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Mapping
from typing import Any, TypedDict

from flowhooks._external_state import NodeAttempt, RunArgs
from flowhooks._external_sync import _LoopThread
from flowhooks._manager import CallbackManager
from flowhooks._workflow import Callbacks
from flowhooks.integrations._options import RunOptions, manager_of
from flowhooks.integrations._runs import Run, as_input, call_in_run, end_node, end_run, start_run

try:
    from prefect import results as prefect_results
    from prefect.context import TaskRunContext
    from prefect.flows import FlowStateHook
    from prefect.tasks import StateHookCallable
except ImportError as _missing:  # pragma: no cover - exercised without the extra only
    _msg = (
        "flowhooks.integrations.prefect needs prefect, which is not installed; "
        "install it with: pip install 'flowhooks[prefect]'"
    )
    raise ImportError(_msg, name=_missing.name) from _missing

__all__ = ["FlowHooks", "PrefectHooks", "TaskHooks", "flowhooks_hooks"]

_RESULT_RECORD: type[Any] = getattr(prefect_results, "ResultRecord")  # noqa: B009 - re-exported
"""The in-memory holder of a final state's value (defined in a private Prefect module)."""


class TaskHooks(TypedDict):
    """The state hooks a Prefect task takes: ``@task(**hooks.task)``.

    Typed as Prefect types them, so that ``@task(**hooks.task)`` type-checks.
    """

    on_running: list[StateHookCallable]
    on_completion: list[StateHookCallable]
    on_failure: list[StateHookCallable]


class FlowHooks(TypedDict):
    """The state hooks a Prefect flow takes: ``@flow(**hooks.flow)``."""

    on_running: list[FlowStateHook[..., Any]]
    on_completion: list[FlowStateHook[..., Any]]
    on_failure: list[FlowStateHook[..., Any]]
    on_cancellation: list[FlowStateHook[..., Any]]
    on_crashed: list[FlowStateHook[..., Any]]


def _value(state: Any) -> Any:
    """What a final state holds: a task's or flow's return value, or its exception.

    Read from the state's in-memory result record, never from result
    storage (``state.result()`` would fetch it, and is a coroutine in an
    async flow); ``None`` when the state does not hold it.
    """
    data = getattr(state, "data", None)
    return data.result if isinstance(data, _RESULT_RECORD) else data


def _failure(state: Any, fallback: str) -> BaseException:
    """The exception a failed or crashed state holds, or a ``RuntimeError`` with its message."""
    value = _value(state)
    if isinstance(value, BaseException):
        return value
    return RuntimeError(getattr(state, "message", None) or fallback)


class _FlowRun:
    """A flow run being reported: its loop thread, its run, and its tasks running now."""

    __slots__ = ("loop", "run", "tasks")

    def __init__(self, loop: _LoopThread) -> None:
        self.loop = loop
        self.run: Run | None = None
        self.tasks: dict[str, NodeAttempt] = {}  # task run id -> its current attempt


class PrefectHooks:
    """State hooks that report Prefect flow runs and their task runs to flowhooks handlers.

    Made by ``flowhooks_hooks(...)``. Pass ``**hooks.flow`` to ``@flow`` and
    ``**hooks.task`` to ``@task``, or single hooks beside your own
    (``@flow(on_failure=[hooks.on_flow_failure, page_someone])``). One object
    serves any number of flows and flow runs, also at once.

    Attributes:
        flow: ``{"on_running": [...], "on_completion": [...], "on_failure": [...],
            "on_cancellation": [...], "on_crashed": [...]}``.
        task: ``{"on_running": [...], "on_completion": [...], "on_failure": [...]}``.
    """

    def __init__(self, manager: CallbackManager, options: RunOptions) -> None:
        self._manager = manager
        self._options = options
        self._flows: dict[str, _FlowRun] = {}
        self._lock = threading.Lock()
        self.flow: FlowHooks = {
            "on_running": [self.on_flow_running],
            "on_completion": [self.on_flow_completion],
            "on_failure": [self.on_flow_failure],
            "on_cancellation": [self.on_flow_cancellation],
            "on_crashed": [self.on_flow_crashed],
        }
        self.task: TaskHooks = {
            "on_running": [self.on_task_running],
            "on_completion": [self.on_task_completion],
            "on_failure": [self.on_task_failure],
        }

    def __repr__(self) -> str:
        return f"PrefectHooks({len(self._manager.handlers)} handlers)"

    # -- the hooks Prefect calls ------------------------------------------------------

    def on_flow_running(self, flow: Any, flow_run: Any, state: Any) -> None:
        """A flow run starts: ``workflow_start`` (again after a retry of the flow: nothing)."""
        self._flow_started(flow, flow_run)

    def on_flow_completion(self, flow: Any, flow_run: Any, state: Any) -> None:
        """A flow run completed: ``workflow_end``, succeeded."""
        self._flow_ended(flow_run, None)

    def on_flow_failure(self, flow: Any, flow_run: Any, state: Any) -> None:
        """A flow run failed: ``workflow_end``, failed with the flow's exception."""
        self._flow_ended(flow_run, _failure(state, "the flow run failed"))

    def on_flow_cancellation(self, flow: Any, flow_run: Any, state: Any) -> None:
        """A flow run was cancelled: ``workflow_end``, cancelled with the state's message."""
        message = getattr(state, "message", None) or "the flow run was cancelled"
        self._flow_ended(flow_run, asyncio.CancelledError(message))

    def on_flow_crashed(self, flow: Any, flow_run: Any, state: Any) -> None:
        """A flow run crashed: ``workflow_end``, failed (cancelled when it was interrupted)."""
        self._flow_ended(flow_run, _failure(state, "the flow run crashed"))

    def on_task_running(self, task: Any, task_run: Any, state: Any) -> None:
        """An attempt of a task run starts: ``node_start`` (after a failed attempt's ``error``)."""
        self._task_started(task, task_run)

    def on_task_completion(self, task: Any, task_run: Any, state: Any) -> None:
        """A task run completed: ``node_end`` with its result."""
        self._task_ended(task_run, _value(state), None)

    def on_task_failure(self, task: Any, task_run: Any, state: Any) -> None:
        """A task run's last attempt failed: its ``error`` event."""
        self._task_ended(task_run, None, _failure(state, "the task run failed"))

    # -- flow runs ----------------------------------------------------------------------

    def _flow_started(self, flow: Any, flow_run: Any) -> None:
        key = str(flow_run.id)
        with self._lock:
            if key in self._flows:
                return  # a retry of the flow run: the run goes on
            item = self._flows[key] = _FlowRun(_LoopThread(f"flowhooks-prefect-{key}"))
        options = self._options
        args = RunArgs(
            self._manager,
            workflow_name=options.workflow_name or str(flow.name),
            inputs=dict(getattr(flow_run, "parameters", None) or {}),
            run_id=key,
            resource_id=options.resource_id,
            metadata=options.metadata,
            parent_run_id=None,
        )
        try:
            item.run = Run(item.loop.run(start_run, args))
        except BaseException:
            self._forget(key)
            raise

    def _flow_ended(self, flow_run: Any, error: BaseException | None) -> None:
        key = str(flow_run.id)
        with self._lock:
            item = self._flows.get(key)
        if item is None:
            return
        try:
            if item.run is not None:
                item.loop.run(end_run, item.run.state, error)
        finally:
            self._forget(key)

    def _forget(self, key: str) -> None:
        with self._lock:
            item = self._flows.pop(key, None)
        if item is not None:
            item.loop.stop()

    # -- task runs ----------------------------------------------------------------------

    def _flow_of(self, task_run: Any) -> _FlowRun | None:
        with self._lock:
            item = self._flows.get(str(getattr(task_run, "flow_run_id", None)))
        return item if item is not None and item.run is not None else None

    def _task_started(self, task: Any, task_run: Any) -> None:
        item = self._flow_of(task_run)
        if item is None:
            return
        context = TaskRunContext.get()
        inputs: Mapping[str, Any] = {}
        if context is not None and context.task_run.id == task_run.id:
            inputs = context.parameters or {}
        attempt = max(int(getattr(task_run, "run_count", 1) or 1), 1)
        # A retry's on_running is called while the engine handles the attempt's exception.
        raised = sys.exc_info()[1]
        item.loop.run(
            self._start_attempt, item, str(task_run.id), str(task.name), inputs, attempt, raised
        )

    @staticmethod
    async def _start_attempt(
        item: _FlowRun,
        key: str,
        name: str,
        inputs: Mapping[str, Any],
        attempt: int,
        raised: BaseException | None,
    ) -> None:
        run = item.run
        assert run is not None  # checked by _flow_of
        state = run.state
        previous = item.tasks.pop(key, None)
        if previous is not None:  # Prefect retries the task: that attempt failed
            error = raised if isinstance(raised, Exception) else None
            error = error or RuntimeError(f"attempt {previous.attempt} of {name!r} failed")
            await call_in_run(state, previous.name, _failed_will_retry, state, previous, error)
            node = previous.name
        else:
            node = run.node_name(name)
        step = state.enter_node(node, as_input(dict(inputs)), attempt)
        try:
            await call_in_run(state, node, state.node_start, step)
        except Exception:  # a raise_error handler failed the node; Prefect goes on
            return
        item.tasks[key] = step

    def _task_ended(self, task_run: Any, output: Any, error: BaseException | None) -> None:
        item = self._flow_of(task_run)
        if item is not None:
            item.loop.run(self._end_attempt, item, str(task_run.id), output, error)

    @staticmethod
    async def _end_attempt(
        item: _FlowRun, key: str, output: Any, error: BaseException | None
    ) -> None:
        step = item.tasks.pop(key, None)
        if step is not None and item.run is not None:
            state = item.run.state
            await call_in_run(state, step.name, end_node, state, step, output, error)


async def _failed_will_retry(state: Any, step: NodeAttempt, error: BaseException) -> None:
    await state.node_failed(step, error, will_retry=True)


def flowhooks_hooks(
    manager: Callbacks = None,
    *,
    workflow_name: str | None = None,
    resource_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> PrefectHooks:
    """Prefect state hooks that report flow runs and their task runs to ``manager``.

    Args:
        manager: a ``CallbackManager``, a handler or a list of handlers.
        workflow_name: the runs' name (default: the flow's name).
        resource_id: a tenant/user id carried by every run's events.
        metadata: run headers carried by every run's events.

    Returns:
        A ``PrefectHooks``: ``@flow(**hooks.flow)``, ``@task(**hooks.task)``.

    Raises:
        InvalidCallbackError: ``manager`` is no handler, list of handlers or manager.
        TypeError: another argument of the wrong type, naming it.
    """
    options = RunOptions("flowhooks_hooks", workflow_name, resource_id, metadata)
    combined = manager_of("flowhooks_hooks", "manager", manager)
    return PrefectHooks(combined if combined is not None else CallbackManager(), options)
