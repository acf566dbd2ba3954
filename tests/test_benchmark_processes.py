"""Pooling the rounds of several benchmark processes (no timing is judged here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks._harness import Result
from benchmarks._processes import _load, dump, pool
from benchmarks._targets import paired
from benchmarks.scale import _merge

ROOT = Path(__file__).resolve().parent.parent


def _result(name: str, ns: list[float], *, verified: bool = True) -> Result:
    return Result(
        name,
        "x",
        "event",
        None,
        "",
        loops=10,
        ns_per_unit=ns,
        verified=verified,
        verify_message="ok" if verified else f"{name}: 2 handler calls counted, 3 expected",
    )


def test_pooled_rounds_stay_paired_within_each_process() -> None:
    # Process 1 runs both cases slow, process 2 fast: each round's ratio is 2, and
    # pooling must not pair a slow round of one case with a fast round of the other.
    first = [_result("a", [200.0, 210.0]), _result("b", [100.0, 105.0])]
    second = [_result("a", [20.0, 22.0, 24.0]), _result("b", [10.0, 11.0, 12.0])]
    pooled = pool([first, second])
    assert pooled["a"].ns_per_unit == [200.0, 210.0, 20.0, 22.0, 24.0]
    assert paired(pooled, "a", "b") == 2.0


def test_a_case_unverified_in_any_process_is_unverified() -> None:
    pooled = pool([[_result("a", [1.0])], [_result("a", [1.0], verified=False)]])
    assert not pooled["a"].verified
    assert "3 expected" in pooled["a"].verify_message


def test_a_worker_file_keeps_every_round(tmp_path: Path) -> None:
    original = _result("a", [1.5, 2.5, 3.5])
    original.ratios = [1.1, 1.2, 1.3]
    original.verified_calls = 7
    dump({"a": original}, tmp_path / "w.json")
    (back,) = _load(tmp_path / "w.json")
    assert (back.name, back.loops, back.verified) == ("a", 10, True)
    assert back.ns_per_unit == [1.5, 2.5, 3.5]
    assert back.ratios == [1.1, 1.2, 1.3]
    assert back.verified_calls == 7


def test_the_command_pools_the_rounds_of_its_worker_processes(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--processes",
            "2",
            "--only",
            "dispatch/(floor|flowhooks)/sync/N=1$",
            "--output-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    cases = {c["name"]: c for c in json.loads((tmp_path / "latest.json").read_text())["cases"]}
    assert set(cases) == {"dispatch/floor/sync/N=1", "dispatch/flowhooks/sync/N=1"}
    # each worker ran in quick mode too: its 3 rounds, pooled with the other's
    assert all(c["rounds"] == 6 and c["verified"] for c in cases.values())
    assert "pooled over 2 processes" in (tmp_path / "latest.md").read_text()
    # both workers' verification passes are counted: 3 loops of one call each, per case
    assert "2 verified (12 handler calls counted as expected)" in done.stdout


def test_processes_must_be_at_least_one() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--processes", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "--processes takes a whole number of at least 1, got 0" in done.stderr


def test_a_scale_size_pools_the_rounds_of_its_processes() -> None:
    def part(ns: list[float], *, verified: bool = True) -> dict[str, Any]:
        case = {"ns_per_node": ns, "verified": verified, "verify_message": "counted"}
        return {
            "nodes": 1000,
            "rounds": len(ns),
            "cases": {"floor-tasks/chain": dict(case, ns_per_node=list(ns))},
            "calls_per_node": {"flowhooks-asyncio/chain": 15.0},
        }

    first = part([1.0, 2.0])
    merged = _merge([first, part([3.0]), part([4.0], verified=False)])
    assert merged["rounds"] == 4
    assert merged["processes"] == 3
    assert merged["cases"]["floor-tasks/chain"]["ns_per_node"] == [1.0, 2.0, 3.0, 4.0]
    assert not merged["cases"]["floor-tasks/chain"]["verified"]
    assert merged["calls_per_node"] == {"flowhooks-asyncio/chain": 15.0}
    assert first["cases"]["floor-tasks/chain"]["ns_per_node"] == [1.0, 2.0]  # not changed


def test_a_scale_size_keeps_the_call_count_of_whichever_process_took_it() -> None:
    def part(calls: dict[str, float]) -> dict[str, Any]:
        case = {"ns_per_node": [1.0], "verified": True, "verify_message": ""}
        return {"nodes": 10, "rounds": 1, "cases": {"c": case}, "calls_per_node": calls}

    merged = _merge([part({}), part({"flowhooks-sequential/chain": 8.0})])
    assert merged["calls_per_node"] == {"flowhooks-sequential/chain": 8.0}
