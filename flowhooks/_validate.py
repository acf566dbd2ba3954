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


@overload
def check_number(
    name: str,
    value: object,
    *,
    minimum: float = ...,
    inclusive: bool = ...,
    allow_none: bool = ...,
    unit: str = ...,
    noun: str = ...,
    owner: str | None = ...,
    default: float,
) -> float: ...
@overload
def check_number(
    name: str,
    value: object,
    *,
    minimum: float = ...,
    inclusive: bool = ...,
    allow_none: bool = ...,
    unit: str = ...,
    noun: str = ...,
    owner: str | None = ...,
) -> float | None: ...
def check_number(
    name: str,
    value: object,
    *,
    minimum: float = 0.0,
    inclusive: bool = True,
    allow_none: bool = False,
    unit: str = "",
    noun: str = "number",
    owner: str | None = None,
    default: float | None = None,
) -> float | None:
    """A finite ``int`` or ``float`` of at least ``minimum`` (above it, unless ``inclusive``).

    ``None`` is accepted when ``allow_none`` (it means "no limit") and returned
    as ``default``.

    Raises:
        ParameterTypeError: for a ``bool`` or anything that is not an ``int``/``float``.
        ValueError: for NaN, an infinity or a value out of range.
    """
    if value is None and allow_none:
        return default
    if minimum == 0 and not inclusive:
        expected = f"a positive {noun}{unit}"
    elif minimum == 0:
        expected = f"a {noun}{unit} >= 0"
    else:
        expected = f"a {noun}{unit} {'>=' if inclusive else '>'} {minimum:g}"
    if allow_none:
        expected += " or None"
    where = _describe(owner, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{where} must be {expected}, got {value!r} ({type(value).__name__})"
        raise ParameterTypeError(msg)
    number = float(value)
    if not math.isfinite(number) or number < minimum or (number == minimum and not inclusive):
        hint = ""
        if math.isinf(number):
            hint = " (use None for no limit)" if allow_none else " (it must be finite)"
        msg = f"{where} must be {expected}, got {value!r}{hint}"
        raise ValueError(msg)
    return number


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
@overload
def check_seconds(
    name: str,
    value: object,
    *,
    allow_none: bool = ...,
    allow_zero: bool = ...,
    owner: str | None = ...,
) -> float | None: ...
def check_seconds(
    name: str,
    value: object,
    *,
    allow_none: bool = False,
    allow_zero: bool = False,
    owner: str | None = None,
    default: float | None = None,
) -> float | None:
    """A finite, positive (or with ``allow_zero``, non-negative) number of seconds."""
    if value is None and allow_none:
        return default
    return check_number(
        name,
        value,
        minimum=0.0,
        inclusive=allow_zero,
        allow_none=allow_none,
        unit=" of seconds",
        owner=owner,
    )


def check_factor(name: str, value: object, *, minimum: float, owner: str | None = None) -> float:
    """A finite multiplier (a backoff) of at least ``minimum``."""
    return check_number(name, value, minimum=minimum, owner=owner, default=minimum)


@overload
def check_count(
    name: str, value: object, *, minimum: int = ..., owner: str | None = ..., allow_none: bool
) -> int | None: ...
@overload
def check_count(
    name: str, value: object, *, minimum: int = ..., owner: str | None = ...
) -> int: ...
def check_count(
    name: str,
    value: object,
    *,
    minimum: int = 0,
    owner: str | None = None,
    allow_none: bool = False,
) -> int | None:
    """An ``int`` of at least ``minimum`` (or ``None``, "no limit", when ``allow_none``).

    Raises:
        ParameterTypeError: for a ``bool``, a ``float`` or anything else that is not an ``int``.
        ValueError: for a value below ``minimum``.
    """
    if value is None and allow_none:
        return None
    expected = f"an int >= {minimum}" + (" or None" if allow_none else "")
    where = _describe(owner, name)
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{where} must be {expected}, got {value!r} ({type(value).__name__})"
        raise ParameterTypeError(msg)
    if value < minimum:
        msg = f"{where} must be {expected}, got {value!r}"
        raise ValueError(msg)
    return value
