"""``MetricsCallback``: in-memory counts and durations of runs and nodes.

Part of ``flowhooks.handlers`` (after the runner in the import chain); core
dependencies only. State is keyed by ``run_id`` and ``(run_id, node_id)``, so
one instance can watch many concurrent runs, and a lock makes it safe to
share across threads (several event loops, ``run_in_thread``).
``get_report()`` summarises it; ``get_run(run_id)`` shows one run.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict, final

from flowhooks import BaseCallbackHandler, ErrorInfo, Event
from flowhooks.handlers._run_end import closing_status, finished_result
from flowhooks.handlers._validate import reject_type

__all__ = ["MetricsCallback", "MetricsReport", "NodeMetrics", "NodeSummary", "RunMetrics"]


@dataclass(slots=True)
class NodeMetrics:
    """What is known about one node within one run.

    Attributes:
        node_id: the node's name.
        attempts: attempts started (``node_start`` events).
        successes: attempts that succeeded (``node_end`` events).
        failures: attempts that failed (node ``error`` events, retried or not).
        duration: seconds spent in its attempts, summed over attempts that ended.
        status: ``running``, ``succeeded``, ``retrying`` (the last attempt
            failed and will be retried), ``failed`` or ``cancelled`` (an
            attempt still running, or a retry still pending, when its run
            ended: it was cancelled, which sends no event; inside a run, the
            node's final status from the run's result is used).
    """

    node_id: str
    attempts: int = 0
    successes: int = 0
    failures: int = 0
    duration: float = 0.0
    status: str = "running"
    _started: datetime | None = field(default=None, repr=False)


@dataclass(slots=True)
class RunMetrics:
    """What is known about one run.

    Attributes:
        run_id: the run's id.
        workflow_name: the workflow's name.
        parent_run_id: the parent run, for sub-workflow runs.
        status: ``running`` until ``workflow_end``, then its status
            (``succeeded``, ``failed`` or ``cancelled``).
        duration: the run's duration in seconds, once it ended.
        nodes: node name -> ``NodeMetrics``.
        custom_events: how many custom events the run sent.
    """

    run_id: str
    workflow_name: str = ""
    parent_run_id: str | None = None
    status: str = "running"
    duration: float | None = None
    nodes: dict[str, NodeMetrics] = field(default_factory=dict)
    custom_events: int = 0
    _started: datetime | None = field(default=None, repr=False)
    _counted: bool = field(default=False, repr=False)


class NodeSummary(TypedDict):
    """One entry of ``slowest_nodes``: one node of one run."""

    run_id: str
    workflow_name: str
    node_id: str
    duration: float
    attempts: int
    status: str


class MetricsReport(TypedDict):
    """What ``MetricsCallback.get_report()`` returns; see its docstring for each key."""

    total_workflows: int
    active_workflows: int
    succeeded_workflows: int
    failed_workflows: int
    cancelled_workflows: int
    workflow_failure_rate: float
    avg_workflow_duration: float | None
    max_workflow_duration: float | None
    total_nodes: int
    total_node_attempts: int
    node_successes: int
    node_failures: int
    retries: int
    run_errors: int
    error_rate: float
    avg_node_duration: float | None
    custom_events: int
    slowest_nodes: list[NodeSummary]
    by_node: dict[str, dict[str, Any]]


@dataclass(slots=True)
class _Aggregate:
    """Counts of one node name across runs: ``by_node`` in the report."""

    executions: int = 0
    successes: int = 0
    failures: int = 0
    total_duration: float = 0.0
    max_duration: float = 0.0


@final
class MetricsCallback(BaseCallbackHandler):
    """Counts runs, nodes and errors and times them, in memory.

    Totals are kept for the handler's whole life. Per-run details (each
    node's attempts and durations, used for ``slowest_nodes`` and
    ``get_run``) are kept for the last ``max_runs`` runs that ended, plus
    every run still going; older details are dropped, totals are not.

    Durations come from the events (``Event.duration``); an event without
    one (sent by hand) is timed from the matching start event's timestamp.

    Args:
        max_runs: how many ended runs keep their details; ``None`` keeps all.
        slowest: how many entries ``slowest_nodes`` holds by default.

    Raises:
        TypeError: for a ``max_runs`` or ``slowest`` that is not an int (also
            a ``ValueError``, what it raised before).
        ValueError: for a ``max_runs`` or ``slowest`` below 0.
    """

    def __init__(self, *, max_runs: int | None = 1_000, slowest: int = 5) -> None:
        for name, value, expected in (
            ("max_runs", max_runs, "an int >= 0 or None"),
            ("slowest", slowest, "an int >= 0"),
        ):
            if value is None and name == "max_runs":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                reject_type(name, expected, value)
            if value < 0:
                msg = f"{name} must be 0 or more, got {value!r}"
                raise ValueError(msg)
        self.max_runs = max_runs
        self.slowest = slowest
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self._runs: dict[str, RunMetrics] = {}
            self._ended: OrderedDict[str, None] = OrderedDict()
            self._by_node: dict[tuple[str, str], _Aggregate] = {}
            self._workflows = 0
            self._statuses: dict[str, int] = {}
            self._workflow_durations = 0.0
            self._timed_workflows = 0
            self._max_workflow_duration: float | None = None
            self._nodes = 0
            self._attempts = 0
            self._node_successes = 0
            self._node_failures = 0
            self._retries = 0
            self._run_errors = 0
            self._node_durations = 0.0
            self._timed_attempts = 0
            self._custom = 0

    # -- recording ----------------------------------------------------------------------

    def _run(self, run_id: str, event: Event | None, *, count: bool = False) -> RunMetrics:
        run = self._runs.get(run_id)
        if run is None:
            run = RunMetrics(run_id=run_id)
            self._runs[run_id] = run
        if count and not run._counted:  # runs count from their workflow events only
            run._counted = True
            self._workflows += 1
        if event is not None:
            run.workflow_name = run.workflow_name or event.workflow_name
            run.parent_run_id = run.parent_run_id or event.parent_run_id
        return run

    def _node(self, run: RunMetrics, node_id: str) -> NodeMetrics:
        node = run.nodes.get(node_id)
        if node is None:
            node = NodeMetrics(node_id=node_id)
            run.nodes[node_id] = node
            self._nodes += 1
        return node

    def _node_ended(
        self, run: RunMetrics, node: NodeMetrics, event: Event | None, *, ok: bool
    ) -> None:
        seconds = _seconds(event, node._started)
        agg = self._by_node.setdefault((run.workflow_name, node.node_id), _Aggregate())
        if ok:
            node.successes += 1
            self._node_successes += 1
            agg.successes += 1
        else:
            node.failures += 1
            self._node_failures += 1
            agg.failures += 1
        agg.executions += 1
        if seconds is not None:
            node.duration += seconds
            self._node_durations += seconds
            self._timed_attempts += 1
            agg.total_duration += seconds
            agg.max_duration = max(agg.max_duration, seconds)
        node._started = None

    async def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Count a run and note when it started."""
        with self._lock:
            run = self._run(workflow_id, event, count=True)
            run._started = event.timestamp if event is not None else None

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Record how the run ended and how long it took."""
        with self._lock:
            run = self._run(workflow_id, event, count=True)
            if run.status != "running":  # a second workflow_end for one run: count it once
                return
            run.status = (event.status if event is not None else None) or "ended"
            self._close_open_nodes(run)
            self._statuses[run.status] = self._statuses.get(run.status, 0) + 1
            seconds = _seconds(event, run._started)
            run.duration = seconds
            if seconds is not None:
                self._workflow_durations += seconds
                self._timed_workflows += 1
                if self._max_workflow_duration is None or seconds > self._max_workflow_duration:
                    self._max_workflow_duration = seconds
            self._ended[workflow_id] = None
            self._evict()

    def _close_open_nodes(self, run: RunMetrics) -> None:
        """Give the nodes still ``running`` or ``retrying`` at the run's end their final status.

        A node can end its run ``retrying`` when the run was stopped during its
        retry delay, or when a ``raise_error`` handler vetoed the retry.
        """
        still_open = [node for node in run.nodes.values() if node.status in ("running", "retrying")]
        if not still_open:
            return
        result = finished_result(run.run_id)
        for node in still_open:
            node.status = closing_status(result, node.node_id).value
            node._started = None

    def _evict(self) -> None:
        if self.max_runs is None:
            return
        while len(self._ended) > self.max_runs:
            old, _ = self._ended.popitem(last=False)
            self._runs.pop(old, None)

    async def on_node_start(
        self, node_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Count a node attempt."""
        with self._lock:
            run = self._run(_run_id(event), event)
            node = self._node(run, node_id)
            node.attempts += 1
            node.status = "running"
            node._started = event.timestamp if event is not None else None
            self._attempts += 1

    async def on_node_end(
        self, node_id: str, output_data: Any, *, event: Event | None = None
    ) -> None:
        """Count a successful attempt and its duration."""
        with self._lock:
            run = self._run(_run_id(event), event)
            node = self._node(run, node_id)
            node.status = "succeeded"
            self._node_ended(run, node, event, ok=True)

    async def on_error(self, error_info: ErrorInfo, *, event: Event | None = None) -> None:
        """Count a failed attempt (and whether it is retried), or a run-level error."""
        with self._lock:
            run_id = _run_id(event) or getattr(error_info, "run_id", "")
            run = self._run(run_id, event)
            node_id = event.node_id if event is not None else getattr(error_info, "node_id", None)
            if node_id is None:
                self._run_errors += 1
                return
            will_retry = bool(getattr(error_info, "will_retry", False))
            node = self._node(run, node_id)
            node.status = "retrying" if will_retry else "failed"
            if will_retry:
                self._retries += 1
            self._node_ended(run, node, event, ok=False)

    async def on_custom_event(self, name: str, data: Any, *, event: Event | None = None) -> None:
        """Count a custom event."""
        with self._lock:
            self._custom += 1
            if event is not None and event.run_id:
                self._run(event.run_id, event).custom_events += 1

    # -- reading ------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunMetrics | None:
        """Return the details of one run, or ``None`` if unknown or already dropped."""
        with self._lock:
            return self._runs.get(run_id)

    def get_report(self, *, slowest: int | None = None) -> MetricsReport:
        """Summarise everything recorded so far.

        Keys (durations in seconds):

        * ``total_workflows``: distinct runs (by ``run_id``) that sent
          ``workflow_start`` or ``workflow_end``, ended or not.
        * ``active_workflows``: runs seen without a ``workflow_end`` yet.
        * ``succeeded_workflows``, ``failed_workflows``, ``cancelled_workflows``:
          ended runs by status.
        * ``workflow_failure_rate``: ``failed_workflows`` / runs that ended;
          0.0 when none ended.
        * ``avg_workflow_duration``: mean duration of the runs that ended
          (whatever their status); ``None`` when none ended.
        * ``max_workflow_duration``: the longest of those; ``None`` when none ended.
        * ``total_nodes``: distinct ``(run_id, node_id)`` pairs seen; a node
          retried twice counts once.
        * ``total_node_attempts``: attempts started (``node_start`` events).
        * ``node_successes`` / ``node_failures``: attempts that succeeded /
          failed (a failed attempt that is retried counts as a failure).
        * ``retries``: failed attempts that were retried.
        * ``run_errors``: errors without a node (the run timeout).
        * ``error_rate``: ``node_failures`` / (``node_successes`` +
          ``node_failures``): the share of finished attempts that failed;
          0.0 when no attempt finished. Cancelled attempts are not finished
          attempts.
        * ``avg_node_duration``: mean duration of the finished attempts;
          ``None`` when none finished.
        * ``custom_events``: custom events seen.
        * ``slowest_nodes``: the nodes (one per run and node) with the most
          time spent, summed over their attempts, slowest first, from the
          runs whose details are still kept: dicts with ``run_id``,
          ``workflow_name``, ``node_id``, ``duration``, ``attempts``, ``status``.
        * ``by_node``: per ``"workflow.node"`` across all runs: ``executions``
          (finished attempts), ``successes``, ``failures``, ``avg_duration``,
          ``max_duration``.

        Args:
            slowest: how many ``slowest_nodes`` to list; defaults to the
                handler's ``slowest``.
        """
        top = self.slowest if slowest is None else slowest
        with self._lock:
            ended = sum(self._statuses.values())
            finished = self._node_successes + self._node_failures
            nodes = [
                NodeSummary(
                    run_id=run.run_id,
                    workflow_name=run.workflow_name,
                    node_id=node.node_id,
                    duration=node.duration,
                    attempts=node.attempts,
                    status=node.status,
                )
                for run in self._runs.values()
                for node in run.nodes.values()
            ]
            by_node = {
                f"{wf}.{node}" if wf else node: {
                    "executions": agg.executions,
                    "successes": agg.successes,
                    "failures": agg.failures,
                    "avg_duration": agg.total_duration / agg.executions,
                    "max_duration": agg.max_duration,
                }
                for (wf, node), agg in sorted(self._by_node.items())
            }
            return MetricsReport(
                total_workflows=self._workflows,
                active_workflows=self._workflows - ended,
                succeeded_workflows=self._statuses.get("succeeded", 0),
                failed_workflows=self._statuses.get("failed", 0),
                cancelled_workflows=self._statuses.get("cancelled", 0),
                workflow_failure_rate=self._statuses.get("failed", 0) / ended if ended else 0.0,
                avg_workflow_duration=(
                    self._workflow_durations / self._timed_workflows
                    if self._timed_workflows
                    else None
                ),
                max_workflow_duration=self._max_workflow_duration,
                total_nodes=self._nodes,
                total_node_attempts=self._attempts,
                node_successes=self._node_successes,
                node_failures=self._node_failures,
                retries=self._retries,
                run_errors=self._run_errors,
                error_rate=self._node_failures / finished if finished else 0.0,
                avg_node_duration=(
                    self._node_durations / self._timed_attempts if self._timed_attempts else None
                ),
                custom_events=self._custom,
                slowest_nodes=sorted(nodes, key=lambda n: n["duration"], reverse=True)[:top],
                by_node=by_node,
            )

    def __repr__(self) -> str:
        return f"MetricsCallback(runs={self._workflows}, nodes={self._nodes})"


def _run_id(event: Event | None) -> str:
    return event.run_id if event is not None else ""


def _seconds(event: Event | None, started: datetime | None) -> float | None:
    if event is None:
        return None
    if event.duration is not None:
        return float(event.duration)
    if started is not None:
        return max(0.0, (event.timestamp - started).total_seconds())
    return None
