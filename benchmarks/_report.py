"""Targets from PERFORMANCE.md, evaluated on one run's results, and the Markdown/JSON reports."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._harness import Result

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

    for dist in ("flowhooks", "langchain-core", "pluggy", "blinker", "apache-hamilton"):
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


def paired(results: Results, name: str, base: str) -> float | None:
    """Median over rounds of ``name``'s time per unit divided by ``base``'s, same round."""
    a, b = results.get(name), results.get(base)
    if a is None or b is None or not a.ns_per_unit or not b.ns_per_unit:
        return None
    if len(a.ns_per_unit) != len(b.ns_per_unit):  # different groups: medians
        return (a.median_ns or 0) / (b.median_ns or 1)
    return statistics.median(x / y for x, y in zip(a.ns_per_unit, b.ns_per_unit, strict=True))


def separate(results: Results, name: str, base: str) -> float | None:
    """``name``'s median time per unit divided by ``base``'s: for cases timed in
    different groups, whose rounds do not correspond even when equal in number."""
    a, b = results.get(name), results.get(base)
    if a is None or b is None or not a.median_ns or not b.median_ns:
        return None
    return a.median_ns / b.median_ns


def paused_growth(results: Results, big: str, small: str) -> float | None:
    """Per-unit growth from ``small`` to ``big``, both timed with the collector paused."""
    return separate(results, f"{big}/gc-paused", f"{small}/gc-paused")


@dataclass
class Target:
    """One row of the targets table."""

    what: str
    target: str
    limit: float | None
    measured: float | None = None
    shown: str = ""
    status: str = "not run"
    peers: dict[str, str] = field(default_factory=dict)
    note: str = ""
    bound: float | None = None
    """The same ratio for a near-minimal reference that does only the work the contract
    requires (exact per-call stats; ordered, re-entrant events), measured in the same run."""
    bound_label: str = ""

    @property
    def unreachable(self) -> bool:
        """Whether the target was missed and its bound misses it too: meeting it would take
        giving up part of the contract, not only a faster implementation."""
        return (
            self.status == "MISS"
            and self.bound is not None
            and self.limit is not None
            and self.bound > self.limit
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "target": self.target,
            "limit": self.limit,
            "measured": self.measured,
            "shown": self.shown,
            "status": self.status,
            "peers": self.peers,
            "note": self.note,
            "bound": self.bound,
            "bound_label": self.bound_label,
            "unreachable": self.unreachable,
        }


NOT_JUDGED = "not judged in quick mode"
"""A target's status in quick mode, whose few rounds say nothing about speed."""


def set_not_judged(targets: list[Target]) -> None:
    """Replace PASS/MISS with ``NOT_JUDGED``, for a quick (smoke) run."""
    for t in targets:
        if t.status in ("PASS", "MISS"):
            t.status = NOT_JUDGED


def added(results: Results, name: str, base: str, own: str) -> float | None:
    """1 + (``name`` - ``base``) / ``own``, median over rounds: what ``name`` adds to
    ``base``, as a share of another system's own time (all three timed in the same rounds)."""
    a, b, c = results.get(name), results.get(base), results.get(own)
    if a is None or b is None or c is None or not a.ns_per_unit:
        return None
    if not len(a.ns_per_unit) == len(b.ns_per_unit) == len(c.ns_per_unit):
        return None  # not timed in the same rounds
    rounds = zip(a.ns_per_unit, b.ns_per_unit, c.ns_per_unit, strict=True)
    return statistics.median(1 + (x - y) / z for x, y, z in rounds)


def _x(v: float | None) -> str:
    return "-" if v is None else f"x{v:.2f}"


def _ratio_target(
    results: Results,
    what: str,
    limit: float,
    target: str,
    value: Callable[[], float | None],
    peers: dict[str, Callable[[], float | None]] | None = None,
    note: str = "",
) -> Target:
    t = Target(what, target, limit, note=note)
    t.measured = value()
    t.shown = _x(t.measured)
    if t.measured is not None:
        t.status = "PASS" if t.measured <= limit else "MISS"
    for peer, fn in (peers or {}).items():
        v = fn()
        if v is not None:
            t.peers[peer] = _x(v)
    return t


def evaluate(results: Results, extras: dict[str, Any]) -> list[Target]:
    """Check every target of PERFORMANCE.md against this run's results."""

    def r(name: str, base: str) -> Callable[[], float | None]:
        return lambda: paired(results, name, base)

    d = "dispatch/"
    fa, fs = d + "floor/async/", d + "floor/sync/"
    out: list[Target] = []

    def bounded(t: Target, label: str, bound: float | None) -> Target:
        t.bound, t.bound_label = bound, label
        if bound is not None:
            t.peers = {label: _x(bound), **t.peers}
        return t

    for n, limit in ((1, 2.5), (10, 2.0)):
        out.append(
            bounded(
                _ratio_target(
                    results,
                    f"manager dispatch, {n} no-op async handler{'s' if n > 1 else ''}",
                    limit,
                    f"≤ {limit:g}x the async floor",
                    r(f"{d}flowhooks/async/N={n}", f"{fa}N={n}"),
                    {
                        "blinker": r(f"{d}blinker/async/N={n}", f"{fa}N={n}"),
                        "langchain-core": r(f"{d}langchain-core/async/N={n}", f"{fa}N={n}"),
                    },
                ),
                "exact-stats bound",
                paired(results, f"{d}bound/async/N={n}", f"{fa}N={n}"),
            )
        )
    for n in (1, 10):
        out.append(
            bounded(
                _ratio_target(
                    results,
                    f"sync-method handlers through the manager, N={n}",
                    3.0,
                    "≤ 3x the sync floor",
                    r(f"{d}flowhooks/sync/N={n}", f"{fs}N={n}"),
                    {
                        peer: r(f"{d}{peer}/sync/N={n}", f"{fs}N={n}")
                        for peer in ("pluggy", "blinker", "langchain-core")
                    },
                ),
                "exact-stats bound",
                paired(results, f"{d}bound/sync/N={n}", f"{fs}N={n}"),
            )
        )
    out.append(
        _ratio_target(
            results,
            "10 handlers that ignore the event",
            1.2,
            "≤ 1.2x the cost with 0 handlers",
            r(f"{d}flowhooks/ignore/N=10", f"{d}flowhooks/async/N=0"),
            {
                "langchain-core": r(
                    f"{d}langchain-core/ignore/N=10", f"{d}langchain-core/async/N=0"
                ),
                "pluggy": r(f"{d}pluggy/ignore/N=10", f"{d}pluggy/sync/N=0"),
                "blinker": r(f"{d}blinker/ignore/N=10", f"{d}blinker/async/N=0"),
            },
        )
    )
    ev = extras.get("event_construction")
    t = Target("`Event` construction", "only when some handler asks for `event=`", None)
    if ev:
        if ev["with_event"] == 0:  # the counting hooks did not see how events are built
            t.status = "unknown"
        else:
            t.status = "PASS" if ev["without_event"] == 0 else "MISS"
        t.shown = (
            f"{ev['without_event']} built without `event=`, "
            f"{ev['with_event']} with (over {ev['events']} events)"
        )
        t.note = ev.get("where", "")
    out.append(t)

    for shape in ("chain", "fan"):
        cl = f"cluster/{{}}/{shape}/20"
        out.append(
            _ratio_target(
                results,
                f"`DaskRunner`, no handlers, {shape} of 20 trivial nodes",
                1.2,
                "≤ 1.2x Dask's own client.submit + result",
                r(cl.format("flowhooks-dask"), cl.format("floor-dask-submit")),
                note="per node, LocalCluster of 2 worker processes",
            )
        )

    ru = "runner/"
    for shape in ("chain", "fan"):
        base = f"{ru}floor-tasks/{shape}/1000"
        out.append(
            _ratio_target(
                results,
                f"`AsyncioRunner`, no handlers, {shape} of 1,000",
                1.2,
                "≤ 1.2x the task-per-node floor",
                r(f"{ru}flowhooks-asyncio/{shape}/1000/h=0", base),
                {
                    "Hamilton Driver": r(f"{ru}hamilton-driver/{shape}/1000", base),
                    "Hamilton AsyncDriver": r(f"{ru}hamilton-async/{shape}/1000", base),
                },
            )
        )
    for shape in ("chain", "fan"):
        h1 = r(f"{ru}flowhooks-asyncio/{shape}/1000/h=1", f"{ru}flowhooks-asyncio/{shape}/1000/h=0")
        out.append(
            bounded(
                _ratio_target(
                    results,
                    f"`AsyncioRunner` + 1 no-op handler, {shape} of 1,000",
                    1.15,
                    "adds ≤ 15 %",
                    h1,
                    {
                        "floor + bare handler": r(
                            f"{ru}floor-tasks+handler/{shape}/1000", f"{ru}floor-tasks/{shape}/1000"
                        ),
                        "Hamilton Driver + adapter": r(
                            f"{ru}hamilton-driver/{shape}/1000/adapter",
                            f"{ru}hamilton-driver/{shape}/1000",
                        ),
                        "Hamilton AsyncDriver + adapter": r(
                            f"{ru}hamilton-async/{shape}/1000/adapter",
                            f"{ru}hamilton-async/{shape}/1000",
                        ),
                    },
                    note="ratio to the same runner without handlers",
                ),
                "contract bound",
                added(
                    results,
                    f"{ru}floor-tasks+contract-handler/{shape}/1000",
                    f"{ru}floor-tasks/{shape}/1000",
                    f"{ru}flowhooks-asyncio/{shape}/1000/h=0",
                ),
            )
        )
    out.append(
        _ratio_target(
            results,
            "`SequentialRunner`, chain of 1,000",
            3.0,
            "≤ 3x the sequential floor",
            r(f"{ru}flowhooks-sequential/chain/1000/h=0", f"{ru}floor-sequential/chain/1000"),
        )
    )
    for runner_name in ("asyncio", "sequential"):
        for shape in ("chain", "fan"):
            big = f"{ru}flowhooks-{runner_name}/{shape}/100000/h=0"
            small = f"{ru}flowhooks-{runner_name}/{shape}/1000/h=0"
            floor_kind = "tasks" if runner_name == "asyncio" else "sequential"
            growth = separate(
                results,
                f"{ru}floor-{floor_kind}/{shape}/100000",
                f"{ru}floor-{floor_kind}/{shape}/1000",
            )
            t = _ratio_target(
                results,
                f"scale: `{runner_name.capitalize()}Runner` {shape}, per node at 100,000 vs 1,000",
                1.2,
                "≤ 1.2x (linear)",
                lambda big=big, small=small: separate(results, big, small),
                {f"floor ({floor_kind})": lambda growth=growth: growth},
                note="medians of separate groups (not paired by round)",
            )
            if t.measured is not None and growth:
                t.note += f"; x{t.measured / growth:.2f} the floor's own growth"
            paused = paused_growth(results, big, small)
            if paused is not None:
                t.note += f"; x{paused:.2f} with the garbage collector paused"
                floor_paused = paused_growth(
                    results,
                    f"{ru}floor-{floor_kind}/{shape}/100000",
                    f"{ru}floor-{floor_kind}/{shape}/1000",
                )
                if floor_paused is not None:
                    t.peers[f"floor ({floor_kind}), collector paused"] = _x(floor_paused)
            out.append(t)
    mem = extras.get("memory", {})
    for key, entry in mem.items():
        if not key.startswith("flowhooks"):
            continue
        t = Target(
            f"memory retained during a run: {key}",
            "≤ 1.5 KB per node" if entry["nodes"] >= 100_000 else "(1.5 KB/node, at 100,000)",
            1536.0,
        )
        t.measured = entry["bytes_per_node"]
        t.shown = f"{entry['bytes_per_node']:,.0f} B/node"
        if entry["nodes"] >= 100_000:
            t.status = "PASS" if t.measured <= 1536 else "MISS"
        else:
            t.status = "info"
            t.note = f"measured at {entry['nodes']:,} nodes (quick mode)"
        for fkey, fentry in mem.items():
            same = fentry["nodes"] == entry["nodes"] and fentry["shape"] == entry["shape"]
            if fkey.startswith("floor") and same:
                t.peers[fkey] = f"{fentry['bytes_per_node']:,.0f} B/node"
        out.append(t)
    conc = extras.get("concurrent")
    t = Target(
        "1,000 concurrent runs of a 10-node workflow, 10 handlers",
        "report runs/s and events/s; nothing lost",
        None,
    )
    if conc:
        t.status = "PASS" if conc["lost"] == 0 and conc["failed_runs"] == 0 else "MISS"
        t.shown = (
            f"{conc['runs_per_s']:,.0f} runs/s, {conc['events_per_s']:,.0f} events/s, "
            f"{conc['lost']} lost"
        )
        if "floor_runs_per_s" in conc:
            t.peers["floor (tasks, same handlers)"] = f"{conc['floor_runs_per_s']:,.0f} runs/s"
        t.note = f"{conc['runs']:,} runs in {conc['seconds']:.2f}s (median of {conc['repeats']})"
    out.append(t)
    out.append(_external_target(results))
    out += _persistence_targets(extras)
    return out


def _persistence_targets(extras: dict[str, Any]) -> list[Target]:
    """HistoryCallback against a hand-written insert; the outbox's cost and delivery rate."""
    out: list[Target] = []
    hist = extras.get("history_db")
    if hist:
        t = Target(
            "HistoryCallback on SQLite, runs of a 10-node workflow persisted per second",
            "≥ 0.5x a hand-written one-transaction-per-run insert of the same rows",
            0.5,
        )
        t.measured = hist["ratio_to_floor"]
        t.shown = f"{hist['history_runs_per_s']:,.0f} runs/s ({_x(t.measured)})"
        t.status = "PASS" if t.measured >= 0.5 else "MISS"
        t.peers["hand-written insert"] = f"{hist['floor_runs_per_s']:,.0f} runs/s"
        t.note = f"median of {hist['rounds']} rounds of {hist['runs_per_round']} runs"
        out.append(t)
    outbox = extras.get("outbox")
    if outbox:
        t = Target(
            "DurableCallback: outbox enqueue, added cost per event",
            "≤ 1.5x what HistoryCallback alone costs per event",
            1.5,
        )
        t.measured = outbox["added_ratio"]
        t.shown = (
            f"+{outbox['added_us_per_event']:,.1f} µs/event ({_x(t.measured)} of "
            f"{outbox['history_us_per_event']:,.1f} µs)"
        )
        t.status = "PASS" if t.measured <= 1.5 else "MISS"
        out.append(t)
        t = Target(
            "DurableCallback: deliveries per second, one consumer on SQLite",
            "≥ 1,000 events/s (trivial handler)",
            1000.0,
        )
        t.measured = outbox["deliveries_per_s"]
        t.shown = f"{t.measured:,.0f} events/s"
        t.status = "PASS" if t.measured >= 1000 else "MISS"
        t.note = f"{outbox['delivered']:,} events, concurrency {outbox['concurrency']}"
        out.append(t)
    return out


def _external_target(results: Results) -> Target:
    """``ExternalRun`` per node against a ``Workflow`` run of the same chain, same handler."""
    ext = [n for n in results if n.startswith("external/externalrun/chain/")]
    if not ext:
        return Target("`ExternalRun`, per node, 1 no-op handler", "≤ 1.5x a Workflow run", 1.5)
    name = ext[0]
    base = name.replace("externalrun", "workflow-sequential")
    t = _ratio_target(
        results,
        "`ExternalRun`, per node, 1 no-op handler",
        1.5,
        "≤ 1.5x a Workflow run of the same steps on the same handler",
        lambda: paired(results, name, base),
        {"`ExternalRun.sync`": lambda: paired(results, name.replace("run/", "run-sync/"), base)},
    )
    t.note = "reference: SequentialRunner, the steps awaited one after another as in the block"
    return t


def _fmt_ns(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "node":
        return f"{v / 1000:,.2f} µs"
    if unit == "run":
        return f"{v / 1000:,.1f} µs"
    return f"{v:,.0f} ns"


def render_markdown(
    info: dict[str, Any],
    results: Results,
    extras: dict[str, Any],
    targets: list[Target],
    notes: list[str],
) -> str:
    """The report as Markdown: machine, targets, then every case."""
    lines = [
        "# flowhooks benchmark results",
        "",
        f"- machine: {info['cpu']}, {info['cores']} cores, {info['platform']}",
        f"- Python {info['python']} ({info['implementation']}), {info['date']}",
        f"- mode: {info['mode']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        "- ratios are medians of per-round ratios to a floor timed in the same rounds",
        "",
        "## Targets",
        "",
        "| what | target | measured | result | peers, same run |",
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
    lines.append("")
    if any(t.status == NOT_JUDGED for t in targets):
        lines.append(
            "Targets are not judged in quick mode: a few short rounds say nothing about speed. "
            "Run `make bench` (or `python -m benchmarks`) for a judged report."
        )
    elif missed:
        lines.append(f"**{len(missed)} target(s) missed:** " + "; ".join(t.what for t in missed))
        unreachable = [t for t in missed if t.unreachable]
        if unreachable:
            lines += [
                "",
                f"{len(unreachable)} of them are missed by their near-minimal bound too: "
                "meeting them would take giving up part of the contract (exact per-call stats, "
                "or ordered and re-entrant events), not only a faster implementation: "
                + "; ".join(f"{t.what} ({t.bound_label} {_x(t.bound)})" for t in unreachable)
                + ". The exact-stats bound is the floor's loop plus what exact per-call "
                "`stats` (SPEC section 4) cost: a `try`, one clock read and two counter "
                "updates per call. The contract bound is what the task-per-node floor adds "
                "when it calls its handler through the exact-stats call, the run's dispatch "
                "turn and a mark on the node task's frame for events sent from inside a "
                "dispatch (the frame set in the task's context once per node), divided by "
                "flowhooks' own time without handlers.",
            ]
    elif all(t.status in ("PASS", "info") for t in targets):
        lines.append("All targets met.")
    not_run = [t.what for t in targets if t.status == "not run"]
    if not_run:
        lines.append("")
        lines.append("Not measured in this run: " + "; ".join(not_run) + ".")
    for group, unit_label in (
        ("dispatch", "per event"),
        ("composites", "per event"),
        ("runner", "per node"),
    ):
        rows = [r for r in results.values() if r.name.startswith(group + "/")]
        if not rows:
            continue
        lines += [
            "",
            f"## {group.capitalize()}",
            "",
            f"| case | {unit_label} | ratio to floor | floor | rounds | verified |",
            "|---|---|---|---|---|---|",
        ]
        for res in rows:
            floor = res.floor.split("/", 1)[1] if res.floor else "-"
            ratio = paired(results, res.name, res.floor) if res.floor else None
            lines.append(
                f"| {res.name.split('/', 1)[1]} | {_fmt_ns(res.median_ns, res.unit)} | "
                f"{_x(ratio)} | {floor} | {len(res.ns_per_unit)} | "
                f"{'yes' if res.verified else 'NO'} |"
            )
    tp = [r for r in results.values() if r.extra.get("events_per_loop")]
    if tp:
        lines += ["", "Throughput: " + "; ".join(_throughput(r) for r in tp)]
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
    for key, title in (("history_db", "History on SQLite"), ("outbox", "Durable outbox")):
        if extras.get(key):
            lines += ["", f"## {title}", "", "```", json.dumps(extras[key], indent=2), "```"]
    if notes or extras.get("notes"):
        lines += ["", "## Notes", ""]
        lines += [f"- {n}" for n in [*notes, *extras.get("notes", [])]]
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
    """Write ``latest.md`` and ``latest.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "latest.md"
    js = out_dir / "latest.json"
    md.write_text(render_markdown(info, results, extras, targets, notes))
    payload = {
        "machine": info,
        "targets": [t.as_dict() for t in targets],
        "cases": [r.as_dict() for r in results.values()],
        "extras": {k: v for k, v in extras.items() if k != "problems"},
        "notes": notes,
    }
    js.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return md, js
