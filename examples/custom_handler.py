"""A custom handler: time every node and collect failures, with sync and async hooks.

Run it with ``python examples/custom_handler.py``. The events are sent by hand
with ``manager.trigger`` so that the handler can be seen on its own; attached
to a workflow run, it receives the same calls.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from loguru import logger

from flowhooks import BaseCallbackHandler, CallbackManager, ErrorInfo, Event


class TimingHandler(BaseCallbackHandler):
    """Measures how long each node takes and remembers which nodes failed."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.durations: dict[str, float] = {}
        self.failures: list[str] = []

    # A plain `def` is fine for quick, non-blocking work: it is called inline.
    def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        self.started[node_id] = time.perf_counter()

    # Declare a keyword-only `event` to receive the full Event as well.
    async def on_node_end(self, node_id: str, output_data: Any, *, event: Event) -> None:
        self.durations[node_id] = time.perf_counter() - self.started.pop(node_id)
        print(f"node {node_id} finished (run {event.run_id}, seq {event.seq})")

    async def on_error(self, error_info: ErrorInfo) -> None:
        # ErrorInfo is a model that also reads like a mapping.
        self.failures.append(f"{error_info.node_id}: {error_info['type']}: {error_info.message}")


class Broken(BaseCallbackHandler):
    """A handler with a bug: its failure is logged and isolated, the others still run."""

    async def on_node_end(self, node_id: str, output_data: Any) -> None:
        raise RuntimeError("bug in a handler")


async def main() -> None:
    # Show isolated handler failures as one line each (loguru logs them with a traceback).
    logger.remove()
    logger.add(
        lambda message: print(f"log: {message.record['message'].splitlines()[0]}"),
        level="WARNING",
    )

    timing = TimingHandler()
    manager = CallbackManager([Broken(), timing])

    await manager.trigger("node_start", node_id="extract", input_data={"source": "orders.csv"})
    await asyncio.sleep(0.01)
    await manager.trigger("node_end", node_id="extract", output_data=[1, 2, 3], run_id="run-1")

    error = ErrorInfo(type="ValueError", message="bad row", node_id="transform", run_id="run-1")
    await manager.trigger("node_start", node_id="transform", input_data={"extract": [1, 2, 3]})
    await manager.trigger("error", error_info=error)

    print(f"timed nodes: {sorted(timing.durations)}")
    print(f"failures: {timing.failures}")
    broken = manager.stats["Broken"]["node_end"]
    print(f"Broken.on_node_end: {broken.calls} call(s), {broken.errors} error(s)")


if __name__ == "__main__":
    asyncio.run(main())
