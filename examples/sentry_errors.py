"""Reporting a workflow's failures to Sentry.

Runs a payment workflow three times with ``SentryCallback``: one run
succeeds, one succeeds after a retry (nothing is reported: a retry is a
breadcrumb), and one fails at ``charge`` for good. The failure is reported
once, with the live exception, the ``workflow``/``run_id``/``node_id``/
``attempt`` tags and the run's breadcrumbs; the failed run is not reported a
second time.

With ``SENTRY_DSN`` set, the events go to that Sentry project. Without it,
they go to a transport that prints them, so the script runs anywhere.

Run it with ``python examples/sentry_errors.py`` (needs the ``sentry`` extra).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from flowhooks import Workflow, node
from flowhooks.handlers import SentryCallback

declines = {"4000-0000": 1, "4000-9999": 99}  # card -> how many charges are declined


@node
def validate(card: str, amount: float) -> dict:
    """Check the order."""
    if amount <= 0:
        raise ValueError(f"amount must be positive, got {amount}")
    return {"card": card, "amount": amount}


@node(retries=1)
async def charge(validate: dict) -> str:
    """Charge the card; some cards are declined (once, or always)."""
    card = validate["card"]
    if declines.get(card, 0) > 0:
        declines[card] -= 1
        raise RuntimeError(f"card {card} declined")
    return f"paid {validate['amount']:.2f}"


payments = Workflow("payments", nodes=[validate, charge])


class PrintingTransport(Transport):
    """Prints what would be sent to Sentry: the exception, the tags, the breadcrumbs."""

    def capture_envelope(self, envelope: Envelope) -> None:
        event: Any = envelope.get_event()
        if event is None:
            return
        exc = event["exception"]["values"][-1]
        print(f"Sentry event [{event['level']}] {exc['type']}: {exc['value']}")
        for key, value in sorted(event["tags"].items()):
            print(f"  tag {key} = {value}")
        for crumb in event["breadcrumbs"]["values"]:
            print(f"  breadcrumb [{crumb['level']}] {crumb['message']}")


async def main() -> None:
    dsn = os.environ.get("SENTRY_DSN")
    if dsn:
        sentry = SentryCallback(dsn, environment="example")
    else:
        sentry = SentryCallback("https://public@sentry.invalid/1", transport=PrintingTransport())
    for card in ("4242-4242", "4000-0000", "4000-9999"):
        result = await payments.run({"card": card, "amount": 25.0}, callbacks=[sentry])
        print(f"card {card}: run {result.status}")
    await sentry.aclose()


if __name__ == "__main__":
    asyncio.run(main())
