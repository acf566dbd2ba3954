"""Property: random DAGs with random suspensions, resumed until done (SPEC §12).

The outputs equal an uninterrupted run's, every node that does not suspend
runs its body exactly once overall, and every run, suspended or resumed, has
exactly one ``workflow_end``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowhooks import (
    AsyncioRunner,
    Node,
    Runner,
    RunStatus,
    SequentialRunner,
    Suspend,
    Workflow,
    current_run,
)
from flowhooks.testing import RecordingCallback

RUNNERS = {"asyncio": AsyncioRunner, "sequential": SequentialRunner}


@st.composite
def graphs(draw: st.DrawFn) -> tuple[list[tuple[int, ...]], set[int]]:
    """Each node depends on some earlier ones; some nodes suspend the first time."""
    size = draw(st.integers(1, 7))
    deps = [
        tuple(draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3))) if i else ()
        for i in range(size)
    ]
    suspending = set(draw(st.lists(st.integers(0, size - 1), unique=True, max_size=3)))
    return deps, suspending


def build(
    deps: list[tuple[int, ...]], suspending: set[int], calls: Counter[str], *, suspend: bool
) -> Workflow:
    nodes = []
    for i, ds in enumerate(deps):
        name = f"n{i}"

        async def body(_name: str = name, _i: int = i, **kwargs: int) -> int:
            calls[_name] += 1
            if suspend and _i in suspending and current_run().resume_data is None:
                raise Suspend(f"{_name} waits")
            await asyncio.sleep(0)
            return _i + sum(kwargs.values())

        params = tuple(f"n{d}" for d in ds)
        nodes.append(Node(body, name=name, params=params, required=params, is_async=True))
    return Workflow("prop", nodes=nodes)


async def _run_to_the_end(wf: Workflow, runner: Runner) -> tuple[Any, list[RecordingCallback]]:
    recorders = [RecordingCallback()]
    result = await wf.run(callbacks=[recorders[-1]], runner=runner)
    for _ in range(10):
        if result.status is not RunStatus.SUSPENDED:
            break
        recorders.append(RecordingCallback())
        result = await wf.resume(
            result.run_id, {"go": True}, callbacks=[recorders[-1]], runner=runner
        )
    return result, recorders


@pytest.mark.parametrize("make_runner", list(RUNNERS.values()), ids=list(RUNNERS))
@settings(max_examples=40, deadline=None)
@given(graph=graphs())
def test_resumed_until_done_equals_an_uninterrupted_run(
    make_runner: type[Runner], graph: tuple[list[tuple[int, ...]], set[int]]
) -> None:
    deps, suspending = graph
    plain_calls: Counter[str] = Counter()
    plain = asyncio.run(build(deps, suspending, plain_calls, suspend=False).run())
    calls: Counter[str] = Counter()
    result, recorders = asyncio.run(
        _run_to_the_end(build(deps, suspending, calls, suspend=True), make_runner())
    )
    assert result.status is RunStatus.SUCCEEDED
    assert result.outputs == plain.outputs
    for i in range(len(deps)):
        name = f"n{i}"
        if i not in suspending:
            assert calls[name] == 1, (name, calls)
    for recorder in recorders:
        assert [e.type.value for e in recorder.events].count("workflow_end") == 1
        assert recorder.events[-1].type.value == "workflow_end"
