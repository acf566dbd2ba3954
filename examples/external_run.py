"""flowhooks handlers around a script that is not a Workflow: ``ExternalRun``.

A nightly job written as plain code (fetch, with a hand-written retry loop,
then transform and load) reports to the same handlers a ``Workflow`` run
would: here a printing handler and ``MetricsCallback``. The second part runs
the same job from sync code with ``ExternalRun.sync``, in two threads at once.

Run it with ``python examples/external_run.py``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from flowhooks import BaseCallbackHandler, CallbackManager, ErrorInfo, Event, ExternalRun
from flowhooks.handlers import MetricsCallback


class Printer(BaseCallbackHandler):
    """Prints one line per event: seq, type and what it is about."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # two sync runs print at once in part 2

    def _line(self, event: Event, text: str) -> None:
        with self.lock:
            print(f"[{event.workflow_name} {event.seq:>2}] {event.type.value:<14} {text}")

    def on_workflow_start(self, workflow_id: str, input_data: Any, *, event: Event) -> None:
        self._line(event, f"inputs={input_data}")

    def on_node_start(self, node_id: str, input_data: Any, *, event: Event) -> None:
        self._line(event, f"{node_id} (attempt {event.attempt})")

    def on_node_end(self, node_id: str, output_data: Any, *, event: Event) -> None:
        self._line(event, f"{node_id} -> {output_data!r}")

    def on_error(self, error_info: ErrorInfo, *, event: Event) -> None:
        self._line(event, f"{error_info} [{error_info.severity}]")

    def on_custom_event(self, name: str, data: Any, *, event: Event) -> None:
        self._line(event, f"{name} {data}")

    def on_workflow_end(self, workflow_id: str, output_data: Any, *, event: Event) -> None:
        self._line(event, f"{event.status} outputs={sorted(output_data)}")


FLAKY = {"fails_left": 2}


async def fetch_orders(day: str) -> list[dict[str, Any]]:
    """A flaky source: fails twice, then answers."""
    await asyncio.sleep(0.01)
    if FLAKY["fails_left"]:
        FLAKY["fails_left"] -= 1
        raise ConnectionError("orders API timed out")
    return [{"id": 1, "amount": 30.0}, {"id": 2, "amount": -5.0}, {"id": 3, "amount": 12.5}]


async def nightly(manager: CallbackManager, day: str) -> None:
    """The job, marked up with ExternalRun: each step is a node, retries are attempts."""
    async with ExternalRun(manager, workflow_name="nightly-orders", inputs={"day": day}) as run:
        for attempt in range(1, 4):
            try:
                async with run.node(
                    "fetch", {"day": day}, attempt=attempt, will_retry=attempt < 3
                ) as n:
                    n.output = await fetch_orders(day)
                break
            except ConnectionError:
                if attempt == 3:
                    raise
                await asyncio.sleep(0.01 * attempt)
        orders = n.output
        async with run.node("transform", {"fetch": len(orders)}) as n:
            valid = [o for o in orders if o["amount"] > 0]
            await run.emit("rows_rejected", {"count": len(orders) - len(valid)})
            n.output = valid
        async with run.node("load", {"transform": len(valid)}, critical=True) as n:
            n.output = sum(o["amount"] for o in valid)
    assert run.result is not None
    print(f"run {run.result.status}: loaded {run.result.outputs['load']}")


def sync_job(manager: CallbackManager, name: str) -> None:
    """The same idea from plain sync code (no event loop), e.g. in a worker thread."""
    with ExternalRun.sync(manager, workflow_name=name) as run:
        with run.node("count") as n:
            n.output = len(name)
        run.emit("counted", n.output)


def main() -> None:
    metrics = MetricsCallback()
    manager = CallbackManager([Printer(), metrics])
    asyncio.run(nightly(manager, "2024-05-01"))

    threads = [threading.Thread(target=sync_job, args=(manager, n)) for n in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    report = metrics.get_report()
    print(
        f"metrics: {report['total_workflows']} runs, {report['succeeded_workflows']} succeeded, "
        f"{report['retries']} retries"
    )


if __name__ == "__main__":
    main()
