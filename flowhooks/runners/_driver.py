"""Driver side of the cluster runners: ``ClusterRunner``, the part Dask and Ray share.

A cluster runner overrides only where a node body executes (``submit``): the
run's events, retries, timeouts and cancellation stay in the driver, the same
as for every runner. For each attempt it pickles the node's arguments and a
``RunSnapshot`` itself (``pack_task``, so what cannot travel is named), sends
them to the engine with the body, awaits the engine's result, dispatches the
custom events the body sent (in order, before the node's ``node_end``),
applies what the body asked of the run (a cancel; a suspending body's
``ctx.state`` changes), and returns the output or raises the body's
exception. Sub-workflow nodes run in the driver.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import cloudpickle

from flowhooks._context import current_run_var
from flowhooks._errors import WorkflowError
from flowhooks._resume import SUBWORKFLOW_ATTRIBUTE
from flowhooks._runner import Runner
from flowhooks._serialize import exception_text
from flowhooks.runners._errors import worker_error
from flowhooks.runners._remote import Outcome, RunSnapshot

if TYPE_CHECKING:
    from flowhooks._context import RunContext
    from flowhooks._node import Node
    from flowhooks._workflow import Workflow


def runs_in_driver(node: Node) -> bool:
    """Whether ``node`` runs in the driver rather than on a worker (a sub-workflow node)."""
    return hasattr(node.fn, SUBWORKFLOW_ATTRIBUTE)


class ClusterRunner(Runner):
    """Base of runners whose node bodies run on a cluster's workers.

    A subclass implements ``open``/``aclose`` and ``_execute`` (send one
    attempt, await its pickled ``Outcome``; on cancellation, ask the engine to
    drop the task and re-raise at once).
    """

    engine: str = "cluster"
    """The engine's name, for messages."""

    def check(self, workflow: Workflow, outputs: Iterable[str] | None = None) -> None:
        """Raise ``WorkflowError`` naming the first node whose function cannot be pickled.

        Args:
            workflow: the workflow to check.
            outputs: check only the nodes a run with this ``outputs=`` executes
                (those nodes and their ancestors); ``None`` for every node.

        Runs are checked the same way before their first event.
        """
        names = workflow.plan(outputs).order if outputs is not None else workflow.nodes
        for name in names:
            n = workflow.nodes[name]
            if runs_in_driver(n):
                continue
            try:
                cloudpickle.dumps(n.fn)
            except Exception as exc:
                msg = (
                    f"node {name!r} cannot run on {self.engine} workers: its function "
                    f"cannot be pickled with cloudpickle ({type(exc).__name__}: {exc}). "
                    "A node function travels to the workers with everything it refers "
                    "to; make it refer to picklable values only (open locks, sockets, "
                    "clients and files inside the node instead)"
                )
                raise WorkflowError(msg) from exc

    async def submit(self, node: Node, kwargs: dict[str, Any]) -> Any:
        """Run one attempt of ``node`` on a worker (a sub-workflow node: in the driver)."""
        if runs_in_driver(node):
            return await super().submit(node, kwargs)
        if not self.is_open:
            msg = f"{type(self).__name__} is not open: use 'async with runner:' or a run"
            raise RuntimeError(msg)
        ctx = current_run_var.get()
        task = pack_task(node, kwargs, ctx, self.engine)
        payload = await self._execute(node, task)
        try:
            outcome: Outcome = cloudpickle.loads(payload)
        except Exception as exc:
            msg = (
                f"the result of node {node.name!r} came back from a {self.engine} worker "
                f"but cannot be unpickled in the driver ({type(exc).__name__}: {exc}); "
                "make the classes it holds importable in the driver too"
            )
            raise RuntimeError(msg) from exc
        for warning in outcome.warnings:
            ctx.logger.warning("{warning}", warning=warning)
        for name, data in outcome.events:
            await ctx.emit(name, data)
        if outcome.state_changes or outcome.state_removed:  # a suspending body's changes
            ctx.state.update(outcome.state_changes)
            for key in outcome.state_removed:
                ctx.state.pop(key, None)
        if outcome.cancel_requested and ctx.cancel(outcome.cancel_reason):
            # The run's own stop cancels this node's task: the node ends cancelled, as
            # when a body in the driver cancels its run.
            await asyncio.sleep(0)
        if outcome.ok:
            return outcome.value
        raise _failure(node, outcome, self.engine)

    async def _execute(self, node: Node, task: bytes) -> bytes:
        """Run ``run_attempt(node.fn, task, node.is_async)`` on a worker."""
        raise NotImplementedError


def pack_task(node: Node, kwargs: dict[str, Any], ctx: RunContext, engine: str) -> bytes:
    """Pickle what a worker needs for one attempt of ``node``: its arguments and a snapshot.

    Pickled here, in the driver, so that what cannot travel is named: an
    argument or a ``ctx.state`` value that cannot be pickled fails the attempt
    with a ``TypeError`` naming it; a run input the node does not take that
    cannot be pickled is left out of ``current_run().inputs`` on the worker.

    Raises:
        TypeError: naming the node and the argument or state key that cannot be pickled.
    """
    state = ctx.state
    state_blob: bytes | None = None
    if state:
        try:
            state_blob = cloudpickle.dumps(state)
        except Exception:  # named below, after the node's own arguments
            state_blob = None
    snapshot = _snapshot(ctx, node, kwargs, state_blob)
    if state_blob is not None or not state:
        try:
            task: bytes = cloudpickle.dumps((kwargs, snapshot))
        except Exception:  # find which part, below
            pass
        else:
            return task
    for name, value in kwargs.items():
        if (problem := _unpicklable(value)) is not None:
            source = (
                f"the output of node {name!r}" if name in snapshot.dependencies else "a run input"
            )
            msg = (
                f"node {node.name!r} cannot run on a {engine} worker: its argument {name!r} "
                f"({source}, {_kind(value)}) cannot be pickled with cloudpickle ({problem}). "
                "A node's arguments travel to its worker: pass picklable values (data, paths, "
                "keys) and open locks, connections and clients inside the node"
            )
            raise TypeError(msg)
    for key, value in list(state.items()):
        if (problem := _unpicklable(value)) is not None:
            msg = (
                f"node {node.name!r} cannot run on a {engine} worker: ctx.state[{key!r}] "
                f"({_kind(value)}) cannot be pickled with cloudpickle ({problem}). The run's "
                "state travels to the workers with every node: keep locks, connections and "
                "clients out of ctx.state (open them inside the node, or keep them in a handler)"
            )
            raise TypeError(msg)
    if state and state_blob is None:  # each value pickles, the dict as a whole does not
        msg = (
            f"node {node.name!r} cannot run on a {engine} worker: ctx.state cannot be pickled "
            "with cloudpickle as a whole; keep plain, picklable values in it"
        )
        raise TypeError(msg)
    inputs = {k: v for k, v in snapshot.inputs.items() if _unpicklable(v) is None}
    snapshot = replace(snapshot, inputs=inputs)
    for field_name, what in (("metadata", "the run's metadata"), ("resume_data", "resume data")):
        if (problem := _unpicklable(getattr(snapshot, field_name))) is not None:
            msg = (
                f"node {node.name!r} cannot run on a {engine} worker: {what} cannot be "
                f"pickled with cloudpickle ({problem}); it travels to the workers with the "
                "node, so it must hold picklable values only"
            )
            raise TypeError(msg)
    try:
        task = cloudpickle.dumps((kwargs, snapshot))
    except Exception as exc:
        msg = (
            f"node {node.name!r} cannot run on a {engine} worker: what it needs of the run "
            f"cannot be pickled with cloudpickle ({type(exc).__name__}: {exc})"
        )
        raise TypeError(msg) from exc
    return task


def _unpicklable(value: Any) -> str | None:
    """Why ``value`` cannot be pickled, or ``None`` when it can."""
    try:
        cloudpickle.dumps(value)
    except Exception as exc:
        return f"{type(exc).__name__}: {exception_text(exc)}"
    return None


def _kind(value: Any) -> str:
    """``"a dict"``, ``"a _thread.lock"``: the value's class, for an error message."""
    cls = type(value)
    module = "" if cls.__module__ == "builtins" else f"{cls.__module__}."
    return f"a {module}{cls.__qualname__}"


def _snapshot(
    ctx: RunContext, node: Node, kwargs: dict[str, Any], state: bytes | None
) -> RunSnapshot:
    outputs = ctx.outputs
    run = getattr(ctx, "_run", None)
    results = getattr(run, "nodes", None)
    result = results.get(node.name) if isinstance(results, Mapping) else None
    attempt = getattr(result, "attempts", 1) or 1
    return RunSnapshot(
        run_id=ctx.run_id,
        workflow_name=ctx.workflow_name,
        node_id=node.name,
        attempt=attempt,
        inputs=dict(ctx.inputs),
        metadata=ctx.metadata,
        resource_id=ctx.resource_id,
        parent_run_id=ctx.parent_run_id,
        parent_node_id=ctx.parent_node_id,
        started_at=ctx.started_at,
        node_count=ctx.node_count,
        state=state,
        dependencies=tuple(name for name in kwargs if name in outputs),
        resume_data=ctx.resume_data,  # in the node's task: the data, if it is the resumed node
        resumed_from=ctx.resumed_from,
    )


def _failure(node: Node, outcome: Outcome, engine: str) -> Exception:
    """The exception a failed attempt raises in the driver."""
    if outcome.cancelled:
        msg = f"the {engine} task of node {node.name!r} was dropped on the cluster"
        return RuntimeError(msg)
    original = outcome.value
    where = f"on worker {outcome.worker}" if outcome.worker else "on a worker"
    if isinstance(original, Exception):
        original.add_note(f"raised by node {node.name!r} {where}:\n{outcome.error_traceback}")
        return original
    kind = "a BaseException" if isinstance(original, BaseException) else "an exception"
    message = outcome.error_message or f"{kind} {outcome.error_type} was raised on a worker"
    error = worker_error(
        message,
        outcome.error_type,
        original if isinstance(original, BaseException) else None,
        outcome.error_traceback,
    )
    error.add_note(
        f"node {node.name!r} raised {outcome.error_type} {where}; it comes back as a node "
        f"failure (WorkerError). Worker traceback:\n{outcome.error_traceback}"
    )
    return error


def check_resources(resources: Mapping[str, float] | None) -> dict[str, float] | None:
    """Validate ``resources=``: resource name -> amount (finite, >= 0), or ``None``."""
    if resources is None:
        return None
    if not isinstance(resources, Mapping):
        msg = f"resources= takes a mapping of resource name -> amount, got {resources!r}"
        raise TypeError(msg)
    checked: dict[str, float] = {}
    for name, amount in resources.items():
        if not isinstance(name, str) or not name:
            msg = f"resources= takes resource names as non-empty str, got {name!r}"
            raise TypeError(msg)
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            msg = f"resources[{name!r}] takes a number, got {amount!r}"
            raise TypeError(msg)
        if not math.isfinite(amount) or amount < 0:
            msg = f"resources[{name!r}] takes a finite amount >= 0, got {amount!r}"
            raise ValueError(msg)
        checked[name] = float(amount)
    return checked
