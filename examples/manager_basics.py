"""CallbackManager basics: priorities, trigger and shortcuts, nesting, stats and closing.

Run it with ``python examples/manager_basics.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger

from flowhooks import BaseCallbackHandler, CallbackManager


class Printer(BaseCallbackHandler):
    """Prints each node event with its own label, to show the dispatch order."""

    def __init__(self, label: str) -> None:
        self.label = label

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        print(f"{self.label}: start {node_id}")

    async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
        print(f"{self.label}: run {workflow_id} ended with {output_data}")

    async def aclose(self) -> None:
        print(f"{self.label}: closed")


class Hanging(BaseCallbackHandler):
    """Never answers; its timeout stops the manager from waiting for it."""

    timeout = 0.05

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        await asyncio.Event().wait()


async def main() -> None:
    logger.remove()  # isolated failures are logged; print them as one line each
    logger.add(
        lambda message: print(f"log: {message.record['message'].splitlines()[0]}"),
        level="WARNING",
    )

    audit = CallbackManager([Printer("audit")])  # a manager is itself a handler

    async with CallbackManager() as manager:
        manager.add_handler(Printer("default"))
        manager.add_handler(Printer("urgent"), priority=10)  # higher priority runs first
        manager.add_handler(Hanging())
        manager.add_handler(audit, priority=-1)  # nested managers run in their slot
        print("dispatch order:", [type(h).__name__ for h in manager.handlers])

        await manager.trigger("node_start", node_id="extract", input_data={}, run_id="run-1")
        await manager.on_node_start("load", {})  # typed shortcut, same as trigger
        await manager.trigger("on_workflow_end", workflow_id="run-1", output_data={"load": 3})

        hanging = manager.stats["Hanging"]["node_start"]
        print(f"Hanging: {hanging.calls} calls, {hanging.timeouts} timeouts")
    # leaving `async with` flushed and closed every handler


if __name__ == "__main__":
    asyncio.run(main())
