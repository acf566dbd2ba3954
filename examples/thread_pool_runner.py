"""A custom runner: sync nodes run in a ThreadPoolExecutor the runner owns.

Run it with ``python examples/thread_pool_runner.py``. The ``Runner`` base
class keeps every run semantic (events, retries, timeouts, skips,
cancellation); this subclass only decides *where* a node body executes, by
overriding ``submit``. Here blocking, sync nodes share a bounded pool of named
threads instead of the event loop's default executor, so their parallelism is
capped independently of the async nodes.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

from flowhooks import Node, Runner, Workflow, current_run, node


class ThreadPoolRunner(Runner):
    """Runs sync node bodies in its own ``ThreadPoolExecutor``; async ones on the loop.

    Args:
        max_workers: threads in the pool (the most sync nodes running at once).
        **options: ``max_concurrency`` and ``fail_fast``, as for every runner.
    """

    def __init__(self, max_workers: int = 4, **options: Any) -> None:
        super().__init__(**options)
        self.executor = ThreadPoolExecutor(max_workers, thread_name_prefix="flowhooks-node")

    async def submit(self, node: Node, kwargs: dict[str, Any]) -> Any:
        """Execute one attempt of ``node``: async on the loop, sync in the pool."""
        if node.is_async:
            return await node.fn(**kwargs)
        # Copy the context so that current_run() works inside the node, as with the
        # default runner; the run's timeouts and cancellation stop waiting for the
        # thread (a running thread itself cannot be interrupted).
        context = contextvars.copy_context()
        call = functools.partial(context.run, node.fn, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    def close(self) -> None:
        """Shut the pool down, waiting for running node bodies."""
        self.executor.shutdown(wait=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


threads_used: set[str] = set()


@node
def fetch(n: int) -> list[int]:
    """A blocking call (sleep stands in for I/O)."""
    time.sleep(0.02)
    threads_used.add(threading.current_thread().name)
    return list(range(n))


@node
def squares(fetch: list[int]) -> int:
    """CPU-ish work on the pool."""
    threads_used.add(threading.current_thread().name)
    return sum(x * x for x in fetch)


@node
def cubes(fetch: list[int]) -> int:
    """More work on the pool, in parallel with squares."""
    threads_used.add(threading.current_thread().name)
    assert current_run().workflow_name == "pool_demo"  # the run context reaches the thread
    return sum(x**3 for x in fetch)


@node
async def combine(squares: int, cubes: int) -> dict[str, int]:
    """An async node: runs on the event loop."""
    return {"squares": squares, "cubes": cubes}


workflow = Workflow("pool_demo", nodes=[fetch, squares, cubes, combine])


def main() -> None:
    """Run the workflow on the thread-pool runner and show where the nodes ran."""
    with ThreadPoolRunner(max_workers=2) as runner:
        result = workflow.run_sync({"n": 10}, runner=runner)
    print(f"status: {result.status.value}")
    print(f"outputs: {result.outputs['combine']}")
    pool_threads = sorted({name.rsplit("_", 1)[0] for name in threads_used})
    print(f"sync nodes ran on: {pool_threads}")


if __name__ == "__main__":
    main()
