"""Retrying an awaitable under a public ``flowhooks.RetryPolicy`` (the HTTP handlers' retries).

The policy (how many tries, how long between them, jitter) is the package's
one ``RetryPolicy``; this is only the loop that applies it to a delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from flowhooks import RetryPolicy

T = TypeVar("T")


async def retry_async(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    retry_on: Callable[[Exception], bool],
    on_retry: Callable[[int, Exception, float], None],
) -> T:
    """Await ``attempt()`` until it succeeds or ``policy.attempts`` tries are used.

    Args:
        attempt: makes one try; called anew for each.
        policy: how many tries and how long to wait between them.
        retry_on: whether an exception is worth another try; others raise at once.
        on_retry: told ``(retry_number, exception, delay)`` before each wait.

    Returns:
        The first successful result.

    Raises:
        Exception: the last try's exception, when every try failed.
    """
    retry_number = 0
    while True:
        try:
            return await attempt()
        except Exception as exc:
            retry_number += 1
            if retry_number >= policy.attempts or not retry_on(exc):
                raise
            delay = policy.delay(retry_number)
            on_retry(retry_number, exc, delay)
            await asyncio.sleep(delay)
