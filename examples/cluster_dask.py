"""Node bodies on a Dask cluster, handlers in this process.

Run it with ``python examples/cluster_dask.py`` (a local cluster of 2 worker
processes is started and closed) or ``python examples/cluster_dask.py
tcp://scheduler:8786`` to use a running scheduler. Needs the ``dask`` extra:
``pip install 'flowhooks[dask]'``.

The nodes run on the workers (each prints the worker's process id); the
handler below runs here, in the driver, and sees every event in order,
including the progress events the ``score`` node sends from its worker.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from flowhooks import BaseCallbackHandler, Workflow, current_run, node
from flowhooks.runners import DaskRunner


@node
def load(rows: int) -> list[int]:
    return list(range(rows))


@node(retries=1)
async def score(load: list[int]) -> int:
    ctx = current_run()
    total = 0
    for start in range(0, len(load), 50):
        total += sum(x * x for x in load[start : start + 50])
        await ctx.emit("progress", {"done": min(start + 50, len(load)), "pid": os.getpid()})
    return total


@node
def report(score: int) -> str:
    return f"sum of squares {score} (computed in process {os.getpid()})"


class Printer(BaseCallbackHandler):
    """Runs in the driver: prints each event as it is dispatched."""

    def on_node_end(self, node_id: str, output_data: Any) -> None:
        print(f"node_end     {node_id}")

    def on_custom_event(self, name: str, data: Any) -> None:
        print(f"custom_event {name} {data['done']} rows (worker process {data['pid']})")


workflow = Workflow("cluster_demo", nodes=[load, score, report], callbacks=[Printer()])


async def main(address: str | None = None) -> str:
    """Run the workflow on the cluster at ``address`` (``None``: a local one); return the report."""
    async with DaskRunner(address) as runner:
        result = await workflow.run({"rows": 120}, runner=runner)
    result.raise_for_status()
    print(f"driver process {os.getpid()}: {result.outputs['report']}")
    return str(result.outputs["report"])


if __name__ == "__main__":  # worker processes import this module: run only as a script
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
