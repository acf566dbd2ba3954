"""Measurement core: cases, calibration, shuffled rounds, ratios to in-process floors.

A case is built twice. First with counting handlers, run for a few loops, and
checked: every event sent must have reached every handler that should see it.
Then with no-op handlers for timing. Each timed sample runs ``loops``
iterations of the case's body, calibrated so one sample takes a few
milliseconds. A sample is timed in CPU time of the benchmark's thread
(``time.thread_time()``) unless the case says it waits on threads, processes
or I/O (``clock="wall"``): on a shared machine, CPU time does not count the
moments another process had the core, which is most of the noise of wall time.
In every round the cases run in a fresh random order and each
case's time per unit (event, node, run) is divided by its floor's time per
unit from the same round; the report keeps the median of those ratios.
"""

from __future__ import annotations

import gc
import logging
import random
import re
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

Body = Callable[[int], Awaitable[None]]


@dataclass
class Built:
    """One instance of a case: its timed body and how to check what it delivered."""

    body: Body
    delivered: Callable[[], int] = lambda: 0
    """Handler calls counted so far (only meaningful when built with counting on)."""
    expected_per_loop: int = 0
    """Handler calls one loop of ``body`` must produce."""
    extra: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], Awaitable[None]] | None = None
    """Releases what the case started (background tasks), after its last sample."""


BuildFn = Callable[[bool], Awaitable[Built]]


@dataclass
class Case:
    """A named measurement.

    Attributes:
        name: unique id, e.g. ``dispatch/flowhooks/async/N=10``.
        system: ``floor``, ``flowhooks`` or a peer's name.
        build: ``await build(counting)`` returns a ``Built``.
        units_per_loop: events (or nodes, or runs) one loop of the body handles.
        unit: what ``units_per_loop`` counts, for the report.
        floor: the name of the case this one is divided by, or ``None``.
    """

    name: str
    system: str
    build: BuildFn
    units_per_loop: int
    unit: str = "event"
    floor: str | None = None
    note: str = ""
    verify_loops: int | None = None
    """Loops of the verification pass; ``None`` for the settings' default."""
    clock: str = "cpu"
    """``cpu``: the thread's CPU time, for single-threaded work that never waits;
    ``wall``: ``perf_counter``, for work that waits on threads, processes or I/O."""


@dataclass
class Result:
    """The measurements of one case."""

    name: str
    system: str
    unit: str
    floor: str | None
    note: str
    loops: int = 0
    ns_per_unit: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    verified: bool = False
    verify_message: str = ""
    verified_calls: int = 0
    """Handler calls counted by the verification pass."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_ns(self) -> float | None:
        return statistics.median(self.ns_per_unit) if self.ns_per_unit else None

    @property
    def median_ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "system": self.system,
            "unit": self.unit,
            "floor": self.floor,
            "note": self.note,
            "loops_per_sample": self.loops,
            "rounds": len(self.ns_per_unit),
            "median_ns_per_unit": self.median_ns,
            "median_ratio_to_floor": self.median_ratio,
            "verified": self.verified,
            "verify_message": self.verify_message,
            **({"extra": self.extra} if self.extra else {}),
        }


@dataclass
class Settings:
    """How hard to measure."""

    rounds: int = 20
    sample_seconds: float = 0.007
    verify_loops: int = 3
    quick: bool = False


def quiet_logging() -> None:
    """Silence loguru (flowhooks logs through it) and stdlib INFO logging while timing."""
    logger.disable("flowhooks")
    logger.remove()
    logging.disable(logging.INFO)


def select(cases: Sequence[Case], pattern: str | None) -> list[Case]:
    """Keep the cases whose name matches ``pattern`` (a regex), plus the floors they need."""
    if not pattern:
        return list(cases)
    rx = re.compile(pattern)
    wanted = {c.name for c in cases if rx.search(c.name)}
    by_name = {c.name: c for c in cases}
    for name in list(wanted):
        floor = by_name[name].floor
        while floor is not None and floor in by_name:
            wanted.add(floor)
            floor = by_name[floor].floor
    return [c for c in cases if c.name in wanted]


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.thread_time, "wall": time.perf_counter}
"""The clock of each kind of case (see ``Case.clock``)."""


async def _sample(body: Body, loops: int, clock: Callable[[], float] = time.thread_time) -> float:
    gc.collect()
    t0 = clock()
    await body(loops)
    return clock() - t0


async def _calibrate(body: Body, target: float, clock: Callable[[], float]) -> int:
    loops = 1
    while True:
        elapsed = await _sample(body, loops, clock)
        if elapsed >= target or (elapsed >= target / 2 and loops > 1):
            return loops
        if elapsed < target / 20:
            loops *= 10
        else:
            loops = max(loops + 1, int(loops * target / max(elapsed, 1e-9)))


async def verify(case: Case, loops: int) -> tuple[bool, str, int]:
    """Build ``case`` with counting handlers and check every event arrived.

    Returns whether the count is right, a message, and the number of handler calls counted.
    """
    built = await case.build(True)
    try:
        await built.body(loops)
    finally:
        if built.close is not None:
            await built.close()
    got = built.delivered()
    want = built.expected_per_loop * loops
    if got != want:
        return False, f"{case.name}: {got} handler calls counted, {want} expected", got
    return True, f"{got} handler calls counted, as expected", got


async def measure(
    cases: Sequence[Case],
    settings: Settings,
    *,
    rounds: int | None = None,
    progress: Callable[[str], None] = print,
    seed: int = 0,
) -> dict[str, Result]:
    """Verify, build, calibrate and time ``cases`` in shuffled rounds; return their results.

    ``seed`` varies the rounds' orders between the processes of a pooled run.
    """
    results: dict[str, Result] = {}
    for case in cases:
        res = Result(case.name, case.system, case.unit, case.floor, case.note)
        res.verified, res.verify_message, res.verified_calls = await verify(
            case, case.verify_loops or settings.verify_loops
        )
        if not res.verified:
            progress(f"  VERIFY FAILED {res.verify_message}")
        results[case.name] = res
    gc.collect()

    built: dict[str, Built] = {}
    for case in cases:
        built[case.name] = await case.build(False)
        results[case.name].extra.update(built[case.name].extra)
    gc.collect()
    gc.freeze()
    try:
        loops: dict[str, int] = {}
        for case in cases:
            loops[case.name] = await _calibrate(
                built[case.name].body, settings.sample_seconds, CLOCKS[case.clock]
            )
            results[case.name].loops = loops[case.name]
        n_rounds = rounds if rounds is not None else settings.rounds
        order = list(cases)
        rng = random.Random(20261123 + seed)
        for r in range(n_rounds):
            rng.shuffle(order)
            per_unit: dict[str, float] = {}
            for case in order:
                elapsed = await _sample(built[case.name].body, loops[case.name], CLOCKS[case.clock])
                per_unit[case.name] = elapsed * 1e9 / (loops[case.name] * case.units_per_loop)
            for case in cases:
                res = results[case.name]
                res.ns_per_unit.append(per_unit[case.name])
                if case.floor is not None and case.floor in per_unit:
                    res.ratios.append(per_unit[case.name] / per_unit[case.floor])
            if not settings.quick and (r + 1) % 5 == 0:
                progress(f"  round {r + 1}/{n_rounds}")
    finally:
        for b in built.values():
            if b.close is not None:
                await b.close()
        built.clear()
        gc.unfreeze()
        gc.collect()
    return results
