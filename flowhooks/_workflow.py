"""Workflow definition: ``node``, ``Node`` and ``Workflow`` (no running here).

Dependencies come from parameter names: a parameter named like another node
receives that node's return value; any other parameter is a workflow input.
Everything that can be checked without running is checked as early as
possible, with errors that say what is wrong, where, and how to fix it.
Running lives in ``_runner``; ``Workflow.run`` delegates there.
"""

from __future__ import annotations

import graphlib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from flowhooks._errors import CycleError, MissingInputError, WorkflowError
from flowhooks._handler import BaseCallbackHandler
from flowhooks._manager import CallbackManager
from flowhooks._plan import check_handler

if TYPE_CHECKING:
    from flowhooks._launch import RunHandle
    from flowhooks._results import RunResult
    from flowhooks._runner import Runner

F = TypeVar("F", bound=Callable[..., Any])
Callbacks = BaseCallbackHandler | Iterable[BaseCallbackHandler] | CallbackManager | None


def as_manager(
    callbacks: BaseCallbackHandler | Iterable[BaseCallbackHandler] | Mapping[Any, Any] | None,
    *,
    where: str,
) -> CallbackManager | None:
    """Normalise ``callbacks=`` (a handler, a list of them, or a manager) to a manager.

    Raises:
        TypeError: naming ``where`` and the offending value.
    """
    if callbacks is None:
        return None
    if isinstance(callbacks, CallbackManager):
        return callbacks
    if isinstance(callbacks, BaseCallbackHandler):
        return CallbackManager([callbacks])
    if isinstance(callbacks, Mapping | str | bytes):
        msg = f"{where} takes a handler, a list of handlers or a CallbackManager, got {callbacks!r}"
        raise TypeError(msg)
    try:
        items = list(callbacks)
    except TypeError:
        check_handler(callbacks)  # raises the helpful message
        raise
    manager = CallbackManager()
    for i, item in enumerate(items):
        try:
            manager.add_handler(item)
        except TypeError as exc:
            msg = f"{where}[{i}]: {exc}"
            raise TypeError(msg) from None
    return manager


class InvalidCallbackError(WorkflowError, TypeError):
    """A callback given to ``@node`` or ``Workflow`` cannot be called as documented."""


def _check_function_callback(fn: object, *, where: str, args: Sequence[str]) -> None:
    """Check that ``fn`` is callable with the documented positional ``args``."""
    if fn is None:
        return
    expected = ", ".join(args)
    if not callable(fn):
        msg = f"{where} must be a function taking ({expected}), got {fn!r}"
        raise InvalidCallbackError(msg)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*args)
    except TypeError as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        msg = f"{where}={name}{sig} cannot be called with ({expected}): {exc}"
        raise InvalidCallbackError(msg) from None


def _positive_or_none(value: object, what: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        msg = f"{where}: {what} must be a positive number of seconds or None, got {value!r}"
        raise WorkflowError(msg)
    return float(value)


class Node:
    """One step of a workflow: a function plus how to run it.

    Made by ``@node``; calling a ``Node`` calls its function, so decorated
    functions stay unit-testable.

    Attributes:
        name: the node's name (the function's name unless given).
        fn: the wrapped function.
        params: every parameter name, in signature order.
        required: parameters without a default.
        depends_on: ordering-only dependencies (node names).
    """

    __slots__ = (
        "__wrapped__",
        "backoff",
        "critical",
        "depends_on",
        "fn",
        "is_async",
        "name",
        "on_failure",
        "on_success",
        "params",
        "required",
        "retries",
        "retry_delay",
        "timeout",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        depends_on: str | Iterable[str] = (),
        retries: int = 0,
        retry_delay: float = 0.0,
        backoff: float = 2.0,
        timeout: float | None = None,
        critical: bool = False,
        on_success: Callable[..., Any] | None = None,
        on_failure: Callable[..., Any] | None = None,
        params: Sequence[str] | None = None,
        required: Iterable[str] | None = None,
        is_async: bool | None = None,
    ) -> None:
        if isinstance(fn, Node):
            inner: Callable[..., Any] = fn.fn
            fn = inner
        if not callable(fn):
            msg = f"@node needs a function, got {fn!r}"
            raise WorkflowError(msg)
        node_name = name if name is not None else getattr(fn, "__name__", None)
        if not isinstance(node_name, str) or not node_name.isidentifier():
            msg = (
                f"node name must be a valid Python identifier (it is also the parameter "
                f"name downstream nodes use), got {node_name!r}; pass name='...'"
            )
            raise WorkflowError(msg)
        where = f"@node {node_name!r}"
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            msg = f"{where}: retries must be an int >= 0, got {retries!r}"
            raise WorkflowError(msg)
        if (
            isinstance(retry_delay, bool)
            or not isinstance(retry_delay, int | float)
            or retry_delay < 0
        ):
            msg = f"{where}: retry_delay must be a number of seconds >= 0, got {retry_delay!r}"
            raise WorkflowError(msg)
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or backoff <= 0:
            msg = f"{where}: backoff must be a positive multiplier, got {backoff!r}"
            raise WorkflowError(msg)
        if isinstance(depends_on, str):
            depends_on = (depends_on,)
        deps = tuple(depends_on)
        for dep in deps:
            if not isinstance(dep, str):
                msg = f"{where}: depends_on takes node names (str), got {dep!r}"
                raise WorkflowError(msg)
        _check_function_callback(on_success, where=f"{where} on_success", args=("node_id", "ctx"))
        _check_function_callback(
            on_failure, where=f"{where} on_failure", args=("node_id", "error", "ctx")
        )
        if params is None:
            params, required = _signature_params(fn, where)
        self.fn: Callable[..., Any] = fn
        self.__wrapped__: Callable[..., Any] = fn
        self.name = node_name
        self.params: tuple[str, ...] = tuple(params)
        self.required: frozenset[str] = frozenset(required if required is not None else params)
        self.depends_on = deps
        self.retries = retries
        self.retry_delay = float(retry_delay)
        self.backoff = float(backoff)
        self.timeout = _positive_or_none(timeout, "timeout", where)
        self.critical = bool(critical)
        self.on_success = on_success
        self.on_failure = on_failure
        self.is_async = is_async if is_async is not None else inspect.iscoroutinefunction(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Node({self.name!r}, params={list(self.params)!r})"


def _signature_params(fn: Callable[..., Any], where: str) -> tuple[tuple[str, ...], set[str]]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        msg = f"{where}: cannot read the function's signature ({exc})"
        raise WorkflowError(msg) from None
    params: list[str] = []
    required: set[str] = set()
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL):
            msg = (
                f"{where}: parameter {p.name!r} cannot be passed by name; node functions "
                "receive dependencies and inputs as keyword arguments"
            )
            raise WorkflowError(msg)
        params.append(p.name)
        if p.default is inspect.Parameter.empty:
            required.add(p.name)
    return tuple(params), required


@overload
def node(fn: F, /) -> Node: ...
@overload
def node(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    depends_on: str | Iterable[str] = (),
    retries: int = 0,
    retry_delay: float = 0.0,
    backoff: float = 2.0,
    timeout: float | None = None,
    critical: bool = False,
    on_success: Callable[..., Any] | None = None,
    on_failure: Callable[..., Any] | None = None,
) -> Callable[[Callable[..., Any]], Node]: ...
@overload
def node(
    fn: Callable[..., Any],
    /,
    *,
    name: str | None = None,
    depends_on: str | Iterable[str] = (),
    retries: int = 0,
    retry_delay: float = 0.0,
    backoff: float = 2.0,
    timeout: float | None = None,
    critical: bool = False,
    on_success: Callable[..., Any] | None = None,
    on_failure: Callable[..., Any] | None = None,
) -> Node: ...


def node(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    depends_on: str | Iterable[str] = (),
    retries: int = 0,
    retry_delay: float = 0.0,
    backoff: float = 2.0,
    timeout: float | None = None,
    critical: bool = False,
    on_success: Callable[..., Any] | None = None,
    on_failure: Callable[..., Any] | None = None,
) -> Node | Callable[[Callable[..., Any]], Node]:
    """Turn a function (sync or async) into a workflow ``Node``.

    Usable bare (``@node``), with options (``@node(retries=2)``) or as a call
    (``node(fn, name="load")``).

    Args:
        fn: the function; its parameters name its dependencies and inputs.
        name: the node's name; defaults to the function's name.
        depends_on: extra, ordering-only dependencies (node names).
        retries: how many times a failed attempt is retried.
        retry_delay: seconds before the first retry; attempt *n*'s retry
            waits ``retry_delay * backoff ** (n - 1)``.
        backoff: multiplier of the delay between retries.
        timeout: seconds allowed per attempt.
        critical: errors of this node have severity ``critical`` (when not retried).
        on_success: ``f(node_id, ctx)``, sync or async, after the node succeeded.
        on_failure: ``f(node_id, error, ctx)``, sync or async, after it failed for good.

    Raises:
        WorkflowError: for an invalid option or callback, naming the node.
    """

    def wrap(f: Callable[..., Any]) -> Node:
        return Node(
            f,
            name=name,
            depends_on=depends_on,
            retries=retries,
            retry_delay=retry_delay,
            backoff=backoff,
            timeout=timeout,
            critical=critical,
            on_success=on_success,
            on_failure=on_failure,
        )

    if fn is None:
        return wrap
    return wrap(fn)


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
    """

    order: tuple[str, ...]
    deps: Mapping[str, tuple[str, ...]]
    dependents: Mapping[str, tuple[str, ...]]
    indegree: Mapping[str, int]
    inputs: Mapping[str, tuple[str, ...]]
    required_inputs: Mapping[str, tuple[str, ...]]


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
        self._plans: dict[frozenset[str] | None, RunPlan] = {}
        self._validated = False
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
        self._validated = False
        return item

    @overload
    def node(self, fn: F, /) -> Node: ...
    @overload
    def node(self, fn: None = None, /, **options: Any) -> Callable[[Callable[..., Any]], Node]: ...
    def node(
        self, fn: Callable[..., Any] | None = None, /, **options: Any
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
        if self._validated:
            return self
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
        sorter = graphlib.TopologicalSorter({name: self._edges(name) for name in self._nodes})
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            cycle = list(exc.args[1])  # each node feeds the next one
            msg = f"workflow {self.name!r} has a cycle: {' -> '.join(cycle)}"
            raise CycleError(msg, cycle) from None
        self._validated = True
        return self

    def plan(self, outputs: Iterable[str] | None = None) -> RunPlan:
        """Return the static run plan for all nodes, or for ``outputs`` and their ancestors.

        Raises:
            WorkflowError: for unknown ``outputs`` names (and see ``validate``).
        """
        self.validate()
        key = None if outputs is None else frozenset(outputs)
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        wanted = self._closure(key)
        index = {name: i for i, name in enumerate(self._nodes)}
        deps = {name: self._edges(name) for name in wanted}
        sorter = graphlib.TopologicalSorter(deps)
        sorter.prepare()
        order: list[str] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=index.__getitem__)
            order.extend(ready)
            sorter.done(*ready)
        dependents: dict[str, list[str]] = {name: [] for name in order}
        for name in order:
            for d in deps[name]:
                dependents[d].append(name)
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
            dependents=MappingProxyType({k: tuple(v) for k, v in dependents.items()}),
            indegree=MappingProxyType({k: len(v) for k, v in deps.items()}),
            inputs=MappingProxyType({k: tuple(v) for k, v in inputs.items()}),
            required_inputs=MappingProxyType({k: tuple(v) for k, v in required.items()}),
        )
        self._plans[key] = plan
        return plan

    def _closure(self, outputs: frozenset[str] | None) -> set[str]:
        if outputs is None:
            return set(self._nodes)
        if isinstance(outputs, str):
            outputs = frozenset([outputs])
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
            return asyncio.run(self.run(inputs, **options))
        msg = (
            f"Workflow.run_sync() cannot be used inside a running event loop; "
            f"use 'await workflow.run(...)' (or workflow.start(...)) instead "
            f"(workflow {self.name!r})"
        )
        raise RuntimeError(msg)

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
