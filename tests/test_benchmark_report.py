"""The benchmark report's judgement of targets, from hand-made timings (no timing here)."""

from __future__ import annotations

from benchmarks._harness import Result
from benchmarks._report import Target, added, evaluate, render_markdown


def _result(name: str, ns: list[float]) -> Result:
    return Result(name, "x", "event", None, "", ns_per_unit=ns)


def _results(timings: dict[str, list[float]], prefix: str = "") -> dict[str, Result]:
    """Results keyed by name, from each case's time per unit in every round."""
    return {prefix + name: _result(prefix + name, ns) for name, ns in timings.items()}


def _dispatch_results(flowhooks_ns: float, bound_ns: float) -> dict[str, Result]:
    """Async N=1 dispatch: a floor of 100 ns per event in each of three rounds."""
    return {
        r.name: r
        for r in (
            _result("dispatch/floor/async/N=1", [100.0, 100.0, 100.0]),
            _result("dispatch/flowhooks/async/N=1", [flowhooks_ns] * 3),
            _result("dispatch/bound/async/N=1", [bound_ns] * 3),
        )
    }


def _target(results: dict[str, Result], what: str) -> Target:
    return next(t for t in evaluate(results, {}) if t.what == what)


ONE = "manager dispatch, 1 no-op async handler"


def test_a_miss_whose_bound_also_misses_is_reported_as_unreachable() -> None:
    results = _dispatch_results(flowhooks_ns=380.0, bound_ns=300.0)
    t = _target(results, ONE)
    assert t.status == "MISS"
    assert t.bound == 3.0
    assert t.unreachable
    assert t.peers["exact-stats bound"] == "x3.00"
    md = render_markdown(_info(), results, {}, evaluate(results, {}), [])
    assert "1 of them are missed by their near-minimal bound too" in md
    assert f"{ONE} (exact-stats bound x3.00)" in md


def test_a_miss_the_bound_meets_is_not_excused() -> None:
    results = _dispatch_results(flowhooks_ns=380.0, bound_ns=200.0)
    t = _target(results, ONE)
    assert t.status == "MISS"
    assert not t.unreachable
    md = render_markdown(_info(), results, {}, evaluate(results, {}), [])
    assert "bound too" not in md


def test_a_pass_is_a_pass_whatever_the_bound() -> None:
    t = _target(_dispatch_results(flowhooks_ns=240.0, bound_ns=300.0), ONE)
    assert t.status == "PASS"
    assert t.bound == 3.0
    assert t.as_dict()["unreachable"] is False  # a pass shows the target can be met


def test_without_a_bound_case_nothing_is_claimed_about_it() -> None:
    results = _dispatch_results(flowhooks_ns=380.0, bound_ns=300.0)
    del results["dispatch/bound/async/N=1"]
    t = _target(results, ONE)
    assert t.status == "MISS"
    assert t.bound is None
    assert not t.unreachable
    assert "exact-stats bound" not in t.peers


def test_scale_shows_the_floors_own_growth_without_excusing_a_miss() -> None:
    results = _results(
        {
            "flowhooks-asyncio/chain/1000/h=0": [1000.0],
            "flowhooks-asyncio/chain/100000/h=0": [1500.0],
            "floor-tasks/chain/1000": [1000.0],
            "floor-tasks/chain/100000": [2000.0],
        },
        "runner/",
    )
    t = _target(results, "scale: `AsyncioRunner` chain, per node at 100,000 vs 1,000")
    assert t.status == "MISS"
    assert t.measured == 1.5
    assert t.peers["floor (tasks)"] == "x2.00"
    assert "x0.75 the floor's own growth" in t.note
    assert t.bound is None
    assert not t.unreachable


def test_scale_shows_the_growth_with_the_collector_paused_and_still_judges_it_on() -> None:
    results = _results(
        {
            "flowhooks-sequential/fan/1000/h=0": [1000.0],
            "flowhooks-sequential/fan/100000/h=0": [1400.0],
            "flowhooks-sequential/fan/1000/h=0/gc-paused": [900.0],
            "flowhooks-sequential/fan/100000/h=0/gc-paused": [990.0],
            "floor-sequential/fan/1000": [100.0],
            "floor-sequential/fan/100000": [125.0],
            "floor-sequential/fan/1000/gc-paused": [100.0],
            "floor-sequential/fan/100000/gc-paused": [120.0],
        },
        "runner/",
    )
    t = _target(results, "scale: `SequentialRunner` fan, per node at 100,000 vs 1,000")
    assert t.status == "MISS"  # judged with the collector on, as the method says
    assert t.measured == 1.4
    assert "x1.10 with the garbage collector paused" in t.note
    assert t.peers["floor (sequential), collector paused"] == "x1.20"
    assert not t.unreachable


def test_scale_divides_medians_even_when_round_counts_match() -> None:
    """The two sizes run in different groups: their rounds are never paired by index."""
    results = _results(
        {
            "flowhooks-asyncio/fan/1000/h=0": [1000.0, 3000.0, 2000.0],
            "flowhooks-asyncio/fan/100000/h=0": [2000.0, 2000.0, 6000.0],
        },
        "runner/",
    )
    t = _target(results, "scale: `AsyncioRunner` fan, per node at 100,000 vs 1,000")
    assert t.measured == 1.0  # paired by index it would be median(2, 0.67, 3) = 2
    assert t.status == "PASS"


def test_added_is_the_extra_time_as_a_share_of_another_systems_own_time() -> None:
    results = _results(
        {
            "with": [130.0, 140.0, 120.0],
            "without": [100.0, 100.0, 100.0],
            "own": [200.0, 100.0, 100.0],
        }
    )
    # per round: 1 + 30/200, 1 + 40/100, 1 + 20/100 -> median 1.2
    assert added(results, "with", "without", "own") == 1.2
    assert added(results, "with", "without", "missing") is None


def _info() -> dict[str, object]:
    return {
        "cpu": "test cpu",
        "cores": 2,
        "platform": "test",
        "python": "3.11",
        "implementation": "CPython",
        "date": "2026-11-23 00:00 UTC",
        "mode": "full",
        "versions": {"flowhooks": "0"},
    }
