"""One retry policy for the whole package: exponential backoff with optional full jitter.

Used by ``RetryingCallback``, ``BatchedCallback`` and the HTTP handlers. The
core depends only on pydantic and loguru, so this small policy lives here
rather than pulling in a retry library.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from flowhooks._validate import check_count, check_seconds

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Attributes:
        attempts: total tries, the first included (1 means no retry).
        backoff: delay before the second try, in seconds; doubles each time.
        max_backoff: cap on any single delay.
        jitter: when true, each delay is drawn uniformly from ``[0, delay]``
            ("full jitter") so that many failing callers do not retry in step.
    """

    attempts: int = 3
    backoff: float = 0.1
    max_backoff: float = 10.0
    jitter: bool = True

    def __post_init__(self) -> None:
        # Frozen dataclass: the checked values are written back through object.__setattr__.
        checked = {
            "attempts": check_count("attempts", self.attempts, minimum=1),
            "backoff": check_seconds("backoff", self.backoff, allow_zero=True, default=0.0),
            "max_backoff": check_seconds(
                "max_backoff", self.max_backoff, allow_zero=True, default=0.0
            ),
        }
        if not isinstance(self.jitter, bool):
            msg = f"jitter must be True or False, got {self.jitter!r}"
            raise TypeError(msg)
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def delay(self, retry_number: int) -> float:
        """Return the wait before retry ``retry_number`` (1 for the first retry)."""
        delay = min(self.backoff * 2 ** (retry_number - 1), self.max_backoff)
        return random.uniform(0, delay) if self.jitter else delay


async def retry_async(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    retry_on: Callable[[Exception], bool] = lambda exc: True,
    on_retry: Callable[[int, Exception, float], None] | None = None,
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
            if on_retry is not None:
                on_retry(retry_number, exc, delay)
            await asyncio.sleep(delay)
