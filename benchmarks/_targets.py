"""The targets of PERFORMANCE.md (version 2), judged on one run's results.

Every value is a median of per-round ratios of cases timed in the same
rounds (``paired``); nothing divides the medians of groups timed apart.
Scale rows compare two such paired ratios, each from a process of its own.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks._harness import Result

Results = dict[str, Result]

NOT_JUDGED = "not judged in quick mode"
"""A target's status in quick mode, whose few rounds say nothing about speed."""


def paired(results: Results, name: str, base: str) -> float | None:
    """Median over rounds of ``name``'s time per unit divided by ``base``'s, same round.

    ``None`` when either is missing or they were not timed in the same rounds.
    """
    a, b = results.get(name), results.get(base)
    if a is None or b is None or not a.ns_per_unit or len(a.ns_per_unit) != len(b.ns_per_unit):
        return None
    return statistics.median(x / y for x, y in zip(a.ns_per_unit, b.ns_per_unit, strict=True))


def paired_lists(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Median of ``a[i] / b[i]``: two cases' times per unit in the same rounds."""
    if not a or len(a) != len(b):
        return None
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def added_time_ratio(
    results: Results, name: str, base: str, bound: str, bound_base: str
) -> tuple[float | None, float | None, float | None]:
    """The time ``name`` adds to ``base`` against the time a reference adds to ``bound_base``.

    Both additions are in units of ``bound_base``'s time: the reference adds
    ``bound / bound_base - 1``, and ``name`` adds ``(name / base - 1) * (base /
    bound_base)``, each ratio the median of per-round ratios. Returns their quotient and
    both additions. Absolute additions, not shares of each base: a faster base (a chain
    that needs no task per link) must not make the same addition look larger. Paired
    ratios, not per-round differences: a quotient of differences would divide by the
    reference's few hundred nanoseconds, which the noise of one round can halve.
    """
    ours = paired(results, name, base)
    base_share = paired(results, base, bound_base)
    reference = paired(results, bound, bound_base)
    if ours is None or base_share is None or reference is None or reference <= 1:
        return None, None, None if reference is None else reference - 1
    adds, bound_adds = (ours - 1) * base_share, reference - 1
    return adds / bound_adds, adds, bound_adds


def share_beyond(results: Results, name: str, reference: str) -> float | None:
    """Median over rounds of ``1 - reference / name``: the part of ``name`` beyond ``reference``."""
    ratio = paired(results, reference, name)
    return None if ratio is None else 1 - ratio


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
    at_least: bool = False
    """The target is a floor (``measured >= limit``), not a ceiling."""
    bound: float | None = None
    """The same ratio for a near-minimal reference that does only the work the contract
    requires, measured in the same run."""
    bound_label: str = ""
    why: str = ""
    """When missed: what it would take, in a sentence."""

    def judge(self) -> None:
        """Set ``status`` from ``measured`` and ``limit``."""
        if self.measured is None or self.limit is None:
            return
        ok = self.measured >= self.limit if self.at_least else self.measured <= self.limit
        self.status = "PASS" if ok else "MISS"

    @property
    def unreachable(self) -> bool:
        """Missed, and its bound misses it too: meeting it would take giving up part of
        the contract, not only a faster implementation."""
        return (
            self.status == "MISS"
            and self.bound is not None
            and self.limit is not None
            and not self.at_least
            and self.bound > self.limit
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "target": self.target,
            "limit": self.limit,
            "at_least": self.at_least,
            "measured": self.measured,
            "shown": self.shown,
            "status": self.status,
            "peers": self.peers,
            "note": self.note,
            "bound": self.bound,
            "bound_label": self.bound_label,
            "unreachable": self.unreachable,
            "why": self.why,
        }


def set_not_judged(targets: list[Target]) -> None:
    """Replace PASS/MISS with ``NOT_JUDGED``, for a quick (smoke) run."""
    for t in targets:
        if t.status in ("PASS", "MISS"):
            t.status = NOT_JUDGED


def x(v: float | None) -> str:
    """A ratio as the report shows it."""
    return "-" if v is None else f"x{v:.2f}"


def pct(v: float | None) -> str:
    """A share as the report shows it."""
    return "-" if v is None else f"{v * 100:.1f} %"


def _ratio(
    what: str,
    limit: float,
    target: str,
    value: float | None,
    peers: dict[str, float | None] | None = None,
    *,
    note: str = "",
    why: str = "",
    bound: tuple[str, float | None] | None = None,
) -> Target:
    t = Target(what, target, limit, note=note, why=why)
    t.measured = value
    t.shown = x(value)
    t.judge()
    if bound is not None:
        t.bound_label, t.bound = bound
        if t.bound is not None:
            t.peers[t.bound_label] = x(t.bound)
    for peer, v in (peers or {}).items():
        if v is not None:
            t.peers[peer] = x(v)
    return t


# -- dispatch ---------------------------------------------------------------------------

D = "dispatch/"


def _dispatch(results: Results) -> list[Target]:
    def r(name: str, base: str) -> float | None:
        return paired(results, D + name, D + base)

    out: list[Target] = []
    for n, limit in ((1, 2.6), (10, 1.75)):
        out.append(
            _ratio(
                f"`dispatch` inside a run, {n} no-op async handler{'s' if n > 1 else ''}",
                limit,
                f"≤ {limit:g}x the async floor",
                r(f"flowhooks/async/N={n}", f"floor/async/N={n}"),
                {
                    "blinker": r(f"blinker/async/N={n}", f"floor/async/N={n}"),
                    "langchain-core": r(f"langchain-core/async/N={n}", f"floor/async/N={n}"),
                },
                note="timing off",
                why="per event, the dispatch coroutine (its bound, a bare coroutine awaiting "
                "and counting the calls, is measured beside it), the plan's lookup, the "
                "`event=` check and the per-call kind check",
                bound=(
                    "a bare counting coroutine",
                    r(f"bound-coroutine/async/N={n}", f"floor/async/N={n}"),
                ),
            )
        )
    for n, limit in ((1, 4.5), (10, 3.0)):
        out.append(
            _ratio(
                f"sync-method handlers, N={n}",
                limit,
                f"≤ {limit:g}x the sync floor",
                r(f"flowhooks/sync/N={n}", f"floor/sync/N={n}"),
                {p: r(f"{p}/sync/N={n}", f"floor/sync/N={n}") for p in ("pluggy", "blinker")},
                note="through `dispatch`, timing off",
                why="the sync floor's call costs ~35 ns: the dispatch coroutine alone is "
                "more than two of them",
            )
        )
    out.append(
        _ratio(
            "typed shortcut `manager.on_node_start(...)`, N=1",
            1.3,
            "≤ 1.3x the `dispatch` row",
            r("flowhooks-shortcut/async/N=1", "flowhooks/async/N=1"),
            {"N=10": r("flowhooks-shortcut/async/N=10", "flowhooks/async/N=10")},
            why="the shortcut packs the arguments and returns `dispatch`'s own coroutine "
            "(no coroutine of its own); what is left is that call and the packing",
            bound=(
                "one bare `async def` around `dispatch`",
                r("bound-shortcut/async/N=1", "flowhooks/async/N=1"),
            ),
        )
    )
    for n, limit in ((1, 1.2), (10, 1.1)):
        out.append(
            _ratio(
                f"`CallbackManager(timing=True)`, N={n}",
                limit,
                f"≤ {limit:g}x the exact-stats bound",
                r(f"flowhooks-timed/async/N={n}", f"bound/async/N={n}"),
                {"sync handlers": r(f"flowhooks-timed/sync/N={n}", f"bound/sync/N={n}")},
                why="the bound is the bare loop plus the clock: it has no plan to look up, "
                "no call kinds, no hook monitors and no `error` events with one argument",
            )
        )
    out.append(
        _ratio(
            "10 handlers that ignore the event",
            1.2,
            "≤ 1.2x the cost with 0 handlers",
            r("flowhooks/ignore/N=10", "flowhooks/async/N=0"),
            {
                "langchain-core": r("langchain-core/ignore/N=10", "langchain-core/async/N=0"),
                "pluggy": r("pluggy/ignore/N=10", "pluggy/sync/N=0"),
                "blinker": r("blinker/ignore/N=10", "blinker/async/N=0"),
            },
        )
    )
    return out


def _event_construction(extras: dict[str, Any]) -> Target:
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
    return t


# -- runners ----------------------------------------------------------------------------

RU = "runner/"


def _runner(results: Results) -> list[Target]:
    def r(name: str, base: str) -> float | None:
        return paired(results, RU + name, RU + base)

    out: list[Target] = []
    for shape in ("chain", "fan"):
        base = f"floor-tasks/{shape}/1000"
        out.append(
            _ratio(
                f"`AsyncioRunner`, no handlers, {shape} of 1,000",
                1.2,
                "≤ 1.2x the task-per-node floor",
                r(f"flowhooks-asyncio/{shape}/1000/h=0", base),
                {
                    "Hamilton Driver": r(f"hamilton-driver/{shape}/1000", base),
                    "Hamilton AsyncDriver": r(f"hamilton-async/{shape}/1000", base),
                },
            )
        )
    for shape in ("chain", "fan"):
        ours = (f"flowhooks-asyncio/{shape}/1000/h=1", f"flowhooks-asyncio/{shape}/1000/h=0")
        bound = (f"floor-tasks+contract-handler/{shape}/1000", f"floor-tasks/{shape}/1000")
        value, adds, bound_adds = added_time_ratio(results, *(RU + k for k in (*ours, *bound)))
        t = _ratio(
            f"`AsyncioRunner` + 1 no-op handler, {shape} of 1,000",
            1.4,
            "adds ≤ 1.4x the time the contract bound adds",
            value,
            why="per event the run also numbers it (`seq`), takes and gives back the run's "
            "dispatch turn, marks the node's frame and checks for events sent during the "
            "dispatch, and per node it creates the frame and sets it in context twice more",
        )
        if adds is not None and bound_adds is not None:
            t.note = (
                f"per node, flowhooks adds {adds:.0%} and the contract bound {bound_adds:.0%} "
                "of the task-per-node floor's time"
            )
        hamilton = paired(
            results,
            f"{RU}hamilton-driver/{shape}/1000/adapter",
            f"{RU}hamilton-driver/{shape}/1000",
        )
        if hamilton is not None:
            t.peers["Hamilton Driver + adapter adds"] = f"+{hamilton - 1:.0%}"
        out.append(t)
    out.append(
        _ratio(
            "`SequentialRunner`, chain of 1,000",
            2.75,
            "≤ 2.75x the sequential floor",
            r("flowhooks-sequential/chain/1000/h=0", "floor-sequential/chain/1000"),
            why="per node it records status, attempt, timestamps and duration, numbers the "
            "node's events, sets the node in context and checks that the run is not "
            "stopping: each a few percent of a floor that costs ~0.5 µs per node",
        )
    )
    return out


def _scale(extras: dict[str, Any]) -> list[Target]:
    scale = extras.get("scale") or {}
    by_size = sorted(scale.get("sizes", []), key=lambda s: s["nodes"])
    out: list[Target] = []
    if len(by_size) < 2:
        return out
    small, big = by_size[0], by_size[-1]
    label = f"{big['nodes']:,} vs {small['nodes']:,} nodes"
    for runner_kind, floor_kind in (("asyncio", "tasks"), ("sequential", "sequential")):
        for shape in ("chain", "fan"):
            ours, floor = f"flowhooks-{runner_kind}/{shape}/h=0", f"floor-{floor_kind}/{shape}"

            def ratio(size: dict[str, Any], ours: str = ours, floor: str = floor) -> float | None:
                cases = size["cases"]
                if ours not in cases or floor not in cases:
                    return None
                return paired_lists(cases[ours]["ns_per_node"], cases[floor]["ns_per_node"])

            at_small, at_big = ratio(small), ratio(big)
            value = at_big / at_small if at_small and at_big is not None else None
            runner_name = f"`{runner_kind.capitalize()}Runner`"
            t = _ratio(
                f"scale: {runner_name} {shape}, ratio to its floor at {label}",
                1.2,
                "≤ 1.2x (each size in processes of its own)",
                value,
                note=f"{x(at_small)} at {small['nodes']:,}, {x(at_big)} at {big['nodes']:,}",
            )
            out.append(t)
    for key in big.get("calls_per_node", {}):
        a, b = small["calls_per_node"].get(key), big["calls_per_node"][key]
        t = Target(
            f"scale: Python calls per node, {key.replace('flowhooks-', '')}",
            "constant ±5 %",
            1.05,
        )
        if a:
            t.measured = b / a
            t.shown = f"{a:.1f} at {small['nodes']:,}, {b:.1f} at {big['nodes']:,} ({x(b / a)})"
            t.status = "PASS" if 0.95 <= t.measured <= 1.05 else "MISS"
        out.append(t)
    return out


def _memory(extras: dict[str, Any]) -> list[Target]:
    mem = extras.get("memory", {})
    out: list[Target] = []
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
            t.judge()
        else:
            t.status = "info"
            t.note = f"measured at {entry['nodes']:,} nodes (quick mode)"
        for fkey, fentry in mem.items():
            same = fentry["nodes"] == entry["nodes"] and fentry["shape"] == entry["shape"]
            if fkey.startswith("floor") and same:
                t.peers[fkey] = f"{fentry['bytes_per_node']:,.0f} B/node"
        out.append(t)
    return out


def _concurrent(extras: dict[str, Any]) -> Target:
    conc = extras.get("concurrent")
    t = Target(
        "1,000 concurrent runs of a 10-node workflow, 10 handlers",
        "≥ 0.5x the hand-written floor's runs/s; nothing lost",
        0.5,
        at_least=True,
        why="each run also has a fixed cost (see the peers row) that a 10-node run does not hide",
    )
    if conc:
        t.measured = conc.get("share_of_floor")
        t.judge()
        if conc["lost"] or conc["failed_runs"]:
            t.status = "MISS"
        t.shown = (
            f"{x(t.measured)} ({conc['runs_per_s']:,.0f} runs/s, "
            f"{conc['events_per_s']:,.0f} events/s, {conc['lost']} lost)"
        )
        t.peers["floor (tasks, same handlers)"] = f"{conc['floor_runs_per_s']:,.0f} runs/s"
        t.note = f"{conc['runs']:,} runs at once, median of {conc['repeats']} paired rounds"
    return t


# -- peers and the user's view ----------------------------------------------------------

P = "peers/"


def _peers(results: Results) -> list[Target]:
    def r(name: str, base: str) -> float | None:
        return paired(results, f"{P}{name}/chain/10", f"{P}{base}/chain/10")

    per_run = {
        k: results[f"{P}{k}/chain/10"].median_ns
        for k in ("flowhooks-sequential", "flowhooks-asyncio", "nadoo-flow-core", "langchain-core")
        if f"{P}{k}/chain/10" in results
    }

    def us(k: str) -> str:
        v = per_run.get(k)
        return "-" if v is None else f"{v / 1000:,.0f} µs"

    t1 = _ratio(
        "10-step chain, 1 no-op handler, per run: vs nadoo-flow-core",
        1.0,
        "faster than nadoo-flow-core",
        r("flowhooks-sequential", "nadoo-flow-core"),
        {"AsyncioRunner": r("flowhooks-asyncio", "nadoo-flow-core")},
        note=f"SequentialRunner {us('flowhooks-sequential')}, "
        f"nadoo-flow-core {us('nadoo-flow-core')}",
        why="a flowhooks run has a fixed cost (run setup, its first and last events, its "
        "result) that a 10-node run does not hide",
    )
    t2 = Target(
        "10-step chain, 1 no-op handler, per run: vs langchain-core",
        "≥ 20x faster than langchain-core",
        20.0,
        at_least=True,
    )
    t2.measured = r("langchain-core", "flowhooks-sequential")
    t2.shown = x(t2.measured)
    t2.note = f"langchain-core {us('langchain-core')}"
    t2.judge()
    v = r("langchain-core", "flowhooks-asyncio")
    if v is not None:
        t2.peers["AsyncioRunner"] = x(v)
    return [t1, t2]


def _user_level(results: Results) -> Target:
    share = share_beyond(
        results, "user/flowhooks/metrics+logging/chain/10", "user/hand/metrics+logging/chain/10"
    )
    t = Target(
        "10-node run with `MetricsCallback` + `LoggingCallback`: the framework's share",
        "≤ 15 % of the run",
        0.15,
        why="the framework's own work (the run's fixed cost, dispatch, the events built "
        "for handlers that take `event=`) is about 12 % of such a run when traced; the rest "
        "is the same handler code running 1.5-1.7x slower inside a run than in the bare "
        "loop (not the events, not garbage collection, not task contexts: the code and "
        "data the run touches between handler calls)",
    )
    t.measured = share
    t.shown = pct(share)
    run = results.get("user/flowhooks/metrics+logging/chain/10")
    if run is not None and run.median_ns and share is not None:
        t.note = f"{run.median_ns * share / 1000:,.0f} µs of {run.median_ns / 1000:,.0f} µs"
    t.judge()
    return t


def _cluster(results: Results) -> list[Target]:
    out = []
    for shape in ("chain", "fan"):
        cl = f"cluster/{{}}/{shape}/20"
        out.append(
            _ratio(
                f"`DaskRunner`, no handlers, {shape} of 20 trivial nodes",
                1.2,
                "≤ 1.2x Dask's own client.submit + result",
                paired(results, cl.format("flowhooks-dask"), cl.format("floor-dask-submit")),
                note="per node, LocalCluster of 2 worker processes",
            )
        )
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
        t.shown = f"{hist['history_runs_per_s']:,.0f} runs/s ({x(t.measured)})"
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
            why="each event's outbox row is committed before the event's dispatch returns "
            "(one SQLite commit per event: the durability promise), where HistoryCallback "
            "alone commits a run's rows in groups",
        )
        t.measured = outbox["added_ratio"]
        t.shown = (
            f"+{outbox['added_us_per_event']:,.1f} µs/event ({x(t.measured)} of "
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
        t.note = (
            f"{outbox['delivered']:,} events, concurrency {outbox['concurrency']}; median of "
            f"{outbox.get('drains', 1)} drains"
        )
        out.append(t)
    pg = extras.get("postgres_deliveries")
    if pg is not None:
        out.append(_postgres_deliveries(pg))
    return out


def _postgres_deliveries(pg: dict[str, Any]) -> Target:
    t = Target(
        "DurableCallback: deliveries per second, 4 workers on PostgreSQL",
        "≥ 2,000 events/s (trivial handler)",
        2000.0,
        at_least=True,
        why="each delivery is a transaction of two statements (ack, and claim the run's "
        "next row) over asyncpg, and the four worker processes and the server share this "
        "machine's two cores",
    )
    if "skipped" in pg:
        t.note = f"not run: {pg['skipped']}"
        return t
    t.measured = pg["deliveries_per_s"]
    t.shown = f"{t.measured:,.0f} events/s"
    t.judge()
    t.note = (
        f"{pg['delivered']:,} events, {pg['workers']} `flowhooks deliver` processes with "
        f"concurrency {pg['concurrency']}, a throwaway server on this machine; from the commit "
        f"of the queued rows to the last delivery, median of {pg.get('drains', 1)} batches"
    )
    return t


def _external_target(results: Results) -> Target:
    """``ExternalRun`` per node against a ``Workflow`` run of the same chain, same handler."""
    ext = [n for n in results if n.startswith("external/externalrun/chain/")]
    if not ext:
        return Target("`ExternalRun`, per node, 1 no-op handler", "≤ 1.5x a Workflow run", 1.5)
    name = ext[0]
    base = name.replace("externalrun", "workflow-sequential")
    return _ratio(
        "`ExternalRun`, per node, 1 no-op handler",
        1.5,
        "≤ 1.5x a Workflow run of the same steps on the same handler",
        paired(results, name, base),
        {"`ExternalRun.sync`": paired(results, name.replace("run/", "run-sync/"), base)},
        note="reference: SequentialRunner, the steps awaited one after another as in the block",
        why="per step the block makes a node object, checks its arguments and awaits an "
        "enter and an exit coroutine around the step's two events, where a Workflow node "
        "sends both from one loop",
    )


def evaluate(results: Results, extras: dict[str, Any]) -> list[Target]:
    """Check every target of PERFORMANCE.md against this run's results."""
    out = [*_peers(results), _user_level(results)]
    out += _dispatch(results)
    out.append(_event_construction(extras))
    out += _runner(results)
    out += _scale(extras)
    out += _memory(extras)
    out.append(_concurrent(extras))
    out += _cluster(results)
    out.append(_external_target(results))
    out += _persistence_targets(extras)
    return out
