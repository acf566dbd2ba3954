"""A Prefect flow reported to flowhooks handlers: ``flowhooks_hooks``.

``flowhooks_hooks(handlers)`` gives the state hooks for ``@flow`` and
``@task``: each flow run is a flowhooks run, each task run a node. ``fetch``
fails twice and is retried by Prefect (three attempts of one node); the
second flow run fails in ``average``. ``MetricsCallback`` sums both runs up.

Run it with ``python examples/prefect_flow.py`` (needs the ``prefect`` extra).
Without ``PREFECT_API_URL`` set, Prefect starts a temporary local server for
the script, which takes some seconds.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, task

from flowhooks import BaseCallbackHandler, CallbackManager, Event
from flowhooks.handlers import MetricsCallback
from flowhooks.integrations.prefect import flowhooks_hooks


class Printer(BaseCallbackHandler):
    """One line per event that matters here."""

    def on_workflow_start(self, workflow_id: str, input_data: Any, *, event: Event) -> None:
        print(f"  {event.seq:>2} {event.workflow_name} started with {input_data}")

    def on_node_start(self, node_id: str, input_data: Any, *, event: Event) -> None:
        print(f"  {event.seq:>2} {node_id} (attempt {event.attempt})")

    def on_node_end(self, node_id: str, output_data: Any, *, event: Event) -> None:
        print(f"  {event.seq:>2} {node_id} -> {output_data!r}")

    def on_error(self, error_info: Any, *, event: Event) -> None:
        print(f"  {event.seq:>2} error: {error_info} [{error_info.severity}]")

    def on_workflow_end(self, workflow_id: str, output_data: Any, *, event: Event) -> None:
        print(f"  {event.seq:>2} {event.workflow_name}: {event.status}")


metrics = MetricsCallback()
hooks = flowhooks_hooks(CallbackManager([Printer(), metrics]))
attempts: list[int] = []


@task(retries=2, **hooks.task)
def fetch(day: int) -> list[float]:
    """Order amounts of ``day``; the source is flaky at first."""
    attempts.append(day)
    if len(attempts) < 3:
        raise ConnectionError("order service unavailable")
    return [10.0, 20.0, 60.0] if day > 0 else []


@task(**hooks.task)
def average(amounts: list[float]) -> float:
    """Mean amount; no orders fails here."""
    if not amounts:
        raise ZeroDivisionError("no orders to average")
    return sum(amounts) / len(amounts)


@flow(**hooks.flow)
def daily_report(day: int) -> float:
    """Fetch a day's orders and average them."""
    return average(fetch(day))


def main() -> None:
    logging.getLogger("prefect").setLevel(logging.CRITICAL)  # Prefect's own run log
    print("run 1:")
    print(f"  result: {daily_report(1)}")
    print("run 2 (no orders):")
    try:
        daily_report(0)
    except ZeroDivisionError as exc:
        print(f"  the flow raised: {exc}")
    report = metrics.get_report()
    print(f"metrics: {report['total_workflows']} runs, {report['failed_workflows']} failed")


if __name__ == "__main__":
    main()
