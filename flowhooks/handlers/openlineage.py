"""``OpenLineageCallback``: OpenLineage run events for every run and every node attempt.

Part of ``flowhooks.handlers``; needs the ``openlineage`` extra
(``openlineage-python``). It builds the events on the event loop and hands
them to the client's transport on a ``DeliveryThread``, so a slow or silent
lineage backend costs a run at most ``deadline`` seconds.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, final

import flowhooks
from flowhooks import BaseCallbackHandler, CircuitBreaker, ErrorInfo, Event, Redaction, redact_text
from flowhooks.handlers._delivery_thread import DeliveryThread
from flowhooks.handlers._event_args import context_of, given_event
from flowhooks.handlers._extras import require
from flowhooks.handlers._validate import check_str, positive_seconds, reject_type

require("openlineage.client", extra="openlineage", handler="OpenLineageCallback")

from openlineage.client.client import OpenLineageClient  # noqa: E402
from openlineage.client.event_v2 import Job, Run, RunEvent, RunState  # noqa: E402
from openlineage.client.facet_v2 import (  # noqa: E402
    JobFacet,
    RunFacet,
    error_message_run,
    job_type_job,
    parent_run,
    processing_engine_run,
)
from openlineage.client.transport.transport import Transport  # noqa: E402

__all__ = ["OpenLineageCallback", "lineage_run_id"]

RUN_ID_NAMESPACE: Final = uuid.uuid5(
    uuid.NAMESPACE_URL, "https://flowhooks.readthedocs.io/openlineage"
)
"""The uuid5 namespace of the OpenLineage run ids derived from flowhooks run ids."""

_INTEGRATION: Final = "FLOWHOOKS"
_ENDS: Final = {
    "succeeded": RunState.COMPLETE,
    "failed": RunState.FAIL,
    "crashed": RunState.FAIL,
    "cancelled": RunState.ABORT,
    "suspended": RunState.ABORT,
}
"""A run's status -> the event that ends its OpenLineage run (ABORT for anything else)."""


def lineage_run_id(run_id: str, node_id: str | None = None, attempt: int | None = None) -> str:
    """Return the OpenLineage run id (a UUID) of a flowhooks run, or of one node attempt.

    A run id that is already a UUID (flowhooks' own ids are) is used as is, in
    its canonical dashed form, so the two ids are the same run; any other run
    id gives ``uuid5(RUN_ID_NAMESPACE, run_id)``. A node attempt gives
    ``uuid5(RUN_ID_NAMESPACE, "<run uuid>/<node_id>/<attempt>")``. The ids are
    stable: anyone can compute them from the flowhooks ids.

    Raises:
        TypeError: when ``run_id`` is not a str, ``node_id`` not a str or
            None, or ``attempt`` not an int or None.
    """
    if type(run_id) is not str:
        check_str("run_id", run_id)
    if node_id is not None and type(node_id) is not str:
        check_str("node_id", node_id, allow_none=True)
    if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int)):
        reject_type("attempt", "an int >= 1 or None", attempt)
    try:
        run_uuid = str(uuid.UUID(run_id))
    except ValueError:
        run_uuid = str(uuid.uuid5(RUN_ID_NAMESPACE, run_id))
    if node_id is None:
        return run_uuid
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"{run_uuid}/{node_id}/{attempt or 1}"))


@dataclass(slots=True)
class _Attempt:
    """A node attempt whose OpenLineage run has started and not ended."""

    run_uuid: str
    job: str


@dataclass(slots=True)
class _Run:
    """What one flowhooks run needs until its end event."""

    run_uuid: str
    job: str
    root: parent_run.Root  # the top of this run's hierarchy (itself for a top-level run)
    parent: parent_run.ParentRunFacet | None
    error: ErrorInfo | None = None  # a run-level error (the run timeout)
    started: bool = True  # False: its START was not sent here, so neither is its end
    attempts: dict[tuple[str, int], _Attempt] = field(default_factory=dict)


@final
class OpenLineageCallback(BaseCallbackHandler):
    """Sends OpenLineage run events: one OpenLineage run per flowhooks run and per node attempt.

    * A workflow run is the job ``<workflow name>``: ``START`` at
      ``workflow_start``; ``COMPLETE`` when it succeeded, ``FAIL`` when it
      failed (with the ``errorMessage`` facet of the run's error), ``ABORT``
      when it was cancelled or suspended.
    * A node attempt is the job ``<workflow name>.<node>``: ``START`` at
      ``node_start``, ``COMPLETE`` at ``node_end``, ``FAIL`` at its ``error``
      (also an attempt that will be retried: the retry is a new OpenLineage
      run), ``ABORT`` at the run's end when it was cancelled. Its ``parent``
      run facet points at the workflow run.
    * A sub-workflow run's ``parent`` facet points at the parent's node
      attempt that runs it (or the parent run); ``root`` is the top-level run.
    * Run ids are UUIDs derived from flowhooks' ids (``lineage_run_id``);
      every run carries the ``processing_engine`` facet and every job the
      ``jobType`` facet (integration ``FLOWHOOKS``, ``WORKFLOW`` or ``NODE``).
    * The ``errorMessage`` facet's message and stack trace are redacted
      (``redact``): credentials in URLs, assignments and ``Bearer``/``Basic``
      values become ``***``.

    Events are handed to the client's transport on a thread of their own, in
    order; the run waits for each at most ``deadline`` seconds (see
    ``DeliveryThread``): a backend that never answers costs a run one deadline.
    A transport error within the deadline raises from the handler, so the
    manager logs and counts it; the run goes on.

    Args:
        namespace: the OpenLineage job namespace, e.g. ``"orders-pipelines"``.
        transport: an ``openlineage`` ``Transport`` (``HttpTransport``,
            ``ConsoleTransport``, ``FileTransport``, ...). ``None``: the
            client's own configuration (``openlineage.yml``,
            ``OPENLINEAGE_URL``, ``OPENLINEAGE__TRANSPORT__*``, see its docs).
        deadline: seconds a run waits at most for one event's delivery.
        producer: the ``producer`` URI of the events.
        max_queue: events that may wait for a slow backend before new ones
            are dropped (with a warning).
        redact: ``True`` (the process-wide policy, ``flowhooks.redaction()``),
            ``False`` (error texts as they are), key names to add to the
            process-wide policy, or a ``flowhooks.Redaction``.

    Raises:
        TypeError: for an argument of the wrong type (``namespace=5``,
            ``deadline="5"``, ``producer=5``, a ``transport`` that is not one);
            those that raised ``ValueError`` before still are one too.
        ValueError: for an empty ``namespace`` or a ``deadline`` that is not a
            positive number of seconds.
    """

    breaker = CircuitBreaker()  # a network service: skipped for a while when it keeps failing

    def __init__(
        self,
        namespace: str,
        transport: Transport | None = None,
        *,
        deadline: float = 5.0,
        producer: str | None = None,
        max_queue: int = 1000,
        redact: bool | Redaction | Iterable[str] = True,
    ) -> None:
        self.redact = Redaction.coerce(redact)
        if not isinstance(namespace, str):
            reject_type("namespace", "a non-empty str", namespace)
        if not namespace.strip():
            msg = f"namespace must be a non-empty str, got {namespace!r}"
            raise ValueError(msg)
        if transport is not None and not isinstance(transport, Transport):
            msg = (
                "transport must be an openlineage.client.transport.Transport instance "
                f"(HttpTransport, ConsoleTransport, FileTransport, ...), got {transport!r}"
            )
            raise TypeError(msg)
        self.deadline = positive_seconds("deadline", deadline)
        check_str("producer", producer, allow_none=True)
        self.namespace = namespace
        self.producer = producer or f"https://pypi.org/project/flowhooks/{flowhooks.__version__}/"
        self.client = OpenLineageClient(transport=transport)
        self.delivery = DeliveryThread("flowhooks-openlineage", max_queue=max_queue)
        self._engine = processing_engine_run.ProcessingEngineRunFacet(
            version=flowhooks.__version__, name="flowhooks", producer=self.producer
        )
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    # -- runs ---------------------------------------------------------------------------

    async def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Start the workflow's OpenLineage run (under its parent's, for a sub-workflow)."""
        event = given_event(event, "OpenLineageCallback", "on_workflow_start")
        run_uuid = lineage_run_id(workflow_id)
        job = event.workflow_name
        parent = self._parent_of(event)
        root = parent.root if parent is not None and parent.root is not None else None
        if root is None:
            root = parent_run.Root(
                run=parent_run.RootRun(runId=run_uuid),
                job=parent_run.RootJob(namespace=self.namespace, name=job),
            )
        run = _Run(run_uuid=run_uuid, job=job, root=root, parent=parent)
        with self._lock:
            self._runs[workflow_id] = run
        facets: dict[str, RunFacet] = {"processing_engine": self._engine}
        if parent is not None:
            facets["parent"] = parent
        await self._send(RunState.START, event, run_uuid, job, "WORKFLOW", facets)

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Abort the attempts still open (cancelled), then end the workflow's run."""
        event = given_event(event, "OpenLineageCallback", "on_workflow_end")
        with self._lock:
            run = self._runs.pop(workflow_id, None)
        if run is None:
            return
        # An attempt still open ended without an event of its own: cancelled (or suspended).
        # Each is sent on its own: one that fails must not cost the others, nor the run's end.
        failed: Exception | None = None
        for attempt in list(run.attempts.values()):
            facets = self._node_facets(run)
            try:
                await self._send(
                    RunState.ABORT, event, attempt.run_uuid, attempt.job, "NODE", facets
                )
            except Exception as exc:
                failed = failed or exc
        run.attempts.clear()
        if not run.started:
            if failed is not None:
                raise failed
            return
        ctx = context_of(workflow_id)
        result = ctx.result if ctx is not None else None
        state = _ENDS.get(event.status or "", RunState.ABORT)
        facets = {"processing_engine": self._engine}
        if run.parent is not None:
            facets["parent"] = run.parent
        if state is RunState.FAIL:
            error = result.error if result is not None and result.error is not None else run.error
            facets["errorMessage"] = self._error_facet(error, event)
        await self._send(state, event, run.run_uuid, run.job, "WORKFLOW", facets)
        if failed is not None:
            raise failed  # after the run's own end was sent

    # -- nodes --------------------------------------------------------------------------

    async def on_node_start(
        self, node_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Start the node attempt's OpenLineage run, a child of the workflow's."""
        event = given_event(event, "OpenLineageCallback", "on_node_start")
        attempt = event.attempt or 1
        with self._lock:
            run = self._runs.get(event.run_id)
            if run is None:  # outside a run this handler saw start: a run of its own
                run = self._orphan(event)
            job = f"{run.job}.{node_id}"
            opened = _Attempt(lineage_run_id(event.run_id, node_id, attempt), job)
            run.attempts[(node_id, attempt)] = opened
        await self._send(
            RunState.START, event, opened.run_uuid, job, "NODE", self._node_facets(run)
        )

    async def on_node_end(
        self, node_id: str, output_data: Any, *, event: Event | None = None
    ) -> None:
        """Complete the node attempt's OpenLineage run."""
        event = given_event(event, "OpenLineageCallback", "on_node_end")
        run, attempt = self._close_attempt(event.run_id, node_id, event.attempt)
        if run is None or attempt is None:
            return
        await self._send(
            RunState.COMPLETE, event, attempt.run_uuid, attempt.job, "NODE", self._node_facets(run)
        )

    async def on_error(self, error_info: ErrorInfo, *, event: Event | None = None) -> None:
        """Fail the node attempt's OpenLineage run; keep a run-level error for the run's end."""
        event = given_event(event, "OpenLineageCallback", "on_error")
        node_id = event.node_id if event.node_id is not None else error_info.node_id
        if node_id is None:
            with self._lock:
                run = self._runs.get(event.run_id)
                if run is not None:
                    run.error = error_info
            return
        run, attempt = self._close_attempt(event.run_id, node_id, event.attempt)
        if run is None or attempt is None:
            return
        facets = self._node_facets(run)
        facets["errorMessage"] = self._error_facet(error_info, event)
        await self._send(RunState.FAIL, event, attempt.run_uuid, attempt.job, "NODE", facets)

    # -- lifecycle ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Wait up to ``deadline`` for queued events, then close the client's transport."""
        await self.delivery.drain(self.deadline)
        await self.delivery.send(
            lambda: self.client.close(self.deadline), deadline=self.deadline, what="close"
        )

    def __repr__(self) -> str:
        return f"OpenLineageCallback(namespace={self.namespace!r}, open_runs={len(self._runs)})"

    # -- helpers ------------------------------------------------------------------------

    def _parent_of(self, event: Event) -> parent_run.ParentRunFacet | None:
        """The ``parent`` facet of a sub-workflow run: the parent's node attempt, else its run."""
        if event.parent_run_id is None:
            return None
        with self._lock:
            parent = self._runs.get(event.parent_run_id)
            if parent is None:  # a parent this handler does not watch: nothing to point at
                return None
            ctx = context_of(event.run_id)
            node_id = ctx.parent_node_id if ctx is not None else None
            attempts = [a for (n, _), a in parent.attempts.items() if n == node_id]
        run_uuid, job = (
            (attempts[-1].run_uuid, attempts[-1].job)
            if attempts
            else (
                parent.run_uuid,
                parent.job,
            )
        )
        return parent_run.ParentRunFacet(
            run=parent_run.Run(runId=run_uuid),
            job=parent_run.Job(namespace=self.namespace, name=job),
            root=parent.root,
            producer=self.producer,
        )

    def _orphan(self, event: Event) -> _Run:
        """Track node events of a run whose start this handler did not see (called locked)."""
        run_uuid = lineage_run_id(event.run_id)
        run = _Run(
            run_uuid=run_uuid,
            job=event.workflow_name,
            root=parent_run.Root(
                run=parent_run.RootRun(runId=run_uuid),
                job=parent_run.RootJob(namespace=self.namespace, name=event.workflow_name),
            ),
            parent=None,
            started=False,
        )
        self._runs[event.run_id] = run
        return run

    def _close_attempt(
        self, run_id: str, node_id: str, attempt: int | None
    ) -> tuple[_Run | None, _Attempt | None]:
        """Forget an attempt that ended; ``(None, None)`` when it was never started here."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None, None
            opened = run.attempts.pop((node_id, attempt or 1), None)
            if opened is None:  # attempt unknown: the latest open attempt of that node
                for key in reversed(list(run.attempts)):
                    if key[0] == node_id:
                        opened = run.attempts.pop(key)
                        break
            return run, opened

    def _node_facets(self, run: _Run) -> dict[str, RunFacet]:
        """The run facets of a node attempt: its engine and its parent, the workflow run."""
        parent = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=run.run_uuid),
            job=parent_run.Job(namespace=self.namespace, name=run.job),
            root=run.root,
            producer=self.producer,
        )
        return {"processing_engine": self._engine, "parent": parent}

    def _error_facet(
        self, error: ErrorInfo | None, event: Event
    ) -> error_message_run.ErrorMessageRunFacet:
        """The ``errorMessage`` facet of a failure (the run's status when no error is known)."""
        if error is None:
            message = redact_text(
                f"workflow {event.workflow_name!r} run {event.run_id} {event.status}", self.redact
            )
            return error_message_run.ErrorMessageRunFacet(
                message=message, programmingLanguage="python", producer=self.producer
            )
        trace = redact_text(error.stack_trace, self.redact) if error.stack_trace else None
        return error_message_run.ErrorMessageRunFacet(
            message=redact_text(f"{error.type}: {error.message}", self.redact),
            programmingLanguage="python",
            stackTrace=trace,
            producer=self.producer,
        )

    async def _send(
        self,
        state: RunState,
        event: Event,
        run_uuid: str,
        job: str,
        job_type: str,
        facets: dict[str, RunFacet],
    ) -> None:
        """Build one run event and deliver it through the client, bounded by the deadline."""
        job_facets: dict[str, JobFacet] = {
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH",
                integration=_INTEGRATION,
                jobType=job_type,
                producer=self.producer,
            )
        }
        run_event = RunEvent(
            eventType=state,
            eventTime=event.timestamp.isoformat(),
            run=Run(runId=run_uuid, facets=facets),
            job=Job(namespace=self.namespace, name=job, facets=job_facets),
            producer=self.producer,
            inputs=[],
            outputs=[],
        )
        await self.delivery.send(
            lambda: self.client.emit(run_event),
            deadline=self.deadline,
            what=f"{state.value} of {job!r}",
        )
