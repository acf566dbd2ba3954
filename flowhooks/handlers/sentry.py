"""``SentryCallback``: failures reported to Sentry with the live exception, runs as breadcrumbs.

Part of ``flowhooks.handlers``; needs the ``sentry`` extra (``sentry-sdk``).
Capturing only builds an event and queues it: the Sentry SDK's transport
sends it from its own background thread (and drops events when its queue is
full), so a slow or unreachable Sentry never holds a run.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, final

from flowhooks import BaseCallbackHandler, CircuitBreaker, ErrorInfo, Event, Redaction
from flowhooks.handlers._event_args import context_of, given_event
from flowhooks.handlers._extras import require
from flowhooks.handlers._validate import reject_type

require("sentry_sdk", extra="sentry", handler="SentryCallback")

import sentry_sdk  # noqa: E402
from sentry_sdk.utils import (  # noqa: E402
    event_hint_with_exc_info,
    exc_info_from_error,
    exceptions_from_error_tuple,
)

__all__ = ["SentryCallback"]

_CATEGORY: Final = "flowhooks"
_MAX_ITEMS: Final = 1_000
"""Items per list or mapping kept when an event is redacted (frames, breadcrumbs, variables)."""
_CHAIN_LIMIT: Final = 32
"""How far down ``__cause__``/``__context__`` an exception is compared with reported ones."""


def _exception_event(
    exc: BaseException, options: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Sentry event and hint of ``exc``, built with ``options``: the reporting client's.

    ``event_from_exception`` takes a client's options in sentry-sdk 2.x but reads
    the global client's in 3.x, which would build a handler's own client's
    events with another client's settings (or none, with no global client).
    """
    exc_info = exc_info_from_error(exc)
    values = exceptions_from_error_tuple(exc_info, options)
    return {"level": "error", "exception": {"values": values}}, event_hint_with_exc_info(exc_info)


@dataclass(slots=True)
class _Trail:
    """One run as seen so far: its breadcrumbs and what was reported from it."""

    workflow: str
    parent_run_id: str | None
    breadcrumbs: deque[dict[str, Any]]
    reported: list[BaseException] = field(default_factory=list)  # strong refs keep ids valid
    node_failure_reported: bool = False
    run_error: ErrorInfo | None = None  # a run-level error (the run timeout)


@final
class SentryCallback(BaseCallbackHandler):
    """Reports failures to Sentry and leaves a breadcrumb for every step of a run.

    * A node that fails for good (an ``error`` event with a node and
      ``will_retry`` false) is captured with its live exception
      (``ErrorInfo.exception``), level ``error`` (``fatal`` for a critical
      node), tagged ``workflow``, ``run_id``, ``node_id`` and ``attempt``, with
      a ``flowhooks`` context (severity, parent run, resource id, duration).
    * A failed run is captured once, with the run's error (the run timeout,
      say), tagged likewise (``node_id`` is the failing node, when known).
    * **One issue per failure.** A run that failed because a node failed is
      not captured again: that node's event is the report. In the same way, a
      sub-workflow's failure is reported once, from the child's node, and not
      again from the parent's node that ran it (an exception whose
      ``__cause__``/``__context__`` chain holds a reported one is skipped).
    * Runs, node attempts, retries and custom events become breadcrumbs
      (category ``flowhooks``) of the events captured for that run. They are
      kept per run by the handler, not on a shared Sentry scope, so
      concurrent runs never mix their trails. Payloads (inputs, outputs,
      custom data) are never sent; names, ids, attempts, durations and error
      messages are.
    * **Redacted.** Each event is redacted before it is handed to the SDK
      (``redact``): exception messages, stack-frame variables and source
      lines, breadcrumbs and contexts lose secret-named values and
      credentials (URLs, ``Bearer``/``Basic``, assignments). The SDK's own
      scrubbing (``send_default_pii``, ``event_scrubber``, ``before_send``)
      still applies after it.

    Without ``dsn`` the handler reports through the client the application
    set up with ``sentry_sdk.init(...)``, on the current scope (its user,
    tags and request data are kept); with no client set up, nothing is sent.
    With ``dsn`` it makes a client of its own (``options`` go to
    ``sentry_sdk.Client``; default integrations are off, so it patches
    nothing in the process) and leaves the application's global client and
    scopes alone: its events carry only what this handler puts in them.

    Args:
        dsn: a Sentry DSN for a client of this handler's own; ``None``: the
            application's client.
        max_breadcrumbs: breadcrumbs kept per run (the oldest go first).
        flush_timeout: seconds ``aclose()`` (and the interpreter's exit) wait
            for this handler's own client to send what it queued.
        redact: ``True`` (the process-wide policy, ``flowhooks.redaction()``),
            ``False`` (send events as the SDK built them), key names to add to
            the process-wide policy, or a ``flowhooks.Redaction``.
        options: keyword arguments for ``sentry_sdk.Client`` (``environment``,
            ``release``, ``transport``, ``before_send``, ...), with ``dsn`` only.
    """

    breaker = CircuitBreaker()  # a network service: skipped for a while when it keeps failing

    def __init__(
        self,
        dsn: str | None = None,
        *,
        max_breadcrumbs: int = 100,
        flush_timeout: float = 2.0,
        redact: bool | Redaction | Iterable[str] = True,
        **options: Any,
    ) -> None:
        self.redact = Redaction.coerce(redact)
        if dsn is not None and not isinstance(dsn, str):
            reject_type("dsn", "a non-empty str or None", dsn)
        if dsn is not None and not dsn.strip():
            msg = f"dsn must be a non-empty str or None, got {dsn!r}"
            raise ValueError(msg)
        if dsn is None and options:
            names = ", ".join(sorted(options))
            msg = (
                f"SentryCallback got client options ({names}) without dsn=; they configure a "
                "client of the handler's own, so pass dsn= too, or set them in sentry_sdk.init()"
            )
            raise TypeError(msg)
        if isinstance(max_breadcrumbs, bool) or not isinstance(max_breadcrumbs, int):
            msg = f"max_breadcrumbs must be an int, got {max_breadcrumbs!r}"
            raise TypeError(msg)
        if max_breadcrumbs < 0:
            msg = f"max_breadcrumbs must be 0 or more, got {max_breadcrumbs}"
            raise ValueError(msg)
        if isinstance(flush_timeout, bool) or not isinstance(flush_timeout, int | float):
            msg = f"flush_timeout must be a number of seconds, got {flush_timeout!r}"
            raise TypeError(msg)
        self.max_breadcrumbs = max_breadcrumbs
        self.flush_timeout = float(flush_timeout)
        self.client: sentry_sdk.Client | None = None
        if dsn is not None:
            options.setdefault("default_integrations", False)
            self.client = sentry_sdk.Client(dsn, **options)
            # Flushes and closes the handler's own client at exit (or when the handler goes).
            weakref.finalize(self, self.client.close, self.flush_timeout)
        self._trails: dict[str, _Trail] = {}
        self._lock = threading.Lock()

    # -- runs ---------------------------------------------------------------------------

    async def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Start the run's trail with a ``workflow started`` breadcrumb."""
        event = given_event(event, "SentryCallback", "on_workflow_start")
        trail = _Trail(
            workflow=event.workflow_name,
            parent_run_id=event.parent_run_id,
            breadcrumbs=deque(maxlen=self.max_breadcrumbs),
        )
        with self._lock:
            self._trails[workflow_id] = trail
        self._crumb(event, "info", f"workflow {event.workflow_name!r} started")

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Capture a failed run, unless a node failure of it was already captured."""
        event = given_event(event, "SentryCallback", "on_workflow_end")
        with self._lock:
            trail = self._trails.pop(workflow_id, None)
        if event.status not in {"failed", "crashed"}:
            return
        if trail is None:
            trail = _Trail(event.workflow_name, event.parent_run_id, deque())
        if trail.node_failure_reported:
            return
        ctx = context_of(workflow_id)
        result = ctx.result if ctx is not None else None
        error = result.error if result is not None and result.error is not None else None
        error = error or trail.run_error
        final_node = result.final_node if result is not None else None
        crumb = _breadcrumb(event, "error", f"workflow {event.workflow_name!r} run {event.status}")
        trail.breadcrumbs.append(crumb)
        if (
            error is not None
            and error.exception is not None
            and self._known(error.exception, trail)
        ):
            return
        self._capture(event, trail, error, node_id=final_node, attempt=None)

    # -- nodes --------------------------------------------------------------------------

    async def on_node_start(
        self, node_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Leave a ``node started`` breadcrumb."""
        event = given_event(event, "SentryCallback", "on_node_start")
        self._crumb(event, "info", f"node {node_id!r} started (attempt {event.attempt or 1})")

    async def on_node_end(
        self, node_id: str, output_data: Any, *, event: Event | None = None
    ) -> None:
        """Leave a ``node succeeded`` breadcrumb."""
        event = given_event(event, "SentryCallback", "on_node_end")
        took = f" in {event.duration:.3f}s" if event.duration is not None else ""
        self._crumb(event, "info", f"node {node_id!r} succeeded{took}")

    async def on_error(self, error_info: ErrorInfo, *, event: Event | None = None) -> None:
        """Capture a node that failed for good; a retried attempt is a breadcrumb."""
        event = given_event(event, "SentryCallback", "on_error")
        node_id = event.node_id if event.node_id is not None else error_info.node_id
        if node_id is None:  # the run timeout: reported with the run
            with self._lock:
                trail = self._trails.get(event.run_id)
                if trail is not None:
                    trail.run_error = error_info
            self._crumb(event, "error", f"run error: {error_info.type}: {error_info.message}")
            return
        what = f"{error_info.type}: {error_info.message}"
        if error_info.will_retry:
            self._crumb(event, "warning", f"node {node_id!r} failed, will retry: {what}")
            return
        self._crumb(event, "error", f"node {node_id!r} failed: {what}")
        with self._lock:
            trail = self._trails.get(event.run_id)
        if trail is None:
            trail = _Trail(event.workflow_name, event.parent_run_id, deque())
        trail.node_failure_reported = True
        exc = error_info.exception
        if exc is not None and self._known(exc, trail):
            return  # a sub-workflow's failure, already reported from the child's node
        attempt = event.attempt if event.attempt is not None else error_info.attempt
        self._capture(event, trail, error_info, node_id=node_id, attempt=attempt)

    async def on_custom_event(self, name: str, data: Any, *, event: Event | None = None) -> None:
        """Leave a breadcrumb naming the custom event (its data is not sent)."""
        event = given_event(event, "SentryCallback", "on_custom_event")
        self._crumb(event, "info", f"custom event {name!r}")

    # -- lifecycle ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Wait up to ``flush_timeout`` for the handler's own client to send its events."""
        if self.client is not None:
            await asyncio.to_thread(self.client.flush, self.flush_timeout)

    def __repr__(self) -> str:
        own = "own client" if self.client is not None else "application's client"
        return f"SentryCallback({own}, open_runs={len(self._trails)})"

    # -- helpers ------------------------------------------------------------------------

    def _crumb(self, event: Event, level: str, message: str) -> None:
        """Append a breadcrumb to the run's trail (events of unknown runs leave none)."""
        with self._lock:
            trail = self._trails.get(event.run_id)
            if trail is not None:
                trail.breadcrumbs.append(_breadcrumb(event, level, message))

    def _known(self, exc: BaseException, trail: _Trail) -> bool:
        """Whether ``exc`` or an exception it was raised from was already reported."""
        reported = {id(e) for e in trail.reported}
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen and len(seen) < _CHAIN_LIMIT:
            if id(current) in reported:
                return True
            seen.add(id(current))
            current = current.__cause__ or current.__context__
        return False

    def _capture(
        self,
        event: Event,
        trail: _Trail,
        error: ErrorInfo | None,
        *,
        node_id: str | None,
        attempt: int | None,
    ) -> None:
        """Send one Sentry event for a failure, with the run's breadcrumbs."""
        client = self.client if self.client is not None else sentry_sdk.get_client()
        if not client.is_active():
            return
        exc = error.exception if error is not None else None
        payload: Any  # the SDK's event dict: its declared type differs between 2.x and 3.x
        hint: dict[str, Any]
        if exc is not None:
            payload, hint = _exception_event(exc, client.options)
        else:  # no live exception (an event rebuilt from JSON, a run that failed without one)
            kind = error.type if error is not None else "WorkflowFailed"
            text = error.message if error is not None else f"run {event.status}"
            payload, hint = {"exception": {"values": [{"type": kind, "value": text}]}}, {}
        tags = {"workflow": event.workflow_name, "run_id": event.run_id}
        if node_id is not None:
            tags["node_id"] = node_id
        if attempt is not None:
            tags["attempt"] = str(attempt)
        critical = error is not None and error.severity == "critical"
        payload["level"] = "fatal" if critical else "error"
        payload["tags"] = tags
        payload["transaction"] = (
            f"{event.workflow_name}.{node_id}" if node_id is not None else event.workflow_name
        )
        payload.setdefault("contexts", {})[_CATEGORY] = {
            "workflow": event.workflow_name,
            "run_id": event.run_id,
            "node_id": node_id,
            "attempt": attempt,
            "severity": error.severity if error is not None else None,
            "status": event.status,
            "parent_run_id": event.parent_run_id,
            "resource_id": event.resource_id,
            "duration": event.duration,
        }
        payload["breadcrumbs"] = {"values": self._breadcrumbs_for(client, trail)}
        policy = Redaction.resolve(self.redact)
        if policy is not None:  # a bounded copy: frame variables are already trimmed by the SDK
            payload = policy.value(payload, max_items=max(_MAX_ITEMS, self.max_breadcrumbs))
        if self.client is not None:
            self.client.capture_event(payload, hint=hint)
        else:
            sentry_sdk.capture_event(payload, hint=hint, tags=tags)
        if exc is not None:
            self._remember(exc, trail)

    def _breadcrumbs_for(self, client: Any, trail: _Trail) -> list[dict[str, Any]]:
        """The run's breadcrumbs, through the client's ``before_breadcrumb`` when it has one."""
        with self._lock:
            crumbs = [dict(crumb) for crumb in trail.breadcrumbs]
        before = client.options.get("before_breadcrumb")
        if before is None:
            return crumbs
        kept = []
        for crumb in crumbs:
            crumb = before(crumb, {})
            if crumb is not None:
                kept.append(crumb)
        return kept

    def _remember(self, exc: BaseException, trail: _Trail) -> None:
        """Record ``exc`` as reported for this run and the runs it is nested in."""
        with self._lock:
            trail.reported.append(exc)
            parent_id = trail.parent_run_id
            for _ in range(_CHAIN_LIMIT):
                parent = self._trails.get(parent_id) if parent_id is not None else None
                if parent is None:
                    break
                parent.reported.append(exc)
                parent_id = parent.parent_run_id


def _breadcrumb(event: Event, level: str, message: str) -> dict[str, Any]:
    """A Sentry breadcrumb for one event of a run: ids and timing, never payloads."""
    data: dict[str, Any] = {"run_id": event.run_id, "workflow": event.workflow_name}
    if event.node_id is not None:
        data["node_id"] = event.node_id
    if event.attempt is not None:
        data["attempt"] = event.attempt
    if event.duration is not None:
        data["duration"] = event.duration
    timestamp: datetime = event.timestamp
    return {
        "type": "default",
        "category": _CATEGORY,
        "level": level,
        "message": message,
        "timestamp": timestamp,
        "data": data,
    }
