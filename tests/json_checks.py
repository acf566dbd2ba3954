"""Strict JSON parsing for the tests: what JavaScript's ``JSON.parse`` or Go would accept."""

from __future__ import annotations

import json
from typing import Any


def _refuse(constant: str) -> Any:
    raise ValueError(f"not strict JSON: {constant}")


def strict_json(text: str | bytes) -> Any:
    """Parse ``text``, refusing the ``NaN``, ``Infinity`` and ``-Infinity`` json.loads allows."""
    return json.loads(text, parse_constant=_refuse)
