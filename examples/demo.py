"""A tour of flowhooks in one script: what ``make demo`` runs.

A nightly order pipeline, observed by built-in handlers that the pipeline
code knows nothing about:

1. The first run takes a few seconds (watch the progress bar), retries a
   flaky exchange-rate call, and then **suspends**: a big order needs a
   manager's approval.
2. The manager approves: the run is **resumed** where it stopped; the nodes
   that had finished are not run again.
3. A second night's run gets a broken export: its critical node fails and an
   **alert** is POSTed to a local HTTP endpoint this script starts (think
   Slack or PagerDuty), which prints what it received. The alert is delivered
   **durably**: committed to an outbox before the run returns, delivered by a
   worker, and retried when the channel answers 503 the first time.
4. A summary of both nights, from the metrics handler; every run is also in
   the SQLite history (``flowhooks history`` shows it).

Everything stays on this machine: the history goes to ``flowhooks.db`` in the
working directory, the "alert channel" listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rich.console import Console
from rich.table import Table

from flowhooks import (
    BaseCallbackHandler,
    DurableCallback,
    ErrorInfo,
    RunResult,
    Suspend,
    Workflow,
    current_run,
    node,
)
from flowhooks.handlers import (
    HistoryCallback,
    MetricsCallback,
    NotificationCallback,
    ProgressCallback,
    WebhookNotifier,
)

console = Console()
DATABASE = "sqlite:///flowhooks.db"


# -- a local "alert channel" ------------------------------------------------------------


class AlertReceiver(BaseHTTPRequestHandler):
    """Prints every alert POSTed to it, as a chat channel would show it.

    Its first request gets a 503, as a chat service having a bad moment would
    answer: the alert is delivered durably, so it is retried from the outbox.
    """

    answered = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        AlertReceiver.answered += 1
        if AlertReceiver.answered == 1:
            console.print("  [dim]alert channel: 503 Service Unavailable (the alert will retry)[/]")
            self.send_response(503)
            self.end_headers()
            return
        console.print(f"  [bold red]alert channel received:[/] {body['text']}")
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None  # no access log on the terminal


def start_alert_channel() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), AlertReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}/alerts"


# -- the pipeline ---------------------------------------------------------------------------

rate_calls = 0


@node
async def extract(night: str) -> list[dict[str, Any]]:
    await asyncio.sleep(0.8)  # reading yesterday's orders
    rng = random.Random(night)
    return [{"id": i, "eur": round(rng.uniform(20, 900), 2)} for i in range(40)]


@node(retries=2, retry_delay=0.3)
async def exchange_rates() -> dict[str, float]:
    global rate_calls
    rate_calls += 1
    await asyncio.sleep(0.4)
    if rate_calls == 1:
        raise ConnectionError("rates service timed out")  # flaky: the retry succeeds
    return {"USD": 1.08, "GBP": 0.86}


@node
async def enrich(extract: list[dict[str, Any]], exchange_rates: dict[str, float]) -> list[dict]:
    await asyncio.sleep(0.6)
    return [{**o, "usd": round(o["eur"] * exchange_rates["USD"], 2)} for o in extract]


@node
async def approve(enrich: list[dict[str, Any]]) -> bool:
    total = sum(o["usd"] for o in enrich)
    ctx = current_run()
    if ctx.resume_data is None:  # first time here: a person must decide
        raise Suspend("orders over $10,000 need a manager", payload={"total_usd": round(total)})
    return bool(ctx.resume_data["approved"])


@node(critical=True)
async def export(enrich: list[dict[str, Any]], approve: bool, target: str) -> int:
    await asyncio.sleep(0.5)
    if not target.startswith("s3://"):
        raise ValueError(f"cannot export to {target!r}: expected an s3:// URL")
    return len(enrich) if approve else 0


class RetryNotes(BaseCallbackHandler):
    """A tiny custom handler: says when an attempt failed and will be retried."""

    async def on_error(self, error_info: ErrorInfo) -> None:
        if error_info.will_retry:
            console.print(f"  [yellow]retrying[/] {error_info.node_id} after: {error_info.message}")


def waiting_for_approval(result: RunResult) -> None:
    assert result.suspension is not None
    total = result.suspension.payload["total_usd"]
    console.print(
        f"  [cyan]run {result.run_id[:8]} is waiting[/]: {result.suspension.reason} "
        f"(total ${total:,})"
    )


# -- the tour -------------------------------------------------------------------------------


async def main() -> int:
    server, alert_url = start_alert_channel()
    metrics = MetricsCallback()
    # Alerts go through the outbox in flowhooks.db: committed before run() returns,
    # delivered by a worker, retried until the channel takes them.
    alerts = DurableCallback(
        NotificationCallback(WebhookNotifier(alert_url, retries=0), on_completion=False),
        name="alerts",
        url=DATABASE,
        events=["error", "workflow_end"],
        backoff=0.2,
    )
    workflow = Workflow(
        "nightly-orders",
        nodes=[extract, exchange_rates, enrich, approve, export],
        callbacks=[
            ProgressCallback(),
            metrics,
            RetryNotes(),
            HistoryCallback(DATABASE),
            alerts,
        ],
        on_workflow_suspend=waiting_for_approval,
    )
    console.rule("1. Monday night: the pipeline runs, then waits for a person")
    monday = await workflow.run({"night": "monday", "target": "s3://exports/orders"})
    console.print(f"  status: [bold]{monday.status.value}[/]")

    console.rule("2. The manager approves: the run resumes where it stopped")
    approved = await workflow.resume(monday.run_id, {"approved": True})
    console.print(
        f"  status: [bold green]{approved.status.value}[/], exported "
        f"{approved.outputs['export']} orders; resumed from run {monday.run_id[:8]}, "
        "whose finished nodes were not run again"
    )

    console.rule("3. Tuesday night: a broken export target raises an alert")
    tuesday = await workflow.run({"night": "tuesday", "target": "ftp://old-server"})
    tuesday_resumed = await workflow.resume(tuesday.run_id, {"approved": True})
    console.print(f"  status: [bold red]{tuesday_resumed.status.value}[/]: {tuesday_resumed.error}")
    await alerts.drain(timeout=15)  # the durable alerts: wait until the channel has them

    console.rule("4. What the handlers saw")
    report = metrics.get_report()
    table = Table("run", "status", "duration", "nodes")
    for result in (monday, approved, tuesday, tuesday_resumed):
        done = sum(1 for n in result.nodes.values() if n.status == "succeeded")
        table.add_row(
            result.run_id[:8],
            result.status.value,
            f"{result.duration:.2f}s",
            f"{done}/{len(result.nodes)} succeeded",
        )
    console.print(table)
    console.print(
        f"  metrics: {report['total_workflows']} runs, {report['total_node_attempts']} node "
        f"attempts ({report['node_successes']} succeeded, {report['node_failures']} failed, "
        f"the rest suspended), {report['retries']} retried, error rate "
        f"{report['error_rate']:.0%} of the attempts that succeeded or failed"
    )
    console.print(f"  history: every run above is in {DATABASE} (next: flowhooks history)")
    await alerts.aclose()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
