"""Checks of the arguments handlers take, with errors that name the parameter.

A value of the wrong type raises ``ArgumentTypeError``: a ``TypeError`` that
is also a ``ValueError``, as several handlers reported such mistakes as
``ValueError`` before. A value of the right type that is out of range raises
a plain ``ValueError``. ``bool`` is never taken for a number.
"""

from __future__ import annotations

import math
from typing import NoReturn


class ArgumentTypeError(TypeError, ValueError):
    """A handler argument of the wrong type: a ``TypeError``, and also a ``ValueError``
    (what these mistakes raised before), so code catching either keeps working."""


def reject_type(name: str, expected: str, value: object) -> NoReturn:
    """Raise the ``ArgumentTypeError`` of ``name`` given ``value`` where ``expected`` was needed."""
    msg = f"{name} must be {expected}, got {value!r} ({type(value).__name__})"
    raise ArgumentTypeError(msg)


def is_number(value: object) -> bool:
    """Whether ``value`` is an ``int`` or a ``float`` (a ``bool`` is not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_flag(name: str, value: object) -> bool:
    """Return ``value``, checking it is ``True`` or ``False``.

    Raises:
        ArgumentTypeError: for anything else (``"yes"``, ``1``, ``None``).
    """
    if not isinstance(value, bool):
        reject_type(name, "True or False", value)
    return value


def check_str(name: str, value: object, *, allow_none: bool = False) -> str | None:
    """Return ``value``, checking it is a ``str`` (or ``None`` when ``allow_none``).

    Raises:
        ArgumentTypeError: for anything else.
    """
    if not isinstance(value, str) and not (value is None and allow_none):
        reject_type(name, "a str or None" if allow_none else "a str", value)
    return value


def positive_number(name: str, value: object, *, noun: str = "number") -> float:
    """Return ``value`` as a float, checking it is a finite number above zero.

    Raises:
        ArgumentTypeError: when it is not a number (a ``bool`` is not).
        ValueError: when it is zero, negative, NaN or infinite.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        reject_type(name, f"a positive {noun}", value)
    if not math.isfinite(value) or value <= 0:
        msg = f"{name} must be a positive {noun}, got {value!r}"
        raise ValueError(msg)
    return float(value)


def positive_seconds(name: str, value: object) -> float:
    """Return ``value`` as seconds, checking it is a finite number above zero.

    Raises:
        ArgumentTypeError: when it is not a number (a ``bool`` is not).
        ValueError: when it is zero, negative, NaN or infinite.
    """
    return positive_number(name, value, noun="number of seconds")


def positive_int(name: str, value: object) -> int:
    """Return ``value``, checking it is an int of at least 1.

    Raises:
        ArgumentTypeError: when it is not an int (a ``bool`` is not).
        ValueError: when it is below 1.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        reject_type(name, "a positive integer", value)
    if value < 1:
        msg = f"{name} must be a positive integer, got {value!r}"
        raise ValueError(msg)
    return value
