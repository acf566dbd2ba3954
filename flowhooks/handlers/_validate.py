"""Checks of the numbers handlers take, with errors that name the parameter."""

from __future__ import annotations

import math


def positive_seconds(name: str, value: object) -> float:
    """Return ``value`` as seconds, checking it is a finite number above zero.

    Raises:
        TypeError: when it is not a number.
        ValueError: when it is zero, negative, NaN or infinite.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be a number of seconds, got {value!r}"
        raise TypeError(msg)
    if not math.isfinite(value) or value <= 0:
        msg = f"{name} must be a positive number of seconds, got {value!r}"
        raise ValueError(msg)
    return float(value)


def positive_int(name: str, value: object) -> int:
    """Return ``value``, checking it is an int of at least 1.

    Raises:
        TypeError: when it is not an int.
        ValueError: when it is below 1.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be a positive integer, got {value!r}"
        raise TypeError(msg)
    if value < 1:
        msg = f"{name} must be a positive integer, got {value!r}"
        raise ValueError(msg)
    return value
