"""What a user's run costs beyond its handlers: ``MetricsCallback`` + ``LoggingCallback``.

A 10-node chain runs with the two built-in handlers most users start with,
``LoggingCallback`` writing through loguru to a sink that drops every line
(formatting included: loguru formats a record before any sink sees it). The
reference is the same handler work called by hand: a loop awaiting the same
ten node functions and calling both handlers' methods with the arguments and
``Event`` objects the run would give them. Those events are built before the
timing starts, for a pool of runs larger than ``MetricsCallback``'s
``max_runs`` (so every run it sees is new to it, as in the real run): building
events is the framework's work, and it is counted as such here.

The framework's share of a run is ``1 - hand / run``, per round, median.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from benchmarks._harness import Built, Case
from benchmarks.runner import build_workflow, functions, spec

NODES = 10
EVENTS_PER_RUN = 2 + 2 * NODES
USER = "user/"
RUN = f"{USER}flowhooks/metrics+logging/chain/{NODES}"
HAND = f"{USER}hand/metrics+logging/chain/{NODES}"
POOL = 1_100
"""Distinct runs of events the hand loop cycles through: more than ``max_runs``."""
MAX_RUNS = 1_000


class _NullSink:
    """A loguru sink that drops every line; counts them in the verification pass."""

    def __init__(self) -> None:
        self.lines = 0

    def write(self, message: Any) -> None:
        self.lines += 1


def _logging_on(sink: _NullSink) -> tuple[int, Any]:
    """Add ``sink`` at INFO; return its id and a switch that turns flowhooks' records on/off."""
    sink_id = logger.add(sink, level="INFO")

    def switch(on: bool) -> None:
        (logger.enable if on else logger.disable)("flowhooks")

    return sink_id, switch


def _handlers() -> list[Any]:
    from flowhooks.handlers import LoggingCallback, MetricsCallback

    return [MetricsCallback(max_runs=MAX_RUNS), LoggingCallback()]


def _run_case() -> Case:
    async def build(counting: bool) -> Built:
        import flowhooks as fh

        sink = _NullSink()
        sink_id, switch = _logging_on(sink)
        metrics, logging_cb = _handlers()
        manager = fh.CallbackManager([metrics, logging_cb])
        wf = build_workflow("chain", NODES, None, name="user")
        failures: list[str] = []

        async def body(loops: int) -> None:
            switch(True)
            try:
                for _ in range(loops):
                    result = await wf.run(callbacks=manager)
                    if not result.succeeded:
                        failures.append(str(result.error))
            finally:
                switch(False)

        async def close() -> None:
            logger.remove(sink_id)

        def delivered() -> int:
            return -len(failures) if failures else sink.lines

        return Built(body, delivered, EVENTS_PER_RUN, close=close)

    return Case(RUN, "flowhooks", build, 1, unit="run", floor=HAND)


Call = tuple[str, tuple[Any, ...], Any]
"""A handler method's name, its positional arguments and its ``event=``."""


def _one_run(workflow_name: str) -> tuple[Call, list[tuple[Call, str, dict[str, Any], Call]], Call]:
    """The calls one run of the chain makes: its start, each node's (start, name,
    keyword arguments, end), and its end, with the events a run would build."""
    from flowhooks import Event, EventType

    run_id = uuid.uuid4().hex
    identity: dict[str, Any] = {
        "run_id": run_id,
        "workflow_name": workflow_name,
        "parent_run_id": None,
        "resource_id": None,
        "metadata": {},
    }
    seq = [0]

    def event(etype: EventType, payload: Any, **fields: Any) -> Any:
        seq[0] += 1
        values: dict[str, Any] = {
            "node_id": None,
            "attempt": None,
            "duration": None,
            "status": None,
            **fields,
        }
        return Event.model_construct(
            id=uuid.uuid4().hex,
            type=etype,
            seq=seq[0],
            timestamp=datetime.now(UTC),
            name=None,
            payload=payload,
            **identity,
            **values,
        )

    start: Call = ("on_workflow_start", (run_id, {}), event(EventType.WORKFLOW_START, {}))
    nodes: list[tuple[Call, str, dict[str, Any], Call]] = []
    for name, params, _ in spec("chain", NODES):
        kwargs: dict[str, Any] = dict.fromkeys(params, 0)
        began: Call = (
            "on_node_start",
            (name, kwargs),
            event(EventType.NODE_START, kwargs, node_id=name, attempt=1),
        )
        ended: Call = (
            "on_node_end",
            (name, 0),
            event(
                EventType.NODE_END, 0, node_id=name, attempt=1, duration=1e-6, status="succeeded"
            ),
        )
        nodes.append((began, name, kwargs, ended))
    outputs = {f"n{NODES - 1}": 0}
    end: Call = (
        "on_workflow_end",
        (run_id, outputs),
        event(EventType.WORKFLOW_END, outputs, duration=1e-5, status="succeeded"),
    )
    return start, nodes, end


def _hand_case() -> Case:
    async def build(counting: bool) -> Built:
        sink = _NullSink()
        sink_id, switch = _logging_on(sink)
        handlers = _handlers()
        fns = functions(spec("chain", NODES), is_async=True, counter=None)

        def bind(call: Call) -> tuple[list[Any], tuple[Any, ...], Any]:
            method, args, ev = call
            return [getattr(h, method) for h in handlers], args, ev

        runs = []
        for _ in range(3 if counting else POOL):
            start, nodes, end = _one_run(f"user-chain-{NODES}")
            steps = [(bind(a), fns[name], kwargs, bind(b)) for a, name, kwargs, b in nodes]
            runs.append((bind(start), steps, bind(end)))
        position = [0]

        async def body(loops: int) -> None:
            switch(True)
            try:
                for _ in range(loops):
                    (methods, args, ev), steps, (end_methods, end_args, end_ev) = runs[position[0]]
                    position[0] = (position[0] + 1) % len(runs)
                    for m in methods:
                        await m(*args, event=ev)
                    for (methods, args, ev), fn, kwargs, (after, out_args, out_ev) in steps:
                        for m in methods:
                            await m(*args, event=ev)
                        await fn(**kwargs)
                        for m in after:
                            await m(*out_args, event=out_ev)
                    for m in end_methods:
                        await m(*end_args, event=end_ev)
            finally:
                switch(False)

        async def close() -> None:
            logger.remove(sink_id)

        return Built(body, lambda: sink.lines, EVENTS_PER_RUN, close=close)

    return Case(HAND, "hand-written", build, 1, unit="run")


def cases(quick: bool) -> tuple[list[Case], list[str]]:
    """The run with both handlers and its hand-written reference."""
    try:
        from flowhooks.handlers import LoggingCallback, MetricsCallback  # noqa: F401
    except ImportError as exc:
        return [], [f"user-level cases skipped: {exc}"]
    return [_hand_case(), _run_case()], []
