"""Sending a workflow's runs to OpenLineage.

Runs a small ETL workflow twice with ``OpenLineageCallback``: once where
``transform`` fails its first attempt and succeeds on the retry, once where
``load`` fails for good. The events go through openlineage-python's
``FileTransport`` into a JSON-lines file, which the script then reads back
and prints, one line per event: type, job, run id, and the run it belongs to.

Point the same handler at Marquez or any OpenLineage backend with
``HttpTransport(HttpConfig(url="http://localhost:5000"))``, or print the
events with ``ConsoleTransport``.

Run it with ``python examples/openlineage_lineage.py [EVENTS_FILE]`` (needs the
``openlineage`` extra); without an argument the file goes to a temporary
directory.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from openlineage.client.transport.file import FileConfig, FileTransport

from flowhooks import Workflow, node
from flowhooks.handlers import OpenLineageCallback, lineage_run_id

attempts = {"transform": 0}


@node
async def extract(day: str) -> list[dict]:
    """Read the day's orders."""
    return [{"id": 1, "amount": 12.5}, {"id": 2, "amount": 30.0}]


@node(retries=1)
async def transform(extract: list[dict]) -> float:
    """Sum the orders; the first attempt of the day hits a flaky dependency."""
    attempts["transform"] += 1
    if attempts["transform"] == 1:
        raise ConnectionError("currency service reset the connection")
    return sum(order["amount"] for order in extract)


@node
async def load(transform: float, day: str) -> str:
    """Write the total; there is no partition for a day in the future."""
    if day > "2030":
        raise FileNotFoundError(f"no partition for {day}")
    return f"{day}: {transform:.2f}"


workflow = Workflow("daily_revenue", nodes=[extract, transform, load])


async def main(events_file: Path) -> None:
    transport = FileTransport(FileConfig(log_file_path=str(events_file), append=True))
    lineage = OpenLineageCallback("shop-pipelines", transport)
    good = await workflow.run({"day": "2024-06-01"}, callbacks=[lineage])
    bad = await workflow.run({"day": "2031-01-01"}, callbacks=[lineage])
    await lineage.aclose()
    print(f"run {good.run_id}: {good.status} (OpenLineage run {lineage_run_id(good.run_id)})")
    print(f"run {bad.run_id}: {bad.status} (OpenLineage run {lineage_run_id(bad.run_id)})")


def print_events(events_file: Path) -> None:
    """One line per event: type, job, run id, parent run id, error."""
    print()
    for line in events_file.read_text().splitlines():
        event = json.loads(line)
        facets = event["run"]["facets"]
        parent = facets.get("parent", {}).get("run", {}).get("runId")
        error = facets.get("errorMessage", {}).get("message")
        print(
            f"{event['eventType']:<8} {event['job']['name']:<27} run {event['run']['runId'][:8]}"
            + (f"  parent {parent[:8]}" if parent else "")
            + (f"  error: {error}" if error else "")
        )


def run_and_print(events_file: Path) -> None:
    asyncio.run(main(events_file))
    print_events(events_file)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        run_and_print(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run_and_print(Path(tmp) / "lineage.jsonl")
