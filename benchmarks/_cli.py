"""Command line: ``python -m benchmarks [--quick] [--output-dir DIR] [--only PATTERN]``."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from benchmarks import (
    cluster,
    composites,
    dispatch,
    durable,
    external,
    peers,
    runner,
    scale,
    userlevel,
)
from benchmarks._harness import Result, Settings, measure, quiet_logging, select
from benchmarks._processes import dump, measure_in_workers
from benchmarks._report import machine_info, quick_summary, write_reports
from benchmarks._targets import evaluate, set_not_judged

DEFAULT_OUTPUT = Path(__file__).parent / "results"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark flowhooks against in-process floors and peer libraries.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke check: few rounds, small sizes; checks every case ran and every event "
        "arrived, asserts nothing about speed",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="where latest.md and latest.json go (default: benchmarks/results)",
    )
    parser.add_argument(
        "--only", metavar="PATTERN", help="run only cases whose name matches this regex"
    )
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument(
        "--processes",
        type=int,
        help="time the in-process groups in this many worker processes, one after the "
        "other, and pool their rounds (default: 5; 1 in quick mode)",
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.processes is not None and args.processes < 1:
        parser.error(f"--processes takes a whole number of at least 1, got {args.processes}")
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds takes a whole number of at least 1, got {args.rounds}")
    return args


def _local_groups(quick: bool, notes: list[str]) -> list[tuple[str, list[Any], int | None]]:
    """The groups that need nothing outside the process: every group but the cluster's."""
    groups: list[tuple[str, list[Any], int | None]] = []
    for title, module in (("peers", peers), ("user level", userlevel)):
        group_cases, group_notes = module.cases(quick)
        notes += group_notes
        groups.append((title, group_cases, None))
    groups.append(("dispatch", dispatch.cases(quick), None))
    comp, comp_notes = composites.cases(quick)
    notes += comp_notes
    groups.append(("composites", comp, None))
    run_groups, run_notes = runner.groups(quick)
    notes += run_notes
    groups += run_groups
    groups.append(("external runs", external.cases(quick), None))
    return groups


async def _measure_groups(
    groups: list[tuple[str, list[Any], int | None]],
    args: argparse.Namespace,
    settings: Settings,
) -> dict[str, Result]:
    results: dict[str, Result] = {}
    for title, group_cases, rounds in groups:
        chosen = select(group_cases, args.only)
        if not chosen:
            continue
        n_rounds = args.rounds or (rounds if rounds is not None else settings.rounds)
        if not settings.quick:
            print(f"[{title}] {len(chosen)} cases, {n_rounds} rounds", flush=True)
        t0 = time.perf_counter()
        results.update(await measure(chosen, settings, rounds=n_rounds, seed=args.seed))
        if not settings.quick:
            print(f"[{title}] done in {time.perf_counter() - t0:.1f}s", flush=True)
    return results


async def _run(args: argparse.Namespace) -> tuple[dict[str, Result], dict[str, Any], list[str]]:
    quick = args.quick
    settings = Settings(
        rounds=args.rounds or (3 if quick else 20),
        sample_seconds=0.001 if quick else 0.007,
        quick=quick,
    )
    results: dict[str, Result] = {}
    extras: dict[str, Any] = {}
    notes: list[str] = []
    local = _local_groups(quick, notes)
    if args.worker is not None:
        dump(await _measure_groups(local, args, settings), args.worker)
        return results, extras, notes
    processes = args.processes or (1 if quick else 5)
    if processes > 1:
        pooled, problems, pooled_from = measure_in_workers(
            processes, args.only, args.rounds, quick=quick
        )
        results.update(pooled)
        extras.setdefault("problems", []).extend(problems)
        extras["processes"] = pooled_from
    else:
        results.update(await _measure_groups(local, args, settings))
        extras["processes"] = 1

    cluster_cases, cluster_notes, cluster_shared = cluster.cases(quick)
    notes += cluster_notes
    try:
        if cluster_cases:
            group: list[tuple[str, list[Any], int | None]] = [
                ("cluster", cluster_cases, 1 if quick else 40)
            ]
            results.update(await _measure_groups(group, args, settings))
    finally:
        await cluster.close(cluster_shared)

    if not args.only or "runner" in args.only or "memory" in args.only:
        extras.update(await runner.extras(quick))
    if not args.only or "history" in args.only or "durable" in args.only:
        found = await durable.extras(quick)
        extras.setdefault("problems", []).extend(found.pop("problems"))
        extras.update(found)
    if not args.only or "scale" in args.only:
        extras["scale"] = scale.run_sizes(quick)
        extras.setdefault("problems", []).extend(extras["scale"].pop("problems"))
    return results, extras, notes


def main(argv: list[str] | None = None) -> int:
    """Run the suite, write the reports, and return the exit status."""
    args = _parse(argv)
    quiet_logging()
    started = time.time()
    results, extras, notes = asyncio.run(_run(args))
    if args.worker is not None:
        return 0
    targets = evaluate(results, extras)
    if args.quick:
        set_not_judged(targets)
    info = machine_info(quick=args.quick, started=started)
    md_path, json_path = write_reports(args.output_dir, info, results, extras, targets, notes)
    if args.quick:
        print(quick_summary(results, extras, md_path, json_path))
    else:
        print(md_path.read_text())
        print(f"wrote {md_path} and {json_path}")

    problems = [r.verify_message for r in results.values() if not r.verified]
    problems += [r.name + ": no samples" for r in results.values() if not r.ns_per_unit]
    problems += extras.get("problems", [])
    if not results:
        problems.append("no case ran (check --only)")
    for p in problems:
        print(f"FAILED: {p}")
    return 1 if problems else 0
