"""DAG runners: flowhooks' runners against hand-written executors and Hamilton.

Shapes (trivial async nodes, each returning its input):

- ``chain``: ``n0 -> n1 -> ... -> n{N-1}``, each node's parameter named after
  the previous node;
- ``fan``: ``src -> m1..m{N-2} -> sink``. The sink depends on every middle node
  by ordering only (``depends_on``): a Python call with 100,000 keyword
  arguments costs seconds by itself (keyword matching is quadratic), which
  would measure CPython, not the runner. Hamilton has no ordering-only
  dependencies, so its sink takes every middle node as a parameter.

Floors: one asyncio task per node awaiting its dependencies' tasks, and a
sequential loop awaiting the nodes in topological order. Both build each
node's keyword arguments from its dependencies' results, as any runner that
wires parameters by name must.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
import tracemalloc
import types
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from benchmarks._harness import Built, Case
from benchmarks.dispatch import CallStats

Spec = list[tuple[str, tuple[str, ...], tuple[str, ...]]]
"""(node name, parameters, ordering-only dependencies), in topological order."""


def spec(shape: str, n: int) -> Spec:
    """The nodes of ``shape`` with ``n`` nodes."""
    if shape == "chain":
        return [("n0", (), ())] + [(f"n{i}", (f"n{i - 1}",), ()) for i in range(1, n)]
    mids = tuple(f"m{i}" for i in range(1, n - 1))
    return [("src", (), ()), *((m, ("src",), ()) for m in mids), ("sink", (), mids)]


def functions(
    nodes: Spec, *, is_async: bool, counter: list[int] | None, annotate: bool = False
) -> dict[str, Callable[..., Any]]:
    """Compile one function per node; each returns its first argument (or 0).

    With ``counter``, each call adds one to ``counter[0]`` (the verification
    pass). With ``annotate``, parameters and returns are typed ``int``
    (Hamilton needs types).
    """
    kw = "async def" if is_async else "def"
    ann = ": int" if annotate else ""
    ret = " -> int" if annotate else ""
    count = "    _c[0] += 1\n" if counter is not None else ""
    lines = []
    for name, params, order in nodes:
        sig = ", ".join(f"{p}{ann}" for p in (params or (order if annotate else ())))
        value = params[0] if params else "0"
        lines.append(f"{kw} {name}({sig}){ret}:\n{count}    return {value}\n")
    namespace: dict[str, Any] = {"_c": counter}
    exec(compile("".join(lines), "<benchmark nodes>", "exec"), namespace)
    return {name: namespace[name] for name, _, _ in nodes}


# -- floors ---------------------------------------------------------------------------


def floor_tasks(nodes: Spec, fns: dict[str, Callable[..., Any]]) -> Callable[[], Any]:
    """A hand-written executor: one asyncio task per node, awaiting its dependencies."""
    wiring = [(name, fns[name], params, order) for name, params, order in nodes]

    async def one(fn: Any, params: tuple[Any, ...], order: tuple[Any, ...]) -> Any:
        for t in order:
            await t
        kwargs = {p: await t for p, t in params}
        return await fn(**kwargs)

    async def run() -> dict[str, Any]:
        tasks: dict[str, asyncio.Task[Any]] = {}
        create = asyncio.create_task
        for name, fn, params, order in wiring:
            tasks[name] = create(
                one(fn, tuple((p, tasks[p]) for p in params), tuple(tasks[o] for o in order))
            )
        await asyncio.gather(*tasks.values())
        return {name: t.result() for name, t in tasks.items()}

    return run


def floor_sequential(nodes: Spec, fns: dict[str, Callable[..., Any]]) -> Callable[[], Any]:
    """A loop awaiting each node in topological order."""
    wiring = [(name, fns[name], params) for name, params, _ in nodes]

    async def run() -> dict[str, Any]:
        results: dict[str, Any] = {}
        for name, fn, params in wiring:
            results[name] = await fn(**{p: results[p] for p in params})
        return results

    return run


class _Counter:
    n = 0


def _floor_handler(counting: bool) -> Any:
    class Handler(_Counter):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            if counting:
                self.n += 1

        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            if counting:
                self.n += 1

    return Handler()


class _Turn:
    """A run's dispatch turn, reduced to its uncontended path."""

    holder = False


class _Frame:
    """A node task's own frame: what the dispatch marks (see ``flowhooks._run.TaskFrame``)."""

    __slots__ = ("dispatching",)

    def __init__(self) -> None:
        self.dispatching = False


_frame: ContextVar[_Frame | None] = ContextVar("bench_frame", default=None)


def _with_contract(method: Callable[..., Any], turn: _Turn) -> Callable[..., Any]:
    """``method`` called with the least work the event contract asks of a runner per event.

    It takes the run's dispatch turn (a run's events are dispatched one at a
    time, in order), marks the dispatch on the node task's frame (so that a
    task a handler starts and awaits can send an event without waiting for a
    turn its own dispatch holds), isolates the call, and adds its exact
    duration to the hook's stats. The floor's handlers never suspend, so the
    turn is never contended here. The frame comes from the node's task, which
    sets it in its context once (``_enter_frame``).
    """
    stats = CallStats()

    async def call(frame: _Frame, node_id: str, payload: Any) -> None:
        if turn.holder:
            raise RuntimeError("contended turn: this floor runs no handler that suspends")
        turn.holder = True
        frame.dispatching = True
        last = time.perf_counter()
        try:
            await method(node_id, payload)
        except Exception:
            stats.errors += 1
        now = time.perf_counter()
        stats.calls += 1
        stats.seconds += now - last
        frame.dispatching = False
        turn.holder = False

    return call


def _enter_frame() -> _Frame:
    """Give the calling node task a frame of its own, in its context, as a runner must."""
    frame = _Frame()
    _frame.set(frame)
    return frame


def floor_tasks_with_handler(
    nodes: Spec, fns: dict[str, Callable[..., Any]], handler: Any, *, contract: bool = False
) -> Callable[[], Any]:
    """The task-per-node floor awaiting one handler's pre-bound start/end around each node.

    With ``contract``, each call goes through ``_with_contract``: the bound
    for what one handler can add to a runner that keeps the event contract.
    """
    wiring = [(name, fns[name], params, order) for name, params, order in nodes]
    start, end = handler.on_node_start, handler.on_node_end
    if contract:
        turn = _Turn()
        marked_start, marked_end = _with_contract(start, turn), _with_contract(end, turn)

        async def one(name: str, fn: Any, params: Any, order: Any) -> Any:
            for t in order:
                await t
            kwargs = {p: await t for p, t in params}
            frame = _enter_frame()
            await marked_start(frame, name, kwargs)
            out = await fn(**kwargs)
            await marked_end(frame, name, out)
            return out

    else:

        async def one(name: str, fn: Any, params: Any, order: Any) -> Any:
            for t in order:
                await t
            kwargs = {p: await t for p, t in params}
            await start(name, kwargs)
            out = await fn(**kwargs)
            await end(name, out)
            return out

    async def run() -> dict[str, Any]:
        tasks: dict[str, asyncio.Task[Any]] = {}
        for name, fn, params, order in wiring:
            tasks[name] = asyncio.create_task(
                one(name, fn, tuple((p, tasks[p]) for p in params), tuple(tasks[o] for o in order))
            )
        await asyncio.gather(*tasks.values())
        return {name: t.result() for name, t in tasks.items()}

    return run


def _floor_case(
    kind: str, shape: str, n: int, *, handler: bool = False, contract: bool = False
) -> Case:
    async def build(counting: bool) -> Built:
        nodes = spec(shape, n)
        counter = [0] if counting else None
        fns = functions(nodes, is_async=True, counter=counter)
        h = _floor_handler(counting)
        if handler:
            run = floor_tasks_with_handler(nodes, fns, h, contract=contract)
        else:
            run = (floor_tasks if kind == "tasks" else floor_sequential)(nodes, fns)

        async def body(loops: int) -> None:
            for _ in range(loops):
                await run()

        per_loop = n + (2 * n if handler else 0)
        return Built(body, lambda: (counter[0] if counter else 0) + h.n, per_loop)

    suffix = ("+contract-handler" if contract else "+handler") if handler else ""
    return Case(
        f"runner/floor-{kind}{suffix}/{shape}/{n}",
        "floor",
        build,
        n,
        unit="node",
        floor=f"runner/floor-tasks/{shape}/{n}" if handler else None,
        verify_loops=1 if n > 1000 else None,
    )


# -- flowhooks ------------------------------------------------------------------------


def _flowhooks_api() -> Any:
    import flowhooks

    return flowhooks


def flowhooks_handler(counting: bool) -> Any:
    """A flowhooks handler with no-op (or counting) node start/end methods."""
    from flowhooks import BaseCallbackHandler

    class NodeHandler(BaseCallbackHandler):
        n = 0

        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            if counting:
                self.n += 1

        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            if counting:
                self.n += 1

    return NodeHandler()


def build_workflow(shape: str, n: int, counter: list[int] | None, *, name: str = "bench") -> Any:
    """A flowhooks ``Workflow`` of ``shape`` with ``n`` trivial async nodes."""
    fh = _flowhooks_api()
    nodes = spec(shape, n)
    fns = functions(nodes, is_async=True, counter=counter)
    return fh.Workflow(
        f"{name}-{shape}-{n}",
        nodes=[fh.node(fns[name], name=name, depends_on=order) for name, _, order in nodes],
    )


_workflows: dict[tuple[str, int, bool], tuple[Any, list[int] | None]] = {}


def _cached_workflow(shape: str, n: int, counting: bool) -> tuple[Any, list[int] | None]:
    """One workflow per shape, size and counting mode, shared by the cases (built once)."""
    key = (shape, n, counting)
    if key not in _workflows:
        counter = [0] if counting else None
        _workflows[key] = (build_workflow(shape, n, counter), counter)
    return _workflows[key]


def _flowhooks_case(runner_kind: str, shape: str, n: int, handlers: int, *, form: str = "") -> Case:
    floor_kind = "tasks" if runner_kind == "asyncio" else "sequential"

    async def build(counting: bool) -> Built:
        fh = _flowhooks_api()
        wf, counter = _cached_workflow(shape, n, counting)
        base = counter[0] if counter else 0
        runner = fh.AsyncioRunner() if runner_kind == "asyncio" else fh.SequentialRunner()
        hs = [flowhooks_handler(counting) for _ in range(handlers)]
        callbacks: Any = None
        if hs:
            callbacks = hs if form == "list" else fh.CallbackManager(hs)
        failures: list[str] = []

        async def body(loops: int) -> None:
            for _ in range(loops):
                result = await wf.run(callbacks=callbacks, runner=runner)
                if result.status != "succeeded":
                    failures.append(f"{result.status}: {result.error}")

        def delivered() -> int:
            if failures:
                return -len(failures)
            return (counter[0] - base if counter else 0) + sum(h.n for h in hs)

        return Built(body, delivered, n + 2 * n * handlers)

    suffix = "-list" if form == "list" else ""
    return Case(
        f"runner/flowhooks-{runner_kind}/{shape}/{n}/h={handlers}{suffix}",
        "flowhooks",
        build,
        n,
        unit="node",
        floor=f"runner/floor-{floor_kind}/{shape}/{n}",
        note="callbacks=[handler] (a manager built per run)" if form == "list" else "",
        verify_loops=1 if n > 1000 else None,
    )


# -- Hamilton -------------------------------------------------------------------------

_module_serial = [0]


def hamilton_module(shape: str, n: int, *, is_async: bool, counter: list[int] | None) -> Any:
    """A module of annotated node functions, built with ``types.ModuleType``."""
    _module_serial[0] += 1
    mod_name = f"benchmarks_hamilton_{shape}_{n}_{_module_serial[0]}"
    mod = types.ModuleType(mod_name)
    nodes = spec(shape, n)
    for name, fn in functions(nodes, is_async=is_async, counter=counter, annotate=True).items():
        fn.__module__ = mod_name
        setattr(mod, name, fn)
    sys.modules[mod_name] = mod
    return mod


def _hamilton_adapters(is_async: bool, counting: bool) -> Any:
    from hamilton.lifecycle import api, base

    if is_async:

        class AsyncHook(base.BasePreNodeExecuteAsync, base.BasePostNodeExecuteAsync):
            n = 0

            async def pre_node_execute(self, **kwargs: Any) -> None:
                if counting:
                    self.n += 1

            async def post_node_execute(self, **kwargs: Any) -> None:
                if counting:
                    self.n += 1

        return AsyncHook()

    class SyncHook(api.NodeExecutionHook):
        n = 0

        def run_before_node_execution(self, **kwargs: Any) -> None:
            if counting:
                self.n += 1

        def run_after_node_execution(self, **kwargs: Any) -> None:
            if counting:
                self.n += 1

    return SyncHook()


def _hamilton_case(kind: str, shape: str, n: int, *, adapter: bool) -> Case:
    async def build(counting: bool) -> Built:
        from hamilton import async_driver, base, driver

        counter = [0] if counting else None
        is_async = kind == "async"
        mod = hamilton_module(shape, n, is_async=is_async, counter=counter)
        hook = _hamilton_adapters(is_async, counting)
        final = [spec(shape, n)[-1][0]]
        if is_async:
            adapters: list[Any] = [base.DictResult()]
            if adapter:
                adapters.append(hook)
            adr = await async_driver.Builder().with_modules(mod).with_adapters(*adapters).build()

            async def body(loops: int) -> None:
                for _ in range(loops):
                    await adr.execute(final)

        else:
            builder = driver.Builder().with_modules(mod).with_adapters(base.DictResult())
            if adapter:
                builder = builder.with_adapters(hook)
            dr = builder.build()

            async def body(loops: int) -> None:
                for _ in range(loops):
                    dr.execute(final)

        per_loop = n + (2 * n if adapter else 0)
        return Built(body, lambda: (counter[0] if counter else 0) + hook.n, per_loop)

    label = "hamilton-async" if kind == "async" else "hamilton-driver"
    return Case(
        f"runner/{label}/{shape}/{n}" + ("/adapter" if adapter else ""),
        "Hamilton AsyncDriver" if kind == "async" else "Hamilton Driver",
        build,
        n,
        unit="node",
        floor=f"runner/floor-tasks/{shape}/{n}",
        note="sink takes every middle node as a parameter" if shape == "fan" else "",
    )


# -- groups ---------------------------------------------------------------------------


def flowhooks_runner_available() -> str | None:
    """``None`` when the workflow API is importable, else why not."""
    try:
        from flowhooks import AsyncioRunner, SequentialRunner, Workflow, node  # noqa: F401
    except ImportError as exc:
        return f"flowhooks runner cases skipped: {exc}"
    return None


def groups(quick: bool) -> tuple[list[tuple[str, list[Case], int | None]], list[str]]:
    """The runner case group at 1,000 nodes (200 in quick mode): (title, cases, rounds).

    Scale (100,000 nodes) is measured by ``benchmarks.scale``, each size in a
    process of its own.
    """
    notes: list[str] = []
    missing = flowhooks_runner_available()
    if missing:
        notes.append(missing)
    n = 200 if quick else 1000
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * n + 1000))
    cases: list[Case] = []
    for shape in ("chain", "fan"):
        cases += [_floor_case(kind, shape, n) for kind in ("tasks", "sequential")]
        cases.append(_floor_case("tasks", shape, n, handler=True))
        cases.append(_floor_case("tasks", shape, n, handler=True, contract=True))
        if missing is None:
            for runner_kind in ("asyncio", "sequential"):
                for h in (0, 1):
                    cases.append(_flowhooks_case(runner_kind, shape, n, h))
            cases.append(_flowhooks_case("asyncio", shape, n, 1, form="list"))
        for kind in ("sync", "async"):
            cases.append(_hamilton_case(kind, shape, n, adapter=False))
            cases.append(_hamilton_case(kind, shape, n, adapter=True))
    if quick:
        notes.append(f"quick mode: runner shapes have {n} nodes instead of 1,000")
    return [(f"runner {n:,} nodes", cases, None)], notes


# -- memory and concurrency -------------------------------------------------------------


async def _peak_per_node(n: int, run: Callable[[], Any]) -> float:
    import gc

    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        result = await run()
        _, peak = tracemalloc.get_traced_memory()
        del result
    finally:
        tracemalloc.stop()
    return (peak - before) / n


async def memory(quick: bool) -> dict[str, Any]:
    """Peak memory allocated while a run executes, per node (tracemalloc)."""
    n = 1000 if quick else 100_000
    out: dict[str, Any] = {}
    for shape in ("chain", "fan"):
        nodes = spec(shape, n)
        fns = functions(nodes, is_async=True, counter=None)
        for label, run in (
            ("floor-tasks", floor_tasks(nodes, fns)),
            ("floor-sequential", floor_sequential(nodes, fns)),
        ):
            out[f"{label} {shape}"] = {
                "shape": shape,
                "nodes": n,
                "bytes_per_node": await _peak_per_node(n, run),
            }
        if flowhooks_runner_available() is None:
            fh = _flowhooks_api()
            # Built here, not cached: 100,000 nodes kept alive would slow every later row's
            # garbage collection (the concurrent runs' and the durable rows' among them).
            wf = build_workflow(shape, n, None)
            for label, runner in (
                ("flowhooks AsyncioRunner", fh.AsyncioRunner()),
                ("flowhooks SequentialRunner", fh.SequentialRunner()),
            ):
                manager = fh.CallbackManager([flowhooks_handler(False)])
                await wf.run(callbacks=manager, runner=runner)  # plan cached, as in steady state

                async def run(runner: Any = runner, manager: Any = manager, wf: Any = wf) -> Any:
                    return await wf.run(callbacks=manager, runner=runner)

                out[f"{label} {shape} +1 handler"] = {
                    "shape": shape,
                    "nodes": n,
                    "bytes_per_node": await _peak_per_node(n, run),
                }
    return out


async def concurrent(quick: bool) -> dict[str, Any]:
    """Many runs of a 10-node workflow at once, 10 counting handlers: throughput, losses.

    Each round times flowhooks' runs and the floor's (the same number of
    task-per-node runs, each handler called by a bare loop), in alternating
    order, in CPU time; the ratio is the median of the per-round ratios.
    """
    fh = _flowhooks_api()
    runs = 200 if quick else 1000
    repeats = 1 if quick else 11

    class Counting(fh.BaseCallbackHandler):
        def __init__(self) -> None:
            self.by_run: dict[str, int] = {}

        async def on_workflow_start(self, workflow_id: str, input_data: Any) -> None:
            self.by_run[workflow_id] = self.by_run.get(workflow_id, 0) + 1

        async def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            self.by_run[workflow_id] = self.by_run.get(workflow_id, 0) + 1

        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            run_id = fh.current_run().run_id
            self.by_run[run_id] = self.by_run.get(run_id, 0) + 1

        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            run_id = fh.current_run().run_id
            self.by_run[run_id] = self.by_run.get(run_id, 0) + 1

    wf = build_workflow("fan", 10, None, name="concurrent")
    events_per_run = 2 + 2 * 10

    nodes = spec("fan", 10)
    fns = functions(nodes, is_async=True, counter=None)
    floor_handlers = [_floor_handler(False) for _ in range(10)]

    class Fanout:
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            for h in floor_handlers:
                await h.on_node_start(node_id, input_data)

        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            for h in floor_handlers:
                await h.on_node_end(node_id, output_data)

    floor_run = floor_tasks_with_handler(nodes, fns, Fanout())
    times: list[float] = []
    floor_times: list[float] = []
    lost = failed = 0

    async def ours() -> None:
        nonlocal lost, failed
        handlers = [Counting() for _ in range(10)]
        manager = fh.CallbackManager(handlers)
        gc.collect()
        t0 = time.thread_time()
        results = await asyncio.gather(*(wf.run(callbacks=manager) for _ in range(runs)))
        times.append(time.thread_time() - t0)
        failed += sum(r.status != "succeeded" for r in results)
        for h in handlers:
            lost += runs * events_per_run - sum(h.by_run.values())
            lost += sum(abs(events_per_run - h.by_run.get(r.run_id, 0)) for r in results)

    async def floor() -> None:
        gc.collect()
        t0 = time.thread_time()
        await asyncio.gather(*(floor_run() for _ in range(runs)))
        floor_times.append(time.thread_time() - t0)

    for i in range(repeats):
        for step in (ours, floor) if i % 2 == 0 else (floor, ours):
            await step()
    seconds = statistics.median(times)
    ratio = statistics.median(f / s for s, f in zip(times, floor_times, strict=True))
    return {
        "runs": runs,
        "nodes_per_run": 10,
        "handlers": 10,
        "repeats": repeats,
        "seconds": seconds,
        "runs_per_s": runs / seconds,
        "events_per_s": runs * events_per_run / seconds,
        "handler_calls_per_s": runs * events_per_run * 10 / seconds,
        "lost": lost,
        "failed_runs": failed,
        "floor_runs_per_s": runs / statistics.median(floor_times),
        "share_of_floor": ratio,
    }


def _counting(fn: Any, built: list[int]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        built[0] += 1
        return fn(*args, **kwargs)

    return wrapper


async def event_construction() -> dict[str, Any]:
    """Count ``Event`` objects built during runs with and without an ``event=`` handler."""
    fh = _flowhooks_api()
    from flowhooks import _events

    cls = _events.Event
    built = [0]
    original_init = cls.__init__
    original_construct = cls.model_construct

    def counting_init(self: Any, /, **data: Any) -> None:
        built[0] += 1
        original_init(self, **data)

    def counting_construct(*args: Any, **kwargs: Any) -> Any:
        built[0] += 1
        return original_construct(*args, **kwargs)

    class Plain(fh.BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            pass

    class WantsEvent(fh.BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any, *, event: Any) -> None:
            pass

    # every known way to build one: the constructor, model_construct, and module-level
    # helpers of flowhooks annotated to return an Event (looked up where they are used)
    patched: list[tuple[Any, str, Any]] = [
        (cls, "__init__", counting_init),
        (cls, "model_construct", counting_construct),
    ]
    for mod_name, mod in list(sys.modules.items()):
        if not mod_name.startswith("flowhooks.") or mod is None:
            continue
        for attr, value in list(vars(mod).items()):
            ret = getattr(value, "__annotations__", {}).get("return")
            if isinstance(value, types.FunctionType) and ret in ("Event", cls):
                patched.append((mod, attr, _counting(value, built)))
    originals = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patched]
    wf = build_workflow("chain", 50, None, name="events")
    counts = {}
    for obj, attr, fn in patched:
        setattr(obj, attr, fn)
    try:
        for label, handler in (("without_event", Plain()), ("with_event", WantsEvent())):
            built[0] = 0
            await wf.run(callbacks=fh.CallbackManager([handler]))
            counts[label] = built[0]
    finally:
        for obj, attr, fn in originals:
            setattr(obj, attr, fn)
    counts["events"] = 2 + 2 * 50
    counts["where"] = "in a run of a 50-node chain"
    return counts


async def extras(quick: bool) -> dict[str, Any]:
    """Memory, concurrent runs and the Event-construction check."""
    out: dict[str, Any] = {"problems": []}
    if not quick:
        print("[memory] tracemalloc peaks", flush=True)
    out["memory"] = await memory(quick)
    if flowhooks_runner_available() is None:
        if not quick:
            print("[concurrent] runs", flush=True)
        out["concurrent"] = conc = await concurrent(quick)
        if conc["lost"] or conc["failed_runs"]:
            out["problems"].append(
                f"concurrent runs: {conc['lost']} events lost, {conc['failed_runs']} runs failed"
            )
        out["event_construction"] = await event_construction()
    return out
