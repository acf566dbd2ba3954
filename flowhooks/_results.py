"""What a run produces: ``RunResult`` and ``NodeResult``.

``NodeResult`` is a slotted class (one per node per run, on the hot path);
timestamps are kept as ``perf_counter()`` readings (one clock read serves both
the timestamp and the duration) and turned into UTC datetimes on access,
through the wall-clock offset its run took when it started. (The monotonic
clock does not count time the machine spends suspended, so in a run that
spans a suspend, later node timestamps lag the wall clock by that time.)
``RunResult`` is a dataclass with a never-failing ``to_dict()`` for webhooks
and history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flowhooks._errors import WorkflowCancelled, WorkflowFailed, WorkflowSuspended
from flowhooks._events import ErrorInfo, NodeStatus, RunStatus, error_to_json
from flowhooks._serialize import safe_text, to_jsonable

_PENDING = NodeStatus.PENDING  # a module constant: reading an enum member is slow


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _error(error: ErrorInfo | None) -> Any:
    return None if error is None else error_to_json(error)


class NodeResult:
    """The outcome of one node within one run.

    Attributes:
        node_id: the node's name.
        status: ``pending``, ``running``, ``succeeded``, ``failed``,
            ``skipped`` or ``cancelled``.
        attempts: how many attempts started (0 for a skipped node).
        inputs: the keyword arguments of its last attempt (``node_start``'s
            ``input_data``); ``None`` before it started.
        output: the return value, when it succeeded.
        error: the last attempt's ``ErrorInfo``, when it failed.
    """

    __slots__ = (
        "_ended",
        "_offset",
        "_started",
        "attempts",
        "duration",
        "error",
        "inputs",
        "node_id",
        "output",
        "status",
    )

    def __init__(self, node_id: str, clock_offset: float = 0.0) -> None:
        """``clock_offset``: wall-clock time minus ``perf_counter()`` when the run started."""
        self.node_id = node_id
        self.status: NodeStatus = _PENDING
        self.attempts = 0
        self.inputs: dict[str, Any] | None = None
        self.output: Any = None
        self.error: ErrorInfo | None = None
        self.duration: float | None = None
        self._started: float | None = None
        self._ended: float | None = None
        self._offset = clock_offset

    @property
    def started_at(self) -> datetime | None:
        """When the first attempt started (UTC)."""
        return None if self._started is None else _dt(self._started + self._offset)

    @property
    def ended_at(self) -> datetime | None:
        """When the node reached its final status (UTC)."""
        return None if self._ended is None else _dt(self._ended + self._offset)

    def to_dict(self) -> dict[str, Any]:
        """Return the node's result as JSON-ready data (never raises)."""
        return {
            "node_id": safe_text(self.node_id),
            "status": self.status.value,
            "attempts": self.attempts,
            "inputs": to_jsonable(self.inputs),
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "duration": self.duration,
            "output": to_jsonable(self.output),
            "error": _error(self.error),
        }

    def __repr__(self) -> str:
        return (
            f"NodeResult(node_id={self.node_id!r}, status={self.status.value!r}, "
            f"attempts={self.attempts}, duration={self.duration!r})"
        )


@dataclass(frozen=True)
class Suspension:
    """Where and why a run was suspended (``RunResult.suspension``).

    Attributes:
        node_id: the node that raised ``Suspend`` (in a parent run, the node
            running the suspended sub-workflow).
        reason: the reason given to ``Suspend``.
        payload: the payload given to ``Suspend``.
        expires_at: when the suspended run can no longer be resumed (UTC), or ``None``.
    """

    node_id: str
    reason: str
    payload: Any = None
    expires_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the suspension as JSON-ready data (never raises)."""
        return {
            "node_id": safe_text(self.node_id),
            "reason": safe_text(self.reason),
            "payload": to_jsonable(self.payload),
            "expires_at": _iso(self.expires_at),
        }


@dataclass(eq=False)
class RunResult:
    """The outcome of one run; ``run`` returns it instead of raising.

    Call ``raise_for_status()`` to turn a failed or cancelled run into an
    exception.
    """

    run_id: str
    workflow_name: str
    status: RunStatus
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    nodes: dict[str, NodeResult]
    error: ErrorInfo | None = None
    final_node: str | None = None
    cancel_reason: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration: float = 0.0
    parent_run_id: str | None = None
    resource_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    suspension: Suspension | None = None
    state: dict[str, Any] = field(default_factory=dict)
    resumed_from: str | None = None

    @property
    def succeeded(self) -> bool:
        """Whether the run succeeded."""
        return self.status is RunStatus.SUCCEEDED

    def raise_for_status(self) -> RunResult:
        """Return ``self`` when the run succeeded, else raise.

        Raises:
            WorkflowFailed: the run failed; the failing exception is its ``__cause__``.
            WorkflowCancelled: the run was cancelled.
            WorkflowSuspended: the run was suspended.
        """
        if self.status is RunStatus.FAILED:
            where = f" at node {self.final_node!r}" if self.final_node else ""
            detail = f": {self.error.type}: {self.error.message}" if self.error else ""
            msg = f"workflow {self.workflow_name!r} run {self.run_id} failed{where}{detail}"
            cause = self.error.exception if self.error else None
            raise WorkflowFailed(msg, self) from cause
        if self.status is RunStatus.CANCELLED:
            reason = f": {self.cancel_reason}" if self.cancel_reason else ""
            msg = f"workflow {self.workflow_name!r} run {self.run_id} was cancelled{reason}"
            raise WorkflowCancelled(msg, self)
        if self.status is RunStatus.SUSPENDED and self.suspension is not None:
            s = self.suspension
            msg = (
                f"workflow {self.workflow_name!r} run {self.run_id} is suspended at node "
                f"{s.node_id!r}: {s.reason}"
            )
            raise WorkflowSuspended(msg, self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready data (never raises).

        Every part is capped on its own (inputs, outputs, each node's inputs,
        output and error, metadata, state, and every text), so the whole is
        bounded by the cap times the number of parts.
        """
        return {
            "run_id": safe_text(self.run_id),
            "workflow_name": safe_text(self.workflow_name),
            "status": self.status.value,
            "inputs": to_jsonable(self.inputs),
            "outputs": to_jsonable(self.outputs),
            "error": _error(self.error),
            "nodes": {safe_text(name): n.to_dict() for name, n in self.nodes.items()},
            "final_node": safe_text(self.final_node),
            "cancel_reason": safe_text(self.cancel_reason),
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat(),
            "duration": self.duration,
            "parent_run_id": safe_text(self.parent_run_id),
            "resource_id": safe_text(self.resource_id),
            "metadata": to_jsonable(self.metadata),
            "suspension": self.suspension.to_dict() if self.suspension else None,
            "state": to_jsonable(self.state),
            "resumed_from": safe_text(self.resumed_from),
        }
