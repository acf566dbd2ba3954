"""Driver side of the cluster runners: ``ClusterRunner``, the part Dask and Ray share.

A cluster runner overrides only where a node body executes (``submit``): the
run's events, retries, timeouts and cancellation stay in the driver, the same
as for every runner. For each attempt it sends the body to the engine with a
``RunSnapshot``, awaits the engine's result, dispatches the custom events the
body sent (in order, before the node's ``node_end``), and returns the output
or raises the body's exception. Sub-workflow nodes run in the driver.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import cloudpickle

from flowhooks._context import current_run_var
from flowhooks._errors import WorkflowError
from flowhooks._resume import SUBWORKFLOW_ATTRIBUTE
from flowhooks._runner import Runner
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

    def check(self, workflow: Workflow) -> None:
        """Raise ``WorkflowError`` naming the first node whose function cannot be pickled.

        Runs are checked the same way before their first event.
        """
        for name, n in workflow.nodes.items():
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
        snapshot = _snapshot(ctx, node, kwargs)
        payload = await self._execute(node, kwargs, snapshot)
        try:
            outcome: Outcome = cloudpickle.loads(payload)
        except Exception as exc:
            msg = (
                f"the result of node {node.name!r} came back from a {self.engine} worker "
                f"but cannot be unpickled in the driver ({type(exc).__name__}: {exc}); "
                "make the classes it holds importable in the driver too"
            )
            raise RuntimeError(msg) from exc
        for name, data in outcome.events:
            await ctx.emit(name, data)
        if outcome.ok:
            return outcome.value
        raise _failure(node, outcome, self.engine)

    async def _execute(self, node: Node, kwargs: dict[str, Any], snapshot: RunSnapshot) -> bytes:
        """Run ``run_attempt(node.fn, kwargs, snapshot, node.is_async)`` on a worker."""
        raise NotImplementedError


def _snapshot(ctx: RunContext, node: Node, kwargs: dict[str, Any]) -> RunSnapshot:
    outputs = ctx.outputs
    state = getattr(ctx, "state", None)
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
        state=state if isinstance(state, dict) else None,
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
