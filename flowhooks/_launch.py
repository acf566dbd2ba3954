"""Starting runs: validation before any event, ``execute_run``, ``RunHandle``, sub-workflows.

Everything that can be wrong with a call to ``run`` (graph, inputs, runner,
callbacks, timeout) is raised here, before the run's first event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flowhooks._combined import as_manager, combined
from flowhooks._context import (
    ParentLink,
    check_cancel_reason,
    current_run_var,
    live_enclosing_run,
)
from flowhooks._ending import execute
from flowhooks._errors import (
    DuplicateRunError,
    InvalidOptionError,
    NotResumable,
    Suspend,
    WorkflowError,
    refuse_type,
)
from flowhooks._events import RunStatus
from flowhooks._execution import RunControl, RunState
from flowhooks._ids import new_id
from flowhooks._manager import CallbackManager
from flowhooks._node import InvalidCallbackError, Node, _reject_unknown_options
from flowhooks._results import RunResult
from flowhooks._resume import PROCESS_STORE, SUBWORKFLOW_ATTRIBUTE, RunStore, graph_fingerprint
from flowhooks._runner import AsyncioRunner, Runner, is_async_method
from flowhooks._sequencer import enter_run_task, in_a_dispatch, leave_run_task
from flowhooks._validate import check_seconds
from flowhooks._workflow import Workflow

if TYPE_CHECKING:
    from flowhooks._graph import RunPlan
    from flowhooks._workflow import Callbacks

_DEFAULT_RUNNER = AsyncioRunner()
_NO_CALLBACKS = CallbackManager()


class _LiveRunIds:
    """The ids of the runs live in this process (in any thread), so no two share one.

    One dict, id -> the run using it: ``dict.setdefault`` reserves an id atomically
    (no lock), and only the run holding an id removes it.
    """

    def __init__(self) -> None:
        self._owners: dict[str, object] = {}

    def claim(self, run_id: object) -> str:
        """Reserve a caller-supplied ``run_id`` (or a fresh one for ``None``).

        Raises:
            TypeError: when ``run_id`` is not a ``str``.
            ValueError: when it is empty.
            DuplicateRunError: when a live run already has it.
        """
        if run_id is None:
            run_id = new_id()
        elif not isinstance(run_id, str):
            msg = f"run_id= takes a non-empty str, got {run_id!r} ({type(run_id).__name__})"
            raise TypeError(msg)
        elif not run_id.strip():
            msg = f"run_id= takes a non-empty str, got {run_id!r}"
            raise ValueError(msg)
        reservation = _Reservation()
        if self._owners.setdefault(run_id, reservation) is not reservation:
            msg = (
                f"run_id {run_id!r} is already used by a run still live in this process; "
                "give each run its own id (or leave run_id= out for a fresh one)"
            )
            raise DuplicateRunError(msg)
        return run_id

    def own(self, run_id: str, owner: object) -> None:
        """Tie a claimed id to the run that uses it (what ``release`` checks)."""
        self._owners[run_id] = owner

    def release(self, run_id: str, owner: object) -> None:
        """The run ``owner`` has ended (or never started): its id may be used again."""
        if self._owners.get(run_id, _Reservation) is owner:
            self._owners.pop(run_id, None)


class _Reservation:
    """An id claimed by a run not made yet."""

    __slots__ = ()


_LIVE = _LiveRunIds()


class _Prepared:
    """A run validated and ready to start (every error raised before any event)."""

    __slots__ = ("control", "state", "timeout")

    def __init__(self, state: RunState, timeout: float | None, control: RunControl | None) -> None:
        self.state = state
        self.timeout = timeout
        self.control = control


def _dispatching_to(
    workflow: Workflow, run_manager: CallbackManager | None, parent: CallbackManager | None
) -> CallbackManager:
    """The one manager a run dispatches to: its workflow's, its own and its parent run's."""
    given = (workflow.callbacks, run_manager, parent)
    present = [m for m in given if m is not None and m._entries]
    if not present:  # the shared empty manager: combining nothing would build a new one
        return _NO_CALLBACKS
    if len(present) == 1:
        return present[0]
    if len(present) == 2 and present[0] is given[0]:
        return combined(present[0], present[1])  # kept across runs
    return CallbackManager.combine(*present)


def _prepare(
    workflow: Workflow,
    inputs: Mapping[str, Any] | None,
    *,
    callbacks: Callbacks = None,
    runner: Runner | None = None,
    run_id: str | None = None,
    resource_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    outputs: Iterable[str] | None = None,
    timeout: float | None = None,
    control: RunControl | None = None,
    store: RunStore | str | None = None,
) -> _Prepared:
    if not isinstance(workflow, Workflow):
        msg = f"expected a Workflow, got {workflow!r}"
        raise TypeError(msg)
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, Mapping):
        refuse_type("run() takes the workflow inputs as a mapping of name -> value", inputs)
    plan = workflow.plan(outputs)  # one name may come as a string
    input_dict = dict(inputs)
    workflow.check_inputs(input_dict, plan)
    if runner is None:
        runner = _DEFAULT_RUNNER
    elif not isinstance(runner, Runner):
        given = (
            f"the class {runner.__name__}; pass an instance, {runner.__name__}()"
            if isinstance(runner, type)
            else f"{runner!r} ({type(runner).__name__})"
        )
        msg = f"runner= takes a Runner instance (e.g. AsyncioRunner()) or None, got {given}"
        raise InvalidOptionError(msg)
    runner.check_run(workflow, plan.order if outputs is not None else None)
    if timeout is not None:
        try:
            timeout = check_seconds("timeout=", timeout, allow_none=True)
        except (TypeError, ValueError) as exc:
            raise InvalidOptionError(str(exc)) from None
    if resource_id is not None and not isinstance(resource_id, str):
        refuse_type("resource_id= takes a str or None", resource_id)
    if metadata is not None and not isinstance(metadata, Mapping):
        refuse_type("metadata= takes a mapping of run headers or None", metadata)
    try:
        run_manager = as_manager(callbacks, where="run(callbacks=...)")
    except TypeError as exc:
        raise InvalidCallbackError(str(exc)) from None
    parent = live_enclosing_run()
    link = parent._parent_link if parent is not None and not in_a_dispatch() else None
    if link is None:  # not inside a run's node or block (a handler's run is its own)
        parent = None
    manager = _dispatching_to(workflow, run_manager, link.manager if link is not None else None)
    if parent is not None:
        resource_id = resource_id if resource_id is not None else parent.resource_id
        metadata = metadata if metadata is not None else parent.metadata
    # Everything that can refuse the call comes before the run id is claimed as live.
    run_store = resolve_store(store if store is not None or link is None else link.store)
    claimed = _LIVE.claim(run_id)
    try:
        state = RunState(
            workflow,
            plan,
            manager,
            runner,
            input_dict,
            run_id=claimed,
            parent_run_id=parent.run_id if parent is not None else None,
            resource_id=resource_id,
            metadata=dict(metadata) if metadata is not None else {},
        )
    except BaseException:
        _LIVE.own(claimed, None)
        _LIVE.release(claimed, None)
        raise
    _LIVE.own(claimed, state)
    state.store = run_store
    state.ctx._parent_link = ParentLink(state.events, run_store)
    if outputs is not None:
        state.selection = tuple(plan.order) if isinstance(outputs, str) else tuple(outputs)
    return _Prepared(state, timeout, control)


async def execute_run(
    workflow: Workflow, inputs: Mapping[str, Any] | None, **options: Any
) -> RunResult:
    """Validate, then run ``workflow`` in the calling task (see ``Workflow.run``)."""
    prepared = _prepare(workflow, inputs, **options)
    return await _execute(prepared)


async def _execute(prepared: _Prepared) -> RunResult:
    state = prepared.state
    token = current_run_var.set(state.ctx)
    # A sub-workflow run executes in its parent node's task: outside its own nodes,
    # no node of it is current (the parent's node is its parent_node_id instead).
    frame_token = enter_run_task()
    runner = state.runner
    try:
        try:
            result = await execute(state, prepared.timeout, prepared.control)
        finally:
            if state.holds_runner:
                await runner.release_for_run()
        state.let_go_of_walk()
        return result
    finally:
        leave_run_task(frame_token)
        current_run_var.reset(token)
        _LIVE.release(state.run_id, state)


def resolve_store(store: RunStore | str | None) -> RunStore:
    """``store=``: a ``RunStore``, a database URL (``sqlite:///...``, ``postgresql://...``;
    its store is made on first use, importing SQLAlchemy only then), or ``None`` for this
    process's memory.

    Raises:
        TypeError: for anything else.
        ValueError: for a URL that is not SQLite or PostgreSQL.
    """
    if store is None:
        return PROCESS_STORE
    if isinstance(store, str):
        from flowhooks.handlers._run_store import store_for_url

        return store_for_url(store)
    if isinstance(store, RunStore):
        plain = [
            name
            for name in ("save", "claim", "unclaim")
            if not is_async_method(getattr(store, name))
        ]
        if plain:
            msg = (
                f"store= got {type(store).__name__}, whose {', '.join(plain)} "
                f"{'is' if len(plain) == 1 else 'are'} not `async def`: a RunStore's methods "
                "are awaited (see flowhooks.RunStore)"
            )
            raise TypeError(msg)
        return store
    msg = (
        f"store= takes a database URL (e.g. 'sqlite:///flowhooks.db') or a RunStore, got {store!r}"
    )
    raise TypeError(msg)


async def resume_run(
    workflow: Workflow,
    run_id: str,
    data: Any = None,
    *,
    store: RunStore | str | None = None,
    force: bool = False,
    **options: Any,
) -> RunResult:
    """Resume the suspended run ``run_id`` of ``workflow`` as a new run (``Workflow.resume``)."""
    if not isinstance(run_id, str) or not run_id:
        msg = f"resume() takes the suspended run's id (a non-empty str), got {run_id!r}"
        raise TypeError(msg)
    if not isinstance(force, bool):
        msg = f"resume() force= takes True or False, got {force!r} ({type(force).__name__})"
        raise TypeError(msg)
    for taken in ("inputs", "outputs", "resource_id", "metadata"):
        if taken in options:
            msg = f"resume() takes no {taken}=: a resumed run keeps the suspended run's"
            raise TypeError(msg)
    resolved = resolve_store(store)
    claimant = options.pop("run_id", None) or new_id()  # the resumed run's own id
    if not isinstance(claimant, str):
        msg = f"run_id= takes a non-empty str, got {claimant!r}"
        raise TypeError(msg)
    saved = await resolved.claim(run_id, claimant)
    try:
        selection = list(saved.selection) if saved.selection is not None else None
        if saved.expired():
            msg = f"run {run_id!r} was suspended until {saved.suspension.expires_at}; it expired"
            raise NotResumable(msg)
        try:
            plan: RunPlan | None = workflow.plan(selection)
        except WorkflowError:  # outputs= names a node the workflow no longer has
            plan = None
        if not force and (
            plan is None
            or saved.workflow_name != workflow.name
            or graph_fingerprint(plan) != saved.fingerprint
        ):
            msg = (
                f"run {run_id!r} was suspended by workflow {saved.workflow_name!r} with a "
                f"different graph than workflow {workflow.name!r} has now; resume with "
                "force=True to run it anyway (completed nodes are matched by name)"
            )
            raise NotResumable(msg)
        if plan is None and selection is not None:  # forced: the outputs= nodes that remain
            known = set(workflow.plan().order)
            selection = [name for name in selection if name in known] or None
        prepared = _prepare(
            workflow,
            saved.inputs,
            run_id=claimant,
            outputs=selection,
            resource_id=saved.resource_id,
            metadata=saved.metadata,
            store=resolved,
            **options,
        )
    except BaseException:
        await resolved.unclaim(run_id, claimant)
        raise
    state = prepared.state
    state.resumed_from = run_id
    state.resuming = saved.suspension
    state.restore(saved.outputs)
    state.state.update(saved.state)
    state.resume_data = data
    state.resume_force = force
    suspended_node = saved.suspension.node_id
    state.ctx.resume_with(data, suspended_node)
    state.ctx.resumed_from = run_id
    try:
        return await _execute(prepared)
    finally:
        finish = getattr(resolved, "finish", None)
        if finish is not None:  # a store that renews claims: this resume is over
            finish(run_id, claimant)


class RunHandle:
    """A run started with ``Workflow.start``: await it for the ``RunResult``.

    Attributes:
        run_id: the run's id, known before it starts.
    """

    def __init__(self, run_id: str, task: asyncio.Task[RunResult], control: RunControl) -> None:
        self.run_id = run_id
        self._task = task
        self._control = control

    def cancel(self, reason: str | None = None) -> bool:
        """Ask the run to stop; it ends with status ``cancelled`` and ``cancel_reason``.

        Returns:
            True only when this call stopped the run; False when the run was
            already stopping (a repeated cancel, a failure, a timeout) or had ended.

        Raises:
            TypeError: when ``reason`` is not a str or None.
        """
        check_cancel_reason("RunHandle.cancel", reason)
        if self._task.done():
            return False
        return self._control.cancel(reason or "cancelled through RunHandle.cancel()")

    def done(self) -> bool:
        """Whether the run has finished (callbacks included)."""
        return self._task.done()

    def result(self) -> RunResult:
        """The ``RunResult`` of a finished run.

        Raises:
            asyncio.InvalidStateError: when the run has not finished yet.
        """
        return self._task.result()

    def __await__(self) -> Any:
        return self._task.__await__()

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"RunHandle(run_id={self.run_id!r}, {state})"


def start_run(workflow: Workflow, inputs: Mapping[str, Any] | None, **options: Any) -> RunHandle:
    """Validate, then start ``workflow`` as a task of the running loop (see ``Workflow.start``)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        msg = (
            "Workflow.start() needs a running event loop; call it from async code, "
            "or use Workflow.run_sync() from synchronous code"
        )
        raise RuntimeError(msg) from None
    control = RunControl()
    prepared = _prepare(workflow, inputs, control=control, **options)
    state = prepared.state
    task = loop.create_task(_execute(prepared), name=f"flowhooks-run-{state.run_id}")
    # A task cancelled before its first step never runs ``_execute``'s cleanup.
    task.add_done_callback(lambda _: _LIVE.release(state.run_id, state))
    return RunHandle(prepared.state.run_id, task, control)


def _current_state() -> RunState | None:
    ctx = current_run_var.get(None)
    state = ctx._run if ctx is not None else None
    return state if isinstance(state, RunState) else None


def subworkflow_node(child: Workflow, *, name: str | None = None, **options: Any) -> Node:
    """Return a node whose body runs ``child`` as a sub-workflow of the current run."""
    if name is not None and not isinstance(name, str):
        takes = (
            f"Workflow({child.name!r}).as_node(name=...) takes a str (a valid Python identifier)"
        )
        refuse_type(f"{takes} or None", name)
    _reject_unknown_options(options)
    plan = child.plan()
    params = tuple(sorted(plan.inputs))
    required = frozenset(plan.required_inputs)
    node_name = name if name is not None else child.name

    async def run_child(**kwargs: Any) -> dict[str, Any]:
        parent = _current_state()
        resuming = parent.resuming if parent is not None else None
        if resuming is not None and resuming.node_id == node_name:
            # The child was suspended in the parent's store, and resumes as the parent does.
            assert parent is not None
            result = await resume_run(
                child,
                resuming.payload["child_run_id"],
                parent.resume_data,
                store=parent.store,
                force=parent.resume_force,
            )
        else:
            result = await execute_run(child, kwargs)
        if result.status is RunStatus.SUSPENDED and result.suspension is not None:
            # The child waits: so does this node, and with it the parent run (until the
            # child's suspension expires, if it does).
            inner = result.suspension
            expires_in = None
            if inner.expires_at is not None:
                expires_in = max((inner.expires_at - datetime.now(UTC)).total_seconds(), 1e-6)
            raise Suspend(
                inner.reason,
                {"child_run_id": result.run_id, "node_id": inner.node_id, "payload": inner.payload},
                expires_in=expires_in,
            )
        result.raise_for_status()
        return dict(result.outputs)

    run_child.__name__ = node_name
    run_child.__qualname__ = f"{child.name}.as_node"
    setattr(run_child, SUBWORKFLOW_ATTRIBUTE, child)  # cluster runners run it in the driver
    return Node(
        run_child,
        name=node_name,
        params=params,
        required=required,
        is_async=True,
        **options,
    )
