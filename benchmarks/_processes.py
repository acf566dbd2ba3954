"""Timing the in-process groups in several worker processes, one after the other, pooled.

A process's memory layout stays the same for its whole life and moves some
cases by several percent for that life: context variables and sets hash by
address, and where the allocator places a case's objects decides how they share
the caches. Twenty rounds inside one process cannot see that, so two
consecutive ``make bench`` runs disagreed by more than their own rounds' spread
on the rows that divide two small differences. The full run therefore times
the in-process groups in ``processes`` workers, each verifying, calibrating
and timing every case in its own shuffled rounds (a seed of its own), and
pools the rounds: a paired ratio is the median over every round of every
worker, rounds still paired within one process.

A worker is ``python -m benchmarks --worker FILE --seed N`` with the parent's
``--only``, ``--rounds`` and ``--quick``; it writes its raw per-round times to
``FILE``. (The scale rows pool their processes the same way, in
``benchmarks.scale``, over the JSON each size's process writes.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._harness import Result


def dump(results: dict[str, Result], path: Path) -> None:
    """Write a worker's results with every round's time (``Result.as_dict`` keeps medians)."""
    payload = [
        {
            **{k: v for k, v in r.as_dict().items() if not k.startswith("median")},
            "ns_per_unit": r.ns_per_unit,
            "ratios": r.ratios,
            "verified_calls": r.verified_calls,
        }
        for r in results.values()
    ]
    path.write_text(json.dumps(payload, default=str))


def _load(path: Path) -> list[Result]:
    out: list[Result] = []
    for item in json.loads(path.read_text()):
        out.append(
            Result(
                item["name"],
                item["system"],
                item["unit"],
                item["floor"],
                item["note"],
                loops=item["loops_per_sample"],
                ns_per_unit=list(item["ns_per_unit"]),
                ratios=list(item["ratios"]),
                verified=item["verified"],
                verify_message=item["verify_message"],
                verified_calls=item["verified_calls"],
                extra=item.get("extra", {}),
            )
        )
    return out


def pool(parts: list[list[Result]]) -> dict[str, Result]:
    """One result per case: every worker's rounds, in worker order (so pairs stay aligned)."""
    pooled: dict[str, Result] = {}
    for part in parts:
        for r in part:
            mine = pooled.get(r.name)
            if mine is None:
                pooled[r.name] = r
                continue
            mine.ns_per_unit.extend(r.ns_per_unit)
            mine.ratios.extend(r.ratios)
            mine.verified_calls += r.verified_calls
            if mine.verified and not r.verified:
                mine.verified, mine.verify_message = False, r.verify_message
    return pooled


def measure_in_workers(
    processes: int, only: str | None, rounds: int | None, *, quick: bool = False
) -> tuple[dict[str, Result], list[str], int]:
    """Run ``processes`` workers one after the other (in quick mode with ``quick``).

    Returns the pooled results, the problems (a worker that failed: its rounds
    are left out, the others' kept), and how many workers' rounds were pooled.
    """
    parts: list[list[Result]] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="flowhooks-bench-") as folder:
        for seed in range(processes):
            out = Path(folder) / f"worker-{seed}.json"
            args = [sys.executable, "-m", "benchmarks", "--worker", str(out), "--seed", str(seed)]
            if only:
                args += ["--only", only]
            if rounds:
                args += ["--rounds", str(rounds)]
            if quick:
                args.append("--quick")
            print(f"[process {seed + 1}/{processes}]", flush=True)
            done = subprocess.run(args, check=False)
            if done.returncode != 0 or not out.exists():
                problems.append(f"benchmark worker {seed + 1} exited with {done.returncode}")
                continue
            parts.append(_load(out))
    return pool(parts), problems, len(parts)
