"""A realistic ETL workflow: orders from CSV, enriched, aggregated and loaded into SQLite.

Run it as a script (logs to stderr, a summary on stdout)::

    python examples/etl_pipeline.py [orders.csv]

or through the command line, which adds logging, a progress bar, metrics and
run history::

    flowhooks run examples/etl_pipeline.py:workflow --input source=orders.csv

When the ``source`` file does not exist, sample orders are generated, so the
example works on a fresh machine. Generated orders and the SQLite database (unless
``database`` is given) go to one folder, ``./flowhooks-demo/`` in the working
directory; each run overwrites them, and deleting the folder is always safe. The graph::

    extract -> validate -> exchange_rates -> enrich -> revenue_by_region --\\
                    \\_______________________/     |-> top_customers ------+-> report
                                                  \\-> load --------------/

``exchange_rates`` calls a (simulated) flaky service: its first attempt in
every run fails with a transient error and the retry succeeds.
"""

from __future__ import annotations

import asyncio
import csv
import random
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from loguru import logger

from flowhooks import ErrorInfo, RunContext, RunResult, Workflow, current_run, node
from flowhooks.handlers import LoggingCallback, MetricsCallback

Row = dict[str, Any]

REGIONS = ("north", "south", "east", "west")
CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne")
CURRENCIES = ("USD", "EUR", "GBP")

DEMO_DIR = Path("flowhooks-demo")
"""Where generated sample orders and the default database go, relative to the working directory."""


def write_sample_orders(path: Path, count: int = 60, seed: int = 7) -> Path:
    """Write ``count`` sample orders (a few of them invalid) to the CSV file ``path``."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["order_id", "customer", "region", "currency", "quantity", "unit_price"])
        for order_id in range(1, count + 1):
            quantity = rng.randint(1, 9) if order_id % 17 else 0  # every 17th order is invalid
            writer.writerow(
                [
                    order_id,
                    rng.choice(CUSTOMERS),
                    rng.choice(REGIONS),
                    rng.choice(CURRENCIES),
                    quantity,
                    f"{rng.uniform(5, 250):.2f}",
                ]
            )
    return path


# -- node callbacks -------------------------------------------------------------------


def alert_on_failure(node_id: str, error: ErrorInfo, ctx: RunContext) -> None:
    """Tell whoever is on call that a node failed for good (here: a log record)."""
    ctx.logger.error(
        "ALERT: node {node} failed: {type}: {message}",
        node=node_id,
        type=error.type,
        message=error.message,
    )


# -- nodes ----------------------------------------------------------------------------


@node(timeout=30, critical=True, on_failure=alert_on_failure)
def extract(source: str = "orders.csv") -> list[Row]:
    """Read the orders CSV (generating sample orders when the file does not exist)."""
    path = Path(source)
    if not path.exists():
        path = write_sample_orders(DEMO_DIR / path.name)
        current_run().logger.info(
            "{source} not found; generated sample orders at {path}", source=source, path=path
        )
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@node
async def validate(extract: list[Row]) -> list[Row]:
    """Parse and type the rows; reject those without a positive quantity and price."""
    valid: list[Row] = []
    rejected: list[str] = []
    for raw in extract:
        try:
            row = {
                "order_id": int(raw["order_id"]),
                "customer": raw["customer"].strip(),
                "region": raw["region"].strip(),
                "currency": raw["currency"].strip().upper(),
                "quantity": int(raw["quantity"]),
                "unit_price": float(raw["unit_price"]),
            }
        except (KeyError, ValueError, AttributeError):
            rejected.append(str(raw.get("order_id", "?")))
            continue
        if row["quantity"] <= 0 or row["unit_price"] <= 0:
            rejected.append(str(row["order_id"]))
            continue
        valid.append(row)
    # A custom event: handlers see it as on_custom_event("rows_rejected", {...}).
    await current_run().emit("rows_rejected", {"count": len(rejected), "order_ids": rejected})
    return valid


_failed_once: set[str] = set()  # run ids whose exchange_rates call already failed


@node(retries=2, retry_delay=0.05, backoff=2, timeout=10, on_failure=alert_on_failure)
async def exchange_rates(validate: list[Row]) -> dict[str, float]:
    """Fetch USD rates for the currencies in use from a (simulated) flaky service."""
    await asyncio.sleep(0.01)  # the network call
    run_id = current_run().run_id
    if run_id not in _failed_once:
        _failed_once.add(run_id)
        msg = "exchange-rate service unavailable (HTTP 503), try again"
        raise ConnectionError(msg)
    table = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27}
    return {currency: table[currency] for currency in sorted({r["currency"] for r in validate})}


@node
def enrich(validate: list[Row], exchange_rates: dict[str, float]) -> list[Row]:
    """Add each order's total in USD."""
    enriched = []
    for row in validate:
        total = row["quantity"] * row["unit_price"] * exchange_rates[row["currency"]]
        enriched.append({**row, "total_usd": round(total, 2)})
    return enriched


@node
def revenue_by_region(enrich: list[Row]) -> dict[str, float]:
    """Sum the USD revenue of each region."""
    totals: dict[str, float] = defaultdict(float)
    for row in enrich:
        totals[row["region"]] += row["total_usd"]
    return {region: round(total, 2) for region, total in sorted(totals.items())}


@node
def top_customers(enrich: list[Row], top_n: int = 3) -> list[tuple[str, float]]:
    """The ``top_n`` customers by USD revenue."""
    totals: dict[str, float] = defaultdict(float)
    for row in enrich:
        totals[row["customer"]] += row["total_usd"]
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return [(name, round(total, 2)) for name, total in ranked[:top_n]]


@node(retries=1, retry_delay=0.1)
def load(enrich: list[Row], database: str | None = None) -> dict[str, Any]:
    """Upsert the enriched orders into the SQLite table ``orders``."""
    path = Path(database) if database else DEMO_DIR / "orders.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS orders (order_id INTEGER PRIMARY KEY, customer TEXT, "
            "region TEXT, currency TEXT, quantity INTEGER, unit_price REAL, total_usd REAL)"
        )
        conn.executemany(
            "INSERT OR REPLACE INTO orders VALUES (:order_id, :customer, :region, :currency, "
            ":quantity, :unit_price, :total_usd)",
            enrich,
        )
        stored = conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
    conn.close()
    return {"rows": len(enrich), "table_rows": stored, "database": str(path)}


@node
def report(
    load: dict[str, Any],
    revenue_by_region: dict[str, float],
    top_customers: list[tuple[str, float]],
) -> dict[str, Any]:
    """Summarise the run for people."""
    return {
        "orders_loaded": load["rows"],
        "database": load["database"],
        "revenue_usd": round(sum(revenue_by_region.values()), 2),
        "revenue_by_region": revenue_by_region,
        "top_customers": top_customers,
    }


workflow = Workflow(
    "etl_pipeline",
    nodes=[
        extract,
        validate,
        exchange_rates,
        enrich,
        revenue_by_region,
        top_customers,
        load,
        report,
    ],
    description="Orders CSV -> validated, enriched, aggregated and loaded into SQLite",
)


def print_summary(result: RunResult, metrics: MetricsCallback) -> None:
    """Print what the run did, from its RunResult and the metrics handler."""
    print(f"run {result.run_id}: {result.status.value} in {result.duration:.2f}s")
    for name, node_result in result.nodes.items():
        print(f"  {name:<18} {node_result.status.value:<10} attempts={node_result.attempts}")
    if result.succeeded:
        summary = result.outputs["report"]
        print(f"orders loaded: {summary['orders_loaded']} into {summary['database']}")
        print(f"revenue (USD): {summary['revenue_usd']:.2f}")
        regions = ", ".join(f"{k}={v:.2f}" for k, v in summary["revenue_by_region"].items())
        print(f"by region: {regions}")
        print("top customers: " + ", ".join(f"{n} ({v:.2f})" for n, v in summary["top_customers"]))
    elif result.error is not None:
        print(f"error: {result.error.type}: {result.error.message}")
    stats = metrics.get_report()
    print(
        f"metrics: {stats['total_nodes']} nodes, {stats['retries']} retried attempt(s), "
        f"{stats['error_rate']:.0%} of node attempts failed (retried ones included)"
    )


async def main(source: str) -> int:
    """Run the pipeline once with logging and metrics attached, and print a summary."""
    # Lifecycle records on stderr; a sink at DEBUG would add each node's inputs and outputs.
    logger.remove()
    logger.add(sys.stderr, level="INFO")
    metrics = MetricsCallback()
    result = await workflow.run({"source": source}, callbacks=[LoggingCallback(), metrics])
    print_summary(result, metrics)
    return 0 if result.succeeded else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "orders.csv")))
