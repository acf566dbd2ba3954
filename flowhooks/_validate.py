"""Checks for the numeric parameters of the public API, with errors that name them.

Every timeout, delay, backoff, interval, grace period, count and size goes
through one of these: NaN, infinities where a finite value is needed,
negatives where they mean nothing, ``bool`` (an ``int`` to Python, a mistake
here) and wrong types are refused with the parameter's name and the value
given, before they can reach an event loop's timer heap or a retry loop.
"""

from __future__ import annotations

import math
from typing import overload


class ParameterTypeError(TypeError, ValueError):
    """A parameter got a value of the wrong type (a ``bool`` where a number is needed).

    A ``TypeError`` by nature; also a ``ValueError``, as such mistakes were reported
    before, so that code catching either keeps working.
    """


def _describe(owner: str | None, name: str) -> str:
    return f"{owner}: {name}" if owner else name


def _number(name: str, value: object, owner: str | None, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{_describe(owner, name)} must be {expected}, got {value!r} ({type(value).__name__})"
        raise ParameterTypeError(msg)
    return float(value)


@overload
def check_seconds(
    name: str,
    value: object,
    *,
    allow_none: bool = ...,
    allow_zero: bool = ...,
    owner: str | None = ...,
) -> float | None: ...
@overload
def check_seconds(
    name: str,
    value: object,
    *,
    allow_none: bool = ...,
    allow_zero: bool = ...,
    owner: str | None = ...,
    default: float,
) -> float: ...
def check_seconds(
    name: str,
    value: object,
    *,
    allow_none: bool = False,
    allow_zero: bool = False,
    owner: str | None = None,
    default: float | None = None,
) -> float | None:
    """A finite, positive (or with ``allow_zero``, non-negative) number of seconds.

    ``None`` is accepted when ``allow_none`` (it means "no limit"), and then
    returned as ``default`` when one is given.

    Raises:
        TypeError: for a ``bool`` or anything that is not an ``int``/``float``.
        ValueError: for NaN, an infinity, a negative value, or zero unless allowed.
    """
    if value is None and allow_none:
        return default
    none = " or None" if allow_none else ""
    lower = "non-negative" if allow_zero else "positive"
    expected = f"a {lower} number of seconds{none}"
    seconds = _number(name, value, owner, expected)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        hint = ""
        if math.isinf(seconds):
            hint = " (use None for no limit)" if allow_none else " (it must be finite)"
        msg = f"{_describe(owner, name)} must be {expected}, got {value!r}{hint}"
        raise ValueError(msg)
    return seconds


def check_factor(name: str, value: object, *, minimum: float, owner: str | None = None) -> float:
    """A finite multiplier (a backoff) of at least ``minimum``."""
    expected = f"a finite number >= {minimum:g}"
    factor = _number(name, value, owner, expected)
    if not math.isfinite(factor) or factor < minimum:
        msg = f"{_describe(owner, name)} must be {expected}, got {value!r}"
        raise ValueError(msg)
    return factor


@overload
def check_count(name: str, value: None, *, minimum: int = ..., owner: str | None = ...) -> None: ...
@overload
def check_count(
    name: str, value: object, *, minimum: int = ..., owner: str | None = ...
) -> int | None: ...
def check_count(
    name: str, value: object, *, minimum: int = 0, owner: str | None = None
) -> int | None:
    """An ``int`` of at least ``minimum``, or ``None`` (no limit).

    Raises:
        TypeError: for a ``bool``, a ``float`` or anything else that is not an ``int``.
        ValueError: for a value below ``minimum``.
    """
    if value is None:
        return None
    expected = f"an int >= {minimum} or None"
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{_describe(owner, name)} must be {expected}, got {value!r} ({type(value).__name__})"
        raise ParameterTypeError(msg)
    if value < minimum:
        msg = f"{_describe(owner, name)} must be {expected}, got {value!r}"
        raise ValueError(msg)
    return value
