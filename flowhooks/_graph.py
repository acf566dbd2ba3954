"""The workflow graph, pure and synchronous: ``RunPlan`` and how one is built.

Used by the definition (``Workflow.plan``, ``validate``, ``to_mermaid``) and
by every run. Nothing here knows about events, handlers or runners: it turns a
mapping of nodes into a topological order (each wave in registration order),
finds a cycle's path, closes an ``outputs=`` selection over its ancestors and
lists the inputs the selected nodes take.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from flowhooks._errors import CycleError, MissingInputError, WorkflowError
from flowhooks._node import Node


@dataclass(frozen=True, slots=True)
class RunPlan:
    """The static part of a run, computed once per workflow and ``outputs=`` subset.

    Attributes:
        order: node names in deterministic topological order.
        deps: node -> the nodes it waits for (parameter and ``depends_on`` edges).
        dependents: node -> the nodes waiting for it, in run order.
        indegree: node -> number of dependencies.
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


def edges(nodes: Mapping[str, Node], name: str) -> tuple[str, ...]:
    """The nodes ``name`` waits for: data dependencies first, then ``depends_on`` ones."""
    n = nodes[name]
    data = tuple(p for p in n.params if p in nodes and p != name)
    return data + tuple(d for d in n.depends_on if d not in data)


def check_names(workflow: str, nodes: Mapping[str, Node]) -> None:
    """Raise ``WorkflowError`` for an empty graph or an unknown ``depends_on`` name."""
    if not nodes:
        msg = f"workflow {workflow!r} has no nodes; pass nodes=[...] or use @wf.node"
        raise WorkflowError(msg)
    for n in nodes.values():
        unknown = [d for d in n.depends_on if d not in nodes]
        if unknown:
            known = ", ".join(sorted(nodes))
            msg = (
                f"node {n.name!r} of workflow {workflow!r} depends_on unknown "
                f"node(s) {unknown!r}{_hint(unknown, nodes)}; known nodes: {known}"
            )
            raise WorkflowError(msg)
        if n.name in n.depends_on:
            msg = f"workflow {workflow!r} has a cycle: {n.name} -> {n.name}"
            raise CycleError(msg, [n.name, n.name])


def selection(workflow: str, outputs: Iterable[str] | None) -> frozenset[str] | None:
    """Normalise ``outputs=``: ``None`` (every node), one name, or an iterable of names.

    Raises:
        TypeError: for anything that is not a name or an iterable of names.
        ValueError: for an empty selection, which would run nothing.
    """
    if outputs is None:
        return None
    if isinstance(outputs, str):
        return frozenset((outputs,))
    if isinstance(outputs, bytes | Mapping) or not isinstance(outputs, Iterable):
        msg = (
            f"outputs= takes a node name or a list of node names of workflow {workflow!r}, "
            f"got {outputs!r}"
        )
        raise TypeError(msg)
    names = tuple(outputs)
    bad = [o for o in names if not isinstance(o, str)]
    if bad:
        msg = f"outputs= takes node names (str) of workflow {workflow!r}, got {bad[0]!r}"
        raise TypeError(msg)
    if not names:
        msg = (
            f"outputs=[] selects no node of workflow {workflow!r}, so the run would do nothing; "
            "pass the names of the nodes whose results you want, or omit outputs= to run all"
        )
        raise ValueError(msg)
    return frozenset(names)


def closure(workflow: str, nodes: Mapping[str, Node], outputs: frozenset[str] | None) -> set[str]:
    """The nodes ``outputs`` need: those names and every ancestor (all nodes for ``None``).

    Raises:
        WorkflowError: naming the unknown ``outputs`` names and the closest known ones.
    """
    if outputs is None:
        return set(nodes)
    unknown = sorted(o for o in outputs if o not in nodes)
    if unknown:
        msg = (
            f"outputs= names unknown node(s) {unknown!r} of workflow {workflow!r}"
            f"{_hint(unknown, nodes)}; known nodes: {', '.join(nodes)}"
        )
        raise WorkflowError(msg)
    wanted: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            stack.extend(edges(nodes, name))
    return wanted


def topological_order(
    workflow: str, deps: Mapping[str, tuple[str, ...]], dependents: Mapping[str, list[str]]
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
    cycle = _cycle_path(deps, {name for name, count in waiting.items() if count})
    msg = f"workflow {workflow!r} has a cycle: {' -> '.join(cycle)}"
    raise CycleError(msg, cycle)


def _cycle_path(deps: Mapping[str, tuple[str, ...]], stuck: set[str]) -> list[str]:
    """One cycle among ``stuck`` nodes, in feeding order, its first node repeated last.

    Every stuck node waits for another stuck node: walking back along
    dependencies from any of them must come round to a node already seen.
    """
    name = next(n for n in deps if n in stuck)
    path: dict[str, None] = {}
    while name not in path:
        path[name] = None
        name = next(d for d in deps[name] if d in stuck)
    walked = list(path)
    cycle = [*walked[walked.index(name) :], name]
    cycle.reverse()  # walked from dependent to dependency
    return cycle


def build_run_plan(
    workflow: str, nodes: Mapping[str, Node], outputs: frozenset[str] | None
) -> RunPlan:
    """Build the plan of a run of ``outputs`` (``None``: every node) over ``nodes``."""
    wanted = closure(workflow, nodes, outputs)
    deps = {name: edges(nodes, name) for name in nodes if name in wanted}
    dependents: dict[str, list[str]] = {name: [] for name in deps}
    for name, ds in deps.items():
        for d in ds:
            dependents[d].append(name)
    order = topological_order(workflow, deps, dependents)
    position = {name: i for i, name in enumerate(order)}
    for waiting in dependents.values():  # in run order, as the runners start them
        waiting.sort(key=position.__getitem__)
    inputs: dict[str, list[str]] = {}
    required: dict[str, list[str]] = {}
    for name in order:
        n = nodes[name]
        for p in n.params:
            if p in nodes and p != name:
                continue
            inputs.setdefault(p, []).append(name)
            if p in n.required:
                required.setdefault(p, []).append(name)
    return RunPlan(
        order=tuple(order),
        deps=MappingProxyType({k: tuple(v) for k, v in deps.items()}),
        dependents=MappingProxyType({k: tuple(dependents[k]) for k in order}),
        indegree=MappingProxyType({k: len(v) for k, v in deps.items()}),
        inputs=MappingProxyType({k: tuple(v) for k, v in inputs.items()}),
        required_inputs=MappingProxyType({k: tuple(v) for k, v in required.items()}),
        steps=tuple(nodes[name] for name in order),
        successors=tuple(tuple(position[d] for d in dependents[name]) for name in order),
        waits=tuple(len(deps[name]) for name in order),
    )


def check_inputs(workflow: str, inputs: Mapping[str, Any], plan: RunPlan) -> None:
    """Raise ``MissingInputError`` naming every required input missing from ``inputs``."""
    if not plan.required_inputs:
        return
    missing = sorted(name for name in plan.required_inputs if name not in inputs)
    if missing:
        given = [n for n in inputs if isinstance(n, str) and n not in plan.required_inputs]
        detail = "; ".join(
            f"{name!r} (needed by {', '.join(plan.required_inputs[name])})"
            + missing_input_hint(name, given, plan.order)
            for name in missing
        )
        example = ", ".join(repr(m) + ": ..." for m in missing)
        msg = (
            f"workflow {workflow!r} is missing required input(s): {detail}. "
            f"Pass them to run(), e.g. run({{{example}}})"
        )
        raise MissingInputError(msg, missing)


def missing_input_hint(missing: str, given: Iterable[str], nodes: Iterable[str]) -> str:
    """A suffix for a missing input's name: " (given as 'x'?)" when an input that no node
    takes looks like it, else " (a typo for the node 'x'?)" when a node's name does (a
    parameter meant to take that node's result)."""
    close = difflib.get_close_matches(missing, list(given), n=1)
    if close:
        return f" (given as {close[0]!r}?)"
    close = difflib.get_close_matches(missing, list(nodes), n=1)
    return f" (a typo for the node {close[0]!r}?)" if close else ""


def _hint(unknown: list[str], nodes: Iterable[str]) -> str:
    """A " (did you mean 'x'?)" suffix for the first unknown name with a close match."""
    known = list(nodes)
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            return f" (did you mean {close[0]!r}?)"
    return ""
