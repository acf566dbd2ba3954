"""The Markdown and JSON reports of one run: machine, targets, every case, and the
side-by-side comparison with the peer libraries (``comparison.md``)."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._harness import Result
from benchmarks._previous import read_previous, render_moves
from benchmarks._targets import NOT_JUDGED, Target, paired, x

Results = dict[str, Result]


def machine_info(*, quick: bool, started: float) -> dict[str, Any]:
    """CPU model, cores, Python and library versions, and the date of the run."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str] = {}
    from importlib.metadata import PackageNotFoundError, version

    for dist in (
        "flowhooks",
        "nadoo-flow-core",
        "langchain-core",
        "pluggy",
        "blinker",
        "apache-hamilton",
    ):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "date": datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick (smoke check; numbers are not meaningful)" if quick else "full",
        "versions": versions,
    }


def _fmt_ns(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "node":
        return f"{v / 1000:,.2f} µs"
    if unit == "run":
        return f"{v / 1000:,.0f} µs"
    return f"{v:,.0f} ns"


def _pooled_note(processes: int) -> str:
    if processes <= 1:
        return ""
    return (
        f", pooled over {processes} processes that each timed every case but the cluster's "
        "in rounds of their own"
    )


def render_markdown(
    info: dict[str, Any],
    results: Results,
    extras: dict[str, Any],
    targets: list[Target],
    notes: list[str],
    previous: dict[str, Any] | None = None,
) -> str:
    """The report as Markdown: machine, targets (and how far they moved since the
    ``previous`` run's report, when given), then every case."""
    lines = [
        "# flowhooks benchmark results",
        "",
        f"- machine: {info['cpu']}, {info['cores']} cores, {info['platform']}",
        f"- Python {info['python']} ({info['implementation']}), {info['date']}",
        f"- mode: {info['mode']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        "- times are CPU time of the benchmark's thread (wall time for the cluster cases); "
        "ratios are medians of per-round ratios to a floor timed in the same rounds"
        + _pooled_note(extras.get("processes", 1)),
        "",
        "## Targets",
        "",
        "| what | target | measured | result | same run |",
        "|---|---|---|---|---|",
    ]
    for t in targets:
        peers = ", ".join(f"{k} {v}" for k, v in t.peers.items()) or "-"
        shown = t.shown or "-"
        if t.note:
            shown += f" ({t.note})"
        status = t.status if t.status == NOT_JUDGED else f"**{t.status}**"
        lines.append(f"| {t.what} | {t.target} | {shown} | {status} | {peers} |")
    missed = [t for t in targets if t.status == "MISS"]
    judged = [t for t in targets if t.status in ("PASS", "MISS")]
    lines.append("")
    if any(t.status == NOT_JUDGED for t in targets):
        lines.append(
            "Targets are not judged in quick mode: a few short rounds say nothing about speed. "
            "Run `make bench` (or `python -m benchmarks`) for a judged report."
        )
    elif missed:
        lines.append(f"**{len(judged) - len(missed)} of {len(judged)} targets met.** Missed:")
        lines.append("")
        for t in missed:
            why = f": {t.why}" if t.why else ""
            bound = f" (its bound: {t.bound_label} {x(t.bound)})" if t.unreachable else ""
            lines.append(f"- {t.what}, {t.shown} against {t.target}{bound}{why}.")
    elif judged:
        lines.append("All targets met.")
    not_run = [t.what for t in targets if t.status == "not run"]
    if not_run:
        lines.append("")
        lines.append("Not measured in this run: " + "; ".join(not_run) + ".")
    if previous is not None and info["mode"] == "full":
        lines += render_moves(previous, targets)
    for group, unit_label in (
        ("peers", "per run"),
        ("user", "per run"),
        ("dispatch", "per event"),
        ("composites", "per event"),
        ("runner", "per node"),
        ("cluster", "per node"),
    ):
        rows = [r for r in results.values() if r.name.startswith(group + "/")]
        if not rows:
            continue
        lines += [
            "",
            f"## {_TITLES.get(group, group.capitalize())}",
            "",
            f"| case | {unit_label} | ratio to floor | floor | rounds | verified |",
            "|---|---|---|---|---|---|",
        ]
        for res in rows:
            floor = res.floor.split("/", 1)[1] if res.floor else "-"
            ratio = paired(results, res.name, res.floor) if res.floor else None
            lines.append(
                f"| {res.name.split('/', 1)[1]} | {_fmt_ns(res.median_ns, res.unit)} | "
                f"{x(ratio)} | {floor} | {len(res.ns_per_unit)} | "
                f"{'yes' if res.verified else 'NO'} |"
            )
    tp = [r for r in results.values() if r.extra.get("events_per_loop")]
    if tp:
        lines += ["", "Throughput: " + "; ".join(_throughput(r) for r in tp)]
    lines += _scale_lines(extras)
    mem = extras.get("memory")
    if mem:
        lines += [
            "",
            "## Memory retained during a run (tracemalloc peak over the run)",
            "",
            "| case | nodes | bytes per node |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {v['nodes']:,} | {v['bytes_per_node']:,.0f} |" for k, v in mem.items()]
    conc = extras.get("concurrent")
    if conc:
        lines += ["", "## Concurrent runs", "", "```", json.dumps(conc, indent=2), "```"]
    if notes or extras.get("notes"):
        lines += ["", "## Notes", ""]
        lines += [f"- {n}" for n in [*notes, *extras.get("notes", [])]]
    return "\n".join(lines) + "\n"


_TITLES = {
    "peers": "The same job in every system: a 10-step chain, 1 no-op handler",
    "user": "A run with MetricsCallback and LoggingCallback",
}


def _scale_lines(extras: dict[str, Any]) -> list[str]:
    sizes = sorted((extras.get("scale") or {}).get("sizes", []), key=lambda s: s["nodes"])
    if not sizes:
        return []
    lines = [
        "",
        "## Scale (each size in processes of its own, rounds pooled)",
        "",
        "| case | " + " | ".join(f"{s['nodes']:,} nodes, per node" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for name in sizes[0]["cases"]:
        cells = []
        for s in sizes:
            ns = s["cases"].get(name, {}).get("ns_per_node") or []
            cells.append(f"{sorted(ns)[len(ns) // 2] / 1000:,.2f} µs" if ns else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for key in sizes[0].get("calls_per_node", {}):
        cells = [f"{s['calls_per_node'].get(key, 0):.1f}" for s in sizes]
        lines.append(f"| Python calls per node, {key} | " + " | ".join(cells) + " |")
    return lines


COMPARED = (
    ("flowhooks", "flowhooks"),
    ("pluggy", "pluggy"),
    ("blinker", "blinker"),
    ("langchain-core", "langchain-core"),
    ("Hamilton", "Hamilton"),
    ("nadoo-flow-core", "nadoo-flow-core"),
)
"""The systems of the comparison table, in its column order."""


def comparison_rows(results: Results) -> list[tuple[str, dict[str, str]]]:
    """The side-by-side table: for each job, each system's time and its ratio to flowhooks.

    Ratios are paired (same rounds); a system that has no way to do a job is left blank.
    """
    jobs: list[tuple[str, str, dict[str, str]]] = [
        (
            "10-step chain, 1 no-op handler, per run",
            "peers/flowhooks-sequential/chain/10",
            {
                "pluggy": "peers/pluggy/chain/10",
                "blinker": "peers/blinker/chain/10",
                "langchain-core": "peers/langchain-core/chain/10",
                "Hamilton": "peers/hamilton/chain/10",
                "nadoo-flow-core": "peers/nadoo-flow-core/chain/10",
            },
        ),
    ]
    for n in (1, 10):
        jobs.append(
            (
                f"one event to {n} no-op handler{'s' if n > 1 else ''}, per event",
                f"dispatch/flowhooks/async/N={n}",
                {
                    "pluggy": f"dispatch/pluggy/sync/N={n}",
                    "blinker": f"dispatch/blinker/async/N={n}",
                    "langchain-core": f"dispatch/langchain-core/async/N={n}",
                },
            )
        )
    for shape, label in (("chain", "chain"), ("fan", "fan 1 → 998 → 1")):
        jobs.append(
            (
                f"1,000-node {label}, no handlers, per node",
                f"runner/flowhooks-asyncio/{shape}/1000/h=0",
                {"Hamilton": f"runner/hamilton-driver/{shape}/1000"},
            )
        )
    rows: list[tuple[str, dict[str, str]]] = []
    for job, ours, others in jobs:
        mine = results.get(ours)
        if mine is None or not mine.median_ns:
            continue
        cells = {"flowhooks": _fmt_ns(mine.median_ns, mine.unit)}
        for system, name in others.items():
            theirs = results.get(name)
            ratio = paired(results, name, ours)
            if theirs is not None and theirs.median_ns and ratio is not None:
                cells[system] = f"{_fmt_ns(theirs.median_ns, theirs.unit)} ({x(ratio)})"
        rows.append((job, cells))
    return rows


def render_comparison(info: dict[str, Any], results: Results) -> str:
    """``comparison.md``: flowhooks beside the libraries a user would use instead."""
    rows = comparison_rows(results)
    head = " | ".join(label for _, label in COMPARED)
    lines = [f"| work | {head} |", "|---|" + "---|" * len(COMPARED)]
    for job, cells in rows:
        lines.append(f"| {job} | " + " | ".join(cells.get(key, "-") for key, _ in COMPARED) + " |")
    lines += [
        "",
        f"<small>{info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"{info['date']}; {info['mode']}. In brackets: time relative to flowhooks in the "
        "same rounds (x2.00 = twice as long). Pluggy's hooks are sync, the others' "
        "async.</small>",
    ]
    return "\n".join(lines) + "\n"


def _throughput(res: Result) -> str:
    ns = res.median_ns
    if not ns:
        return f"{res.name}: -"
    return f"{res.name.split('/', 1)[1]}: {1e9 / ns:,.0f} events/s"


def quick_summary(results: Results, extras: dict[str, Any], md_path: Path, json_path: Path) -> str:
    """A few lines for a quick (smoke) run: what ran, what was verified, where the report is."""
    verified = [r for r in results.values() if r.verified]
    calls = sum(r.verified_calls for r in verified)
    lines = [
        f"benchmark smoke check: {len(results)} cases ran, {len(verified)} verified "
        f"({calls:,} handler calls counted as expected)",
    ]
    conc = extras.get("concurrent")
    if conc:
        lines.append(
            f"concurrent runs: {conc['runs']} runs at once, {conc['lost']} events lost, "
            f"{conc['failed_runs']} runs failed"
        )
    lines += [
        "speed targets: not judged in quick mode (`make bench` judges them)",
        f"report: {md_path} and {json_path.name}",
    ]
    return "\n".join(lines)


def write_reports(
    out_dir: Path,
    info: dict[str, Any],
    results: Results,
    extras: dict[str, Any],
    targets: list[Target],
    notes: list[str],
) -> tuple[Path, Path]:
    """Write ``latest.md``, ``latest.json`` and ``comparison.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "latest.md"
    js = out_dir / "latest.json"
    previous = read_previous(js)
    md.write_text(render_markdown(info, results, extras, targets, notes, previous))
    (out_dir / "comparison.md").write_text(render_comparison(info, results))
    payload = {
        "machine": info,
        "targets": [t.as_dict() for t in targets],
        "cases": [r.as_dict() for r in results.values()],
        "extras": {k: v for k, v in extras.items() if k != "problems"},
        "notes": notes,
    }
    js.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return md, js
