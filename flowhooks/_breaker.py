"""``CircuitBreaker``: stop calling a handler whose backend is down, for a while.

Place in the chain: events -> **breaker** -> handler -> hooks -> manager.

A ``CircuitBreaker`` holds its settings (how many consecutive failures open
it, how long it stays open), given to ``add_handler(handler, breaker=...)`` or
set as a handler's ``breaker`` attribute, and the state of each handler it
guards: one ``BreakerState`` per (breaker, handler instance), made at the
handler's first registration and found again by every later one
(``state_for``). So a breaker stays open across runs that register the same
handler anew (``run(callbacks=[handler])``) and across every manager the
handler is added to, while one breaker object shared by several handlers (a
class attribute) never couples them: each handler trips on its own failures
only. A handler that cannot be weakly referenced gets a state per
registration. The breaker refers to its handlers weakly: the states of
handlers that were garbage collected are dropped as new handlers come.

States: *closed* (calls go through; failures and timeouts are counted per
event type, a success resets its event type's count, so a handler that fails
on every ``workflow_end`` opens although its ``workflow_start`` succeeds),
*open* (calls are skipped and counted as
``skipped`` until ``reset_after`` seconds have passed), *half-open* (calls go
through again; the first success closes it, a failure opens it again at
once). Opening and closing are logged once each.
"""

from __future__ import annotations

import threading
import weakref
from time import monotonic
from typing import Any, Final, final

from loguru import logger

from flowhooks._validate import ParameterTypeError, check_count, check_seconds

_CLOSED: Final = 0
_OPEN: Final = 1
_HALF_OPEN: Final = 2
_PRUNE_AT: Final = 64

_STATES_LOCK = threading.Lock()
"""Held while a breaker finds or makes a handler's state: registration is rare, and one
lock for all keeps breakers free of a lock to pickle."""


@final
class CircuitBreaker:
    """Skip a handler for ``reset_after`` seconds after ``failures`` consecutive failures.

    A failure is a call that raised or timed out. While open, the handler's
    calls are skipped without calling it and counted per event type as
    ``manager.stats[handler][event].skipped``. When ``reset_after`` seconds
    have passed, calls go through again; the first success closes the
    breaker, a failure opens it again for another ``reset_after`` seconds.

    The state is kept per handler instance, in the breaker: every registration
    of the same handler with the same breaker (each ``run(callbacks=[h])``,
    every manager ``h`` is added to) shares it, and a breaker given to several
    handlers (a ``breaker`` class attribute) trips each on its own failures.
    A copy or an unpickled breaker has the settings and no state.

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

    __slots__ = ("_prune_at", "_states", "failures", "reset_after")

    def __init__(self, failures: int = 5, reset_after: float = 30.0) -> None:
        count = check_count("failures", failures, minimum=1, owner="CircuitBreaker")
        if count is None:
            msg = "CircuitBreaker: failures must be an int >= 1, got None"
            raise TypeError(msg)
        self.failures: int = count
        seconds = check_seconds("reset_after", reset_after, owner="CircuitBreaker")
        assert seconds is not None  # None is refused without allow_none
        self.reset_after: float = seconds
        # id(handler) -> (a weak reference to it, its state)
        self._states: dict[int, tuple[weakref.ref[Any], BreakerState]] = {}
        self._prune_at = _PRUNE_AT

    def state_for(self, handler: object, label: str) -> BreakerState:
        """The state of ``handler`` under this breaker: made once, shared by its registrations.

        Args:
            handler: the handler instance this breaker guards.
            label: how the handler is named in the breaker's log lines.
        """
        key = id(handler)
        with _STATES_LOCK:
            found = self._states.get(key)
            if found is not None and found[0]() is handler:
                return found[1]
            state = BreakerState(self, label)
            try:
                ref = weakref.ref(handler)
            except TypeError:  # no weak references (``__slots__``): this registration alone
                return state
            self._states[key] = (ref, state)
            if len(self._states) >= self._prune_at:  # forget handlers that are gone
                for gone in [k for k, (r, _) in self._states.items() if r() is None]:
                    del self._states[gone]
                self._prune_at = max(_PRUNE_AT, 2 * len(self._states))
            return state

    def __reduce__(self) -> tuple[type[CircuitBreaker], tuple[int, float]]:
        return (CircuitBreaker, (self.failures, self.reset_after))

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
    raise ParameterTypeError(msg)


@final
class BreakerState:
    """The state of one handler's breaker; shared by its hook calls and its registrations.

    The manager asks ``admit()`` before each call and reports the outcome
    with ``succeeded()`` or ``failed()``. Every change is made under a lock,
    which keeps the transitions (and their log lines) single when runs in
    several threads (``run_sync`` bridges, managers in other threads) share
    the handler; a closed breaker with no failure counted is read without it.
    """

    __slots__ = ("_failing", "_lock", "_opened_at", "_state", "breaker", "label")

    def __init__(self, breaker: CircuitBreaker, label: str) -> None:
        self.breaker = breaker
        self.label = label
        # Consecutive failures per event type: a webhook fails only on workflow_end, and
        # its workflow_start, which always succeeds, must not reset that count.
        self._failing: dict[object, int] = {}
        self._state = _CLOSED
        self._opened_at = 0.0
        self._lock = threading.Lock()

    @property
    def consecutive(self) -> int:
        """The longest run of consecutive failures of one of the handler's event types."""
        return max(self._failing.values(), default=0)

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

    def succeeded(self, event_type: object = None) -> None:
        """Record a call that returned: resets its event type's count, closes a half-open
        breaker."""
        if self._state == _CLOSED and not self._failing:
            return  # the usual case: nothing to change
        with self._lock:
            self._failing.pop(event_type, None)
            if self._state != _HALF_OPEN:
                return
            self._state = _CLOSED
            self._failing.clear()
        logger.warning(
            "Circuit breaker of callback {handler} closed: a call succeeded again",
            handler=self.label,
        )

    def failed(self, event_type: object = None) -> None:
        """Record a call that raised or timed out; open the breaker when one event type
        reaches the threshold of consecutive failures."""
        with self._lock:
            count = self._failing[event_type] = self._failing.get(event_type, 0) + 1
            if self._state == _OPEN:
                return
            if self._state == _CLOSED and count < self.breaker.failures:
                return
            self._state = _OPEN
            self._opened_at = monotonic()
        logger.error(
            "Circuit breaker of callback {handler} opened after {count} consecutive "
            "failure(s); its calls are skipped for {seconds:g}s",
            handler=self.label,
            count=count,
            seconds=self.breaker.reset_after,
        )
