"""Every composite at work, driven by hand with ``manager.trigger``.

Simulates two runs of an order-processing workflow and shows what each
composite did: a chain that survives a broken handler, alerts filtered down
to critical nodes and errors, a condition on the run's start and end, a flaky
webhook saved by retries, events shipped in batches to a sink that fails once,
and a slow exporter fed from a background queue.

Run it with ``python examples/composites.py``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from loguru import logger

from flowhooks import (
    BackgroundCallback,
    BaseCallbackHandler,
    BatchedCallback,
    CallbackManager,
    ChainedCallback,
    ConditionalCallback,
    ErrorInfo,
    Event,
    FilteringCallback,
    RetryingCallback,
)


class Printer(BaseCallbackHandler):
    """Prints the events it receives, prefixed with a tag."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def on_workflow_start(self, workflow_id: str, input_data: dict[str, Any]) -> None:
        print(f"  [{self.tag}] run {workflow_id} started")

    def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
        print(f"  [{self.tag}] run {workflow_id} ended")

    def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        print(f"  [{self.tag}] node {node_id} started")

    def on_error(self, error_info: ErrorInfo) -> None:
        print(f"  [{self.tag}] {error_info.severity} error in {error_info.node_id}")


class Pager(BaseCallbackHandler):
    """Pages someone: it should only hear about critical nodes and critical errors."""

    def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        print(f"  [pager] watching critical node {node_id}")

    def on_error(self, error_info: ErrorInfo) -> None:
        print(f"  [pager] PAGE: {error_info.message} in {error_info.node_id}")


class BrokenAudit(BaseCallbackHandler):
    """A handler with a bug: the chain isolates it and carries on."""

    def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        raise KeyError("audit_table")


class FlakyWebhook(BaseCallbackHandler):
    """Fails twice, then delivers: RetryingCallback hides the hiccup."""

    def __init__(self) -> None:
        self.calls = 0
        self.delivered: list[str] = []

    async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls % 3:
            raise ConnectionError("503 from the webhook")
        self.delivered.append(workflow_id)


class SlowExporter(BaseCallbackHandler):
    """Takes its time per event; BackgroundCallback keeps the run from waiting."""

    def __init__(self) -> None:
        self.exported: list[str] = []

    async def on_node_end(self, node_id: str, output_data: Any) -> None:
        await asyncio.sleep(0.005)
        self.exported.append(node_id)


class Sink:
    """Receives batches; the first delivery fails, the retry succeeds."""

    def __init__(self) -> None:
        self.tries = 0
        self.batches: list[list[Event]] = []

    async def __call__(self, batch: list[Event]) -> None:
        self.tries += 1
        if self.tries == 1:
            raise OSError("warehouse not ready")
        self.batches.append(batch)


async def simulate_run(manager: CallbackManager, run_id: str, failing_node: str) -> None:
    """Send the events of one run: three nodes, one of which fails."""
    fields = {"run_id": run_id, "workflow_name": "orders"}
    await manager.trigger("workflow_start", run_id, {"day": "2026-11-23"}, **fields)
    for node in ("extract", "critical_charge", "notify"):
        await manager.trigger("node_start", node, {}, **fields)
        if node == failing_node:
            severity = "critical" if node.startswith("critical_") else "error"
            info = ErrorInfo(
                type="RuntimeError",
                message="card declined",
                severity=severity,
                node_id=node,
                run_id=run_id,
                workflow_name="orders",
            )
            await manager.trigger("error", info, **fields)
        else:
            await manager.trigger("node_end", node, {"rows": 3}, **fields)
    await manager.trigger("workflow_end", run_id, {}, status="failed", **fields)


async def main() -> None:
    webhook = FlakyWebhook()
    exporter = SlowExporter()
    sink = Sink()

    chained = ChainedCallback(BrokenAudit(), Printer("chain"))
    alerts = FilteringCallback(
        Pager(),
        filters={
            "node_start": lambda node_id: node_id.startswith("critical_"),
            "error": lambda e: e.severity == "critical",
        },
    )
    lifecycle = ConditionalCallback(
        lambda event_type, *args: event_type in ("workflow_start", "workflow_end"),
        Printer("lifecycle"),
    )
    retrying = RetryingCallback(webhook, attempts=3, backoff=0.01)
    batched = BatchedCallback(sink, batch_size=5, flush_interval=1.0, retry_backoff=0.01)
    background = BackgroundCallback(exporter, max_queue=100)

    async with CallbackManager(
        [chained, alerts, lifecycle, retrying, batched, background]
    ) as manager:
        for run_id, failing in (("run-1", "notify"), ("run-2", "critical_charge")):
            print(f"{run_id}:")
            await simulate_run(manager, run_id, failing)
            await manager.flush()  # what the runner does at the end of every run

    print("summary:")
    print(f"  chain: BrokenAudit errors = {chained.stats['BrokenAudit']['node_start'].errors}")
    print(f"  alerts: passed = {alerts.stats.passed}, filtered out = {alerts.stats.skipped}")
    print(f"  lifecycle: passed = {lifecycle.stats.passed}, skipped = {lifecycle.stats.skipped}")
    print(
        f"  webhook: delivered {webhook.delivered} after {retrying.stats.retries} retries, "
        f"gave up {retrying.stats.gave_up} times"
    )
    sizes = [len(b) for b in sink.batches]
    print(
        f"  batches: {batched.batches} delivered, sizes {sizes}, "
        f"{batched.stats.retries} retry, {batched.dead_letters} dead letters"
    )
    print(f"  background: exported {exporter.exported}, dropped {background.dropped}")


if __name__ == "__main__":
    logger.remove()  # keep the demo's output readable: one line per isolated failure
    logger.add(sys.stderr, level="WARNING", format=lambda r: "{level}: {message}\n")
    asyncio.run(main())
