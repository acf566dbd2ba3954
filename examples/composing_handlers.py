"""Composing handlers: monitoring, alerting and cleanup around one workflow.

One ``CallbackManager`` holds the whole stack, attached to the workflow once:

* monitoring: ``LoggingCallback`` (first, so every record is written before
  anything else can fail) and ``MetricsCallback``;
* alerting: ``NotificationCallback`` paging on critical errors and failed
  runs, and a ``WebhookCallback`` that posts every run's result, delivered by
  a ``BackgroundCallback`` so the workflow never waits for the network;
* cleanup: a small handler that removes a run's scratch folder whatever the
  outcome. It overrides only ``on_workflow_end``, so the manager never calls
  it for any other event.

An HTTP receiver on 127.0.0.1 (in this process) stands in for the pager and
the webhook endpoint. Run it with ``python examples/composing_handlers.py``
(needs the ``http`` extra).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from loguru import logger

from flowhooks import (
    BackgroundCallback,
    BaseCallbackHandler,
    CallbackManager,
    Workflow,
    current_run,
    node,
)
from flowhooks.handlers import (
    LoggingCallback,
    MetricsCallback,
    NotificationCallback,
    WebhookCallback,
    WebhookNotifier,
)

received: list[tuple[str, dict[str, Any]]] = []


class Receiver(BaseHTTPRequestHandler):
    """Records every JSON POST: the pager at /page, the webhook at /runs."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        received.append((self.path, json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the example's output quiet."""


SCRATCH = Path(tempfile.gettempdir())


def scratch_dir(run_id: str) -> Path:
    """The folder a run may write temporary files to."""
    return SCRATCH / f"flowhooks-composing-{run_id}"


@node
async def fetch_orders(day: str) -> list[dict[str, Any]]:
    folder = scratch_dir(current_run().run_id)
    folder.mkdir(exist_ok=True)
    (folder / "raw.json").write_text(json.dumps({"day": day}))
    return [{"id": 1, "amount": 30.0}, {"id": 2, "amount": 12.5}]


@node(critical=True)
async def charge(fetch_orders: list[dict[str, Any]], card_declined: bool) -> float:
    if card_declined:
        raise RuntimeError("card declined for order 2")
    return sum(order["amount"] for order in fetch_orders)


@node
async def receipt(charge: float) -> str:
    return f"charged {charge:.2f}"


class ScratchCleanup(BaseCallbackHandler):
    """Removes a run's scratch folder when the run ends, whatever its outcome."""

    def __init__(self) -> None:
        self.removed: list[str] = []

    async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
        folder = scratch_dir(workflow_id)
        if folder.exists():
            shutil.rmtree(folder)
            self.removed.append(workflow_id)


async def main(base_url: str) -> None:
    metrics = MetricsCallback()
    cleanup = ScratchCleanup()
    stack = CallbackManager()
    stack.add_handler(LoggingCallback(level="INFO"), priority=100)  # monitoring first
    stack.add_handler(metrics, priority=90)
    pager = NotificationCallback(WebhookNotifier(f"{base_url}/page"), on_completion=False)
    stack.add_handler(pager, priority=50)  # pages for trouble only, not for each success
    stack.add_handler(BackgroundCallback(WebhookCallback(f"{base_url}/runs")), priority=10)
    stack.add_handler(cleanup)
    workflow = Workflow("orders", nodes=[fetch_orders, charge, receipt], callbacks=stack)

    ok = await workflow.run({"day": "2026-11-23", "card_declined": False})
    failed = await workflow.run({"day": "2026-11-24", "card_declined": True})
    await stack.aclose()

    print(f"first run: {ok.status} -> {ok.outputs['receipt']}")
    print(f"second run: {failed.status} at {failed.final_node}: {failed.error.message}")
    report = metrics.get_report()
    print(f"metrics: {report['total_workflows']} runs, error rate {report['error_rate']:.2f}")
    pages = [body["message"] for path, body in received if path == "/page"]
    posts = [body["status"] for path, body in received if path == "/runs"]
    print(f"pages sent: {len(pages)}")
    for message in pages:
        print(f"  page: {message}")
    print(f"webhook posts: {sorted(posts)}")
    print(f"scratch folders removed: {len(cleanup.removed)}")
    leftovers = [run.run_id for run in (ok, failed) if scratch_dir(run.run_id).exists()]
    print(f"scratch folders left: {len(leftovers)}")


if __name__ == "__main__":
    logger.remove()  # keep the example's output to what it prints
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        asyncio.run(main(f"http://127.0.0.1:{server.server_port}"))
    finally:
        server.shutdown()
