"""Durable alerts: a handler's events delivered at least once, through an outbox.

Starts an HTTP receiver on 127.0.0.1 (in this process) that answers 503 to the
first two attempts of every alert, then runs a workflow twice (once it
succeeds, once a node fails) with:

* ``HistoryCallback``: the run history, in a temporary SQLite file;
* ``DurableCallback(AlertPoster(...), name="alerts", ...)``: each
  ``workflow_end`` and ``error`` event is committed to the outbox in the same
  database (in the same transaction as its history rows) before the run goes
  on, and a worker thread POSTs it with ``AlertPoster``, retrying with
  backoff until the receiver accepts it.

The receiver dedupes on the ``Idempotency-Key`` header (the ``Event.id``, the
same on every retry), which is what a real receiver should do: delivery is
at least once.

Run it with ``python examples/durable_alerts.py`` (needs the ``sql`` and
``http`` extras).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from flowhooks import BaseCallbackHandler, DurableCallback, ErrorInfo, Event, Workflow, node
from flowhooks.handlers import HistoryCallback

attempts: Counter[str] = Counter()  # Idempotency-Key -> requests received
accepted: dict[str, dict[str, Any]] = {}  # Idempotency-Key -> the alert, once
lock = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    """Fails the first two attempts of each alert with 503; keeps each alert once."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        key = self.headers["Idempotency-Key"]
        with lock:
            attempts[key] += 1
            status = 503 if attempts[key] <= 2 else 200
            if status == 200:
                accepted.setdefault(key, body)  # a redelivered alert is not counted twice
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the example's output short."""


class AlertPoster(BaseCallbackHandler):
    """POSTs run ends and errors to a URL; an answer other than 2xx raises, so it is retried."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def _post(self, event: Event, alert: dict[str, Any]) -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.post(
                self.url, json=alert, headers={"Idempotency-Key": event.id}
            )
            response.raise_for_status()

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event
    ) -> None:
        await self._post(event, {"run": workflow_id, "status": event.status})

    async def on_error(self, error_info: ErrorInfo, *, event: Event) -> None:
        await self._post(event, {"run": error_info.run_id, "error": error_info.message})

    def on_dead_letter(self, event: Event, error: str) -> None:
        print(f"gave up on {event.type.value} of run {event.run_id}: {error}")


@node
def extract(rows: int) -> list[int]:
    return list(range(rows))


@node
def validate(extract: list[int]) -> list[int]:
    if len(extract) > 4:
        raise ValueError(f"too many rows: {len(extract)}")
    return extract


workflow = Workflow("nightly", nodes=[extract, validate])


async def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    receiver = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    with tempfile.TemporaryDirectory() as folder:
        db = f"sqlite:///{Path(folder) / 'flowhooks.db'}"
        alerts = DurableCallback(
            AlertPoster(receiver),
            name="alerts",
            url=db,
            events=["workflow_end", "error"],
            backoff=0.05,
            max_backoff=0.2,
        )
        history = HistoryCallback(db)
        for rows in (3, 5):
            result = await workflow.run({"rows": rows}, callbacks=[history, alerts])
            print(f"run with rows={rows}: {result.status.value}")
        delivered = await alerts.drain(timeout=30)
        await alerts.aclose()
    server.shutdown()
    print(f"every alert delivered: {delivered}")
    print(f"receiver: {sum(attempts.values())} requests for {len(accepted)} alerts")
    for alert in accepted.values():
        what = f"error {alert['error']!r}" if "error" in alert else f"run {alert['status']}"
        print(f"  accepted once: {what}")
    print(f"attempts per alert: {sorted(set(attempts.values()))}")


if __name__ == "__main__":
    asyncio.run(main())
