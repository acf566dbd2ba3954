"""How this run's targets compare with the run before it in the same output folder.

``make bench`` overwrites ``latest.json``; before it does, the targets measured
last time are read back, so every report says how far each row moved between
two consecutive runs (the reproducibility a reader should expect of a row).
Only full runs are compared, and only rows measured in both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks._targets import Target

CLOSE = 0.05
"""A row "reproduced" when it moved by at most this fraction of its previous value."""


def read_previous(json_path: Path) -> dict[str, Any] | None:
    """The report ``json_path`` holds (the previous run), or ``None`` when there is none
    that can be compared: missing, unreadable, or not a full run."""
    try:
        payload = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("machine", {}).get("mode") != "full":
        return None
    return payload


def moves(previous: dict[str, Any], targets: list[Target]) -> list[tuple[Target, str, float]]:
    """Per target measured in both runs: the target, its previous reading as shown, and
    how much it moved (this run's value over the previous one, minus one)."""
    before = {
        t.get("what"): t
        for t in previous.get("targets", [])
        if isinstance(t, dict) and isinstance(t.get("measured"), int | float)
    }
    rows = []
    for t in targets:
        old = before.get(t.what)
        if t.measured is None or old is None or not old["measured"]:
            continue
        rows.append((t, str(old.get("shown", "")), t.measured / old["measured"] - 1))
    return rows


def render_moves(previous: dict[str, Any], targets: list[Target]) -> list[str]:
    """The report's section comparing this run with the previous one (no lines when the
    previous run cannot be compared)."""
    rows = moves(previous, targets)
    if not rows:
        return []
    close = sum(1 for *_, change in rows if abs(change) <= CLOSE)
    when = previous.get("machine", {}).get("date", "an earlier run")
    lines = [
        "",
        "## Against the previous run",
        "",
        f"The previous full run in this folder ({when}). **{close} of {len(rows)} rows "
        f"within {CLOSE:.0%}** of their previous reading.",
        "",
        "| what | previous | this run | change |",
        "|---|---|---|---|",
    ]
    for t, before, change in rows:
        mark = "" if abs(change) <= CLOSE else " **moved**"
        lines.append(f"| {t.what} | {before} | {t.shown} | {change:+.1%}{mark} |")
    return lines
