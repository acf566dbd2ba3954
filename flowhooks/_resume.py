"""Suspended runs: what is saved when a run suspends, where, and how a resume claims it.

A run that ends ``suspended`` leaves a ``SuspendedRun``: its inputs, the
outputs of its completed nodes, ``ctx.state``, the suspension and a
fingerprint of the workflow's graph. It goes to a ``RunStore``: the
process's own ``MemoryRunStore`` by default (resume in the same process), or
a database (``store="sqlite:///flowhooks.db"``, see ``flowhooks.stores``).

``claim`` is the one atomic step of a resume: the first resume of a run
takes it, any later one gets ``NotResumable`` naming the run that resumed it.
A resume refused after its claim (changed graph, expired) gives the claim
back, so a refused resume consumes nothing.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from flowhooks._errors import NotResumable
from flowhooks._results import Suspension

if TYPE_CHECKING:
    from flowhooks._graph import RunPlan


@dataclass(frozen=True)
class SuspendedRun:
    """The resumable state of one suspended run.

    Attributes:
        run_id: the suspended run's id.
        workflow_name: its workflow's name.
        fingerprint: the graph fingerprint of the workflow it ran (``graph_fingerprint``).
        inputs: the run's inputs.
        outputs: the outputs of the nodes that had succeeded.
        state: ``ctx.state`` at the end of the run.
        suspension: where and why it suspended.
        selection: the ``outputs=`` names it ran, ``None`` for every node.
        resource_id: the run's tenant id.
        metadata: the run's headers.
        resumed_by: the id of the run that resumed it, once claimed.
    """

    run_id: str
    workflow_name: str
    fingerprint: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    state: dict[str, Any]
    suspension: Suspension
    selection: tuple[str, ...] | None = None
    resource_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    resumed_by: str | None = None

    def expired(self, now: datetime | None = None) -> bool:
        """Whether the suspension's ``expires_in`` has run out."""
        expires_at = self.suspension.expires_at
        return expires_at is not None and (now or datetime.now(UTC)) >= expires_at


@runtime_checkable
class RunStore(Protocol):
    """Where suspended runs are kept until resumed."""

    async def save(self, run: SuspendedRun) -> None:
        """Keep ``run`` (a run that just suspended)."""

    async def claim(self, run_id: str, claimant: str) -> SuspendedRun:
        """Take the suspended run ``run_id`` for the resuming run ``claimant``, atomically.

        Raises:
            NotResumable: unknown run, or already claimed (the message names by whom).
        """

    async def unclaim(self, run_id: str, claimant: str) -> None:
        """Give back a claim whose resume was refused before it started."""


class MemoryRunStore:
    """Suspended runs of this process, in memory (the default store).

    Safe to share across threads. A suspended run stays here until it is
    resumed; a process that exits loses them (use a database store for that).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, SuspendedRun] = {}

    async def save(self, run: SuspendedRun) -> None:
        with self._lock:
            self._runs[run.run_id] = run

    async def claim(self, run_id: str, claimant: str) -> SuspendedRun:
        with self._lock:
            saved = self._runs.get(run_id)
            if saved is None:
                raise NotResumable(_unknown(run_id))
            if saved.resumed_by is not None:
                raise NotResumable(_already(run_id, saved.resumed_by))
            claimed = replace(saved, resumed_by=claimant)
            self._runs[run_id] = claimed
            return claimed

    async def unclaim(self, run_id: str, claimant: str) -> None:
        with self._lock:
            saved = self._runs.get(run_id)
            if saved is not None and saved.resumed_by == claimant:
                self._runs[run_id] = replace(saved, resumed_by=None)


def _unknown(run_id: str) -> str:
    return (
        f"run {run_id!r} is not a suspended run this store knows: it never suspended, "
        "or it was suspended in another process without a shared store= "
        "(pass the same store= to run() and resume())"
    )


def _already(run_id: str, by: str) -> str:
    return f"run {run_id!r} was already resumed by run {by!r}; a suspended run resumes once"


SUBWORKFLOW_ATTRIBUTE = "__flowhooks_subworkflow__"
"""Set on the body of a sub-workflow node (``Workflow.as_node``) to the child workflow."""

PROCESS_STORE = MemoryRunStore()
"""The store of runs suspended without ``store=``: resumable in this process only."""


def graph_fingerprint(plan: RunPlan) -> str:
    """A digest of the graph ``plan`` runs: node names, parameters and edges, in order.

    Two workflows with the same fingerprint wire the same node names the same
    way, so a suspended run's outputs fit the resumed run's nodes.
    """
    parts = []
    for name, step in zip(plan.order, plan.steps, strict=True):
        part = f"{name}({','.join(step.params)})<-{','.join(plan.deps[name])}"
        child = getattr(step.fn, SUBWORKFLOW_ATTRIBUTE, None)
        if child is not None:  # a sub-workflow node: its graph is part of the parent's
            part += f"[{graph_fingerprint(child.plan())}]"
        parts.append(part)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
