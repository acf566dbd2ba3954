"""Property tests of the runner's event stream over random DAGs, failures and runners (SPEC §10)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from stream_checks import assert_well_formed

from flowhooks import (
    AsyncioRunner,
    BackgroundCallback,
    BatchedCallback,
    Event,
    Node,
    Runner,
    RunResult,
    SequentialRunner,
    Workflow,
    current_run,
)
from flowhooks.testing import RecordingCallback

RUNNERS: dict[str, Callable[[], Runner]] = {
    "AsyncioRunner()": AsyncioRunner,
    "AsyncioRunner(max_concurrency=2)": lambda: AsyncioRunner(max_concurrency=2),
    "SequentialRunner()": SequentialRunner,
    "AsyncioRunner(fail_fast=False)": lambda: AsyncioRunner(fail_fast=False),
    "SequentialRunner(fail_fast=False)": lambda: SequentialRunner(fail_fast=False),
}


@dataclass(frozen=True)
class NodeSpec:
    """How one generated node behaves."""

    data_deps: tuple[int, ...]
    order_deps: tuple[int, ...]
    is_async: bool
    behaviour: str  # "ok", "fail" (every attempt) or "flaky" (the first attempt only)
    retries: int
    pause: bool  # yield to the loop (or sleep briefly in a thread) before finishing


@st.composite
def dag_specs(draw: st.DrawFn) -> list[NodeSpec]:
    """A random DAG: each node depends on a random subset of the nodes before it."""
    size = draw(st.integers(1, 8))
    specs = []
    for i in range(size):
        earlier = list(range(i))
        deps = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
        split = draw(st.integers(0, len(deps)))
        specs.append(
            NodeSpec(
                data_deps=tuple(deps[:split]),
                order_deps=tuple(deps[split:]),
                is_async=draw(st.booleans()),
                behaviour=draw(st.sampled_from(["ok", "ok", "ok", "fail", "flaky"])),
                retries=draw(st.integers(0, 2)),
                pause=draw(st.booleans()),
            )
        )
    return specs


def build(specs: list[NodeSpec]) -> Workflow:
    """Turn generated specs into a workflow (nodes built with explicit parameter lists)."""
    attempts: dict[tuple[str, str], int] = defaultdict(int)
    nodes = []
    for i, spec in enumerate(specs):
        name = f"n{i}"

        def outcome(name: str = name, spec: NodeSpec = spec, **kwargs: Any) -> int:
            key = (current_run().run_id, name)
            attempts[key] += 1
            if spec.behaviour == "fail" or (spec.behaviour == "flaky" and attempts[key] == 1):
                raise RuntimeError(f"{name} failed (attempt {attempts[key]})")
            return 1 + sum(kwargs.values())

        if spec.is_async:

            async def body(_outcome: Any = outcome, _pause: bool = spec.pause, **kw: Any) -> int:
                if _pause:
                    await asyncio.sleep(0)
                return int(_outcome(**kw))

        else:

            def body(_outcome: Any = outcome, _pause: bool = spec.pause, **kw: Any) -> int:  # type: ignore[misc]
                if _pause:
                    time.sleep(0.0005)
                return int(_outcome(**kw))

        params = tuple(f"n{d}" for d in spec.data_deps)
        nodes.append(
            Node(
                body,
                name=name,
                params=params,
                required=params,
                is_async=spec.is_async,
                depends_on=[f"n{d}" for d in spec.order_deps],
                retries=spec.retries,
            )
        )
    return Workflow("random", nodes=nodes)


async def run_many(
    wf: Workflow, runner: Runner, runs: int, cancel_after: int | None
) -> tuple[list[RunResult], RecordingCallback, list[Event], RecordingCallback]:
    """Run ``wf`` ``runs`` times at once with direct, batched and background observers."""
    direct = RecordingCallback()
    batches: list[list[Event]] = []
    batched = BatchedCallback(batches.append, batch_size=3, flush_interval=None)
    background_rec = RecordingCallback()
    background = BackgroundCallback(background_rec)
    callbacks = [direct, batched, background]
    handles = [wf.start(callbacks=callbacks, runner=runner) for _ in range(runs)]
    if cancel_after is not None:
        for _ in range(cancel_after):
            await asyncio.sleep(0)
        handles[0].cancel("property test")
    results = [await h for h in handles]
    delivered = [e for batch in batches for e in batch]
    return results, direct, delivered, background_rec


@pytest.mark.parametrize("make_runner", list(RUNNERS.values()), ids=list(RUNNERS))
@settings(max_examples=25, deadline=None)
@given(
    specs=dag_specs(),
    runs=st.integers(1, 3),
    cancel_after=st.none() | st.integers(0, 6),
)
def test_event_stream_invariants(
    make_runner: Callable[[], Runner],
    specs: list[NodeSpec],
    runs: int,
    cancel_after: int | None,
) -> None:
    """Every run's stream is well formed, matches its result, and buffered events all arrive."""
    wf = build(specs)
    deps = wf.plan().deps
    results, direct, delivered, background_rec = asyncio.run(
        run_many(wf, make_runner(), runs, cancel_after)
    )

    by_run: dict[str, list[Event]] = defaultdict(list)
    for e in direct.events:
        by_run[e.run_id].append(e)
    assert set(by_run) == {r.run_id for r in results}
    for result in results:
        events = by_run[result.run_id]
        event(f"run {result.status.value}")
        # one workflow_start first, one workflow_end last, seq 1, 2, 3 ... without gaps,
        # attempts in order, each node starting only after its dependencies ended
        assert_well_formed(events, deps)
        end = events[-1]
        assert end.status == result.status.value
        assert end.payload == result.outputs
        started = {e.node_id for e in events if e.type == "node_start"}
        succeeded = {e.node_id for e in events if e.type == "node_end"}
        for name, node_result in result.nodes.items():
            status = node_result.status.value
            assert status in ("succeeded", "failed", "skipped", "cancelled"), (name, status)
            assert (name in succeeded) == (status == "succeeded"), (name, status)
            assert (name in started) == (status != "skipped"), (name, status)
        assert set(result.outputs) == succeeded
        if result.status == "succeeded":
            assert succeeded == set(result.nodes)
        elif result.status == "failed":
            assert result.error is not None
            assert result.final_node == result.error.node_id
    # nothing lost, duplicated or reordered by the buffering composites by the time run returns
    direct_ids = [e.id for e in direct.events]
    assert [e.id for e in delivered] == direct_ids
    assert [e.id for e in background_rec.events] == direct_ids
    direct.assert_no_duplicates()


@pytest.mark.parametrize("make_runner", list(RUNNERS.values()), ids=list(RUNNERS))
@settings(max_examples=15, deadline=None)
@given(specs=dag_specs())
def test_fail_fast_and_continue_semantics(
    make_runner: Callable[[], Runner], specs: list[NodeSpec]
) -> None:
    """Descendants of failures are skipped; without fail-fast every other node runs to its end."""
    runner = make_runner()
    wf = build(specs)
    result = wf.run_sync(runner=runner)
    deps = wf.plan().deps
    for name in wf.nodes:
        status = result.nodes[name].status.value
        ancestors_ok = all(result.nodes[d].status == "succeeded" for d in deps[name])
        if not ancestors_ok:
            assert status == "skipped", (name, status)
        elif not runner.fail_fast:
            assert status in ("succeeded", "failed"), (name, status)
    failed = [n for n, r in result.nodes.items() if r.status == "failed"]
    assert (result.status == "failed") == bool(failed)
    if runner.fail_fast and runner.sequential:
        assert len(failed) <= 1  # the first failure stops the run before the next node
