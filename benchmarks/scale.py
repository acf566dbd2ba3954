"""Scale: each graph size measured in a process of its own, the same script for every size.

In one process, what a 100,000-node run leaves behind (memory the allocator
keeps, a larger heap for the collector to walk) changes what the 1,000-node
cases measure after it, and the other way round. So ``python -m
benchmarks.scale SIZE OUT.json`` measures one size: the two hand-written
floors and flowhooks' two runners (no handlers) on a chain and a fan, in
paired rounds (CPU time), then counts the Python function calls of one run
of each runner and shape with ``cProfile``. The parent (``run_sizes``) starts
one such process per size, one after the other.

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


async def _child(n: int, quick: bool) -> dict[str, Any]:
    rounds = 2 if quick else (20 if n <= 1_000 else 5)
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
        "calls_per_node": await _calls_per_node(n),
    }


def run_sizes(quick: bool) -> dict[str, Any]:
    """Measure each size in a process of its own; return ``{"sizes": [...], "problems": [...]}``."""
    if flowhooks_runner_available() is not None:
        return {"sizes": [], "problems": []}
    out: dict[str, Any] = {"sizes": [], "problems": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes(quick):
            path = Path(tmp) / f"scale-{n}.json"
            if not quick:
                print(f"[scale] {n:,} nodes, in a process of its own", flush=True)
            args = [sys.executable, "-m", "benchmarks.scale", str(n), str(path)]
            done = subprocess.run(
                [*args, "--quick"] if quick else args,
                capture_output=True,
                text=True,
                check=False,
                cwd=Path(__file__).resolve().parent.parent,
            )
            if done.returncode != 0 or not path.exists():
                out["problems"].append(f"scale at {n:,} nodes failed: {done.stderr.strip()[-500:]}")
                continue
            size = json.loads(path.read_text())
            out["sizes"].append(size)
            for name, case in size["cases"].items():
                if not case["verified"]:
                    out["problems"].append(f"scale {name} at {n:,}: {case['verify_message']}")
    return out


def main(argv: list[str]) -> int:
    """``python -m benchmarks.scale SIZE OUT.json [--quick]``."""
    quiet_logging()
    n, path = int(argv[0]), Path(argv[1])
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * min(n, 1_000) + 1_000))
    path.write_text(json.dumps(asyncio.run(_child(n, "--quick" in argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
