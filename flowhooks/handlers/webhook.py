"""``WebhookCallback``: POST each finished run's ``RunResult`` as JSON (extra ``http``).

A built-in handler (``flowhooks.handlers``). The target URL is configured, or
taken per run from ``metadata["callback_url"]`` when its host is allow-listed.
Bodies can be signed with HMAC-SHA256 (``verify_signature`` checks them on
the receiving side). Delivery retries with backoff on 5xx answers and
connection errors, never on 4xx.

httpx is imported only by this module (and ``notification``, which reuses its
poster).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from loguru import logger

from flowhooks import Event, FlowhooksError, RetryPolicy, current_run, to_jsonable
from flowhooks.handlers._extras import require
from flowhooks.handlers._retry import retry_async
from flowhooks.handlers._run_end import RunReporter

require("httpx", extra="http", handler="WebhookCallback")

import httpx  # noqa: E402

__all__ = [
    "SIGNATURE_HEADER",
    "WebhookCallback",
    "WebhookDeliveryError",
    "sign_body",
    "verify_signature",
]

SIGNATURE_HEADER: Final = "X-Flowhooks-Signature"
"""The header carrying ``sha256=<hex HMAC-SHA256 of the body>``."""

_PREFIX: Final = "sha256="


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign_body(body: bytes, secret: str | bytes) -> str:
    """Return the signature header value for ``body``: ``sha256=<hex digest>``."""
    return _PREFIX + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes | str, header: str | None, secret: str | bytes) -> bool:
    """Check an ``X-Flowhooks-Signature`` header against the raw request body.

    Pass the body exactly as received (before any JSON parsing). The
    comparison takes constant time.

    Args:
        body: the raw request body (``str`` is encoded as UTF-8).
        header: the header's value, ``sha256=<hex>``; ``None`` when absent.
        secret: the secret shared with the sender.

    Returns:
        Whether the header is a valid signature of ``body`` under ``secret``.
    """
    if not header or not header.startswith(_PREFIX):
        return False
    raw = body.encode() if isinstance(body, str) else body
    return hmac.compare_digest(sign_body(raw, secret), header.strip())


class WebhookDeliveryError(FlowhooksError):
    """A webhook could not be delivered (after its retries, or refused with a 4xx)."""


class _ServerError(Exception):
    """A 5xx answer: worth another try."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def check_http_url(url: object, *, what: str) -> httpx.URL:
    """Return ``url`` parsed, or raise a ``ValueError`` saying what is wrong with it."""
    if not isinstance(url, str | httpx.URL):
        msg = f"{what} must be an http(s) URL string, got {url!r}"
        raise ValueError(msg)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        msg = f"{what} {str(url)!r} is not a valid URL: {exc}"
        raise ValueError(msg) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        msg = f"{what} {str(url)!r} must be an absolute http:// or https:// URL with a host"
        raise ValueError(msg)
    return parsed


def _positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        msg = f"{name} must be a positive number of seconds, got {value!r}"
        raise ValueError(msg)
    return float(value)


class JsonPoster:
    """POST JSON bodies with timeouts and retries.

    Shared by ``WebhookCallback`` and ``WebhookNotifier``, which pass their
    delivery options straight through. Each ``post`` opens its own
    ``AsyncClient`` in the running loop and closes it before returning (the
    handlers POST once per run or alert), so no client or connection outlives
    a delivery, whichever loop it came from, and nothing needs ``aclose()``.
    """

    def __init__(
        self,
        owner: str,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        max_backoff: float,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.timeout = _positive(timeout, "timeout")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            msg = f"retries must be an int >= 0 (tries after the first), got {retries!r}"
            raise ValueError(msg)
        self.retries = retries
        self.policy = RetryPolicy(attempts=retries + 1, backoff=backoff, max_backoff=max_backoff)
        self.headers = dict(headers or {})
        self.owner = owner

    async def post(self, url: str | httpx.URL, body: bytes, headers: Mapping[str, str]) -> int:
        """POST ``body``; return the final status code.

        Raises:
            WebhookDeliveryError: on a 4xx or 3xx answer (no retry), or when
                every try ended in a 5xx or a connection error.
        """
        async with httpx.AsyncClient(
            timeout=self.timeout, follow_redirects=False, headers=self.headers
        ) as client:
            return await self._deliver(client, url, body, headers)

    async def _deliver(
        self,
        client: httpx.AsyncClient,
        url: str | httpx.URL,
        body: bytes,
        headers: Mapping[str, str],
    ) -> int:
        tries = 0

        async def attempt() -> httpx.Response:
            nonlocal tries
            tries += 1
            response = await client.post(url, content=body, headers=dict(headers))
            if response.status_code >= 500:
                raise _ServerError(response)
            return response

        def on_retry(number: int, exc: Exception, delay: float) -> None:
            logger.warning(
                "{} POST to {} failed ({}); retry {} of {} in {:.2f}s",
                self.owner,
                _safe_url(url),
                _describe(exc),
                number,
                self.retries,
                delay,
            )

        try:
            response = await retry_async(
                attempt,
                self.policy,
                retry_on=lambda exc: isinstance(exc, _ServerError | httpx.TransportError),
                on_retry=on_retry,
            )
        except (_ServerError, httpx.HTTPError) as exc:
            msg = (
                f"{self.owner} could not POST to {_safe_url(url)} after {tries} "
                f"{'try' if tries == 1 else 'tries'}: {_describe(exc)}"
            )
            raise WebhookDeliveryError(msg) from exc
        if response.status_code >= 300:
            msg = (
                f"{self.owner} POST to {_safe_url(url)} was refused with "
                f"HTTP {response.status_code}: {response.text[:200]!r} (not retried)"
            )
            raise WebhookDeliveryError(msg)
        return response.status_code


def _safe_url(url: str | httpx.URL) -> str:
    """The URL without credentials or query string, for logs."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid URL>"
    return str(parsed.copy_with(userinfo=b"", query=None, fragment=None))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _ServerError):
        return f"HTTP {exc.response.status_code}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _host_allowed(host: str, allowed: frozenset[str]) -> bool:
    host = host.lower().rstrip(".")
    for entry in allowed:
        if entry.startswith("*.") and host.endswith(entry[1:]):
            return True
        if host == entry:
            return True
    return False


class WebhookCallback(RunReporter):
    """POST the ``RunResult`` of every finished run as JSON.

    The body is ``RunResult.to_dict()`` (run id, workflow name, status,
    inputs, outputs, error, per-node results, timings, metadata) serialised
    once; when the handler is driven outside a run, a smaller body built from
    the ``workflow_end`` event. Headers: ``Content-Type: application/json``,
    ``Workflow-Run-Id``, ``Workflow-Run-Status``, ``Idempotency-Key`` (the
    event id, the same on every retry) and, when ``secret`` is set,
    ``X-Flowhooks-Signature: sha256=<hex HMAC-SHA256 of the body bytes>``.

    Where it posts: ``url`` when configured (no allow-listing needed), else
    the run's ``metadata[metadata_key]`` (``"callback_url"``) when its host is
    in ``allowed_hosts``; any other metadata URL is refused with a warning in
    the log and never fetched. A run with neither is skipped.

    Delivery failures (4xx at once; 5xx and connection errors after the
    retries) raise a ``WebhookDeliveryError``, which the ``CallbackManager``
    logs and isolates: the run's outcome does not change.

    Args:
        url: the endpoint to POST to; ``None`` to use the run's metadata.
        secret: key for the HMAC-SHA256 signature; ``None`` sends no signature.
        allowed_hosts: host names a metadata URL may point at, compared
            case-insensitively; ``"*.example.com"`` allows every subdomain.
            Empty (the default): metadata URLs are never used.
        timeout: seconds per try (connect, read, write).
        retries: tries after the first, on 5xx and connection errors.
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

    Raises:
        ValueError: when ``url`` is not an absolute http(s) URL, or an option
            is out of range.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        secret: str | bytes | None = None,
        allowed_hosts: Iterable[str] = (),
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        headers: Mapping[str, str] | None = None,
        metadata_key: str = "callback_url",
        subworkflows: bool = False,
    ) -> None:
        self.url = str(check_http_url(url, what="WebhookCallback url")) if url is not None else None
        if secret is not None and not (isinstance(secret, str | bytes) and secret):
            msg = f"secret must be a non-empty str or bytes, got {secret!r}"
            raise ValueError(msg)
        self.secret = secret
        if isinstance(allowed_hosts, str):
            allowed_hosts = [allowed_hosts]
        self.allowed_hosts = frozenset(h.strip().lower().rstrip(".") for h in allowed_hosts)
        self.metadata_key = metadata_key
        super().__init__(subworkflows=subworkflows)
        self._poster = JsonPoster(
            "WebhookCallback",
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            headers=headers,
        )

    def __repr__(self) -> str:
        target = _safe_url(self.url) if self.url else f"metadata[{self.metadata_key!r}]"
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
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "Workflow-Run-Id": event.run_id,
            "Workflow-Run-Status": status,
            "Idempotency-Key": event.id,
        }
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign_body(body, self.secret)
        code = await self._poster.post(url, body, headers)
        logger.debug(
            "WebhookCallback delivered run {} to {} (HTTP {})", event.run_id, _safe_url(url), code
        )

    def _target(self, metadata: Mapping[str, Any], run_id: str) -> str | None:
        if self.url is not None:
            return self.url
        candidate = metadata.get(self.metadata_key) if isinstance(metadata, Mapping) else None
        if candidate is None:
            return None
        try:
            parsed = check_http_url(candidate, what=f"metadata[{self.metadata_key!r}]")
        except ValueError as exc:
            logger.warning("WebhookCallback refused the callback URL of run {}: {}", run_id, exc)
            return None
        if not _host_allowed(parsed.host, self.allowed_hosts):
            allowed = ", ".join(sorted(self.allowed_hosts)) or "none"
            logger.warning(
                "WebhookCallback refused the callback URL of run {}: host {!r} is not in "
                "allowed_hosts ({}); not fetched",
                run_id,
                parsed.host,
                allowed,
            )
            return None
        return str(parsed)
