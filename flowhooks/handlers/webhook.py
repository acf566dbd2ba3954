"""``WebhookCallback``: POST each finished run's ``RunResult`` as JSON (extra ``http``).

A built-in handler (``flowhooks.handlers``). The target URL is configured, or
taken per run from ``metadata["callback_url"]`` when its host and port are
allow-listed. Requests carry the Standard Webhooks headers (``webhook-id``,
``webhook-timestamp`` and, with a ``secret``, ``webhook-signature``;
``verify_webhook`` checks them on the receiving side). Delivery retries
connection errors, timeouts, 5xx, 408, 425 and 429 (honouring
``Retry-After``), never other 4xx, and gives up at its ``deadline``.

httpx is imported only by this module, ``notification`` and their helpers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote

from loguru import logger

from flowhooks import (
    CircuitBreaker,
    Event,
    Redaction,
    current_run,
    redact_text,
    redact_value,
    to_jsonable,
)
from flowhooks.handlers._diagnostics import debug
from flowhooks.handlers._extras import require
from flowhooks.handlers._run_end import RunReporter
from flowhooks.handlers._validate import reject_type

require("httpx", extra="http", handler="WebhookCallback")

from flowhooks.handlers._http import (  # noqa: E402
    JsonPoster,
    WebhookDeliveryError,
    check_http_url,
    host_allowed,
    parse_allowed,
    safe_url,
)
from flowhooks.handlers._signing import (  # noqa: E402
    SIGNATURE_HEADER,
    check_secret,
    sign_body,
    standard_headers,
    verify_signature,
    verify_webhook,
)

__all__ = [
    "SIGNATURE_HEADER",
    "WebhookCallback",
    "WebhookDeliveryError",
    "sign_body",
    "verify_signature",
    "verify_webhook",
]

_UNSET: Final[Any] = object()


def header_value(text: str) -> str:
    """``text`` as an HTTP header value: printable ASCII as it is, anything else (a run id
    with an accent, a newline) percent-encoded, so the request can always be sent."""
    if text.isascii() and text.isprintable():
        return text
    return quote(text, safe=" !#$&'()*+,-./:;=?@[]^_`{|}~", errors="backslashreplace")


class WebhookCallback(RunReporter):
    """POST the ``RunResult`` of every finished run as JSON.

    The body is ``RunResult.to_dict()`` (run id, workflow name, status,
    inputs, outputs, error, per-node results, timings, metadata), redacted
    (``redact``: secret-named keys become ``"***"``, credentials are cut from
    URLs, messages and tracebacks) and serialised once; the signatures are
    computed over those bytes, the body that is sent. When the handler is
    driven outside a run, a smaller body built from the ``workflow_end``
    event. Headers: ``Content-Type: application/json``,
    ``Workflow-Run-Id``, ``Workflow-Run-Status``, ``webhook-id`` and
    ``Idempotency-Key`` (both the ``Event.id`` of the run's ``workflow_end``,
    the same on every retry and redelivery: receivers dedupe on it) and
    ``webhook-timestamp`` (Unix seconds of the try). With a ``secret``:
    ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``
    (Standard Webhooks; check it with ``verify_webhook``) and the older
    ``X-Flowhooks-Signature: sha256=<hex HMAC-SHA256 of the body>``.

    Where it posts: ``url`` when configured (no allow-listing needed), else
    the run's ``metadata[metadata_key]`` (``"callback_url"``) when its host and
    port are in ``allowed_hosts``; any other metadata URL is refused with a
    warning in the log and never fetched. A run with neither is skipped. A
    307/308 redirect is followed only to the URL's own host and port or an
    allowed one; other redirects are refused.

    Time: each try is bounded by ``request_timeout``, all tries and the waits
    between them by ``deadline``; a ``Retry-After`` that would pass the
    deadline ends the delivery at once. Delivery failures raise a
    ``WebhookDeliveryError``, which the ``CallbackManager`` logs and isolates:
    the run's outcome does not change. After 5 failed deliveries in a row the
    handler's circuit breaker skips it for 30 s (``breaker``).

    Args:
        url: the endpoint to POST to; ``None`` to use the run's metadata.
        secret: the signing secret (``whsec_<base64>`` is the base64 of the
            key, as Standard Webhooks providers hand them out; any other text
            is used as its UTF-8 bytes); ``None`` sends no signature.
        allowed_hosts: where a metadata URL (and a redirect) may point:
            ``"host"`` admits that host on the scheme's default port only
            (443 for https, 80 for http), ``"host:port"`` that port,
            ``"*.example.com"`` every subdomain. Empty (the default):
            metadata URLs are never used.
        request_timeout: seconds per try (connect, read, write).
        deadline: seconds for the whole delivery: every try and every wait.
        retries: tries after the first.
        backoff: delay before the first retry, doubled after each (with jitter).
        max_backoff: cap on one delay.
        headers: extra headers for every request.
        metadata_key: the metadata entry holding a per-run URL.
        subworkflows: also POST when a sub-workflow run ends inside a run
            this handler watches too. Off by default: a child run inherits its
            parent's metadata (and so its ``callback_url``), and its outcome
            is part of the parent's result, so the receiver gets one POST per
            run it asked about. A handler attached only to the child workflow
            posts the child's runs either way.
        timeout: the older name of ``request_timeout``.
        redact: ``True`` (the process-wide policy, ``flowhooks.redaction()``),
            ``False`` (send the result as it is), key names to add to the
            process-wide policy, or a ``flowhooks.Redaction``.

    Raises:
        TypeError: when an argument has the wrong type (``url=5``,
            ``deadline="10"``, ``secret=123``); it is also a ``ValueError``,
            what these raised before, except for ``redact``.
        ValueError: when ``url`` is not an absolute http(s) URL, an allow-list
            entry is malformed, or an option is out of range.
    """

    breaker = CircuitBreaker()  # a network service: skipped for a while when it keeps failing

    def __init__(
        self,
        url: str | None = None,
        *,
        secret: str | bytes | None = None,
        allowed_hosts: Iterable[str] = (),
        request_timeout: float = 5.0,
        deadline: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        headers: Mapping[str, str] | None = None,
        metadata_key: str = "callback_url",
        subworkflows: bool = False,
        timeout: float = _UNSET,
        redact: bool | Redaction | Iterable[str] = True,
    ) -> None:
        self.redact = Redaction.coerce(redact)
        self.url = str(check_http_url(url, what="WebhookCallback url")) if url is not None else None
        self._key = check_secret(secret)
        self.secret = secret
        self.allowed_hosts = parse_allowed(allowed_hosts)
        if not isinstance(metadata_key, str):
            reject_type("metadata_key", "a str", metadata_key)
        self.metadata_key = metadata_key
        super().__init__(subworkflows=subworkflows)
        self._poster = JsonPoster(
            "WebhookCallback",
            request_timeout=request_timeout if timeout is _UNSET else timeout,
            timeout_name="request_timeout" if timeout is _UNSET else "timeout",
            deadline=deadline,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            headers=headers,
        )

    @property
    def request_timeout(self) -> float:
        """Seconds allowed per try."""
        return self._poster.request_timeout

    @property
    def deadline(self) -> float:
        """Seconds allowed for a whole delivery (every try and wait)."""
        return self._poster.deadline

    @property
    def timeout(self) -> float:  # type: ignore[override]
        """The per-call limit the manager enforces: ``deadline`` plus one second.

        The handler ends a delivery at its ``deadline`` by itself; the manager
        (``BaseCallbackHandler.timeout``) holds it to that bound plus a second
        of grace, as a backstop. The per-try limit is ``request_timeout``.
        """
        return self._poster.deadline + 1.0

    def __repr__(self) -> str:
        target = safe_url(self.url) if self.url else f"metadata[{self.metadata_key!r}]"
        return f"WebhookCallback({target!r})"

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """POST the finished run's result to the configured or allow-listed URL."""
        event = self._run_to_report(workflow_id, output_data, event)
        if event is None:
            return  # a sub-workflow run inside a run this handler reports on
        ctx = current_run(None)
        in_run = ctx is not None and ctx.run_id == event.run_id
        metadata = ctx.metadata if ctx is not None and in_run else event.metadata
        url = self._target(metadata, event.run_id)
        if url is None:
            return
        result = ctx.result if ctx is not None and in_run else None
        if result is not None:
            data = result.to_dict()
            status = result.status.value
        else:
            status = event.status or ""
            data = {
                "run_id": event.run_id,
                "workflow_name": event.workflow_name,
                "status": status,
                "outputs": to_jsonable(event.payload),
                "ended_at": event.timestamp.isoformat(),
                "duration": event.duration,
                "parent_run_id": event.parent_run_id,
                "resource_id": event.resource_id,
                "metadata": to_jsonable(event.metadata),
            }
        data = redact_value(data, self.redact)
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        fixed = {
            "Content-Type": "application/json",
            "Workflow-Run-Id": header_value(event.run_id),
            "Workflow-Run-Status": status,
            "Idempotency-Key": event.id,
        }
        if self.secret is not None:
            fixed[SIGNATURE_HEADER] = sign_body(body, self.secret)
        key, message_id = self._key, event.id

        def headers() -> dict[str, str]:  # per try: the timestamp is signed
            return {**fixed, **standard_headers(key, message_id, body)}

        code = await self._poster.post(url, body, headers, allowed=self.allowed_hosts)
        debug("WebhookCallback delivered run {} to {} (HTTP {})", event.run_id, safe_url(url), code)

    def _target(self, metadata: Mapping[str, Any], run_id: str) -> str | None:
        if self.url is not None:
            return self.url
        candidate = metadata.get(self.metadata_key) if isinstance(metadata, Mapping) else None
        if candidate is None:
            return None
        try:
            parsed = check_http_url(candidate, what=f"metadata[{self.metadata_key!r}]")
        except ValueError as exc:
            logger.warning(
                "WebhookCallback refused the callback URL of run {}: {}",
                run_id,
                redact_text(str(exc), self.redact),
            )
            return None
        if not host_allowed(parsed, self.allowed_hosts):
            allowed = ", ".join(sorted(_entry(h, p) for h, p in self.allowed_hosts)) or "none"
            logger.warning(
                "WebhookCallback refused the callback URL of run {}: host {!r} (port {}) is "
                "not in allowed_hosts ({}); not fetched",
                run_id,
                parsed.host,
                parsed.port or "default",
                allowed,
            )
            return None
        return str(parsed)


def _entry(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port is not None else shown
