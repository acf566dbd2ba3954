"""The benchmark report's judgement of targets, from hand-made timings (no timing here)."""

from __future__ import annotations

import json
from typing import Any

from benchmarks._harness import Result
from benchmarks._report import comparison_rows, render_comparison, render_markdown
from benchmarks._targets import Target, added_time_ratio, evaluate, paired, share_beyond


def _results(timings: dict[str, list[float]], unit: str = "event") -> dict[str, Result]:
    """Results keyed by name, from each case's time per unit in every round."""
    return {name: Result(name, "x", unit, None, "", ns_per_unit=ns) for name, ns in timings.items()}


def _target(results: dict[str, Result], what: str, extras: dict[str, Any] | None = None) -> Target:
    return next(t for t in evaluate(results, extras or {}) if t.what.startswith(what))


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


DISPATCH_ONE = "`dispatch` inside a run, 1 no-op async handler"


def test_ratios_are_paired_by_round_never_medians_of_medians() -> None:
    results = _results(
        {
            "dispatch/floor/async/N=1": [100.0, 300.0, 200.0],
            "dispatch/flowhooks/async/N=1": [250.0, 750.0, 500.0],
        }
    )
    assert paired(results, "dispatch/flowhooks/async/N=1", "dispatch/floor/async/N=1") == 2.5
    t = _target(results, DISPATCH_ONE)
    assert t.measured == 2.5
    assert t.status == "PASS"


def test_cases_timed_in_different_rounds_give_no_ratio() -> None:
    results = _results({"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0]})
    assert paired(results, "a", "b") is None


def test_a_missed_target_is_listed_with_why() -> None:
    results = _results(
        {"dispatch/floor/async/N=1": [100.0] * 3, "dispatch/flowhooks/async/N=1": [300.0] * 3}
    )
    t = _target(results, DISPATCH_ONE)
    assert t.status == "MISS"
    md = render_markdown(_info(), results, {}, evaluate(results, {}), [])
    assert f"- {DISPATCH_ONE}, x3.00 against ≤ 2.6x the async floor: " in md
    assert "per-call kind check" in md


def test_the_typed_shortcut_row_shows_its_bound_when_the_bound_misses_too() -> None:
    """A target its own bound misses is marked as one a faster implementation cannot meet."""
    results = _results(
        {
            "dispatch/flowhooks/async/N=1": [100.0] * 3,
            "dispatch/flowhooks-shortcut/async/N=1": [150.0] * 3,
            "dispatch/bound-shortcut/async/N=1": [140.0] * 3,
        }
    )
    t = _target(results, "typed shortcut `manager.on_node_start(...)`, N=1")
    assert (t.status, t.measured, t.bound) == ("MISS", 1.5, 1.4)
    assert t.unreachable
    md = render_markdown(_info(), results, {}, evaluate(results, {}), [])
    assert "(its bound: one bare `async def` around `dispatch` x1.40)" in md


def test_added_time_ratio_compares_the_time_each_adds() -> None:
    results = _results(
        {
            "with": [65.0, 70.0, 60.0],
            "without": [50.0, 50.0, 50.0],
            "bound": [120.0, 110.0, 110.0],
            "bound-base": [100.0, 100.0, 100.0],
        }
    )
    # ours adds median(1.3, 1.4, 1.2) - 1 = 0.3 of a base that is half the bound's base:
    # 0.15 of the bound's base, where the bound adds median(1.2, 1.1, 1.1) - 1 = 0.1
    value, ours, bound = added_time_ratio(results, "with", "without", "bound", "bound-base")
    assert value is not None
    assert ours is not None
    assert bound is not None
    assert abs(value - 1.5) < 1e-9
    assert abs(ours - 0.15) < 1e-9
    assert abs(bound - 0.1) < 1e-9
    assert added_time_ratio(results, "with", "without", "missing", "bound-base")[0] is None
    assert added_time_ratio(results, "with", "missing", "bound", "bound-base")[0] is None


def test_one_handler_on_the_runner_is_judged_against_the_time_the_contract_adds() -> None:
    ru = "runner/"
    results = _results(
        {
            f"{ru}flowhooks-asyncio/chain/1000/h=1": [600.0] * 3,
            f"{ru}flowhooks-asyncio/chain/1000/h=0": [300.0] * 3,
            f"{ru}floor-tasks+contract-handler/chain/1000": [1250.0] * 3,
            f"{ru}floor-tasks/chain/1000": [1000.0] * 3,
        },
        unit="node",
    )
    t = _target(results, "`AsyncioRunner` + 1 no-op handler, chain")
    assert t.measured is not None
    # the handler doubles a run three times cheaper than the floor: it adds 300 ns per
    # node, where the contract bound adds 250 ns
    assert abs(t.measured - 1.2) < 1e-9
    assert t.status == "PASS"
    assert t.note == (
        "per node, flowhooks adds 30% and the contract bound 25% of the task-per-node floor's time"
    )
    results[f"{ru}flowhooks-asyncio/chain/1000/h=1"].ns_per_unit = [900.0] * 3
    # now it adds 600 ns per node against the bound's 250
    t = _target(results, "`AsyncioRunner` + 1 no-op handler, chain")
    assert t.measured is not None
    assert abs(t.measured - 2.4) < 1e-9
    assert t.status == "MISS"


def _size(n: int, ours: float, floor: float, calls: float) -> dict[str, Any]:
    cases = {
        "flowhooks-asyncio/chain/h=0": {"ns_per_node": [ours] * 3},
        "floor-tasks/chain": {"ns_per_node": [floor] * 3},
    }
    return {"nodes": n, "cases": cases, "calls_per_node": {"flowhooks-asyncio/chain": calls}}


def test_scale_compares_the_ratio_to_the_floor_at_each_size() -> None:
    extras = {
        "scale": {
            "sizes": [_size(100_000, 1800.0, 1500.0, 51.0), _size(1000, 1000.0, 1000.0, 50.0)]
        }
    }
    t = _target({}, "scale: `AsyncioRunner` chain", extras)
    # 1.2 at 100,000 against 1.0 at 1,000: grew 1.2x faster than its floor
    assert t.measured is not None
    assert abs(t.measured - 1.2) < 1e-9
    assert t.status == "PASS"
    assert "x1.00 at 1,000, x1.20 at 100,000" in t.note
    calls = _target({}, "scale: Python calls per node, asyncio/chain", extras)
    assert calls.status == "PASS"  # 2 % more calls per node: within 5 %
    extras["scale"]["sizes"][0]["calls_per_node"]["flowhooks-asyncio/chain"] = 60.0
    assert _target({}, "scale: Python calls per node, asyncio/chain", extras).status == "MISS"


def test_targets_that_are_floors_pass_at_or_above_them() -> None:
    conc = {
        "share_of_floor": 0.55,
        "lost": 0,
        "failed_runs": 0,
        "runs_per_s": 550.0,
        "events_per_s": 12100.0,
        "floor_runs_per_s": 1000.0,
        "runs": 1000,
        "repeats": 7,
    }
    assert _target({}, "1,000 concurrent runs", {"concurrent": conc}).status == "PASS"
    conc["lost"] = 1
    assert _target({}, "1,000 concurrent runs", {"concurrent": conc}).status == "MISS"
    results = _results(
        {
            "peers/flowhooks-sequential/chain/10": [100.0] * 3,
            "peers/langchain-core/chain/10": [1900.0] * 3,
            "peers/nadoo-flow-core/chain/10": [90.0] * 3,
        },
        unit="run",
    )
    assert (
        _target(results, "10-step chain, 1 no-op handler, per run: vs langchain").status == "MISS"
    )
    assert _target(results, "10-step chain, 1 no-op handler, per run: vs nadoo").status == "MISS"


def test_the_framework_share_is_what_the_run_costs_beyond_the_hand_written_calls() -> None:
    run, hand = "user/flowhooks/metrics+logging/chain/10", "user/hand/metrics+logging/chain/10"
    results = _results({run: [500.0, 600.0, 400.0], hand: [450.0, 510.0, 360.0]}, unit="run")
    share = share_beyond(results, run, hand)  # per round 0.1, 0.15, 0.1
    assert share is not None
    assert abs(share - 0.1) < 1e-9
    t = _target(results, "10-node run with `MetricsCallback`")
    assert t.status == "PASS"
    assert t.shown == "10.0 %"


def test_the_comparison_puts_each_system_beside_flowhooks_on_the_same_job() -> None:
    results = _results(
        {
            "dispatch/flowhooks/async/N=1": [400.0, 500.0, 600.0],
            "dispatch/blinker/async/N=1": [2000.0, 2000.0, 3600.0],
        }
    )
    rows = dict(comparison_rows(results))
    cells = rows["one event to 1 no-op handler, per event"]
    assert cells == {"flowhooks": "500 ns", "blinker": "2,000 ns (x5.00)"}
    table = render_comparison(_info(), results)
    assert "| one event to 1 no-op handler, per event | 500 ns | - | 2,000 ns (x5.00) |" in table


def test_postgres_deliveries_are_judged_or_said_to_be_not_run() -> None:
    """The PostgreSQL delivery row is judged against 2,000 events/s, or says why it did
    not run (no server could start), and is listed as not measured."""
    what = "DurableCallback: deliveries per second, 4 workers on PostgreSQL"
    measured = {
        "workers": 4,
        "concurrency": 8,
        "queued": 6600,
        "delivered": 6600,
        "distinct": 6600,
        "drains": 3,
        "deliveries_per_s": 2200.0,
        "deliveries_per_s_each": [2100.0, 2200.0, 2500.0],
    }
    t = _target({}, what, {"postgres_deliveries": measured})
    assert (t.status, t.shown) == ("PASS", "2,200 events/s")
    assert t.note.endswith("median of 3 batches")
    t = _target({}, what, {"postgres_deliveries": {**measured, "deliveries_per_s": 900.0}})
    assert t.status == "MISS"
    assert "asyncpg" in t.why
    skipped = {"postgres_deliveries": {"skipped": "PostgreSQL is not installed"}}
    t = _target({}, what, skipped)
    assert t.status == "not run"
    assert t.note == "not run: PostgreSQL is not installed"
    md = render_markdown(_info(), {}, skipped, evaluate({}, skipped), [])
    (not_measured,) = [line for line in md.splitlines() if line.startswith("Not measured")]
    assert what in not_measured


def _report_of(
    targets: list[Target], mode: str = "full", date: str = "2026-11-22 00:00 UTC"
) -> dict[str, Any]:
    """What latest.json holds for a run that measured ``targets``."""
    return {
        "machine": {**_info(), "mode": mode, "date": date},
        "targets": [t.as_dict() for t in targets],
    }


def _measured(what: str, value: float) -> Target:
    t = Target(what, "<= 2x", 2.0, measured=value, shown=f"x{value:.2f}")
    t.judge()
    return t


def test_the_report_says_how_far_each_row_moved_since_the_previous_run(tmp_path: Any) -> None:
    from benchmarks._report import write_reports

    before = [_measured("row a", 1.00), _measured("row b", 2.00), _measured("row c", 1.50)]
    (tmp_path / "latest.json").write_text(json.dumps(_report_of(before)))
    now = [_measured("row a", 1.03), _measured("row b", 2.40), Target("row d", "", None)]
    md, js = write_reports(tmp_path, _info(), {}, {}, now, [])
    text = md.read_text()
    assert "## Against the previous run" in text
    assert "(2026-11-22 00:00 UTC). **1 of 2 rows within 5%**" in text
    assert "| row a | x1.00 | x1.03 | +3.0% |" in text
    assert "| row b | x2.00 | x2.40 | +20.0% **moved** |" in text
    assert "row c |" not in text.split("## Against the previous run")[1]  # not measured now
    # The next run compares with this one.
    assert [t["what"] for t in json.loads(js.read_text())["targets"]] == ["row a", "row b", "row d"]


def test_no_comparison_with_a_quick_run_a_broken_file_or_none(tmp_path: Any) -> None:
    from benchmarks._report import write_reports

    now = [_measured("row a", 1.0)]
    write_reports(tmp_path, _info(), {}, {}, now, [])  # no previous report
    assert "Against the previous run" not in (tmp_path / "latest.md").read_text()
    (tmp_path / "latest.json").write_text(json.dumps(_report_of(now, mode="quick")))
    write_reports(tmp_path, _info(), {}, {}, now, [])
    assert "Against the previous run" not in (tmp_path / "latest.md").read_text()
    (tmp_path / "latest.json").write_text("{not json")
    write_reports(tmp_path, _info(), {}, {}, now, [])
    assert "Against the previous run" not in (tmp_path / "latest.md").read_text()
    write_reports(tmp_path, {**_info(), "mode": "quick"}, {}, {}, now, [])  # quick: none
    assert "Against the previous run" not in (tmp_path / "latest.md").read_text()
