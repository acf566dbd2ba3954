"""Monitoring a workflow with logs, in-memory metrics and Prometheus.

Runs a small order-processing workflow three times (two runs succeed, one
fails at its ``charge`` node after a retry) with:

* ``LoggingCallback``: one structured loguru record per event, printed here as
  ``LEVEL | run | message``; inputs and outputs are shown (DEBUG) with the
  card number and API key redacted.
* ``MetricsCallback``: counts and durations, summarised with ``get_report()``.
* ``PrometheusCallback``: counters and histograms in a private registry,
  printed in the Prometheus text format (serve it with
  ``prometheus_client.start_http_server`` in a real service).

Run it with ``python examples/monitoring.py`` (needs the ``prometheus`` extra).
"""

from __future__ import annotations

import asyncio
import sys

from loguru import logger
from prometheus_client import CollectorRegistry, generate_latest

from flowhooks import Workflow, node
from flowhooks.handlers import LoggingCallback, MetricsCallback, PrometheusCallback


@node
async def validate(order_id: str, amount: float, card_number: str, api_key: str) -> dict:
    """Check the order and return what the next steps need."""
    if amount <= 0:
        raise ValueError(f"order {order_id}: amount must be positive, got {amount}")
    return {"order_id": order_id, "amount": amount, "card_number": card_number}


@node(retries=1)
async def charge(validate: dict) -> str:
    """Charge the card; orders over 1000 are declined (after one retry)."""
    await asyncio.sleep(0.01)
    if validate["amount"] > 1000:
        raise RuntimeError("card declined")
    return f"payment-{validate['order_id']}"


@node
def receipt(validate: dict, charge: str) -> str:
    """Write the receipt line."""
    return f"{validate['order_id']}: {validate['amount']:.2f} paid ({charge})"


workflow = Workflow("orders", nodes=[validate, charge, receipt])


async def main() -> int:
    """Run three orders with the three handlers and print what they collected."""
    logger.remove()
    logger.add(
        sys.stdout,
        level="DEBUG",
        format="{level: <7} | {extra[run_id]:.8} | {message}",
        filter=lambda record: "run_id" in record["extra"],
    )
    registry = CollectorRegistry()
    metrics = MetricsCallback()
    prometheus = PrometheusCallback(registry)
    handlers = [
        LoggingCallback(level="DEBUG", max_length=120, traceback=False),
        metrics,
        prometheus,
    ]

    orders = [("A-1", 25.0), ("A-2", 99.5), ("A-3", 5000.0)]
    for order_id, amount in orders:
        inputs = {
            "order_id": order_id,
            "amount": amount,
            "card_number": "4111 1111 1111 1111",
            "api_key": "sk-live-not-for-logs",
        }
        result = await workflow.run(inputs, callbacks=handlers)
        print(f"--> run {result.run_id[:8]} {result.status}: {result.outputs.get('receipt')}")
    await prometheus.aclose()

    report = metrics.get_report()
    print("\nMetrics report")
    for key in (
        "total_workflows",
        "succeeded_workflows",
        "failed_workflows",
        "total_nodes",
        "total_node_attempts",
        "retries",
        "error_rate",
        "avg_workflow_duration",
    ):
        print(f"  {key}: {report[key]}")
    slowest = report["slowest_nodes"][0]
    print(f"  slowest node: {slowest['node_id']} ({slowest['duration']:.3f}s, {slowest['status']})")

    print("\nPrometheus (runs and nodes)")
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(("flowhooks_workflow_runs_total", "flowhooks_node_executions_total")):
            print(f"  {line}")
    return 0 if report["total_workflows"] == len(orders) else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
