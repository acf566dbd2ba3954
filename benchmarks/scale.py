"""Scale: each graph size measured in processes of its own, the same script for every size.

In one process, what a 100,000-node run leaves behind (memory the allocator
keeps, a larger heap for the collector to walk) changes what the 1,000-node
cases measure after it, and the other way round. So ``python -m
benchmarks.scale SIZE OUT.json`` measures one size: the two hand-written
floors and flowhooks' two runners (no handlers) on a chain and a fan, in
paired rounds (CPU time), then (the first process of each size; the count
does not vary) counts the Python function calls of one run of each runner and
shape with ``cProfile``. The parent (``run_sizes``) starts
two such processes per size, the sizes taking turns, and pools each size's
rounds: a process's memory layout, and where the collector's passes fall in
its few rounds of 100,000 nodes, move one process's figures by several percent.

A scale row compares, for one runner and shape, flowhooks' ratio to its
same-shape floor at the large size with that ratio at the small size: a
runner that grows like its floor scores 1.0. Calls per node must stay
constant: that is the check that nothing per node is proportional to the graph.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._harness import Case, Settings, measure, quiet_logging
from benchmarks.runner import (
    _cached_workflow,
    _floor_case,
    _flowhooks_case,
    flowhooks_runner_available,
)

RUNNERS = (("asyncio", "tasks"), ("sequential", "sequential"))
SHAPES = ("chain", "fan")


def sizes(quick: bool) -> tuple[int, int]:
    """The small and the large size."""
    return (200, 2_000) if quick else (1_000, 100_000)


def _cases(n: int) -> list[Case]:
    cases: list[Case] = []
    for shape in SHAPES:
        cases += [_floor_case(kind, shape, n) for kind in ("tasks", "sequential")]
        cases += [_flowhooks_case(runner, shape, n, 0) for runner, _ in RUNNERS]
    return cases


async def _calls_per_node(n: int) -> dict[str, float]:
    """Python function calls per node, for each runner and shape: the calls of one run of
    ``n`` nodes minus those of one run of ``n // 2``, over ``n // 2`` (so a run's fixed
    calls, its start and end, are not spread over its nodes)."""
    import flowhooks as fh

    async def calls(wf: Any, runner: Any) -> int:
        await wf.run(runner=runner)  # warm: plans and caches built
        profile = cProfile.Profile()
        profile.enable()
        await wf.run(runner=runner)
        profile.disable()
        return int(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]

    out: dict[str, float] = {}
    half = n // 2
    for shape in SHAPES:
        for runner_kind, _ in RUNNERS:
            runner = fh.AsyncioRunner() if runner_kind == "asyncio" else fh.SequentialRunner()
            full = await calls(_cached_workflow(shape, n, False)[0], runner)
            part = await calls(_cached_workflow(shape, half, False)[0], runner)
            out[f"flowhooks-{runner_kind}/{shape}"] = (full - part) / (n - half)
    return out


async def _child(n: int, quick: bool, *, calls: bool = True) -> dict[str, Any]:
    rounds = 2 if quick else (20 if n <= 1_000 else 7)
    settings = Settings(rounds=rounds, sample_seconds=0.001 if quick else 0.007, quick=True)
    results = await measure(_cases(n), settings, progress=lambda _: None)
    return {
        "nodes": n,
        "rounds": rounds,
        "cases": {
            name.replace(f"/{n}", "").replace("runner/", ""): {
                "ns_per_node": r.ns_per_unit,
                "verified": r.verified,
                "verify_message": r.verify_message,
            }
            for name, r in results.items()
        },
        # deterministic, and slow under the profiler: counted in one process per size
        "calls_per_node": await _calls_per_node(n) if calls else {},
    }


PROCESSES_PER_SIZE = 2
"""Processes each size is measured in (one in quick mode); their rounds are pooled."""


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One size's measurements from several processes: every process's rounds, in order
    (so the rounds of one process stay paired with each other)."""
    merged: dict[str, Any] = json.loads(json.dumps(parts[0]))
    merged["processes"] = len(parts)
    counted = [part["calls_per_node"] for part in parts if part["calls_per_node"]]
    merged["calls_per_node"] = counted[0] if counted else {}
    for part in parts[1:]:
        merged["rounds"] += part["rounds"]
        for name, case in part["cases"].items():
            mine = merged["cases"][name]
            mine["ns_per_node"] += case["ns_per_node"]
            if mine["verified"] and not case["verified"]:
                mine["verified"], mine["verify_message"] = False, case["verify_message"]
    return merged


def run_sizes(quick: bool) -> dict[str, Any]:
    """Measure each size in processes of its own; return ``{"sizes": [...], "problems": [...]}``.

    The sizes take turns (small, large, small, large...), so that a change in the
    machine's state during the measurement reaches both sizes alike.
    """
    if flowhooks_runner_available() is not None:
        return {"sizes": [], "problems": []}
    out: dict[str, Any] = {"sizes": [], "problems": []}
    parts: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes(quick)}
    processes = 1 if quick else PROCESSES_PER_SIZE
    with tempfile.TemporaryDirectory() as tmp:
        for turn in range(processes):
            for n in sizes(quick):
                path = Path(tmp) / f"scale-{n}-{turn}.json"
                if not quick:
                    print(
                        f"[scale] {n:,} nodes, in a process of its own ({turn + 1}/{processes})",
                        flush=True,
                    )
                args = [sys.executable, "-m", "benchmarks.scale", str(n), str(path)]
                if any(part["calls_per_node"] for part in parts[n]):
                    args.append("--no-calls")  # counted already
                done = subprocess.run(
                    [*args, "--quick"] if quick else args,
                    capture_output=True,
                    text=True,
                    check=False,
                    cwd=Path(__file__).resolve().parent.parent,
                )
                if done.returncode != 0 or not path.exists():
                    err = done.stderr.strip()[-500:]
                    out["problems"].append(f"scale at {n:,} nodes failed: {err}")
                    continue
                parts[n].append(json.loads(path.read_text()))
    for n, measured in parts.items():
        if not measured:
            continue
        size = _merge(measured)
        out["sizes"].append(size)
        for name, case in size["cases"].items():
            if not case["verified"]:
                out["problems"].append(f"scale {name} at {n:,}: {case['verify_message']}")
    return out


def main(argv: list[str]) -> int:
    """``python -m benchmarks.scale SIZE OUT.json [--quick] [--no-calls]``."""
    quiet_logging()
    n, path = int(argv[0]), Path(argv[1])
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * min(n, 1_000) + 1_000))
    measured = _child(n, "--quick" in argv, calls="--no-calls" not in argv)
    path.write_text(json.dumps(asyncio.run(measured)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
