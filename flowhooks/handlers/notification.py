"""``NotificationCallback``: alert people on critical errors and finished runs (extra ``http``).

A built-in handler (``flowhooks.handlers``). It decides *when* to alert and
what to say; *how* the alert travels is a ``Notifier``: any object with
``async send(channel, message, **fields)``. ``WebhookNotifier`` ships here and
POSTs ``{"text", "channel", "message", "fields"}`` as JSON, which Slack and
Microsoft Teams incoming webhooks accept as it is (they read ``text``);
``AppriseNotifier`` (extra ``notify``) reaches the services Apprise supports.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import quote

from flowhooks import (
    CircuitBreaker,
    ErrorInfo,
    Event,
    EventType,
    FlowhooksError,
    Redaction,
    RunStatus,
    Severity,
    current_run,
    safe_text,
    to_jsonable,
)
from flowhooks.handlers._extras import require
from flowhooks.handlers._run_end import RunReporter
from flowhooks.handlers._validate import check_flag, reject_type

require("httpx", extra="http", handler="NotificationCallback")

from flowhooks.handlers._http import JsonPoster, check_http_url, check_positive  # noqa: E402
from flowhooks.handlers._signing import (  # noqa: E402
    SIGNATURE_HEADER,
    check_secret_type,
    sign_body,
)

__all__ = [
    "DEFAULT_CHANNELS",
    "AlertTimeoutError",
    "NotificationCallback",
    "Notifier",
    "WebhookNotifier",
    "dedup_key",
]


class AlertTimeoutError(FlowhooksError, TimeoutError):
    """An alert was not delivered within ``NotificationCallback``'s ``deadline``."""


def dedup_key(run_id: str, node_id: str | None = None) -> str:
    """The incident key of an alert: one per run and node (PagerDuty's ``dedup_key``).

    Alerts about the same run and node (a critical node's error, then the run
    failing at that node) share it, so an incident tool groups them.
    """
    return f"flowhooks/{run_id}/{node_id}" if node_id else f"flowhooks/{run_id}"


@runtime_checkable
class Notifier(Protocol):
    """Sends one alert somewhere: a chat channel, a pager, a mailbox, a log."""

    async def send(self, channel: str, message: str, **fields: Any) -> None:
        """Deliver ``message`` to ``channel``; ``fields`` are structured details."""
        ...


class WebhookNotifier:
    """A ``Notifier`` that POSTs the alert as JSON, in a shape chat webhooks accept.

    The body is ``{"text": ..., "channel": ..., "message": ..., "fields": {...}}``:
    ``text`` (the message, with the run's link when there is one) is what
    Slack and Microsoft Teams incoming webhooks display; ``fields`` are the
    structured details for a relay of your own.

    Args:
        url: the endpoint (absolute http or https URL).
        secret: when set, the body is signed like ``WebhookCallback``'s
            older header (``X-Flowhooks-Signature: sha256=<hex>``).
        timeout: seconds per try.
        deadline: seconds for all tries and the waits between them.
        retries: tries after the first, on connection errors, 5xx, 408, 425
            and 429 (honouring ``Retry-After``); none on other 4xx.
        backoff: delay before the first retry, doubled after each (with jitter).
        max_backoff: cap on one delay.
        headers: extra headers for every request (e.g. an ``Authorization``).

    Raises:
        TypeError: when an argument has the wrong type (``url=5``,
            ``timeout="5"``, ``secret=123``); also a ``ValueError``, what these
            raised before.
        ValueError: when ``url`` is not an absolute http(s) URL, or an option
            is out of range.
    """

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes | None = None,
        timeout: float = 5.0,
        deadline: float = 5.0,
        retries: int = 2,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = str(check_http_url(url, what="WebhookNotifier url"))
        self.secret = check_secret_type(secret, allow_none=True)
        self._poster = JsonPoster(
            "WebhookNotifier",
            request_timeout=timeout,
            timeout_name="timeout",
            deadline=deadline,
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
        data = {  # safe_text: a lone surrogate in a message cannot be encoded as sent
            "text": safe_text(alert_text(message, fields)),
            "channel": safe_text(channel),
            "message": safe_text(message),
            "fields": to_jsonable(fields),
        }
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign_body(body, self.secret)
        await self._poster.post(self.url, body, lambda: headers)

    async def aclose(self) -> None:
        """Nothing to close: each alert opens and closes its own HTTP client."""


DEFAULT_CHANNELS: Final[Mapping[str, str]] = {
    "critical": "alerts",
    "failure": "alerts",
    "cancel": "alerts",
    "completion": "runs",
}
"""Channel per alert kind; override any of them with ``channels={...}``."""


def alert_text(message: str, fields: Mapping[str, Any]) -> str:
    """The human-readable alert: the message, then the run's link when there is one."""
    url = fields.get("run_url")
    if not isinstance(url, str) or not url or message.endswith(url):
        return message  # NotificationCallback's messages end with the link already
    return f"{message}\n{url}"


def _seconds(value: float | None) -> str:
    return f"{value:.2f}s" if value is not None else "an unknown time"


class NotificationCallback(RunReporter):
    """Send alerts through a ``Notifier`` when something worth a human's attention happens.

    Alert kinds, each sent to its channel (see ``DEFAULT_CHANNELS``):

    * ``critical``: an ``error`` event whose severity is in ``severities``
      (by default only ``"critical"``: a node declared ``critical=True``
      failing for good, or the run timing out), sent as it happens.
    * ``failure``: a run ended ``failed``, or ``crashed`` (the sweep's end of a run whose
      process died, delivered through a ``DurableCallback``).
    * ``cancel``: a run ended ``cancelled``.
    * ``completion``: a run ended ``succeeded``.

    Every alert carries ``fields``: ``kind``, ``run_id``, ``workflow_name``,
    ``status``, ``dedup_key`` (one per run and node, see ``dedup_key``;
    PagerDuty groups alerts by it), ``run_url`` (``None`` without a
    template) and, as they apply, ``node_id``, ``attempt``, ``severity``,
    ``error_type``, ``error_message``, ``duration``, ``final_node`` and
    ``resource_id``. With ``run_url``, the message ends with the run's link.
    The message and the fields are redacted before the notifier sees them
    (``redact``): secret-named fields become ``"***"`` and credentials are
    cut from error messages and links.

    Every alert, the inline critical-error alert included, is bounded by
    ``deadline``: a notifier still sending then is abandoned and an
    ``AlertTimeoutError`` is raised. A notifier that raises is isolated by
    the ``CallbackManager`` like any handler error: logged, counted, and the
    run goes on; after 5 failures in a row the handler's circuit breaker
    skips it for 30 s (``breaker``).

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
        run_url: a link to the run, as a template with ``{run_id}``,
            ``{workflow_name}`` and ``{resource_id}`` (URL-quoted), e.g.
            ``"https://ci.example/runs/{run_id}"``; rendered into every alert.
        deadline: seconds one alert may take, whatever the notifier does.
        redact: ``True`` (the process-wide policy, ``flowhooks.redaction()``),
            ``False`` (send messages and fields as they are), key names to add
            to the process-wide policy, or a ``flowhooks.Redaction``.

    Raises:
        TypeError: when ``notifier`` has no ``async send`` method, ``redact``
            is not one of the options above, or another argument has the
            wrong type (``deadline="5"``, ``run_url=5``, ``on_failure="yes"``;
            those are also ``ValueError``, what they raised before).
        ValueError: for an unknown severity or alert kind, a ``run_url``
            template naming anything else, or a ``deadline`` that is not a
            positive number of seconds.
    """

    breaker = CircuitBreaker()  # a network service: skipped for a while when it keeps failing

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
        run_url: str | None = None,
        deadline: float = 5.0,
        redact: bool | Redaction | Iterable[str] = True,
    ) -> None:
        self.redact = Redaction.coerce(redact)
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
        self.on_critical = check_flag("on_critical", on_critical)
        self.on_failure = check_flag("on_failure", on_failure)
        self.on_completion = check_flag("on_completion", on_completion)
        self.on_cancel = check_flag("on_cancel", on_cancel)
        super().__init__(subworkflows=subworkflows)
        if isinstance(severities, str):
            severities = [severities]
        elif isinstance(severities, bytes | Mapping) or not isinstance(severities, Iterable):
            reject_type("severities", "a list of severity names", severities)
        severities = list(severities)
        for severity in severities:
            if not isinstance(severity, str):  # a Severity is a str too
                reject_type("severities entries", "severity names (str)", severity)
        known = {s.value for s in Severity}
        chosen = frozenset(str(s) for s in severities)
        if chosen - known:
            msg = (
                f"unknown severities {sorted(chosen - known)}; "
                f"choose from {', '.join(sorted(known))}"
            )
            raise ValueError(msg)
        self.severities = chosen
        if channels is not None and not isinstance(channels, Mapping):
            reject_type("channels", "a mapping of alert kind -> channel name, or None", channels)
        for kind, channel in (channels or {}).items():
            if not isinstance(kind, str) or not isinstance(channel, str):
                reject_type(
                    "channels", "a mapping of alert kind (str) -> channel name (str)", channels
                )
        unknown = set(channels or {}) - set(DEFAULT_CHANNELS)
        if unknown:
            msg = (
                f"unknown alert kinds in channels: {sorted(unknown)}; "
                f"the kinds are {', '.join(DEFAULT_CHANNELS)}"
            )
            raise ValueError(msg)
        self.channels: dict[str, str] = {**DEFAULT_CHANNELS, **(channels or {})}
        self.run_url = _check_template(run_url)
        self.deadline = check_positive(deadline, "deadline")

    def _link(self, run_id: str, workflow_name: str, resource_id: str | None) -> str | None:
        if self.run_url is None:
            return None
        values = {"run_id": run_id, "workflow_name": workflow_name, "resource_id": resource_id}
        return self.run_url.format_map({k: quote(str(v or ""), safe="") for k, v in values.items()})

    async def _send(self, channel: str, message: str, **fields: Any) -> None:
        """Send one alert through the notifier, within ``deadline``."""
        fields["run_url"] = self._link(
            fields["run_id"], fields["workflow_name"], fields.get("resource_id")
        )
        policy = Redaction.resolve(self.redact)
        if policy is not None:
            message = policy.text(message)
            fields = policy.value(fields)
        link = fields["run_url"]
        text = f"{message}\n{link}" if link else message
        scope = asyncio.timeout(self.deadline)
        try:
            async with scope:
                await self.notifier.send(channel, text, **fields)
        except TimeoutError as exc:
            if not scope.expired():
                raise  # the notifier's own timeout: its message says more
            msg = (
                f"NotificationCallback: the {fields['kind']} alert for run {fields['run_id']} "
                f"was not sent within its deadline of {self.deadline:g}s by {self.notifier!r}"
            )
            raise AlertTimeoutError(msg) from exc

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
        await self._send(
            self.channels["critical"],
            message,
            kind="critical",
            run_id=run_id,
            workflow_name=workflow,
            status="running",
            dedup_key=dedup_key(run_id, error_info.node_id),
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
            # the sweep's end of a run whose process died (through a DurableCallback)
            RunStatus.CRASHED.value: "failure" if self.on_failure else None,
            RunStatus.CANCELLED.value: "cancel" if self.on_cancel else None,
            RunStatus.SUCCEEDED.value: "completion" if self.on_completion else None,
        }.get(status)
        if kind is None:
            return
        duration = result.duration if result is not None else event.duration
        error = result.error if result is not None else None
        final_node = result.final_node if result is not None else None
        label = f"Workflow {event.workflow_name!r} run {event.run_id}"
        if status == RunStatus.CRASHED.value:
            message = (
                f"{label} crashed: the process running it stopped reporting "
                f"(killed, out of memory, or lost) after {_seconds(duration)}"
            )
        elif kind == "failure":
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
        await self._send(
            self.channels[kind],
            message,
            kind=kind,
            run_id=event.run_id,
            workflow_name=event.workflow_name,
            status=status,
            dedup_key=dedup_key(event.run_id, final_node if kind == "failure" else None),
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


_TEMPLATE_FIELDS: Final = {"run_id": "r", "workflow_name": "w", "resource_id": "x"}


def _check_template(run_url: object) -> str | None:
    """Return ``run_url`` when it renders with the known fields, else raise naming it."""
    if run_url is None:
        return None
    if not isinstance(run_url, str):
        reject_type("run_url", "a URL template string or None", run_url)
    if not run_url:
        msg = f"run_url must be a URL template string or None, got {run_url!r}"
        raise ValueError(msg)
    try:
        run_url.format_map(_TEMPLATE_FIELDS)
    except (KeyError, IndexError, ValueError) as exc:
        known = ", ".join("{" + k + "}" for k in _TEMPLATE_FIELDS)
        msg = f"run_url {run_url!r} is not a valid template ({exc!r}); it may use {known}"
        raise ValueError(msg) from None
    return run_url
