"""POSTing JSON within a deadline: what ``WebhookCallback`` and ``WebhookNotifier`` share.

One ``JsonPoster.post`` makes the tries of one delivery: each try bounded by
the per-request timeout, all of them (and the waits between them) by the
delivery's deadline. It retries what may succeed later (connection errors,
timeouts, 5xx, 408, 425, 429), waiting what the server asks in
``Retry-After`` (seconds or an HTTP date) when it says, and follows a
307/308 redirect only to a host and port that is allowed.

Host allow-lists: an entry ``host`` admits that host on the URL scheme's
default port only, ``host:port`` that port, ``*.example.com`` every
subdomain (with the same port rule); IPv6 hosts are written in brackets
(``[::1]:8080``).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC
from typing import Final

from loguru import logger

from flowhooks import FlowhooksError, RetryPolicy
from flowhooks.handlers._extras import require
from flowhooks.handlers._validate import positive_seconds, reject_type

require("httpx", extra="http", handler="WebhookCallback")

import httpx  # noqa: E402

RETRY_STATUSES: Final = frozenset({408, 425, 429})
"""Answers below 500 that are worth another try (with 5xx)."""

_REDIRECTS: Final = frozenset({307, 308})  # the redirects that keep a POST a POST
_MAX_REDIRECTS: Final = 5
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class WebhookDeliveryError(FlowhooksError):
    """A webhook could not be delivered (after its retries, refused, or out of time)."""


def check_http_url(url: object, *, what: str) -> httpx.URL:
    """Return ``url`` parsed, or raise a ``ValueError`` saying what is wrong with it.

    Raises:
        ArgumentTypeError: when ``url`` is not a str (or an ``httpx.URL``).
        ValueError: when it is not an absolute http(s) URL with a host.
    """
    if not isinstance(url, str | httpx.URL):
        reject_type(what, "an http(s) URL string", url)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        msg = f"{what} {str(url)!r} is not a valid URL: {exc}"
        raise ValueError(msg) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        msg = f"{what} {str(url)!r} must be an absolute http:// or https:// URL with a host"
        raise ValueError(msg)
    return parsed


def check_positive(value: object, name: str) -> float:
    """A finite, positive number of seconds.

    Raises:
        ArgumentTypeError: when ``value`` is not a number (a ``bool`` is not).
        ValueError: when it is zero, negative, NaN or infinite.
    """
    return positive_seconds(name, value)


def safe_url(url: str | httpx.URL) -> str:
    """The URL without credentials or query string, for logs."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid URL>"
    return str(parsed.copy_with(userinfo=b"", query=None, fragment=None))


# -- allow-lists ---------------------------------------------------------------------------


def parse_allowed(entries: Iterable[str]) -> frozenset[tuple[str, int | None]]:
    """Parse allow-list entries into ``(host, port)``; ``port`` ``None``: the default port.

    Raises:
        ArgumentTypeError: when ``entries`` is not a str or an iterable of str.
        ValueError: for an entry that is not a host name or ``host:port``.
    """
    if isinstance(entries, str):
        entries = [entries]
    elif isinstance(entries, bytes | Mapping) or not isinstance(entries, Iterable):
        reject_type("allowed_hosts", "a list of host names or 'host:port' entries", entries)
    parsed: set[tuple[str, int | None]] = set()
    for raw in entries:
        if not isinstance(raw, str):
            reject_type("allowed_hosts entries", "host names or 'host:port' (str)", raw)
        if not raw.strip():
            msg = f"allowed_hosts entries must be host names or 'host:port', got {raw!r}"
            raise ValueError(msg)
        entry = raw.strip().lower()
        host, port = entry, None
        if entry.startswith("["):  # [v6] or [v6]:port
            host, _, rest = entry[1:].partition("]")
            if rest:
                port = _port(rest.removeprefix(":"), raw)
        elif entry.count(":") == 1:
            host, _, text = entry.partition(":")
            port = _port(text, raw)
        parsed.add((host.rstrip("."), port))
    return frozenset(parsed)


def _port(text: str, raw: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        msg = f"allowed_hosts entry {raw!r} has an invalid port {text!r}"
        raise ValueError(msg)
    return int(text)


def host_allowed(url: httpx.URL, allowed: frozenset[tuple[str, int | None]]) -> bool:
    """Whether ``url``'s host and port match an allow-list entry."""
    host = url.host.lower().rstrip(".")
    default = _DEFAULT_PORTS.get(url.scheme)
    port = url.port if url.port is not None else default
    for entry_host, entry_port in allowed:
        wanted = entry_port if entry_port is not None else default
        if port != wanted:
            continue
        if host == entry_host or (entry_host.startswith("*.") and host.endswith(entry_host[1:])):
            return True
    return False


def origin_of(url: httpx.URL) -> tuple[str, int | None]:
    """The allow-list entry that admits ``url``'s own host and port."""
    port = url.port if url.port is not None else _DEFAULT_PORTS.get(url.scheme)
    return (url.host.lower().rstrip("."), port)


# -- Retry-After ---------------------------------------------------------------------------


def retry_after(response: httpx.Response, now: float | None = None) -> float | None:
    """Seconds the server asks to wait (``Retry-After``: seconds or an HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" is a digit to isdigit(), not to float()
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else time.time()
    return max(0.0, when.timestamp() - current)


# -- posting -------------------------------------------------------------------------------

_ERROR_TEXT_BYTES: Final = 200
"""How much of a refusal's body goes into the error (the rest is never read)."""


async def _body_start(response: httpx.Response) -> str:
    """The first characters of a response's body, read without reading the rest."""
    start = b""
    try:
        async for chunk in response.aiter_raw():
            start += chunk
            if len(start) >= _ERROR_TEXT_BYTES:
                break
    except httpx.HTTPError:  # the body broke off: what came is enough
        pass
    return start[:_ERROR_TEXT_BYTES].decode("utf-8", "replace")


class _Retryable(Exception):
    """One failed try that may succeed later."""

    def __init__(self, text: str, wait: float | None = None) -> None:
        super().__init__(text)
        self.wait = wait


class JsonPoster:
    """POST JSON bodies with a per-request timeout, retries and a deadline over all tries.

    Each ``post`` opens its own ``AsyncClient`` in the running loop and closes
    it before returning (the handlers POST once per run or alert), so no
    client or connection outlives a delivery, whichever loop it came from.

    Args:
        owner: the handler's name, for messages.
        request_timeout: seconds per try (connect, read, write).
        deadline: seconds for all tries and the waits between them.
        retries: tries after the first.
        backoff: delay before the first retry, doubled after each (with jitter).
        max_backoff: cap on one delay (``Retry-After`` may ask for longer, up
            to the deadline).
        headers: extra headers for every request.
    """

    def __init__(
        self,
        owner: str,
        *,
        request_timeout: float,
        deadline: float,
        retries: int,
        backoff: float,
        max_backoff: float,
        headers: Mapping[str, str] | None,
        timeout_name: str = "request_timeout",
    ) -> None:
        self.request_timeout = check_positive(request_timeout, timeout_name)
        self.deadline = check_positive(deadline, "deadline")
        if isinstance(retries, bool) or not isinstance(retries, int):
            reject_type("retries", "an int >= 0 (tries after the first)", retries)
        if retries < 0:
            msg = f"retries must be an int >= 0 (tries after the first), got {retries!r}"
            raise ValueError(msg)
        self.retries = retries
        self.policy = RetryPolicy(attempts=retries + 1, backoff=backoff, max_backoff=max_backoff)
        if headers is not None and not (
            isinstance(headers, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            msg = (
                f"{owner}(headers=...) takes a mapping of header names to str values, "
                f"got {headers!r}"
            )
            raise TypeError(msg)
        self.headers = dict(headers or {})
        self.owner = owner

    async def post(
        self,
        url: str | httpx.URL,
        body: bytes,
        headers: Callable[[], Mapping[str, str]],
        *,
        allowed: frozenset[tuple[str, int | None]] = frozenset(),
    ) -> int:
        """POST ``body`` to ``url`` within the deadline; return the final status code.

        Args:
            url: where to POST.
            body: the request body.
            headers: makes the headers of one try (signatures carry its time).
            allowed: where a 307/308 redirect may lead besides ``url``'s own
                host and port.

        Raises:
            WebhookDeliveryError: on an answer that is not retried (a 4xx
                other than 408/425/429, a redirect that is not followed), when
                every try failed, or when the deadline passed.
        """
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + self.deadline
        target = httpx.URL(url)
        allowed = allowed | {origin_of(target)}
        tries = 0
        scope = asyncio.timeout_at(ends_at)
        try:
            async with (
                scope,
                httpx.AsyncClient(follow_redirects=False, headers=self.headers) as client,
            ):
                while True:
                    tries += 1
                    try:
                        return await self._try(client, target, body, headers, ends_at, allowed)
                    except _Retryable as failure:
                        wait = self._wait_before_retry(
                            target, failure, tries, ends_at - loop.time()
                        )
                    await asyncio.sleep(wait)
        except TimeoutError:
            if not scope.expired():
                raise
            msg = (
                f"{self.owner} could not POST to {safe_url(target)} within its deadline of "
                f"{self.deadline:g}s ({tries} {'try' if tries == 1 else 'tries'})"
            )
            raise WebhookDeliveryError(msg) from None

    async def _try(
        self,
        client: httpx.AsyncClient,
        target: httpx.URL,
        body: bytes,
        headers: Callable[[], Mapping[str, str]],
        ends_at: float,
        allowed: frozenset[tuple[str, int | None]],
    ) -> int:
        """One try, following allowed 307/308 redirects; raise ``_Retryable`` to try again."""
        url = target
        for _ in range(_MAX_REDIRECTS + 1):
            remaining = ends_at - asyncio.get_running_loop().time()
            per_request = max(0.001, min(self.request_timeout, remaining))
            try:
                # Streamed: only the status, the headers and the start of an error's body
                # are read; whatever else the endpoint sends (any size) is never read.
                async with client.stream(
                    "POST", url, content=body, headers=dict(headers()), timeout=per_request
                ) as response:
                    status = response.status_code
                    if status < 300:
                        return status
                    if status in _REDIRECTS and "location" in response.headers:
                        url = self._redirect(url, response.headers["location"], allowed)
                        continue
                    if status >= 500 or status in RETRY_STATUSES:
                        msg = f"HTTP {status}"
                        raise _Retryable(msg, retry_after(response))
                    start = await _body_start(response)
                    msg = (
                        f"{self.owner} POST to {safe_url(url)} was refused with "
                        f"HTTP {status}: {start!r} (not retried)"
                    )
                    raise WebhookDeliveryError(msg)
            except httpx.TransportError as exc:
                text = str(exc)
                raise _Retryable(
                    f"{type(exc).__name__}: {text}" if text else type(exc).__name__
                ) from None
            except httpx.InvalidURL as exc:  # a redirect to a URL that cannot be requested
                msg = f"{self.owner} POST to {safe_url(url)} cannot be sent: {exc}"
                raise WebhookDeliveryError(msg) from None
        msg = f"{self.owner} POST to {safe_url(target)}: more than {_MAX_REDIRECTS} redirects"
        raise WebhookDeliveryError(msg)

    def _redirect(
        self, url: httpx.URL, location: str, allowed: frozenset[tuple[str, int | None]]
    ) -> httpx.URL:
        try:
            nxt = url.join(location)
        except (httpx.InvalidURL, TypeError, ValueError):
            nxt = None
        if nxt is None or nxt.scheme not in _DEFAULT_PORTS or not host_allowed(nxt, allowed):
            where = safe_url(nxt) if nxt is not None else repr(location)
            msg = (
                f"{self.owner} POST to {safe_url(url)} was redirected to {where}, whose "
                "host and port are not allowed; not followed"
            )
            raise WebhookDeliveryError(msg)
        return nxt

    def _wait_before_retry(
        self, target: httpx.URL, failure: _Retryable, tries: int, remaining: float
    ) -> float:
        """Return the wait before the next try, or raise to give up."""
        if tries > self.retries:
            msg = (
                f"{self.owner} could not POST to {safe_url(target)} after {tries} "
                f"{'try' if tries == 1 else 'tries'}: {failure}"
            )
            raise WebhookDeliveryError(msg)
        wait = failure.wait if failure.wait is not None else self.policy.delay(tries)
        if wait >= remaining:
            asked = " (Retry-After)" if failure.wait is not None else ""
            msg = (
                f"{self.owner} could not POST to {safe_url(target)}: {failure}; the next try, "
                f"in {wait:.2f}s{asked}, would pass the deadline of {self.deadline:g}s"
            )
            raise WebhookDeliveryError(msg)
        logger.warning(
            "{} POST to {} failed ({}); retry {} of {} in {:.2f}s",
            self.owner,
            safe_url(target),
            failure,
            tries,
            self.retries,
            wait,
        )
        return wait
