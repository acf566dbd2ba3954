"""What run-end handlers share: the run an event is for, closing open attempts, nested runs.

A cancelled attempt ends with no event (SPEC §2), so a handler that tracks
attempts sees it start and never end. At ``workflow_end`` such an attempt is
closed with the node's final status from the run's ``RunResult`` when the
handler runs inside that run, else as ``cancelled``.

``RunReporter`` is the base of handlers that report whole runs (webhook,
notification): it recognises a sub-workflow run whose parent they also watch.
"""

from __future__ import annotations

from typing import Any

from flowhooks import (
    BaseCallbackHandler,
    Event,
    EventType,
    NodeResult,
    NodeStatus,
    RunContext,
    RunResult,
    current_run,
)
from flowhooks.handlers._validate import check_flag

_UNFINISHED = frozenset({NodeStatus.PENDING, NodeStatus.RUNNING})


def run_context_for(run_id: str) -> RunContext | None:
    """Return the current run's context when it is run ``run_id``, else ``None``.

    Handlers use it to reach the ``RunContext`` (and, while ``workflow_end``
    is dispatched, its ``result``) of the run an event belongs to; an event
    triggered by hand, or for another run, gets ``None``.
    """
    ctx = current_run(None)
    if ctx is None or ctx.run_id != run_id:
        return None
    return ctx


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


class RunReporter(BaseCallbackHandler):
    """Base of handlers that report whole runs (webhook, notification).

    A sub-workflow run that ends inside a run the handler also watches is
    skipped unless ``subworkflows`` is true: its outcome is part of the
    parent's. A handler attached only to the child workflow sees no parent
    start, so it reports the child's runs.
    """

    def __init__(self, *, subworkflows: bool = False) -> None:
        self.subworkflows = check_flag("subworkflows", subworkflows)
        self._open_runs: set[str] = set()  # runs seen to start and not yet end

    async def on_workflow_start(self, workflow_id: str, input_data: dict[str, Any]) -> None:
        """Remember the run, to recognise its sub-workflow runs when they end."""
        self._open_runs.add(workflow_id)

    def _run_to_report(
        self, workflow_id: str, output_data: dict[str, Any], event: Event | None
    ) -> Event | None:
        """The ``workflow_end`` event to report, or ``None`` for a nested run to skip."""
        if event is None:
            event = Event.from_hook(EventType.WORKFLOW_END, workflow_id, output_data)
        open_runs = self._open_runs
        open_runs.discard(event.run_id)
        if not self.subworkflows and event.parent_run_id in open_runs:
            return None
        return event
