"""Cluster runner cases: ``DaskRunner`` against Dask's own ``client.submit`` round trip.

Per node, a ``DaskRunner`` run adds to the engine's work: the run's events,
a ``RunSnapshot`` sent with each task, the body's outcome pickled on the
worker, and the walk of the DAG in the driver. The floor is what a user
would write with Dask alone: for a chain, submit a task and await its result
before submitting the next; for a fan, submit them all and gather. Both use
the same trivial function and the same async client; nodes of ~20 ms and
more hide the difference.

Only when ``distributed`` is installed. The full run uses a ``LocalCluster``
of 2 worker processes; ``--quick`` uses a threads-only cluster, 5 nodes and
one round, so it stays within a few seconds.
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

from benchmarks._harness import Built, Case

CLUSTER = "cluster/"


def trivial(x: int) -> int:
    """The node body and the floor's task: as little work as a task can do."""
    return x + 1


class _Shared:
    """One cluster and one async client for every case of the group (started on first use)."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.cluster: Any = None
        self.client: Any = None

    async def client_of_loop(self) -> Any:
        if self.client is None:
            from distributed import Client, LocalCluster

            self.cluster = await LocalCluster(
                n_workers=2,
                processes=not self.quick,
                threads_per_worker=1,
                dashboard_address=":0",
                asynchronous=True,
            )
            self.client = await Client(self.cluster, asynchronous=True, set_as_default=False)
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            await self.cluster.close()
            self.client = self.cluster = None


def _floor_case(shared: _Shared, shape: str, n: int) -> Case:
    async def build(counting: bool) -> Built:
        client = await shared.client_of_loop()
        got = [0]

        async def chain(loops: int) -> None:
            for _ in range(loops):
                value = 0
                for _ in range(n):
                    value = await client.submit(trivial, value, pure=False)
                    got[0] += 1

        async def fan(loops: int) -> None:
            for _ in range(loops):
                futures = [client.submit(trivial, i, pure=False) for i in range(n)]
                got[0] += len(await client.gather(futures))

        return Built(chain if shape == "chain" else fan, lambda: got[0], n)

    return Case(
        f"{CLUSTER}floor-dask-submit/{shape}/{n}",
        "floor",
        build,
        n,
        unit="node",
        clock="wall",
        note="client.submit + await result per task (chain) or gather (fan)",
    )


def _runner_case(shared: _Shared, shape: str, n: int) -> Case:
    floor = f"{CLUSTER}floor-dask-submit/{shape}/{n}"

    async def build(counting: bool) -> Built:
        from flowhooks import BaseCallbackHandler, Node, Workflow, node
        from flowhooks.runners import DaskRunner

        client = await shared.client_of_loop()
        runner = DaskRunner(client)
        await runner.open()
        if shape == "chain":
            nodes = [node(trivial, name="n0")]
            nodes += [
                Node(step, name=f"n{i}", params=(f"n{i - 1}",), is_async=False) for i in range(1, n)
            ]
        else:
            nodes = [Node(trivial, name=f"n{i}", params=("x",), is_async=False) for i in range(n)]
        wf = Workflow(f"cluster-{shape}", nodes=nodes)
        got = [0]

        class Count(BaseCallbackHandler):
            def on_node_end(self, node_id: str, output_data: Any) -> None:
                got[0] += 1

        callbacks = [Count()] if counting else None

        async def body(loops: int) -> None:
            for _ in range(loops):
                result = await wf.run({"x": 0}, runner=runner, callbacks=callbacks)
                if not result.succeeded:
                    raise RuntimeError(f"cluster benchmark run failed: {result.error}")

        return Built(body, lambda: got[0], n if counting else 0, close=runner.aclose)

    return Case(
        f"{CLUSTER}flowhooks-dask/{shape}/{n}",
        "flowhooks",
        build,
        n,
        unit="node",
        floor=floor,
        clock="wall",
        note="DaskRunner, no handlers",
    )


def step(**previous: int) -> int:
    """A chain node's body: its one argument is the previous node's output."""
    (value,) = previous.values()
    return value + 1


def cases(quick: bool) -> tuple[list[Case], list[str], _Shared | None]:
    """The cluster cases (empty when Dask is not installed), notes, and what to close after."""
    if importlib.util.find_spec("distributed") is None:
        return [], ["cluster: skipped, dask[distributed] is not installed (extra `dask`)"], None
    shared = _Shared(quick)
    n = 5 if quick else 20
    out: list[Case] = []
    for shape in ("chain", "fan"):
        out += [_floor_case(shared, shape, n), _runner_case(shared, shape, n)]
    notes = []
    if quick:
        notes.append(f"quick mode: cluster cases use {n} nodes on a threads-only LocalCluster")
    return out, notes, shared


async def close(shared: _Shared | None) -> None:
    """Stop the group's cluster."""
    if shared is not None:
        await shared.close()
        await asyncio.sleep(0)
