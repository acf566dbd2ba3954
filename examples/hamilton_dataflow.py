"""A Hamilton dataflow reported to flowhooks handlers: ``FlowhooksAdapter``.

The functions below are a Hamilton module (each function a node, its
parameters its dependencies). The driver is built with ``FlowhooksAdapter``:
each ``execute`` is a flowhooks run, each computed function a node, and
``MetricsCallback`` summarises them. The second execution fails in
``average``. The last part runs the same module with Hamilton's
``AsyncDriver`` and a ``FlowhooksAdapter`` of its own.

Run it with ``python examples/hamilton_dataflow.py`` (needs the ``hamilton`` extra).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from hamilton import async_driver, base, driver

from flowhooks import BaseCallbackHandler, CallbackManager, Event
from flowhooks.handlers import MetricsCallback
from flowhooks.integrations.hamilton import FlowhooksAdapter


def amounts(raw: str) -> list[float]:
    """Parse the comma-separated amounts."""
    return [float(part) for part in raw.split(",") if part.strip()]


def total(amounts: list[float]) -> float:
    """Sum of the amounts."""
    return sum(amounts)


def average(total: float, amounts: list[float]) -> float:
    """Mean amount; an empty input fails here."""
    if not amounts:
        raise ZeroDivisionError("no amounts to average")
    return total / len(amounts)


class Printer(BaseCallbackHandler):
    """One line per node and run end."""

    def on_node_end(self, node_id: str, output_data: Any, *, event: Event) -> None:
        print(f"  {event.seq:>2} {node_id} = {output_data!r}")

    def on_error(self, error_info: Any, *, event: Event) -> None:
        print(f"  {event.seq:>2} error: {error_info}")

    def on_workflow_end(self, workflow_id: str, output_data: Any, *, event: Event) -> None:
        print(f"  {event.seq:>2} {event.workflow_name}: {event.status}")


def main() -> None:
    logging.getLogger("hamilton").setLevel(logging.CRITICAL)  # its own report of the failure
    metrics = MetricsCallback()
    manager = CallbackManager([Printer(), metrics])
    module = sys.modules[__name__]
    adapter = FlowhooksAdapter(manager, workflow_name="amounts")
    dr = driver.Builder().with_modules(module).with_adapters(base.DictResult(), adapter).build()

    print("sync driver:")
    print("  result:", dr.execute(["average"], inputs={"raw": "10, 20, 60"}))
    try:
        dr.execute(["average"], inputs={"raw": ""})
    except ZeroDivisionError as exc:
        print(f"  the driver raised: {exc}")

    async def run_async() -> dict[str, Any]:
        async_adapter = FlowhooksAdapter(manager, workflow_name="amounts-async")
        adr = await (
            async_driver.Builder()
            .with_modules(module)
            .with_adapters(base.DictResult(), async_adapter)
            .build()
        )
        result: dict[str, Any] = await adr.execute(["total"], inputs={"raw": "1,2"})
        return result

    print("async driver:")
    print("  result:", asyncio.run(run_async()))
    report = metrics.get_report()
    print(f"metrics: {report['total_workflows']} runs, {report['failed_workflows']} failed")


if __name__ == "__main__":
    main()
