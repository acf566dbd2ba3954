"""The default runner hands a node's one ready successor on in the node's own task.

A chain on ``AsyncioRunner`` costs about what it costs on ``SequentialRunner``
instead of a task per link; what users can observe must stay as with a task per
node: branches interleave in the same order, other tasks of the loop get turns,
a stop between two links skips the rest, fan-outs still run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from flowhooks import AsyncioRunner, BaseCallbackHandler, Workflow, current_run, node
from flowhooks._node import Node


def _link(name: str, after: str | None, body: Any) -> Node:
    async def fn(**_: Any) -> str:
        await body(name)
        return name

    return node(fn, name=name, depends_on=[after] if after else [])


def _chain(prefix: str, n: int, body: Any) -> list[Node]:
    return [_link(f"{prefix}{i}", f"{prefix}{i - 1}" if i else None, body) for i in range(n)]


@pytest.mark.parametrize("limit", [None, 1, 2])
async def test_a_chain_runs_in_one_task(limit: int | None) -> None:
    tasks: list[asyncio.Task[Any] | None] = []

    async def body(name: str) -> None:
        tasks.append(asyncio.current_task())

    result = await Workflow("chain", nodes=_chain("c", 12, body)).run(
        runner=AsyncioRunner(max_concurrency=limit)
    )
    assert result.succeeded
    assert len(tasks) == 12
    assert len(set(map(id, tasks))) == 1
    assert tasks[0] is not asyncio.current_task()  # never the caller's task


async def test_a_fan_out_still_gets_a_task_per_branch() -> None:
    running = 0
    peak = 0
    tasks: dict[str, asyncio.Task[Any] | None] = {}

    async def body(name: str) -> None:
        nonlocal running, peak
        tasks[name] = asyncio.current_task()
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    nodes = [_link("root", None, body)]
    nodes += [_link(f"b{i}", "root", body) for i in range(4)]
    result = await Workflow("fan", nodes=nodes).run()
    assert result.succeeded
    assert peak == 4  # the four branches overlap
    # More than one node made ready: each branch starts in a task of its own.
    assert len({id(tasks[f"b{i}"]) for i in range(4)} | {id(tasks["root"])}) == 5


async def test_parallel_chains_interleave_as_with_a_task_per_node() -> None:
    """Nodes that never wait: each link starts one turn of the loop after the one before."""
    order: list[str] = []

    async def body(name: str) -> None:
        order.append(name)

    nodes = _chain("a", 3, body) + _chain("b", 3, body)
    result = await Workflow("two", nodes=nodes).run()
    assert result.succeeded
    assert order == ["a0", "b0", "a1", "b1", "a2", "b2"]


async def test_a_busy_chain_gives_other_tasks_turns() -> None:
    """Nodes that compute without awaiting: the loop still gets a turn at least every ms."""
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async def body(name: str) -> None:
        until = time.perf_counter() + 0.0005
        while time.perf_counter() < until:
            pass

    wf = Workflow("busy", nodes=_chain("c", 20, body))
    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    turns = 0
    try:
        result = await wf.run()
    finally:
        ticking.cancel()
    assert result.succeeded
    # Every two links take at least a millisecond: a turn after each pair, at least.
    assert turns >= 9


async def test_a_busy_chain_lets_timers_run() -> None:
    """Timers (and I/O callbacks) that fall due while a chain computes run at its next turn,
    not a turn later: a timer that re-arms itself fires after every pair of links."""
    loop = asyncio.get_running_loop()
    fired = 0
    stopped = False

    def tick() -> None:
        nonlocal fired
        fired += 1
        if not stopped:
            loop.call_later(0, tick)

    async def body(name: str) -> None:
        until = time.perf_counter() + 0.0005
        while time.perf_counter() < until:
            pass

    wf = Workflow("busy", nodes=_chain("c", 20, body))
    loop.call_later(0, tick)
    await asyncio.sleep(0)
    fired = 0
    try:
        result = await wf.run()
    finally:
        stopped = True
    assert result.succeeded
    # A turn at least every two links (each takes 0.5 ms), and in each turn the timer fires
    # twice: in the turn the task leaves for what fell due, and in the one it waits for.
    # Were the task queued ahead of due timers, they would fire once per turn (~10-13).
    assert fired >= 18


async def test_a_stop_between_two_links_skips_the_rest() -> None:
    started: list[str] = []

    async def body(name: str) -> None:
        started.append(name)
        if name == "c2":
            current_run().cancel("enough")

    result = await Workflow("stop", nodes=_chain("c", 6, body)).run()
    assert result.status == "cancelled"
    assert result.cancel_reason == "enough"
    assert started == ["c0", "c1", "c2"]
    statuses = {name: res.status for name, res in result.nodes.items()}
    assert statuses["c1"] == "succeeded"
    assert [statuses[f"c{i}"] for i in range(3, 6)] == ["skipped"] * 3


async def test_a_handler_cancelling_its_task_at_a_links_end_fails_that_link() -> None:
    """The task carries the chain: a handler's cancel of it fails the node whose event it was,
    as with a task per node, and the rest is skipped (fail-fast)."""

    class CancelsOwnTask(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            if node_id == "c1":
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
                await asyncio.sleep(0)

    ran: list[str] = []

    async def body(name: str) -> None:
        ran.append(name)

    result = await Workflow("own", nodes=_chain("c", 4, body)).run(callbacks=[CancelsOwnTask()])
    assert not result.succeeded
    statuses = {name: res.status for name, res in result.nodes.items()}
    assert statuses["c0"] == "succeeded"
    assert statuses["c1"] == "failed"
    assert result.error is not None
    assert result.error.type == "CancelledError"
    assert ran == ["c0", "c1"]
    assert [statuses["c2"], statuses["c3"]] == ["skipped", "skipped"]


async def test_a_stop_in_a_handed_on_links_turn_finds_it_as_a_new_task() -> None:
    """Two chains; the caller cancels while the second links wait for their turn: neither
    of them starts (no ``node_start``), as a node task created just before the stop does
    not once its first step finds the run stopping; they and the rest end skipped."""
    ran: list[str] = []
    seen: list[tuple[str, str]] = []

    class Seen(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            seen.append(("start", node_id))

        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            seen.append(("end", node_id))

    async def body(name: str) -> None:
        ran.append(name)

    ended: dict[str, str] = {}
    wf = Workflow(
        "two",
        nodes=_chain("a", 3, body) + _chain("b", 3, body),
        on_workflow_cancel=lambda result: ended.update(
            {name: res.status for name, res in result.nodes.items()}
        ),
    )
    running = asyncio.ensure_future(wf.run(callbacks=[Seen()]))
    await asyncio.sleep(0)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    assert ran == ["a0", "b0"]
    assert seen == [
        ("start", "a0"),
        ("end", "a0"),
        ("start", "b0"),
        ("end", "b0"),
    ]
    assert ended == {
        "a0": "succeeded",
        "b0": "succeeded",
        "a1": "skipped",
        "b1": "skipped",
        "a2": "skipped",
        "b2": "skipped",
    }
