"""Built-in handlers: the last link before the CLI in the import chain.

Every handler lives in its own module and is imported on first use, so
``import flowhooks.handlers`` stays cheap and never imports an optional
dependency (rich, prometheus_client, opentelemetry, sqlalchemy, httpx, sentry_sdk,
openlineage, apprise)::

    from flowhooks.handlers import LoggingCallback, MetricsCallback

A handler whose extra is not installed raises an ``ImportError`` naming the
``pip install 'flowhooks[...]'`` line that provides it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from flowhooks.handlers._apprise import AppriseNotifier
    from flowhooks.handlers._run_store import SQLRunStore
    from flowhooks.handlers.durable import DurableError
    from flowhooks.handlers.history import HistoryCallback, HistoryStore
    from flowhooks.handlers.logging import LoggingCallback
    from flowhooks.handlers.metrics import MetricsCallback
    from flowhooks.handlers.notification import NotificationCallback, Notifier, WebhookNotifier
    from flowhooks.handlers.openlineage import OpenLineageCallback, lineage_run_id
    from flowhooks.handlers.otel import OpenTelemetryCallback
    from flowhooks.handlers.progress import ProgressCallback
    from flowhooks.handlers.prometheus import PrometheusCallback
    from flowhooks.handlers.sentry import SentryCallback
    from flowhooks.handlers.webhook import WebhookCallback, verify_signature, verify_webhook

__all__ = [
    "AppriseNotifier",
    "DurableError",
    "HistoryCallback",
    "HistoryStore",
    "LoggingCallback",
    "MetricsCallback",
    "NotificationCallback",
    "Notifier",
    "OpenLineageCallback",
    "OpenTelemetryCallback",
    "ProgressCallback",
    "PrometheusCallback",
    "SQLRunStore",
    "SentryCallback",
    "WebhookCallback",
    "WebhookNotifier",
    "lineage_run_id",
    "verify_signature",
    "verify_webhook",
]

_MODULES: Final[dict[str, str]] = {
    "AppriseNotifier": "_apprise",
    "DurableError": "durable",
    "HistoryCallback": "history",
    "HistoryStore": "history",
    "LoggingCallback": "logging",
    "MetricsCallback": "metrics",
    "NotificationCallback": "notification",
    "Notifier": "notification",
    "OpenLineageCallback": "openlineage",
    "OpenTelemetryCallback": "otel",
    "ProgressCallback": "progress",
    "PrometheusCallback": "prometheus",
    "SQLRunStore": "_run_store",
    "SentryCallback": "sentry",
    "WebhookCallback": "webhook",
    "WebhookNotifier": "notification",
    "lineage_run_id": "openlineage",
    "verify_signature": "webhook",
    "verify_webhook": "webhook",
}
"""Public handler name -> the submodule of ``flowhooks.handlers`` defining it."""


def __getattr__(name: str) -> Any:
    """Import the submodule defining ``name`` on first access (PEP 562)."""
    module_name = _MODULES.get(name)
    if module_name is None:
        msg = f"module 'flowhooks.handlers' has no attribute {name!r}"
        raise AttributeError(msg)
    module = importlib.import_module(f"{__name__}.{module_name}")
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
