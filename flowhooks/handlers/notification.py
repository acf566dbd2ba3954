"""``NotificationCallback``: alert people on critical errors and finished runs (extra ``http``).

A built-in handler (``flowhooks.handlers``). It decides *when* to alert and
what to say; *how* the alert travels is a ``Notifier``: any object with
``async send(channel, message, **fields)``. ``WebhookNotifier`` ships here and
POSTs ``{"channel", "message", "fields"}`` as JSON (a chat or incident tool's
incoming webhook, or your own relay).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol, runtime_checkable

from flowhooks import ErrorInfo, Event, EventType, RunStatus, Severity, current_run, to_jsonable
from flowhooks.handlers._extras import require
from flowhooks.handlers._run_end import RunReporter

require("httpx", extra="http", handler="NotificationCallback")

from flowhooks.handlers.webhook import (  # noqa: E402
    SIGNATURE_HEADER,
    JsonPoster,
    check_http_url,
    sign_body,
)

__all__ = ["DEFAULT_CHANNELS", "NotificationCallback", "Notifier", "WebhookNotifier"]


@runtime_checkable
class Notifier(Protocol):
    """Sends one alert somewhere: a chat channel, a pager, a mailbox, a log."""

    async def send(self, channel: str, message: str, **fields: Any) -> None:
        """Deliver ``message`` to ``channel``; ``fields`` are structured details."""
        ...


class WebhookNotifier:
    """A ``Notifier`` that POSTs ``{"channel": ..., "message": ..., "fields": {...}}`` as JSON.

    Args:
        url: the endpoint (absolute http or https URL).
        secret: when set, the body is signed like ``WebhookCallback``'s
            (``X-Flowhooks-Signature: sha256=<hex>``).
        timeout: seconds per try.
        retries: tries after the first, on 5xx and connection errors (none on 4xx).
        backoff: delay before the first retry, doubled after each (with jitter).
        max_backoff: cap on one delay.
        headers: extra headers for every request (e.g. an ``Authorization``).

    Raises:
        ValueError: when ``url`` is not an absolute http(s) URL, or an option
            is out of range.
    """

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = str(check_http_url(url, what="WebhookNotifier url"))
        self.secret = secret
        self._poster = JsonPoster(
            "WebhookNotifier",
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            headers=headers,
        )

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.url!r})"

    async def send(self, channel: str, message: str, **fields: Any) -> None:
        """POST the alert.

        Raises:
            WebhookDeliveryError: when the endpoint refuses it or stays unreachable.
        """
        data = {"channel": channel, "message": message, "fields": to_jsonable(fields)}
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign_body(body, self.secret)
        await self._poster.post(self.url, body, headers)

    async def aclose(self) -> None:
        """Nothing to close: each alert opens and closes its own HTTP client."""


DEFAULT_CHANNELS: Final[Mapping[str, str]] = {
    "critical": "alerts",
    "failure": "alerts",
    "cancel": "alerts",
    "completion": "runs",
}
"""Channel per alert kind; override any of them with ``channels={...}``."""


def _seconds(value: float | None) -> str:
    return f"{value:.2f}s" if value is not None else "an unknown time"


class NotificationCallback(RunReporter):
    """Send alerts through a ``Notifier`` when something worth a human's attention happens.

    Alert kinds, each sent to its channel (see ``DEFAULT_CHANNELS``):

    * ``critical``: an ``error`` event whose severity is in ``severities``
      (by default only ``"critical"``: a node declared ``critical=True``
      failing for good, or the run timing out), sent as it happens.
    * ``failure``: a run ended ``failed``.
    * ``cancel``: a run ended ``cancelled``.
    * ``completion``: a run ended ``succeeded``.

    Every alert carries ``fields``: ``kind``, ``run_id``, ``workflow_name``,
    ``status`` and, as they apply, ``node_id``, ``attempt``, ``severity``,
    ``error_type``, ``error_message``, ``duration``, ``final_node`` and
    ``resource_id``.

    A notifier that raises is isolated by the ``CallbackManager`` like any
    handler error: logged, counted, and the run goes on.

    Args:
        notifier: where alerts go (``WebhookNotifier`` or your own ``Notifier``).
        on_critical: alert on error events of the chosen ``severities``.
        on_failure: alert when a run fails.
        on_completion: alert when a run succeeds.
        on_cancel: alert when a run is cancelled.
        subworkflows: also alert when a sub-workflow run ends inside a run
            this handler watches too. Off by default: its outcome reaches the
            parent run (a failed child fails the node that ran it), so one
            alert per watched run is enough. A handler attached only to the
            child workflow alerts on the child's runs either way, and critical
            errors inside a child run alert either way.
        severities: which error severities alert (``"warning"``, ``"error"``,
            ``"critical"``); warnings are attempts that will be retried.
        channels: channel names by alert kind, merged over ``DEFAULT_CHANNELS``.

    Raises:
        TypeError: when ``notifier`` has no ``async send`` method.
        ValueError: for an unknown severity or alert kind.
    """

    def __init__(
        self,
        notifier: Notifier,
        *,
        on_critical: bool = True,
        on_failure: bool = True,
        on_completion: bool = True,
        on_cancel: bool = True,
        subworkflows: bool = False,
        severities: Iterable[str] = ("critical",),
        channels: Mapping[str, str] | None = None,
    ) -> None:
        send = getattr(notifier, "send", None)
        if (
            isinstance(notifier, type)
            or not callable(send)
            or not inspect.iscoroutinefunction(send)
        ):
            what = (
                f"the class {notifier.__name__}"
                if isinstance(notifier, type)
                else f"{type(notifier).__name__} object"
            )
            msg = (
                f"NotificationCallback needs a notifier with an `async def send(channel, "
                f"message, **fields)` method, got {what}"
            )
            if isinstance(notifier, type):
                msg += f"; did you mean {notifier.__name__}(...)?"
            raise TypeError(msg)
        self.notifier = notifier
        self.on_critical = on_critical
        self.on_failure = on_failure
        self.on_completion = on_completion
        self.on_cancel = on_cancel
        super().__init__(subworkflows=subworkflows)
        if isinstance(severities, str):
            severities = [severities]
        known = {s.value for s in Severity}
        chosen = frozenset(str(s) for s in severities)
        if chosen - known:
            msg = (
                f"unknown severities {sorted(chosen - known)}; "
                f"choose from {', '.join(sorted(known))}"
            )
            raise ValueError(msg)
        self.severities = chosen
        unknown = set(channels or {}) - set(DEFAULT_CHANNELS)
        if unknown:
            msg = (
                f"unknown alert kinds in channels: {sorted(unknown)}; "
                f"the kinds are {', '.join(DEFAULT_CHANNELS)}"
            )
            raise ValueError(msg)
        self.channels: dict[str, str] = {**DEFAULT_CHANNELS, **(channels or {})}

    def __repr__(self) -> str:
        return f"NotificationCallback({self.notifier!r})"

    async def on_error(self, error_info: ErrorInfo, *, event: Event | None = None) -> None:
        """Alert on an error of an alerting severity, as it happens."""
        if not self.on_critical or error_info.severity.value not in self.severities:
            return
        if event is None:
            event = Event.from_hook(EventType.ERROR, error_info)
        where = f", node {error_info.node_id!r}" if error_info.node_id else ""
        attempt = f" (attempt {error_info.attempt})" if error_info.attempt else ""
        workflow = error_info.workflow_name or event.workflow_name
        run_id = error_info.run_id or event.run_id
        message = (
            f"{error_info.severity.value.capitalize()} error in workflow {workflow!r} "
            f"(run {run_id}){where}{attempt}: {error_info.type}: {error_info.message}"
        )
        await self.notifier.send(
            self.channels["critical"],
            message,
            kind="critical",
            run_id=run_id,
            workflow_name=workflow,
            status="running",
            node_id=error_info.node_id,
            attempt=error_info.attempt,
            severity=error_info.severity.value,
            error_type=error_info.type,
            error_message=error_info.message,
            will_retry=error_info.will_retry,
            resource_id=event.resource_id,
        )

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Alert on a run that ended: failed, cancelled or succeeded, as enabled."""
        event = self._run_to_report(workflow_id, output_data, event)
        if event is None:
            return  # a sub-workflow run inside a run this handler reports on
        ctx = current_run(None)
        result = ctx.result if ctx is not None and ctx.run_id == event.run_id else None
        status = result.status.value if result is not None else (event.status or "")
        kind = {
            RunStatus.FAILED.value: "failure" if self.on_failure else None,
            RunStatus.CANCELLED.value: "cancel" if self.on_cancel else None,
            RunStatus.SUCCEEDED.value: "completion" if self.on_completion else None,
        }.get(status)
        if kind is None:
            return
        duration = result.duration if result is not None else event.duration
        error = result.error if result is not None else None
        final_node = result.final_node if result is not None else None
        label = f"Workflow {event.workflow_name!r} run {event.run_id}"
        if kind == "failure":
            where = f" at node {final_node!r}" if final_node else ""
            why = f": {error.type}: {error.message}" if error is not None else ""
            message = f"{label} failed{where} after {_seconds(duration)}{why}"
        elif kind == "cancel":
            reason = result.cancel_reason if result is not None else None
            message = f"{label} was cancelled after {_seconds(duration)}" + (
                f": {reason}" if reason else ""
            )
        else:
            message = f"{label} succeeded in {_seconds(duration)}"
        await self.notifier.send(
            self.channels[kind],
            message,
            kind=kind,
            run_id=event.run_id,
            workflow_name=event.workflow_name,
            status=status,
            duration=duration,
            final_node=final_node,
            error_type=error.type if error is not None else None,
            error_message=error.message if error is not None else None,
            resource_id=event.resource_id,
        )

    async def aclose(self) -> None:
        """Close the notifier, when it has an ``aclose()``."""
        close = getattr(self.notifier, "aclose", None)
        if close is not None and inspect.iscoroutinefunction(close):
            await close()
