"""What run-end handlers share: closing open attempts, and telling nested runs apart.

A cancelled attempt ends with no event (SPEC §2), so a handler that tracks
attempts sees it start and never end. At ``workflow_end`` such an attempt is
closed with the node's final status from the run's ``RunResult`` when the
handler runs inside that run, else as ``cancelled``.

``OpenRuns`` lets a handler that reports whole runs (webhook, notification)
recognise a sub-workflow run whose parent it also watches.
"""

from __future__ import annotations

from flowhooks._context import run_context_for
from flowhooks._events import NodeStatus
from flowhooks._results import NodeResult, RunResult

_UNFINISHED = frozenset({NodeStatus.PENDING, NodeStatus.RUNNING})


def finished_result(run_id: str) -> RunResult | None:
    """Return run ``run_id``'s ``RunResult`` while its ``workflow_end`` is dispatched.

    ``None`` outside that run (events triggered by hand, another run's events).
    """
    ctx = run_context_for(run_id)
    return ctx.result if ctx is not None else None


def closing_status(result: RunResult | None, node_id: str) -> NodeStatus:
    """Return the status that closes ``node_id``'s open attempt.

    The node's final status in ``result`` when it has one, else ``cancelled``.
    """
    node: NodeResult | None = result.nodes.get(node_id) if result is not None else None
    if node is None or node.status in _UNFINISHED:
        return NodeStatus.CANCELLED
    return node.status


class OpenRuns:
    """The runs a handler has seen start and not yet end."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: set[str] = set()

    def started(self, run_id: str) -> None:
        """Note that run ``run_id`` started."""
        self._ids.add(run_id)

    def ended(self, run_id: str) -> None:
        """Note that run ``run_id`` ended."""
        self._ids.discard(run_id)

    def is_open(self, run_id: str | None) -> bool:
        """Whether run ``run_id`` started and has not ended (``None``: no run)."""
        return run_id is not None and run_id in self._ids
