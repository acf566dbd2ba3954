"""Alerting, webhooks and run history around one workflow.

Starts an HTTP receiver on 127.0.0.1 (in this process), then runs a small
workflow twice, once succeeding and once failing at a critical node, with:

* ``WebhookCallback``: POSTs each run's result, signed with a shared secret;
  the receiver checks the signature with ``verify_signature``.
* ``NotificationCallback`` + ``WebhookNotifier``: alerts on the critical error
  and on the failed run.
* ``HistoryCallback``: stores both runs in a temporary SQLite file, read back
  with ``HistoryStore``.

Run it with ``python examples/alerting.py`` (needs the ``sql`` and ``http`` extras).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from flowhooks import Workflow, node
from flowhooks.handlers import (
    HistoryCallback,
    HistoryStore,
    NotificationCallback,
    WebhookCallback,
    WebhookNotifier,
    verify_signature,
)

SECRET = "example-secret"
received: list[tuple[str, dict[str, Any], bool]] = []


class Receiver(BaseHTTPRequestHandler):
    """Records each POST: its path, its JSON body and whether its signature is valid."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        signed = verify_signature(body, self.headers.get("X-Flowhooks-Signature"), SECRET)
        received.append((self.path, json.loads(body), signed))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the example's output to what it prints itself."""


@node
def extract(rows: int) -> list[int]:
    return list(range(rows))


@node(critical=True)
def validate(extract: list[int]) -> list[int]:
    if any(value < 0 for value in extract):
        raise ValueError("negative value")
    if len(extract) > 3:
        raise ValueError(f"too many rows: {len(extract)}")
    return extract


@node
def load(validate: list[int]) -> int:
    return len(validate)


async def main(base_url: str, db_path: Path) -> None:
    workflow = Workflow("nightly", nodes=[extract, validate, load])
    callbacks = [
        WebhookCallback(base_url + "/runs", secret=SECRET),
        NotificationCallback(WebhookNotifier(base_url + "/alerts"), on_completion=True),
        HistoryCallback(f"sqlite:///{db_path}"),
    ]
    for rows in (3, 5):
        result = await workflow.run({"rows": rows}, callbacks=callbacks)
        print(f"run with rows={rows}: {result.status.value}")
    for handler in callbacks:
        await handler.aclose()

    for path, body, signed in received:
        if path == "/runs":
            print(f"webhook: run {body['status']}, signature valid: {signed}")
        else:
            print(f"alert [{body['channel']}] {body['fields']['kind']}: {body['message']}")

    async with HistoryStore(f"sqlite:///{db_path}") as store:
        runs = await store.list_runs()
        print(f"history: {len(runs)} runs")
        for run in reversed(runs):
            detail = await store.get_run(run.run_id)
            assert detail is not None
            nodes = ", ".join(f"{n.node_id}={n.status}" for n in detail.nodes)
            print(f"  {run.workflow_name} {run.status}: {nodes}")


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"http://127.0.0.1:{server.server_address[1]}"
            asyncio.run(main(url, Path(tmp) / "history.db"))
    finally:
        server.shutdown()
        server.server_close()
