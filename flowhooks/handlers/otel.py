"""``OpenTelemetryCallback``: a span per run and a child span per node attempt.

Part of ``flowhooks.handlers`` (after the runner in the import chain); needs
the ``otel`` extra (``opentelemetry-api`` only: the application brings the
SDK). Spans are kept by ``run_id``, so one handler can trace many concurrent
runs; sub-workflow runs nest under their parent's spans. Spans follow the
OpenTelemetry conventions: status unset on success, ``ERROR`` with an
``error.type`` attribute on failure, exceptions as span events, CI/CD
pipeline attribute names (``cicd.pipeline.*``) where one fits.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, final

import flowhooks
from flowhooks import (
    BaseCallbackHandler,
    ErrorInfo,
    Event,
    current_run,
    redact_text,
    safe_text,
)
from flowhooks.handlers._extras import require
from flowhooks.handlers._run_end import finished_result

require("opentelemetry.trace", extra="otel", handler="OpenTelemetryCallback")

from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.trace import (  # noqa: E402
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    TracerProvider,
)

__all__ = ["OpenTelemetryCallback"]

_ATTR: Final = "flowhooks"
"""Prefix of the span attributes that no semantic convention covers."""

# OpenTelemetry semantic conventions: CI/CD pipelines (a run is a pipeline run, a
# node attempt a task run) and errors.
PIPELINE_NAME: Final = "cicd.pipeline.name"
PIPELINE_RUN_ID: Final = "cicd.pipeline.run.id"
PIPELINE_RESULT: Final = "cicd.pipeline.result"
TASK_NAME: Final = "cicd.pipeline.task.name"
TASK_RUN_ID: Final = "cicd.pipeline.task.run.id"
TASK_RUN_RESULT: Final = "cicd.pipeline.task.run.result"
ERROR_TYPE: Final = "error.type"

_RESULTS: Final = {
    "succeeded": "success",
    "failed": "failure",
    "cancelled": "cancellation",
}
"""flowhooks statuses as ``cicd.pipeline.result`` values (others have none)."""


def _ns(ts: datetime | None) -> int | None:
    """Return an aware datetime as epoch nanoseconds (what OpenTelemetry takes)."""
    if ts is None:
        return None
    return int(ts.timestamp() * 1_000_000) * 1_000


@dataclass(slots=True)
class _RunSpans:
    span: Span
    workflow_name: str
    # (node_id, attempt) -> span, in start order
    nodes: dict[tuple[str, int | None], Span] = field(default_factory=dict)


@final
class OpenTelemetryCallback(BaseCallbackHandler):
    """Traces runs with OpenTelemetry: one span per run, a child span per node attempt.

    * The run span (``workflow <name>``, kind ``INTERNAL``) starts at
      ``workflow_start`` and ends at ``workflow_end``. Its status is left
      unset unless the run failed: then ``ERROR`` (the run's error as
      description when known) with ``error.type``. A cancelled run gets a
      ``cancelled`` span event. Attributes: ``cicd.pipeline.name`` (the
      workflow), ``cicd.pipeline.run.id``, ``cicd.pipeline.result``
      (``success``, ``failure``, ``cancellation``), ``flowhooks.run_status``
      (every flowhooks status, ``suspended`` included),
      ``flowhooks.parent_run_id``, ``flowhooks.resource_id``,
      ``flowhooks.duration``, ``flowhooks.final_node``.
    * A node span (``node <node_id>``) covers one attempt, from
      ``node_start`` to its ``node_end`` (status unset) or ``error`` (status
      ``ERROR`` with ``error.type``, the exception recorded as an
      ``exception`` span event, attributes ``flowhooks.will_retry`` and
      ``flowhooks.severity``). Attributes: ``cicd.pipeline.task.name`` (the
      node), ``cicd.pipeline.task.run.id`` (``<run id>/<node>/<attempt>``),
      ``cicd.pipeline.task.run.result``, ``cicd.pipeline.name``,
      ``cicd.pipeline.run.id``, ``flowhooks.attempt``,
      ``flowhooks.node_status``. Attempts still open at ``workflow_end``
      (cancelled) end there with ``flowhooks.node_status = "cancelled"``.
    * A run-level error (the run timeout) is recorded on the run span.
    * Custom events become span events on the node's span when the event
      names a running node, else on the run span.
    * A sub-workflow run (``parent_run_id`` set) starts under the parent
      run's span for the node that runs it: the running node named like the
      child workflow, else the parent's only running node, else the parent
      run span itself. A root run starts under the current OpenTelemetry
      context, so a run awaited inside an application span nests under it.

    Span times are the events' timestamps. The spans of one run are kept
    until its ``workflow_end``; ``aclose()`` ends any still open.

    Args:
        tracer: the tracer to use; by default a tracer of ``tracer_provider``
            for the instrumentation scope ``flowhooks`` at flowhooks' version.
        tracer_provider: the provider of that default tracer; defaults to the
            global one (as OpenTelemetry instrumentations do).

    Raises:
        TypeError: when ``tracer`` is not a Tracer or ``tracer_provider`` not a
            TracerProvider.
    """

    def __init__(
        self, tracer: Tracer | None = None, *, tracer_provider: TracerProvider | None = None
    ) -> None:
        if tracer is not None and not callable(getattr(tracer, "start_span", None)):
            msg = (
                f"OpenTelemetryCallback(tracer) takes an OpenTelemetry Tracer (or leave it out, "
                f"or pass tracer_provider=...), got {tracer!r}"
            )
            raise TypeError(msg)
        if tracer_provider is not None and not callable(
            getattr(tracer_provider, "get_tracer", None)
        ):
            msg = (
                "OpenTelemetryCallback(tracer_provider=...) takes an OpenTelemetry "
                f"TracerProvider or None, got {tracer_provider!r}"
            )
            raise TypeError(msg)
        if tracer is None:
            tracer = trace.get_tracer(
                "flowhooks", flowhooks.__version__, tracer_provider=tracer_provider
            )
        self.tracer: Tracer = tracer
        self._runs: dict[str, _RunSpans] = {}
        self._lock = threading.Lock()

    # -- runs ---------------------------------------------------------------------------

    def _parent_context(self, event: Event | None) -> otel_context.Context | None:
        """The span a sub-workflow run nests under: the parent node that runs it.

        Inside a run, ``RunContext.parent_node_id`` names that node. For events
        sent by hand it is guessed: the running parent node named like the
        child workflow, else the only running one, else the parent run's span.
        """
        if event is None or event.parent_run_id is None:
            return None  # the current context
        ctx = current_run(None)
        known = ctx is not None and ctx.run_id == event.run_id and ctx.parent_node_id is not None
        with self._lock:
            parent = self._runs.get(event.parent_run_id)
            if parent is None:
                return None
            running = list(parent.nodes.items())
        wanted = ctx.parent_node_id if known and ctx is not None else event.workflow_name
        named = [span for (node_id, _), span in running if node_id == wanted]
        if named:  # its latest attempt
            return trace.set_span_in_context(named[-1])
        if len(running) == 1 and not known:
            return trace.set_span_in_context(running[0][1])
        return trace.set_span_in_context(parent.span)

    async def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Start the run span (nested under the parent run's spans for a sub-run)."""
        name = event.workflow_name if event is not None else ""
        attributes: dict[str, str] = {PIPELINE_RUN_ID: workflow_id, PIPELINE_NAME: name}
        if event is not None and event.parent_run_id:
            attributes[f"{_ATTR}.parent_run_id"] = event.parent_run_id
        if event is not None and event.resource_id:
            attributes[f"{_ATTR}.resource_id"] = event.resource_id
        span = self.tracer.start_span(
            f"workflow {name}".rstrip(),
            context=self._parent_context(event),
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=_ns(event.timestamp if event is not None else None),
        )
        with self._lock:
            old = self._runs.pop(workflow_id, None)
            self._runs[workflow_id] = _RunSpans(span=span, workflow_name=name)
        if old is not None:  # a second start for one run id: close the first cleanly
            _end_open(old, None)

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """End the run's open node spans (cancelled) and the run span, with its status."""
        with self._lock:
            run = self._runs.pop(workflow_id, None)
        if run is None:
            return
        end = _ns(event.timestamp if event is not None else None)
        status = event.status if event is not None else None
        span = run.span
        if status:
            span.set_attribute(f"{_ATTR}.run_status", status)
            if status in _RESULTS:
                span.set_attribute(PIPELINE_RESULT, _RESULTS[status])
        if event is not None and event.duration is not None:
            span.set_attribute(f"{_ATTR}.duration", event.duration)
        result = finished_result(workflow_id)
        if status == "failed":
            error = getattr(result, "error", None)
            where = getattr(result, "final_node", None)
            detail = f"{error.type}: {_sent(error.message)}" if error is not None else "run failed"
            if where:
                detail = f"node {where!r} failed: {detail}"
                span.set_attribute(f"{_ATTR}.final_node", where)
            span.set_attribute(ERROR_TYPE, error.type if error is not None else "WorkflowFailed")
            span.set_status(Status(StatusCode.ERROR, detail))
        elif status == "cancelled":
            reason = getattr(result, "cancel_reason", None)
            span.add_event("cancelled", {"reason": _sent(reason or "")}, timestamp=end)
        _end_open(run, end)

    # -- nodes --------------------------------------------------------------------------

    async def on_node_start(
        self, node_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Start a span for this node attempt, under its run's span."""
        run_id = event.run_id if event is not None else ""
        attempt = event.attempt if event is not None else None
        with self._lock:
            run = self._runs.get(run_id)
        attributes: dict[str, str | int] = {
            TASK_NAME: node_id,
            TASK_RUN_ID: f"{run_id}/{node_id}/{attempt if attempt is not None else 1}",
            PIPELINE_RUN_ID: run_id,
            PIPELINE_NAME: event.workflow_name if event is not None else "",
        }
        if attempt is not None:
            attributes[f"{_ATTR}.attempt"] = attempt
        span = self.tracer.start_span(
            f"node {node_id}",
            context=trace.set_span_in_context(run.span) if run is not None else None,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=_ns(event.timestamp if event is not None else None),
        )
        if run is None:  # outside a traced run: a root span, ended by its end event
            run = _RunSpans(span=trace.INVALID_SPAN, workflow_name="")
            with self._lock:
                run = self._runs.setdefault(run_id, run)
        with self._lock:
            previous = run.nodes.pop((node_id, attempt), None)
            run.nodes[(node_id, attempt)] = span
        if previous is not None:
            previous.end()

    def node_span(self, run_id: str, node_id: str) -> Span | None:
        """The span of ``node_id``'s running attempt in run ``run_id``; ``None`` when no attempt
        of it is running (or the run is not traced by this handler).

        Spans a node's own code starts are not children of its node span by
        themselves (events are dispatched apart from the body's context); a
        node nests them so::

            ctx = current_run()
            with trace.use_span(otel.node_span(ctx.run_id, "load"), end_on_exit=False):
                ...  # spans started here are children of "node load"
        """
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            for key in reversed(list(run.nodes)):
                if key[0] == node_id:
                    return run.nodes[key]
        return None

    def _pop_node(self, run_id: str, node_id: str, attempt: int | None) -> Span | None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            span = run.nodes.pop((node_id, attempt), None)
            if span is None:  # attempt unknown: the latest attempt of that node
                for key in reversed(list(run.nodes)):
                    if key[0] == node_id:
                        span = run.nodes.pop(key)
                        break
            if not run.nodes and run.span is trace.INVALID_SPAN:
                del self._runs[run_id]
            return span

    async def on_node_end(
        self, node_id: str, output_data: Any, *, event: Event | None = None
    ) -> None:
        """End the attempt's span with status OK."""
        run_id = event.run_id if event is not None else ""
        span = self._pop_node(run_id, node_id, event.attempt if event is not None else None)
        if span is None:
            return
        if event is not None and event.duration is not None:
            span.set_attribute(f"{_ATTR}.duration", event.duration)
        span.set_attribute(f"{_ATTR}.node_status", "succeeded")
        span.set_attribute(TASK_RUN_RESULT, "success")
        span.end(end_time=_ns(event.timestamp if event is not None else None))

    async def on_error(self, error_info: ErrorInfo, *, event: Event | None = None) -> None:
        """Record the error on the attempt's span (and end it), or on the run span."""
        run_id = (event.run_id if event is not None else "") or getattr(error_info, "run_id", "")
        node_id = event.node_id if event is not None else getattr(error_info, "node_id", None)
        attempt = event.attempt if event is not None else getattr(error_info, "attempt", None)
        when = _ns(event.timestamp if event is not None else None)
        if node_id is not None:
            span = self._pop_node(run_id, node_id, attempt)
            if span is None:
                return
            _record_error(span, error_info, when)
            will_retry = bool(getattr(error_info, "will_retry", False))
            span.set_attribute(f"{_ATTR}.node_status", "retrying" if will_retry else "failed")
            span.set_attribute(TASK_RUN_RESULT, "failure")
            if event is not None and event.duration is not None:
                span.set_attribute(f"{_ATTR}.duration", event.duration)
            span.end(end_time=when)
            return
        with self._lock:
            run = self._runs.get(run_id)
        if run is not None and run.span is not trace.INVALID_SPAN:
            _record_error(run.span, error_info, when)

    async def on_custom_event(self, name: str, data: Any, *, event: Event | None = None) -> None:
        """Add a span event named after the custom event to the node's or the run's span."""
        if event is None:
            return
        with self._lock:
            run = self._runs.get(event.run_id)
            if run is None:
                return
            span = run.span
            if event.node_id is not None:
                for (node_id, _), node_span in reversed(list(run.nodes.items())):
                    if node_id == event.node_id:
                        span = node_span
                        break
        if span is not trace.INVALID_SPAN:
            span.add_event(name, {f"{_ATTR}.custom_event": name}, timestamp=_ns(event.timestamp))

    async def aclose(self) -> None:
        """End every span still open (runs that never sent ``workflow_end``)."""
        with self._lock:
            runs = list(self._runs.values())
            self._runs.clear()
        for run in runs:
            _end_open(run, None)

    def __repr__(self) -> str:
        return f"OpenTelemetryCallback(open_runs={len(self._runs)})"


def _end_open(run: _RunSpans, end: int | None) -> None:
    """End the node spans still open (cancelled attempts), then the run span."""
    for span in reversed(list(run.nodes.values())):
        span.set_attribute(f"{_ATTR}.node_status", "cancelled")
        span.set_attribute(TASK_RUN_RESULT, "cancellation")
        span.end(end_time=end)
    run.nodes.clear()
    if run.span is not trace.INVALID_SPAN:
        run.span.end(end_time=end)


def _sent(text: str) -> str:
    """Error text as spans carry it: capped, encodable, and without credentials (the
    process-wide redaction policy)."""
    return redact_text(str(safe_text(text)))


def _record_error(span: Span, info: Any, when: int | None) -> None:
    """Record ``info`` (an ``ErrorInfo``, or anything sent by hand) as an exception event."""
    err_type = str(getattr(info, "type", type(info).__name__))
    message = _sent(str(getattr(info, "message", info)))
    exc = getattr(info, "exception", None)
    attributes = {  # they replace what the SDK would take from the exception itself
        "exception.type": err_type,
        "exception.message": message,
        "exception.stacktrace": _sent(str(getattr(info, "stack_trace", ""))),
    }
    if isinstance(exc, BaseException):
        span.record_exception(exc, attributes=attributes, timestamp=when)
    else:
        span.add_event("exception", attributes, timestamp=when)
    span.set_attribute(ERROR_TYPE, err_type)
    span.set_attribute(f"{_ATTR}.will_retry", bool(getattr(info, "will_retry", False)))
    span.set_attribute(f"{_ATTR}.severity", str(getattr(info, "severity", "error")))
    span.set_status(Status(StatusCode.ERROR, f"{err_type}: {message}"))
