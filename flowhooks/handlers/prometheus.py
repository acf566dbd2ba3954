"""``PrometheusCallback``: run, node and hook metrics in a prometheus_client registry.

Part of ``flowhooks.handlers`` (after the runner in the import chain); needs
the ``prometheus`` extra. Expose the registry the usual way
(``prometheus_client.start_http_server``, ``make_asgi_app``,
``generate_latest``).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, final

from flowhooks import (
    BaseCallbackHandler,
    ErrorInfo,
    Event,
    HookCallReport,
    add_hook_monitor,
    safe_text,
)
from flowhooks.handlers._extras import require
from flowhooks.handlers._validate import reject_type

require("prometheus_client", extra="prometheus", handler="PrometheusCallback")

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram  # noqa: E402

__all__ = ["DEFAULT_BUCKETS", "PrometheusCallback"]

DEFAULT_BUCKETS: Final[tuple[float, ...]] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
"""Histogram buckets (seconds) for run and node durations: 5 ms to one hour."""

_HOOK_BUCKETS: Final[tuple[float, ...]] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    5.0,
)


class _Metrics:
    """The collectors of one registry, shared by every handler that uses it.

    Also the hook monitor (``flowhooks.add_hook_monitor``): registered while
    at least one handler that uses this registry is open and alive, so two
    handlers on one registry do not count hooks twice. Handlers release it
    from ``aclose()``, or from a ``weakref.finalize`` when they are
    garbage-collected unclosed; the lock is
    reentrant because such a finalizer can run inside ``acquire``/``release``
    on the same thread.
    """

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self.users = 0
        self.remove_monitor: Callable[[], None] | None = None
        self.lock = threading.RLock()
        self.runs = Counter(
            "flowhooks_workflow_runs",
            "Workflow runs that ended, by workflow and final status.",
            ["workflow", "status"],
            registry=registry,
        )
        self.run_duration = Histogram(
            "flowhooks_workflow_duration_seconds",
            "Duration of workflow runs that ended, by workflow and final status.",
            ["workflow", "status"],
            buckets=buckets,
            registry=registry,
        )
        self.active = Gauge(
            "flowhooks_workflow_runs_active",
            "Workflow runs started and not yet ended.",
            ["workflow"],
            registry=registry,
        )
        self.nodes = Counter(
            "flowhooks_node_executions",
            "Node attempts that finished, by workflow, node and status "
            "(succeeded; failed; retrying: failed and retried).",
            ["workflow", "node", "status"],
            registry=registry,
        )
        self.node_duration = Histogram(
            "flowhooks_node_duration_seconds",
            "Duration of node attempts that finished, by workflow, node and status.",
            ["workflow", "node", "status"],
            buckets=buckets,
            registry=registry,
        )
        self.errors = Counter(
            "flowhooks_errors",
            "Error events (failed node attempts and run timeouts), by workflow, node, "
            "error type and severity.",
            ["workflow", "node", "error_type", "severity"],
            registry=registry,
        )
        self.hook_calls = Counter(
            "flowhooks_hook_executions",
            "Handler method and function callback calls made in the process.",
            ["handler", "event"],
            registry=registry,
        )
        self.hook_errors = Counter(
            "flowhooks_hook_errors",
            "Handler method and function callback calls that raised or timed out.",
            ["handler", "event"],
            registry=registry,
        )
        self.hook_duration = Histogram(
            "flowhooks_hook_duration_seconds",
            "Duration of handler method and function callback calls.",
            ["handler", "event"],
            buckets=_HOOK_BUCKETS,
            registry=registry,
        )

    def observe_hook(self, call: HookCallReport) -> None:
        """Record one hook call (the hook monitor)."""
        labels = (call.label, call.event_type.value)
        self.hook_calls.labels(*labels).inc()
        if call.seconds is not None:
            self.hook_duration.labels(*labels).observe(call.seconds)
        if call.error is not None:
            self.hook_errors.labels(*labels).inc()

    def acquire(self) -> None:
        with self.lock:
            self.users = users = self.users + 1
            if users == 1:
                self.remove_monitor = add_hook_monitor(self.observe_hook)

    def release(self) -> None:
        with self.lock:
            self.users = users = self.users - 1
            if users == 0 and self.remove_monitor is not None:
                self.remove_monitor()
                self.remove_monitor = None


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()
_by_registry_lock = threading.Lock()


def _metrics_for(registry: CollectorRegistry, buckets: Sequence[float]) -> _Metrics:
    with _by_registry_lock:
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = _Metrics(registry, buckets)
            _by_registry[registry] = metrics
        return metrics


def _check_buckets(buckets: object) -> tuple[float, ...]:
    """``buckets=`` as a tuple, or an error naming what is wrong with it."""
    if isinstance(buckets, str | bytes | Mapping) or not isinstance(buckets, Iterable):
        reject_type("buckets", "a list of durations in seconds", buckets)
    chosen = tuple(buckets)
    for bound in chosen:
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            reject_type("buckets entries", "numbers of seconds", bound)
        if math.isnan(bound):
            msg = f"buckets entries must be numbers of seconds, got {bound!r}"
            raise ValueError(msg)
    return chosen


def _label(text: str) -> str:
    """A label value every scrape can encode (a lone surrogate in a name would break them all)."""
    return text if text.isascii() else str(safe_text(text))


@final
class PrometheusCallback(BaseCallbackHandler):
    """Exports run, node and handler metrics to Prometheus.

    Metrics (``_total``, ``_bucket``, ``_sum`` and ``_count`` suffixes as
    prometheus_client adds them):

    * ``flowhooks_workflow_runs_total{workflow, status}``: runs that ended.
    * ``flowhooks_workflow_duration_seconds{workflow, status}``: their durations.
    * ``flowhooks_workflow_runs_active{workflow}``: runs under way.
    * ``flowhooks_node_executions_total{workflow, node, status}``: finished
      node attempts; ``status`` is ``succeeded``, ``failed`` (not retried)
      or ``retrying`` (failed, and retried).
    * ``flowhooks_node_duration_seconds{workflow, node, status}``: their durations.
    * ``flowhooks_errors_total{workflow, node, error_type, severity}``: error
      events; ``node`` is empty for the run timeout.
    * ``flowhooks_hook_executions_total{handler, event}``,
      ``flowhooks_hook_errors_total{handler, event}`` and
      ``flowhooks_hook_duration_seconds{handler, event}``: every handler call
      made by any ``CallbackManager`` in the process, labelled by the
      handler's label in its manager (its class name, ``#2`` for a second one)
      and the event type, and every function callback of a run
      (``on_success``, ``on_failure``, ``on_workflow_*``) under its qualified
      name; a composite or nested manager is not counted itself, only the
      handlers it calls. They are fed by a hook monitor
      (``flowhooks.add_hook_monitor``) registered when the handler is
      created; while it is registered, managers time their calls.
      ``aclose()`` removes it at once; a handler dropped without ``aclose()``
      stops feeding the hook metrics when it is garbage-collected (the
      monitor does not keep it alive).

    Handlers built on the same registry share its collectors (and one hook
    monitor), so creating several is safe.

    Args:
        registry: where to register the metrics; defaults to
            ``prometheus_client.REGISTRY``.
        buckets: histogram buckets in seconds for run and node durations; the
            first handler on a registry decides them.

    Raises:
        TypeError: when ``registry`` is not a ``CollectorRegistry`` or
            ``buckets`` not a list of numbers.
        ValueError: for a NaN bucket, or buckets prometheus_client refuses.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if registry is not None and not isinstance(registry, CollectorRegistry):
            msg = (
                "PrometheusCallback(registry) takes a prometheus_client.CollectorRegistry, "
                f"got {registry!r}"
            )
            raise TypeError(msg)
        self.registry: CollectorRegistry = registry if registry is not None else REGISTRY
        self._metrics = _metrics_for(self.registry, _check_buckets(buckets))
        self._metrics.acquire()
        # Releases the hook monitor on aclose(), or when this handler is collected.
        self._release = weakref.finalize(self, self._metrics.release)
        self._active: dict[str, str] = {}  # run_id -> workflow, for the active gauge
        self._lock = threading.Lock()

    async def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Count the run as active."""
        workflow = _label(event.workflow_name) if event is not None else ""
        with self._lock:
            if workflow_id in self._active:
                return
            self._active[workflow_id] = workflow
        self._metrics.active.labels(workflow).inc()

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Count the ended run by status and observe its duration."""
        workflow = _label(event.workflow_name) if event is not None else ""
        status = (event.status if event is not None else None) or "unknown"
        with self._lock:
            started = self._active.pop(workflow_id, None)
        if started is not None:
            self._metrics.active.labels(started).dec()
        self._metrics.runs.labels(workflow, status).inc()
        if event is not None and event.duration is not None:
            self._metrics.run_duration.labels(workflow, status).observe(event.duration)

    async def on_node_end(
        self, node_id: str, output_data: Any, *, event: Event | None = None
    ) -> None:
        """Count a successful node attempt and observe its duration."""
        self._node(node_id, "succeeded", event)

    async def on_error(self, error_info: ErrorInfo, *, event: Event | None = None) -> None:
        """Count the error, and the failed attempt when it is a node's."""
        workflow = _label(event.workflow_name) if event is not None else ""
        node_id = event.node_id if event is not None else getattr(error_info, "node_id", None)
        self._metrics.errors.labels(
            workflow,
            node_id or "",
            str(getattr(error_info, "type", "Error")),
            str(getattr(error_info, "severity", "error")),
        ).inc()
        if node_id is not None:
            retrying = bool(getattr(error_info, "will_retry", False))
            self._node(node_id, "retrying" if retrying else "failed", event)

    def _node(self, node_id: str, status: str, event: Event | None) -> None:
        workflow = _label(event.workflow_name) if event is not None else ""
        self._metrics.nodes.labels(workflow, node_id, status).inc()
        if event is not None and event.duration is not None:
            self._metrics.node_duration.labels(workflow, node_id, status).observe(event.duration)

    async def aclose(self) -> None:
        """Stop feeding the hook metrics from this handler, at once (idempotent)."""
        self._release()

    def __repr__(self) -> str:
        state = "open" if self._release.alive else "closed"
        return f"PrometheusCallback(registry={self.registry!r}, {state})"
