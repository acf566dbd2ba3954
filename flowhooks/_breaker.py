"""``CircuitBreaker``: stop calling a handler whose backend is down, for a while.

Place in the chain: events -> **breaker** -> handler -> hooks -> manager.

A ``CircuitBreaker`` is a setting (how many consecutive failures open it,
how long it stays open), given to ``add_handler(handler, breaker=...)`` or
set as a handler's ``breaker`` attribute. The state lives in a
``BreakerState``, one per registration, so one breaker object (a class
attribute shared by every instance of a handler class) never couples two
handlers: each registered handler trips on its own failures only.

States: *closed* (calls go through; failures and timeouts are counted,
a success resets the count), *open* (calls are skipped and counted as
``skipped`` until ``reset_after`` seconds have passed), *half-open* (calls go
through again; the first success closes it, a failure opens it again at
once). Opening and closing are logged once each.
"""

from __future__ import annotations

import threading
from time import monotonic
from typing import Final, final

from loguru import logger

from flowhooks._validate import check_count, check_seconds

_CLOSED: Final = 0
_OPEN: Final = 1
_HALF_OPEN: Final = 2


@final
class CircuitBreaker:
    """Skip a handler for ``reset_after`` seconds after ``failures`` consecutive failures.

    A failure is a call that raised or timed out. While open, the handler's
    calls are skipped without calling it and counted per event type as
    ``manager.stats[handler][event].skipped``. When ``reset_after`` seconds
    have passed, calls go through again; the first success closes the
    breaker, a failure opens it again for another ``reset_after`` seconds.

    The object only holds the settings: every handler registered with it
    keeps its own state, so a ``breaker`` class attribute is safe to share.

    Args:
        failures: consecutive failures (or timeouts) that open the breaker.
        reset_after: seconds the breaker stays open before calls are tried again.

    Raises:
        TypeError: when ``failures`` is not an int or ``reset_after`` not a
            number (``bool`` included).
        ValueError: when ``failures`` is below 1, or ``reset_after`` is not a
            finite positive number.

    Example:
        ``manager.add_handler(SlackAlerts(), breaker=CircuitBreaker(failures=3))``
    """

    __slots__ = ("failures", "reset_after")

    def __init__(self, failures: int = 5, reset_after: float = 30.0) -> None:
        count = check_count("failures", failures, minimum=1, owner="CircuitBreaker")
        if count is None:
            msg = "CircuitBreaker: failures must be an int >= 1, got None"
            raise TypeError(msg)
        self.failures: int = count
        seconds = check_seconds("reset_after", reset_after, owner="CircuitBreaker")
        assert seconds is not None  # None is refused without allow_none
        self.reset_after: float = seconds

    def __repr__(self) -> str:
        return f"CircuitBreaker(failures={self.failures}, reset_after={self.reset_after:g})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CircuitBreaker):
            return NotImplemented
        return (self.failures, self.reset_after) == (other.failures, other.reset_after)

    def __hash__(self) -> int:
        return hash((self.failures, self.reset_after))


def check_breaker(value: object, where: str) -> CircuitBreaker | None:
    """Return ``value`` when it is a ``CircuitBreaker`` or ``None``; else a ``TypeError``."""
    if value is None or isinstance(value, CircuitBreaker):
        return value
    msg = f"{where} must be a CircuitBreaker or None, got {value!r}"
    raise TypeError(msg)


@final
class BreakerState:
    """The state of one registered handler's breaker; shared by its hook calls.

    The manager asks ``admit()`` before each call and reports the outcome
    with ``succeeded()`` or ``failed()``. A lock keeps the transitions (and
    their log lines) single when runs in several threads share the handler.
    """

    __slots__ = ("_lock", "_opened_at", "_state", "breaker", "consecutive", "label")

    def __init__(self, breaker: CircuitBreaker, label: str) -> None:
        self.breaker = breaker
        self.label = label
        self.consecutive = 0
        self._state = _CLOSED
        self._opened_at = 0.0
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """Whether calls are being skipped right now."""
        return self._state == _OPEN and monotonic() - self._opened_at < self.breaker.reset_after

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        if self._state == _OPEN:
            return "open" if self.is_open else "half-open"
        return "half-open" if self._state == _HALF_OPEN else "closed"

    def admit(self) -> bool:
        """Return whether the handler may be called now (``False``: skip it)."""
        if self._state != _OPEN:
            return True
        with self._lock:
            if self._state != _OPEN:
                return True
            if monotonic() - self._opened_at < self.breaker.reset_after:
                return False
            self._state = _HALF_OPEN
            return True

    def succeeded(self) -> None:
        """Record a call that returned: resets the count, closes a half-open breaker."""
        if self._state == _CLOSED:
            self.consecutive = 0
            return
        with self._lock:
            self.consecutive = 0
            if self._state != _HALF_OPEN:
                return
            self._state = _CLOSED
        logger.warning(
            "Circuit breaker of callback {handler} closed: a call succeeded again",
            handler=self.label,
        )

    def failed(self) -> None:
        """Record a call that raised or timed out; open the breaker at the threshold."""
        with self._lock:
            self.consecutive += 1
            if self._state == _OPEN:
                return
            if self._state == _CLOSED and self.consecutive < self.breaker.failures:
                return
            self._state = _OPEN
            self._opened_at = monotonic()
            count = self.consecutive
        logger.error(
            "Circuit breaker of callback {handler} opened after {count} consecutive "
            "failure(s); its calls are skipped for {seconds:g}s",
            handler=self.label,
            count=count,
            seconds=self.breaker.reset_after,
        )
