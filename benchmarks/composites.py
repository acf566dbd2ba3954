"""Composites behind a manager: chained, filtering, batched and background delivery.

Chained and filtering are compared with the bare-loop floor for the same
number of handler calls. Batched and background are throughput cases: each
sample dispatches its events and then awaits ``manager.flush()``, so every
event has been delivered when the clock stops; they are reported in events/s.
"""

from __future__ import annotations

from typing import Any

from benchmarks._harness import Built, Case
from benchmarks.dispatch import DATA, NODE_ID, floor_case, make_handlers


def _floor(n: int) -> Case:
    base = floor_case("async", n)
    return Case(f"composites/floor/async/N={n}", "floor", base.build, 1)


def _manager_case(name: str, floor: str, make: Any, expected: int, *, drain: bool) -> Case:
    async def build(counting: bool) -> Built:
        from flowhooks import CallbackManager, EventType

        handler, delivered = make(counting)
        manager = CallbackManager([handler])
        dispatch, et = manager.dispatch, EventType.NODE_START

        async def body(loops: int) -> None:
            args = (NODE_ID, DATA)
            for _ in range(loops):
                await dispatch(et, args, None)
            if drain:
                await manager.flush()

        extra = {"events_per_loop": 1} if drain else {}
        return Built(body, delivered, expected, extra=extra, close=manager.aclose)

    return Case(f"composites/flowhooks/{name}", "flowhooks", build, 1, floor=floor)


def cases(quick: bool) -> tuple[list[Case], list[str]]:
    """The composite cases, or none and a note when the composites are not importable."""
    try:
        from flowhooks import (
            BackgroundCallback,
            BatchedCallback,
            ChainedCallback,
            FilteringCallback,
        )
    except ImportError as exc:
        return [], [f"composite cases skipped: {exc}"]

    def counter(hs: list[Any]) -> Any:
        return lambda: sum(getattr(h, "n", 0) for h in hs)

    def chained(counting: bool) -> Any:
        hs = make_handlers("async", 10, counting)
        return ChainedCallback(*hs), counter(hs)

    def filtering(passes: bool) -> Any:
        def make(counting: bool) -> Any:
            hs = make_handlers("async", 1, counting)
            pred = (lambda node_id: True) if passes else (lambda node_id: False)
            return FilteringCallback(hs[0], filters={"node_start": pred}), counter(hs)

        return make

    def batched(counting: bool) -> Any:
        seen = [0]

        async def sink(batch: list[Any]) -> None:
            if counting:
                seen[0] += len(batch)

        return BatchedCallback(sink, batch_size=100, flush_interval=None), lambda: seen[0]

    def background(counting: bool) -> Any:
        hs = make_handlers("async", 1, counting)
        return BackgroundCallback(hs[0]), counter(hs)

    f1, f10 = "composites/floor/async/N=1", "composites/floor/async/N=10"
    out = [
        _floor(1),
        _floor(10),
        _manager_case("chained/N=10", f10, chained, 10, drain=False),
        _manager_case("filtering/pass", f1, filtering(True), 1, drain=False),
        _manager_case("filtering/block", f1, filtering(False), 0, drain=False),
        _manager_case("batched/size=100", f1, batched, 1, drain=True),
        _manager_case("background", f1, background, 1, drain=True),
    ]
    return out, []
