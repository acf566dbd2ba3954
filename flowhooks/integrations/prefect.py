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
``workflow_name=`` or the flow's name, its inputs the flow's parameters; a
subflow's run is a sub-run of its parent flow run's (``parent_run_id``).
Several ``PrefectHooks`` on one flow each report it to their own handlers,
as a run of their own: the first under the flow run's id, the others under
a fresh id, with the flow run's id in metadata ``prefect_flow_run_id``.
Its end follows the flow run's final state, whatever its task runs did:
``Completed`` succeeded, ``Failed`` failed with the flow's exception,
``Cancelled`` cancelled, ``Paused`` suspended, ``Crashed`` failed with the
crash (an interruption, Ctrl-C or SIGTERM: cancelled). A flow run that
leaves its engine with no final state set ends by what left it: ``Pause``
suspended, ``Abort`` cancelled, any other exception failed (an interruption:
cancelled). Each task run of it
(of a task with the hooks) is a node: ``node_start`` with the values the task
is called with, ``node_end`` with its result, or its ``error`` event; a task
that Prefect retries sends one ``node_start`` per attempt (``attempt`` =
Prefect's run count), each failed attempt but the last an ``error`` with
``will_retry``, sent when it fails. Nodes are named after their task, made
unique within the run (``extract``, ``extract#2``). Task runs outside a flow
run with the hooks are not reported.

Prefect calls no hook for some states (a flow run that ends ``Cancelled``
without ``Cancelling``, or ``Paused``; a task run that awaits a delayed
retry, crashes or is cancelled), nor gives a hook the engine that runs the
flow or task run, whose resolved parameters are the task's inputs. A hook
finds that engine among its callers and follows the states it sets from then
on, and what leaves the flow run's engine; where it is not found, the hooks
report what Prefect passes them.

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

from flowhooks._errors import DuplicateRunError
from flowhooks._events import RunStatus
from flowhooks._external_state import NodeAttempt, RunArgs
from flowhooks._external_sync import _LoopThread
from flowhooks._ids import new_id
from flowhooks._manager import CallbackManager
from flowhooks._results import RunResult
from flowhooks._workflow import Callbacks
from flowhooks.integrations._options import RunOptions, manager_of
from flowhooks.integrations._runs import (
    FrameworkRunState,
    Run,
    as_input,
    call_in_run,
    end_node,
    end_run,
    start_run,
)

try:
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.exceptions import Pause
    from prefect.flows import FlowStateHook
    from prefect.tasks import StateHookCallable

    from flowhooks.integrations._prefect_engine import (
        cancelled,
        engine_of,
        escape_outcome,
        failure,
        flow_outcome,
        guard,
        interruption,
        value_of,
        watch,
    )
except ImportError as _missing:  # pragma: no cover - exercised without the extra only
    _msg = (
        "flowhooks.integrations.prefect needs prefect, which is not installed; "
        "install it with: pip install 'flowhooks[prefect]'"
    )
    raise ImportError(_msg, name=_missing.name) from _missing

__all__ = ["FlowHooks", "PrefectHooks", "TaskHooks", "flowhooks_hooks"]

_FLOW_RUN_ID = "prefect_flow_run_id"
"""The metadata key of the flow run's id, in a run whose id is not the flow run's."""

_live_flow_runs: set[str] = set()
"""Ids of the flow runs reported now under their own id: the parents a subflow links to."""
_live_lock = threading.Lock()


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


class _FlowRunState(FrameworkRunState):
    """A flow run's state: its outcome is the flow run's final state.

    A task run that failed, crashed, was cancelled or did not end by then is
    ``handled``: the flow run's state says whether the flow got past it. A
    flow run that ends ``Paused`` (waiting for a resume) ends ``suspended``.
    """

    paused = False

    def _build_result(self, exc: BaseException | None) -> RunResult:
        if not self.paused:
            return super()._build_result(exc)
        result = super()._build_result(None)
        result.status = RunStatus.SUSPENDED
        result.error = result.final_node = None
        return result


class _FlowRun:
    """A flow run being reported: its loop thread, its run, and its task runs."""

    __slots__ = ("loop", "names", "run", "tasks")

    def __init__(self, loop: _LoopThread) -> None:
        self.loop = loop
        self.run: Run | None = None
        self.tasks: dict[str, NodeAttempt] = {}  # task run id -> its attempt running now
        self.names: dict[str, str] = {}  # task run id -> its node (the same for each attempt)


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
        self._flow_started(flow, flow_run, engine_of(flow_run, "flow_run"))

    def on_flow_completion(self, flow: Any, flow_run: Any, state: Any) -> None:
        """A flow run completed: ``workflow_end``, succeeded."""
        self._flow_entered(str(flow_run.id), state)

    def on_flow_failure(self, flow: Any, flow_run: Any, state: Any) -> None:
        """A flow run failed: ``workflow_end``, failed with the flow's exception."""
        self._flow_entered(str(flow_run.id), state)

    def on_flow_cancellation(self, flow: Any, flow_run: Any, state: Any) -> None:
        """A flow run is cancelled: ``workflow_end``, cancelled with the state's message."""
        self._flow_entered(str(flow_run.id), state)

    def on_flow_crashed(self, flow: Any, flow_run: Any, state: Any) -> None:
        """A flow run crashed: ``workflow_end``, failed (cancelled when it was interrupted)."""
        self._flow_entered(str(flow_run.id), state)

    def on_task_running(self, task: Any, task_run: Any, state: Any) -> None:
        """An attempt of a task run starts: ``node_start`` (after a failed attempt's ``error``)."""
        self._task_started(task, task_run, engine_of(task_run, "task_run"))

    def on_task_completion(self, task: Any, task_run: Any, state: Any) -> None:
        """A task run completed: ``node_end`` with its result."""
        self._task_ended(task_run, value_of(state), None)

    def on_task_failure(self, task: Any, task_run: Any, state: Any) -> None:
        """A task run's last attempt failed: its ``error`` event."""
        self._task_ended(task_run, None, failure(state, "the task run failed"))

    # -- flow runs ----------------------------------------------------------------------

    def _flow_started(self, flow: Any, flow_run: Any, engine: Any) -> None:
        key = str(flow_run.id)
        with self._lock:
            if key in self._flows:
                return  # a retry of the flow run: the run goes on
            item = self._flows[key] = _FlowRun(_LoopThread(f"flowhooks-prefect-{key}"))
        try:
            try:
                args = self._args(flow, flow_run, key)
                state = item.loop.run(start_run, args, None, _FlowRunState)
            except DuplicateRunError:  # another PrefectHooks reports it under the flow run's id
                args = self._args(flow, flow_run, new_id(), {_FLOW_RUN_ID: key})
                state = item.loop.run(start_run, args, None, _FlowRunState)
        except BaseException:
            self._forget(key)
            raise
        item.run = Run(state)
        if state.run_id == key:
            with _live_lock:
                _live_flow_runs.add(key)
        if engine is not None:
            watch(engine, self, lambda new: self._flow_state(key, new))
            guard(engine, self, lambda exc: self._flow_escaped(key, exc))

    def _args(
        self, flow: Any, flow_run: Any, run_id: str, extra: Mapping[str, Any] | None = None
    ) -> RunArgs:
        """The arguments of the run that reports ``flow_run``, under ``run_id``."""
        options = self._options
        key = str(flow_run.id)
        return RunArgs(
            self._manager,
            workflow_name=options.workflow_name or str(flow.name),
            inputs=dict(getattr(flow_run, "parameters", None) or {}),
            run_id=run_id,
            resource_id=options.resource_id,
            metadata={**options.metadata, **extra} if extra else options.metadata,
            parent_run_id=self._parent_of(key),
        )

    def _parent_of(self, key: str) -> str | None:
        """The id of the run reporting the flow run that flow run ``key`` is a subflow of, if any.

        Prefect starts a subflow's run inside its parent flow run's context
        (also from a task of it, in another thread): its first ``on_running``
        still sees the parent's. The parent is this object's run of it, else
        the run any ``PrefectHooks`` reports it as under its own id.
        """
        context = FlowRunContext.get()
        parent = getattr(getattr(context, "flow_run", None), "id", None)
        if parent is None or str(parent) == key:
            return None
        with self._lock:
            item = self._flows.get(str(parent))
        if item is not None and item.run is not None:
            return item.run.state.run_id
        with _live_lock:
            return str(parent) if str(parent) in _live_flow_runs else None

    def _flow_state(self, key: str, state: Any) -> None:
        """The flow run's engine set ``state``: a final or paused one ends the run (once)."""
        if state.is_final() or state.is_paused():
            self._flow_entered(key, state)

    def _flow_entered(self, key: str, state: Any) -> None:
        """The flow run entered ``state``, which ends its run (once)."""
        self._flow_ended(key, flow_outcome(state), state.is_paused())

    def _flow_escaped(self, key: str, exc: BaseException) -> None:
        """``exc`` left the flow run's engine: the run ends by it if no final state ended it.

        Prefect then sets no final state (it could not, or ``Abort`` and
        ``Pause`` set none), or sets ``Crashed`` after this for an
        interruption, which ends the run the same way.
        """
        self._flow_ended(key, escape_outcome(exc), isinstance(exc, Pause))

    def _flow_ended(self, key: str, error: BaseException | None, paused: bool) -> None:
        with self._lock:
            item = self._flows.get(key)
        if item is None:
            return
        try:
            if item.run is not None:
                item.loop.run(_finish, item.run.state, error, paused)
        finally:
            self._forget(key)

    def _forget(self, key: str) -> None:
        with self._lock:
            item = self._flows.pop(key, None)
        if item is None:
            return
        if item.run is not None and item.run.state.run_id == key:
            with _live_lock:
                _live_flow_runs.discard(key)
        item.loop.stop()

    # -- task runs ----------------------------------------------------------------------

    def _flow_of(self, task_run: Any) -> _FlowRun | None:
        with self._lock:
            item = self._flows.get(str(getattr(task_run, "flow_run_id", None)))
        return item if item is not None and item.run is not None else None

    def _task_started(self, task: Any, task_run: Any, engine: Any) -> None:
        item = self._flow_of(task_run)
        if item is None:
            return
        inputs = _parameters(task_run, engine)
        attempt = max(int(getattr(task_run, "run_count", 1) or 1), 1)
        # Prefect calls on_running while it handles the exception of the attempt before
        # (an immediate retry) or of this attempt (one interrupted as it unwinds).
        raised = sys.exc_info()[1]
        key = str(task_run.id)
        item.loop.run(self._start_attempt, item, key, str(task.name), inputs, attempt, raised)
        if engine is not None:
            watch(engine, self, lambda new: self._task_state(engine.task_run or task_run, new))

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
        previous = item.tasks.get(key)
        if previous is not None and attempt <= previous.attempt:
            # Not a new attempt: Prefect calls on_running again, from a finally block,
            # when an attempt is interrupted (a crash, a flow timeout). It ends by that.
            error = interruption(raised) if raised is not None else None
            error = error or asyncio.CancelledError(f"the task run of {name!r} was interrupted")
            await _end_attempt(item, key, None, error)
            return
        if previous is not None:  # a retry whose failed attempt was not seen ending
            error = raised if isinstance(raised, Exception) else None
            await _retried(item, key, error)
        node = item.names.get(key) or run.node_name(name)
        item.names[key] = node
        if isinstance(state, FrameworkRunState):
            state.handled.discard(node)  # this attempt decides now
        step = state.enter_node(node, as_input(dict(inputs)), attempt)
        try:
            await call_in_run(state, node, state.node_start, step)
        except Exception:  # a raise_error handler failed the node; Prefect goes on
            return
        item.tasks[key] = step

    def _task_state(self, task_run: Any, state: Any) -> None:
        """A task run's engine set ``state``; those Prefect calls no hook for end the attempt.

        A retry (``AwaitingRetry``, or an immediate ``Retrying``): the failed
        attempt's ``error`` (``will_retry``), with the exception Prefect is
        handling. ``Crashed``: the crash's ``error`` (cancelled, silently,
        when it was an interruption). ``Cancelled``: cancelled, silently.
        """
        item = self._flow_of(task_run)
        if item is None:
            return
        key = str(task_run.id)
        if state.is_scheduled() or state.is_running():
            raised = sys.exc_info()[1]
            error = raised if isinstance(raised, Exception) else None
            attempt = int(getattr(task_run, "run_count", 0) or 0)
            item.loop.run(_retried, item, key, error, None if state.is_scheduled() else attempt)
        elif state.is_crashed():
            crash = interruption(failure(state, "the task run crashed"))
            item.loop.run(_end_attempt, item, key, None, crash)
        elif state.is_cancelled() or state.is_cancelling():
            cancel = cancelled(state, "the task run was cancelled")
            item.loop.run(_end_attempt, item, key, None, cancel)

    def _task_ended(self, task_run: Any, output: Any, error: BaseException | None) -> None:
        item = self._flow_of(task_run)
        if item is not None:
            item.loop.run(_end_attempt, item, str(task_run.id), output, error)


def _parameters(task_run: Any, engine: Any) -> Mapping[str, Any]:
    """The values a task run's function is called with: its engine's resolved parameters.

    Without the engine: the task run context's parameters, where Prefect
    has not yet resolved the futures and states passed as arguments.
    """
    parameters = getattr(engine, "parameters", None) if engine is not None else None
    if isinstance(parameters, Mapping):
        return parameters
    context = TaskRunContext.get()
    if context is not None and context.task_run.id == task_run.id:
        return context.parameters or {}
    return {}


async def _finish(state: Any, error: BaseException | None, paused: bool) -> None:
    """End a flow run's run: by ``error``, else succeeded (or suspended when ``paused``).

    Its task runs that have not ended are handled: the flow run's state decides.
    """
    if isinstance(state, _FlowRunState):
        state.handled.update(state.running)
        state.paused = paused and error is None
    await end_run(state, error)


async def _end_attempt(item: _FlowRun, key: str, output: Any, error: BaseException | None) -> None:
    """End a task run's running attempt: ``node_end``, its ``error``, or cancelled."""
    step = item.tasks.pop(key, None)
    if step is None or item.run is None:
        return
    state = item.run.state
    await call_in_run(state, step.name, end_node, state, step, output, error)
    if error is not None and isinstance(state, FrameworkRunState):
        state.handled.add(step.name)  # the flow run's state says whether Prefect got past it


async def _retried(
    item: _FlowRun, key: str, error: BaseException | None, attempt: int | None = None
) -> None:
    """A task run's running attempt failed and Prefect retries it: its ``error``, ``will_retry``.

    ``attempt`` is the run count of a retry that starts now (``None``: one
    awaited); the attempt running is the one that failed only when it is an
    earlier one.
    """
    step = item.tasks.get(key)
    if step is None or item.run is None or (attempt is not None and attempt <= step.attempt):
        return
    del item.tasks[key]
    state = item.run.state
    error = error or RuntimeError(f"attempt {step.attempt} of {step.name!r} failed")
    await call_in_run(state, step.name, _failed_will_retry, state, step, error)
    if isinstance(state, FrameworkRunState):
        state.handled.add(step.name)


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
