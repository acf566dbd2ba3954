"""Workflow definition: ``Workflow``, its validation and its static run plan (no running here).

Dependencies come from parameter names: a parameter named like another node
receives that node's return value; any other parameter is a workflow input.
Everything that can be checked without running is checked as early as
possible, with errors that say what is wrong, where, and how to fix it.
Running lives in ``_runner``; ``Workflow.run`` delegates there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Unpack, overload

from flowhooks._errors import CycleError, MissingInputError, WorkflowError
from flowhooks._handler import BaseCallbackHandler
from flowhooks._manager import CallbackManager, as_manager
from flowhooks._node import (
    InvalidCallbackError,
    Node,
    NodeOptions,
    _check_function_callback,
    node,
)

if TYPE_CHECKING:
    from flowhooks._launch import RunHandle
    from flowhooks._results import RunResult
    from flowhooks._runner import Runner

Callbacks = BaseCallbackHandler | Iterable[BaseCallbackHandler] | CallbackManager | None


@dataclass(frozen=True, slots=True)
class RunPlan:
    """The static part of a run, computed once per workflow and ``outputs=`` subset.

    Attributes:
        order: node names in deterministic topological order.
        deps: node -> the nodes it waits for (parameter and ``depends_on`` edges).
        dependents: node -> the nodes waiting for it.
        indegree: node -> number of dependencies (copied per run).
        inputs: input name -> the nodes that take it.
        required_inputs: input name -> the nodes that require it.
        steps: the ``Node`` objects, in ``order``.
        successors: for each position in ``order``, the positions of its dependents.
        waits: for each position in ``order``, its number of dependencies.
    """

    order: tuple[str, ...]
    deps: Mapping[str, tuple[str, ...]]
    dependents: Mapping[str, tuple[str, ...]]
    indegree: Mapping[str, int]
    inputs: Mapping[str, tuple[str, ...]]
    required_inputs: Mapping[str, tuple[str, ...]]
    steps: tuple[Node, ...]
    successors: tuple[tuple[int, ...], ...]
    waits: tuple[int, ...]


class Workflow:
    """A named DAG of nodes, plus the callbacks attached to every run.

    Args:
        name: the workflow's definition name (``Event.workflow_name``).
        nodes: ``Node`` objects or plain functions (wrapped with ``node``).
        description: free text shown by tools.
        callbacks: handler(s) or a ``CallbackManager`` attached to every run.
        on_workflow_complete: ``f(result)``, after a run succeeded.
        on_workflow_failure: ``f(result)``, after a run failed.
        on_workflow_cancel: ``f(result)``, after a run was cancelled.

    Raises:
        WorkflowError: for duplicate node names, a bad name or a callback that
            cannot take the documented arguments.
    """

    def __init__(
        self,
        name: str,
        nodes: Iterable[Node | Callable[..., Any]] | None = None,
        *,
        description: str = "",
        callbacks: Callbacks = None,
        on_workflow_complete: Callable[..., Any] | None = None,
        on_workflow_failure: Callable[..., Any] | None = None,
        on_workflow_cancel: Callable[..., Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            msg = f"Workflow needs a non-empty name, got {name!r}"
            raise WorkflowError(msg)
        self.name = name
        self.description = description
        try:
            self._manager = as_manager(callbacks, where=f"Workflow({name!r}, callbacks=...)")
        except TypeError as exc:
            raise InvalidCallbackError(str(exc)) from None
        for label, fn in (
            ("on_workflow_complete", on_workflow_complete),
            ("on_workflow_failure", on_workflow_failure),
            ("on_workflow_cancel", on_workflow_cancel),
        ):
            _check_function_callback(fn, where=f"Workflow({name!r}) {label}", args=("result",))
        self.on_workflow_complete = on_workflow_complete
        self.on_workflow_failure = on_workflow_failure
        self.on_workflow_cancel = on_workflow_cancel
        self._nodes: dict[str, Node] = {}
        self._plans: dict[frozenset[str] | None, RunPlan] = {}  # None: the whole graph
        for item in nodes or ():
            self.add_node(item if isinstance(item, Node) else Node(item))

    # -- definition -------------------------------------------------------------------

    def add_node(self, item: Node | Callable[..., Any]) -> Node:
        """Register ``item`` (a ``Node``) on this workflow and return it.

        Raises:
            WorkflowError: when a node of that name is already registered.
        """
        if not isinstance(item, Node):
            item = Node(item)
        if item.name in self._nodes:
            msg = (
                f"workflow {self.name!r} already has a node named {item.name!r}; "
                "node names must be unique (pass name='...' to @node to rename one)"
            )
            raise WorkflowError(msg)
        self._nodes[item.name] = item
        self._plans.clear()
        return item

    @overload
    def node(self, fn: Callable[..., Any], /, **options: Unpack[NodeOptions]) -> Node: ...
    @overload
    def node(
        self, fn: None = None, /, **options: Unpack[NodeOptions]
    ) -> Callable[[Callable[..., Any]], Node]: ...
    def node(
        self, fn: Callable[..., Any] | None = None, /, **options: Unpack[NodeOptions]
    ) -> Node | Callable[[Callable[..., Any]], Node]:
        """Decorator like ``flowhooks.node`` that also registers the node on this workflow."""

        def register(f: Callable[..., Any]) -> Node:
            return self.add_node(node(f, **options))

        return register if fn is None else register(fn)

    @property
    def callbacks(self) -> CallbackManager | None:
        """The manager holding the handlers attached to every run (``None`` if none)."""
        return self._manager

    @property
    def nodes(self) -> Mapping[str, Node]:
        """Read-only mapping of node name -> ``Node``, in topological order."""
        plan = self.plan()
        return MappingProxyType({n: self._nodes[n] for n in plan.order})

    @property
    def inputs(self) -> tuple[str, ...]:
        """The names of the inputs the workflow takes (required or not), sorted."""
        return tuple(sorted(self.plan().inputs))

    @property
    def required_inputs(self) -> tuple[str, ...]:
        """The names of the inputs a run must be given, sorted."""
        return tuple(sorted(self.plan().required_inputs))

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, nodes={list(self._nodes)!r})"

    # -- validation -------------------------------------------------------------------

    def _edges(self, name: str) -> tuple[str, ...]:
        n = self._nodes[name]
        data = tuple(p for p in n.params if p in self._nodes and p != name)
        return data + tuple(d for d in n.depends_on if d not in data)

    def validate(self) -> Workflow:
        """Check the graph: unknown ``depends_on`` names and cycles. Returns ``self``.

        Raises:
            WorkflowError: naming the node and the unknown dependency.
            CycleError: naming the cycle's nodes in order.
        """
        self.plan()  # the whole graph's plan: built only for a valid graph
        return self

    def _check_names(self) -> None:
        if not self._nodes:
            msg = f"workflow {self.name!r} has no nodes; pass nodes=[...] or use @wf.node"
            raise WorkflowError(msg)
        for n in self._nodes.values():
            unknown = [d for d in n.depends_on if d not in self._nodes]
            if unknown:
                known = ", ".join(sorted(self._nodes))
                msg = (
                    f"node {n.name!r} of workflow {self.name!r} depends_on unknown "
                    f"node(s) {unknown!r}; known nodes: {known}"
                )
                raise WorkflowError(msg)
            if n.name in n.depends_on:
                msg = f"workflow {self.name!r} has a cycle: {n.name} -> {n.name}"
                raise CycleError(msg, [n.name, n.name])

    def plan(self, outputs: Iterable[str] | None = None) -> RunPlan:
        """Return the static run plan for all nodes, or for ``outputs`` and their ancestors.

        Raises:
            WorkflowError: for unknown ``outputs`` names (and see ``validate``).
        """
        if isinstance(outputs, str):
            outputs = [outputs]
        key = None if outputs is None else frozenset(outputs)
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        if key is None:
            self._check_names()
        elif None not in self._plans:
            self.plan()  # a graph with a cycle anywhere cannot run any part of it
        wanted = self._closure(key)
        deps = {name: self._edges(name) for name in self._nodes if name in wanted}
        dependents: dict[str, list[str]] = {name: [] for name in deps}
        for name, ds in deps.items():
            for d in ds:
                dependents[d].append(name)
        order = self._order(deps, dependents)
        position = {name: i for i, name in enumerate(order)}
        for waiting in dependents.values():  # in run order, as the runners start them
            waiting.sort(key=position.__getitem__)
        inputs: dict[str, list[str]] = {}
        required: dict[str, list[str]] = {}
        for name in order:
            n = self._nodes[name]
            for p in n.params:
                if p in self._nodes and p != name:
                    continue
                inputs.setdefault(p, []).append(name)
                if p in n.required:
                    required.setdefault(p, []).append(name)
        plan = RunPlan(
            order=tuple(order),
            deps=MappingProxyType({k: tuple(v) for k, v in deps.items()}),
            dependents=MappingProxyType({k: tuple(dependents[k]) for k in order}),
            indegree=MappingProxyType({k: len(v) for k, v in deps.items()}),
            inputs=MappingProxyType({k: tuple(v) for k, v in inputs.items()}),
            required_inputs=MappingProxyType({k: tuple(v) for k, v in required.items()}),
            steps=tuple(self._nodes[name] for name in order),
            successors=tuple(tuple(position[d] for d in dependents[name]) for name in order),
            waits=tuple(len(deps[name]) for name in order),
        )
        self._plans[key] = plan
        return plan

    def _order(
        self, deps: dict[str, tuple[str, ...]], dependents: dict[str, list[str]]
    ) -> list[str]:
        """Order ``deps`` wave by wave, each wave in registration order.

        A wave is every node whose dependencies all came in earlier waves.

        Raises:
            CycleError: naming one cycle's nodes, each feeding the next.
        """
        rank = {name: i for i, name in enumerate(deps)}
        waiting = {name: len(ds) for name, ds in deps.items()}
        wave = [name for name, count in waiting.items() if count == 0]
        order: list[str] = []
        while wave:
            order += wave
            ready = []
            for name in wave:
                for dependent in dependents[name]:
                    waiting[dependent] -= 1
                    if waiting[dependent] == 0:
                        ready.append(dependent)
            wave = sorted(ready, key=rank.__getitem__) if len(ready) > 1 else ready
        if len(order) == len(deps):
            return order
        # Every node left waits for another node left: walking back along dependencies
        # from any of them must come round to a node already seen.
        stuck = {name for name, count in waiting.items() if count}
        name = next(n for n in deps if n in stuck)
        path: dict[str, None] = {}
        while name not in path:
            path[name] = None
            name = next(d for d in deps[name] if d in stuck)
        walked = list(path)
        cycle = [*walked[walked.index(name) :], name]
        cycle.reverse()  # walked from dependent to dependency; report in feeding order
        msg = f"workflow {self.name!r} has a cycle: {' -> '.join(cycle)}"
        raise CycleError(msg, cycle)

    def _closure(self, outputs: frozenset[str] | None) -> set[str]:
        if outputs is None:
            return set(self._nodes)
        unknown = sorted(o for o in outputs if o not in self._nodes)
        if unknown:
            known = ", ".join(self._nodes)
            msg = (
                f"outputs= names unknown node(s) {unknown!r} of workflow {self.name!r}; "
                f"known nodes: {known}"
            )
            raise WorkflowError(msg)
        wanted: set[str] = set()
        stack = list(outputs)
        while stack:
            name = stack.pop()
            if name in wanted:
                continue
            wanted.add(name)
            stack.extend(self._edges(name))
        return wanted

    def check_inputs(self, inputs: Mapping[str, Any], plan: RunPlan) -> None:
        """Raise ``MissingInputError`` naming every required input missing from ``inputs``."""
        missing = sorted(name for name in plan.required_inputs if name not in inputs)
        if missing:
            detail = "; ".join(
                f"{name!r} (needed by {', '.join(plan.required_inputs[name])})" for name in missing
            )
            msg = (
                f"workflow {self.name!r} is missing required input(s): {detail}. "
                f"Pass them to run(), e.g. run({{{', '.join(repr(m) + ': ...' for m in missing)}}})"
            )
            raise MissingInputError(msg, missing)

    # -- running (delegated to the runner module) -------------------------------------

    async def run(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        callbacks: Callbacks = None,
        runner: Runner | None = None,
        run_id: str | None = None,
        resource_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        outputs: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> RunResult:
        """Run the workflow and return its ``RunResult`` (a failed node does not raise).

        Returns only after every callback of the run has completed, batched
        and background deliveries and node callbacks included. The one bound
        on that wait is ``close_timeout`` of ``BatchedCallback`` and
        ``BackgroundCallback`` (30 s by default): what a stalled sink or
        handler has not taken by then is delivered after ``run`` returned.

        Raises:
            WorkflowError: before any event, for an invalid graph, missing
                inputs, unknown ``outputs`` or bad ``callbacks``.
            asyncio.CancelledError: when the awaiting task was cancelled,
                after the run's callbacks have run.
        """
        from flowhooks._launch import execute_run

        return await execute_run(
            self,
            inputs,
            callbacks=callbacks,
            runner=runner,
            run_id=run_id,
            resource_id=resource_id,
            metadata=metadata,
            outputs=outputs,
            timeout=timeout,
        )

    def run_sync(self, inputs: Mapping[str, Any] | None = None, **options: Any) -> RunResult:
        """Run the workflow from synchronous code (takes the same options as ``run``).

        Raises:
            RuntimeError: when called while an event loop is running in this
                thread; use ``await wf.run(...)`` there.
        """
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop running: the usual case
        else:
            msg = (
                f"Workflow.run_sync() cannot be used inside a running event loop; "
                f"use 'await workflow.run(...)' (or workflow.start(...)) instead "
                f"(workflow {self.name!r})"
            )
            raise RuntimeError(msg)
        # Outside the ``except`` block, so that errors raised during the run are not
        # chained to the "no running event loop" probe in their tracebacks.
        return asyncio.run(self.run(inputs, **options))

    def start(self, inputs: Mapping[str, Any] | None = None, **options: Any) -> RunHandle:
        """Start a run in the background of the running loop and return its ``RunHandle``.

        Validation errors (graph, inputs, callbacks) are raised here, before
        the run starts.
        """
        from flowhooks._launch import start_run

        return start_run(self, inputs, **options)

    def as_node(self, name: str | None = None, **options: Any) -> Node:
        """Return a node that runs this workflow as a sub-workflow of another.

        The node's parameters are this workflow's inputs, wired by name; it
        returns the child run's ``outputs``. A failed child run fails the node
        with ``WorkflowFailed``; cancelling the parent cancels the child.

        Args:
            name: the node's name; defaults to this workflow's name.
            **options: further ``node`` options (retries, timeout, ...).
        """
        from flowhooks._launch import subworkflow_node

        return subworkflow_node(self, name=name, **options)

    def to_mermaid(self) -> str:
        """Return the DAG as a Mermaid flowchart (``flowchart TD``)."""
        plan = self.plan()
        lines = ["flowchart TD"]
        lines.extend(f'    {name}["{name}"]' for name in plan.order)
        for name in plan.order:
            n = self._nodes[name]
            for dep in plan.deps[name]:
                arrow = "-.->" if dep in n.depends_on and dep not in n.params else "-->"
                lines.append(f"    {dep} {arrow} {name}")
        return "\n".join(lines)
