"""Workflow definition: ``Workflow``, its validation and its static run plan (no running here).

Dependencies come from parameter names: a parameter named like another node
receives that node's return value; any other parameter is a workflow input.
Everything that can be checked without running is checked as early as
possible, with errors that say what is wrong, where, and how to fix it.
The graph itself is ``_graph``'s; running is ``_launch``'s (``Workflow.run``
delegates there, through a deferred import: the one import circle left).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Unpack, overload

from flowhooks._blocking import DEFAULT_GRACE, run_blocking
from flowhooks._combined import as_manager
from flowhooks._errors import CycleError, InvalidOptionError, WorkflowError, refuse_type
from flowhooks._graph import RunPlan, build_run_plan, check_inputs, check_names, selection
from flowhooks._handler import BaseCallbackHandler
from flowhooks._manager import CallbackManager
from flowhooks._node import (
    InvalidCallbackError,
    Node,
    NodeOptions,
    _check_function_callback,
    node,
    options_signature,
)
from flowhooks._resume import SUBWORKFLOW_ATTRIBUTE

if TYPE_CHECKING:
    from flowhooks._launch import RunHandle
    from flowhooks._results import RunResult
    from flowhooks._resume import RunStore
    from flowhooks._runner import Runner

Callbacks = BaseCallbackHandler | Iterable[BaseCallbackHandler] | CallbackManager | None


def _node_items(name: str, nodes: object) -> list[Callable[..., Any]]:
    """``Workflow(nodes=...)`` as a list, or an ``InvalidOptionError`` saying what it takes."""
    if nodes is None:
        return []
    if isinstance(nodes, str | bytes | Mapping) or not isinstance(nodes, Iterable):
        refuse_type(f"Workflow({name!r}) nodes= takes an iterable of nodes or functions", nodes)
    items: list[Callable[..., Any]] = list(nodes)
    for item in items:
        if not callable(item):
            msg = (
                f"Workflow({name!r}) nodes= takes nodes or functions, "
                f"got {item!r} ({type(item).__name__}) among them"
            )
            raise InvalidOptionError(msg)
    return items


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
        on_workflow_suspend: ``f(result)``, after a run was suspended (``result.suspension``).

    Raises:
        WorkflowError: for duplicate node names, a bad name or a callback that
            cannot take the documented arguments.
        TypeError: for an argument of the wrong type (``name`` not a str,
            ``nodes`` not an iterable of nodes or functions); also a
            ``WorkflowError``.
    """

    _nesting_checked = -1  # (instances pickled before it existed read this)

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
        on_workflow_suspend: Callable[..., Any] | None = None,
    ) -> None:
        if not isinstance(name, str):
            refuse_type("Workflow needs a non-empty name (a str)", name)
        if not name.strip():
            msg = f"Workflow needs a non-empty name, got {name!r}"
            raise WorkflowError(msg)
        if not isinstance(description, str):
            refuse_type(f"Workflow({name!r}) description= must be a str", description)
        items = _node_items(name, nodes)
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
            ("on_workflow_suspend", on_workflow_suspend),
        ):
            _check_function_callback(fn, where=f"Workflow({name!r}) {label}", args=("result",))
        self.on_workflow_complete = on_workflow_complete
        self.on_workflow_failure = on_workflow_failure
        self.on_workflow_cancel = on_workflow_cancel
        self.on_workflow_suspend = on_workflow_suspend
        self._nodes: dict[str, Node] = {}
        self._plans: dict[frozenset[str] | None, RunPlan] = {}  # None: the whole graph
        self._nesting_checked = -1  # the _graph_changes count this workflow was checked at
        for item in items:
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
        _graph_changes[0] += 1  # any workflow may hold this one as a sub-workflow
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

    node.__signature__ = options_signature(node)  # type: ignore[attr-defined]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled and deep-copied without its cached run plans (the next run rebuilds them)."""
        state = self.__dict__.copy()
        state["_plans"] = {}
        state["_nesting_checked"] = -1
        return state

    def __copy__(self) -> Workflow:
        """A shallow copy shares the nodes, and so the plans cached for them."""
        twin = type(self).__new__(type(self))
        twin.__dict__.update(self.__dict__)
        return twin

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

    def validate(self) -> Workflow:
        """Check the graph: unknown ``depends_on`` names and cycles. Returns ``self``.

        Raises:
            WorkflowError: naming the node and the unknown dependency.
            CycleError: naming the cycle's nodes in order.
        """
        self.plan()  # the whole graph's plan: built only for a valid graph
        return self

    def plan(self, outputs: Iterable[str] | None = None) -> RunPlan:
        """Return the static run plan for all nodes, or for ``outputs`` and their ancestors.

        Raises:
            WorkflowError: for unknown ``outputs`` names (and see ``validate``).
            TypeError: when ``outputs`` is not a node name or an iterable of them.
            ValueError: for an empty ``outputs`` selection.
        """
        key = selection(self.name, outputs)
        if self._nesting_checked != _graph_changes[0]:
            # Again after any workflow changed: a sub-workflow may have come to hold this one.
            _refuse_containing_itself(self, [], set())
            self._nesting_checked = _graph_changes[0]
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        if key is None:
            check_names(self.name, self._nodes)
        elif None not in self._plans:
            self.plan()  # a graph with a cycle anywhere cannot run any part of it
        plan = build_run_plan(self.name, self._nodes, key)
        self._plans[key] = plan
        return plan

    def check_inputs(self, inputs: Mapping[str, Any], plan: RunPlan) -> None:
        """Raise ``MissingInputError`` naming every required input missing from ``inputs``;
        warn about inputs that no node of the workflow takes (a typo, most often)."""
        check_inputs(self.name, inputs, plan)
        if inputs.keys() - plan.inputs.keys():  # else all taken: the usual case, no more work
            self._warn_unknown_inputs(inputs)

    def _warn_unknown_inputs(self, inputs: Mapping[str, Any]) -> None:
        import difflib

        from loguru import logger

        takes = self.plan().inputs  # the whole workflow's, not only a selection's
        unknown = [name for name in inputs if name not in takes]
        if not unknown:
            return  # taken by nodes outside this run's outputs= selection
        known = [name for name in takes if isinstance(name, str)]
        named = ", ".join(
            repr(name)
            + (
                f" (did you mean {close[0]!r}?)"
                if isinstance(name, str) and (close := difflib.get_close_matches(name, known, 1))
                else ""
            )
            for name in unknown[:10]
        )
        logger.warning(
            "workflow {!r} takes no input {}; it is ignored (the workflow takes: {})",
            self.name,
            named,
            ", ".join(sorted(known)) or "no inputs",
        )

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
        store: RunStore | str | None = None,
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
            TypeError: before any event, for an argument of the wrong type
                (``inputs`` not a mapping, ``runner=`` not a ``Runner``
                instance, ``metadata=`` not a mapping...); also a
                ``WorkflowError`` where it was one before.
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
            store=store,
        )

    def run_sync(self, inputs: Mapping[str, Any] | None = None, **options: Any) -> RunResult:
        """Run the workflow from synchronous code (takes the same options as ``run``).

        From the main thread, SIGINT and SIGTERM cancel the run (``cancel_reason``
        ``"SIGINT"``/``"SIGTERM"``) unless the application installed handlers of
        its own; once its callbacks completed, this raises ``KeyboardInterrupt``
        (SIGINT) or ``SystemExit(143)`` (SIGTERM). A second signal ends the wait.

        Raises:
            RuntimeError: when called while an event loop is running in this
                thread; use ``await wf.run(...)`` there.
        """
        self._no_running_loop("run_sync")
        self._check_options("run_sync", options, self.run)
        return run_blocking(lambda: self.run(inputs, **options), grace=_grace_of(options))

    def _check_options(
        self, method: str, options: Mapping[str, Any], target: Callable[..., Any]
    ) -> None:
        """Refuse a keyword ``target`` does not take, naming ``method`` (not ``target``)
        and, for a workflow input given as a keyword, where inputs go."""
        import inspect

        takes = inspect.signature(target).parameters
        for name in options:
            if name in takes and takes[name].kind is inspect.Parameter.KEYWORD_ONLY:
                continue
            if name in self.inputs:
                hint = f"; the workflow's inputs go in a mapping: {method}({{{name!r}: ...}})"
            else:
                keywords = [p for p, v in takes.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
                hint = f" (it takes {', '.join(keywords)})"
            msg = f"Workflow.{method}() got an unexpected keyword argument {name!r}{hint}"
            raise TypeError(msg)

    def _no_running_loop(self, method: str) -> None:
        """Raise ``RuntimeError`` when ``method`` (a sync entry point) is called inside a loop."""
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop running: the usual case
        msg = (
            f"Workflow.{method}() cannot be used inside a running event loop; "
            f"use the async form ('await workflow.{method.removesuffix('_sync')}(...)') instead "
            f"(workflow {self.name!r})"
        )
        raise RuntimeError(msg)

    async def resume(
        self,
        run_id: str,
        data: Any = None,
        *,
        store: RunStore | str | None = None,
        callbacks: Callbacks = None,
        runner: Runner | None = None,
        force: bool = False,
        **options: Any,
    ) -> RunResult:
        """Resume the suspended run ``run_id`` as a new run, and return its ``RunResult``.

        The new run (``resumed_from`` = ``run_id``) starts with ``workflow_start``
        and the original inputs; nodes that completed before the suspension are
        restored (``succeeded``, their outputs, no events, not run again); the
        node that suspended runs again with ``current_run().resume_data`` =
        ``data``.

        Args:
            run_id: the suspended run's id (``RunResult.run_id``).
            data: what the suspended node gets as ``current_run().resume_data``.
            store: where the run was suspended: the same ``store=`` given to
                ``run`` (``None``: this process's memory).
            callbacks: handlers for the resumed run, as for ``run``.
            runner: the runner, as for ``run``.
            force: resume even though the workflow's graph changed since.
            **options: ``run_id=`` for the new run, ``timeout=``.

        Raises:
            NotResumable: unknown or not suspended run, already resumed (the
                message names the run that resumed it), expired, or a changed
                graph without ``force=True``. A refused resume consumes nothing.
        """
        from flowhooks._launch import resume_run

        return await resume_run(
            self,
            run_id,
            data,
            store=store,
            force=force,
            callbacks=callbacks,
            runner=runner,
            **options,
        )

    def resume_sync(self, run_id: str, data: Any = None, **options: Any) -> RunResult:
        """``resume`` from synchronous code (takes the same options)."""

        self._no_running_loop("resume_sync")
        return run_blocking(lambda: self.resume(run_id, data, **options), grace=_grace_of(options))

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

        Raises:
            TypeError: for a ``name`` that is not a str, or an unknown option.
            WorkflowError: for a bad option value (as ``node`` does).
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


_graph_changes = [0]
"""Nodes added to any workflow so far: a workflow checks again that it does not contain
itself (``_refuse_containing_itself``) when this has moved since its last check."""


def _refuse_containing_itself(
    workflow: Workflow, path: list[tuple[Workflow, str]], cleared: set[int]
) -> None:
    """Raise ``CycleError`` when ``workflow`` runs itself through sub-workflow nodes.

    ``path`` holds the workflows (and their nodes) above ``workflow``; ``cleared`` the
    ids of those already checked below. A run of such a workflow would start runs within
    runs until the stack or the memory ran out.
    """
    for above, (outer, _) in enumerate(path):
        if outer is workflow:
            steps = [f"{w.name}.{node}" for w, node in path[above:]] + [workflow.name]
            msg = (
                f"workflow {workflow.name!r} contains itself through sub-workflow nodes "
                f"({' -> '.join(steps)}); a sub-workflow cannot run the workflow it is in"
            )
            raise CycleError(msg, steps)
    if id(workflow) in cleared:
        return
    for name, item in workflow._nodes.items():
        try:
            child = getattr(item.fn, SUBWORKFLOW_ATTRIBUTE, None)
        except Exception:  # a callable object whose __getattr__ raises: not a sub-workflow
            continue
        if isinstance(child, Workflow):
            _refuse_containing_itself(child, [*path, (workflow, name)], cleared)
    cleared.add(id(workflow))


def _grace_of(options: dict[str, Any]) -> float | None:
    """The ``cancel_grace`` of the runner a blocking call's run uses (its ``runner=``)."""
    runner = options.get("runner")
    grace = DEFAULT_GRACE if runner is None else getattr(runner, "cancel_grace", DEFAULT_GRACE)
    return grace if grace is None or isinstance(grace, int | float) else DEFAULT_GRACE
