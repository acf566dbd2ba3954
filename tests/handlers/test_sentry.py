"""SentryCallback against the real Sentry SDK, with a transport that keeps the envelopes.

``Capture`` is a ``sentry_sdk.transport.Transport`` subclass (the SDK's own way
of testing what a client sends): the tests read the events out of the
envelopes the SDK built.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from flowhooks import AsyncioRunner, Workflow, node
from flowhooks.handlers import SentryCallback

DSN = "https://public@sentry.example/1"


class Capture(Transport):
    """Keeps every envelope the client hands over, instead of sending it."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The error events sent, in order."""
        found = [envelope.get_event() for envelope in self.envelopes]
        return [dict(event) for event in found if event is not None]


def exception_of(event: dict[str, Any]) -> tuple[str, str]:
    """(type, value) of the event's outermost exception."""
    value = event["exception"]["values"][-1]
    return value["type"], value["value"]


def crumbs(event: dict[str, Any]) -> list[str]:
    return [c["message"] for c in event["breadcrumbs"]["values"] if c["category"] == "flowhooks"]


@pytest.fixture
def capture() -> Capture:
    return Capture()


@pytest.fixture
def sentry(capture: Capture) -> SentryCallback:
    """A handler with a client of its own (a DSN), sending into ``capture``."""
    return SentryCallback(DSN, transport=capture, environment="test")


def charging_workflow(fail_times: int = 5) -> Workflow:
    """validate -> charge (retried once; fails ``fail_times`` times)."""
    calls = {"charge": 0}

    @node
    def validate(amount: float) -> float:
        return amount

    @node(retries=1)
    async def charge(validate: float) -> str:
        calls["charge"] += 1
        if calls["charge"] <= fail_times:
            raise RuntimeError(f"card declined for {validate:.2f}")
        return "paid"

    return Workflow("payments", nodes=[validate, charge])


async def test_a_node_that_fails_for_good_is_captured_once_with_its_exception(
    sentry: SentryCallback, capture: Capture
) -> None:
    """One event: the live exception, the tags, the run's breadcrumbs; the failed run adds none."""
    result = await charging_workflow().run({"amount": 12.5}, callbacks=[sentry])
    assert result.status == "failed"
    assert len(capture.events) == 1
    event = capture.events[0]
    assert exception_of(event) == ("RuntimeError", "card declined for 12.50")
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    assert frames[-1]["function"] == "charge"  # the live traceback, down to the node's body
    assert event["level"] == "error"
    assert event["tags"] == {
        "workflow": "payments",
        "run_id": result.run_id,
        "node_id": "charge",
        "attempt": "2",
    }
    assert event["environment"] == "test"
    assert event["transaction"] == "payments.charge"
    assert event["contexts"]["flowhooks"]["severity"] == "error"
    assert crumbs(event) == [
        "workflow 'payments' started",
        "node 'validate' started (attempt 1)",
        next(m for m in crumbs(event) if m.startswith("node 'validate' succeeded in ")),
        "node 'charge' started (attempt 1)",
        "node 'charge' failed, will retry: RuntimeError: card declined for 12.50",
        "node 'charge' started (attempt 2)",
        "node 'charge' failed: RuntimeError: card declined for 12.50",
    ]
    levels = [c["level"] for c in event["breadcrumbs"]["values"]]
    assert levels[4] == "warning"
    assert {c["data"]["run_id"] for c in event["breadcrumbs"]["values"]} == {result.run_id}


async def test_a_retry_that_succeeds_reports_nothing(
    sentry: SentryCallback, capture: Capture
) -> None:
    result = await charging_workflow(fail_times=1).run({"amount": 3}, callbacks=[sentry])
    assert result.status == "succeeded"
    assert capture.events == []


async def test_a_critical_node_is_fatal(sentry: SentryCallback, capture: Capture) -> None:
    @node(critical=True)
    def ledger() -> None:
        raise LookupError("account 42 is missing")

    await Workflow("books", nodes=[ledger]).run(callbacks=[sentry])
    (event,) = capture.events
    assert event["level"] == "fatal"
    assert exception_of(event) == ("LookupError", "account 42 is missing")


async def test_a_run_that_times_out_is_captured_as_the_run_failure(
    sentry: SentryCallback, capture: Capture
) -> None:
    """No node failed: the run's own error is the report, without a node_id tag."""

    @node
    async def wait() -> None:
        await asyncio.sleep(30)

    result = await Workflow("slow", nodes=[wait]).run(callbacks=[sentry], timeout=0.05)
    assert result.status == "failed"
    (event,) = capture.events
    kind, value = exception_of(event)
    assert kind == "TimeoutError"
    assert "timed out after 0.05s" in value
    assert event["tags"] == {"workflow": "slow", "run_id": result.run_id}
    assert crumbs(event)[-1] == "workflow 'slow' run failed"


async def test_every_failing_node_is_its_own_event(
    sentry: SentryCallback, capture: Capture
) -> None:
    """Without fail-fast, two nodes fail: two events, and still none for the run."""

    @node
    def left() -> None:
        raise ValueError("left is broken")

    @node
    def right() -> None:
        raise KeyError("right")

    runner = AsyncioRunner(fail_fast=False)
    await Workflow("pair", nodes=[left, right]).run(callbacks=[sentry], runner=runner)
    assert sorted(exception_of(e)[0] for e in capture.events) == ["KeyError", "ValueError"]


async def test_a_failing_sub_workflow_is_one_issue(
    sentry: SentryCallback, capture: Capture
) -> None:
    """Reported from the child's node, not again from the parent's node nor from either run."""

    @node
    def tax(amount: float) -> float:
        raise ArithmeticError("no tax table for this region")

    child = Workflow("pricing", nodes=[tax])

    @node
    def amount() -> float:
        return 10.0

    result = await Workflow("checkout", nodes=[amount, child.as_node("price")]).run(
        callbacks=[sentry]
    )
    assert result.status == "failed"
    (event,) = capture.events
    assert exception_of(event) == ("ArithmeticError", "no tax table for this region")
    assert event["tags"]["workflow"] == "pricing"
    assert event["tags"]["node_id"] == "tax"
    assert event["contexts"]["flowhooks"]["parent_run_id"] == result.run_id


async def test_concurrent_runs_keep_their_breadcrumbs_apart(
    sentry: SentryCallback, capture: Capture
) -> None:
    """The failing run's event holds its own breadcrumbs only."""
    ok = charging_workflow(fail_times=0)
    bad = charging_workflow()
    results = await asyncio.gather(
        ok.run({"amount": 1}, callbacks=[sentry]),
        bad.run({"amount": 2}, callbacks=[sentry]),
        ok.run({"amount": 3}, callbacks=[sentry]),
    )
    (event,) = capture.events
    assert {c["data"]["run_id"] for c in event["breadcrumbs"]["values"]} == {results[1].run_id}


async def test_custom_events_leave_breadcrumbs_without_their_data(
    sentry: SentryCallback, capture: Capture
) -> None:
    from flowhooks import current_run

    @node
    async def load() -> None:
        await current_run().emit("rows_rejected", {"password": "hunter2"})
        raise OSError("disk full")

    await Workflow("etl", nodes=[load]).run(callbacks=[sentry])
    (event,) = capture.events
    assert "custom event 'rows_rejected'" in crumbs(event)
    assert "hunter2" not in str(event["breadcrumbs"])


# -- the application's client ------------------------------------------------------------


@pytest.fixture
def app_sentry(capture: Capture) -> Iterator[Capture]:
    """``sentry_sdk.init`` as an application calls it, undone after the test."""
    with sentry_sdk.isolation_scope():
        sentry_sdk.init(dsn=DSN, transport=capture, default_integrations=False)
        try:
            yield capture
        finally:
            sentry_sdk.get_client().close()
            sentry_sdk.get_global_scope().set_client(None)


async def test_without_a_dsn_it_reports_through_the_applications_client(
    app_sentry: Capture,
) -> None:
    """The application's scope data comes along; the handler's tags win over it."""
    sentry_sdk.set_tag("service", "billing")
    sentry_sdk.set_tag("workflow", "not this one")
    result = await charging_workflow().run({"amount": 9}, callbacks=[SentryCallback()])
    (event,) = app_sentry.events
    assert exception_of(event) == ("RuntimeError", "card declined for 9.00")
    assert event["tags"]["service"] == "billing"
    assert event["tags"]["workflow"] == "payments"
    assert event["tags"]["run_id"] == result.run_id
    assert event["tags"]["attempt"] == "2"
    assert crumbs(event)[0] == "workflow 'payments' started"


async def test_with_a_dsn_it_leaves_the_applications_client_alone(
    app_sentry: Capture,
) -> None:
    """Its own client sends its events; the application's gets none and keeps its tags out."""
    own = Capture()
    sentry_sdk.set_tag("service", "billing")
    await charging_workflow().run({"amount": 9}, callbacks=[SentryCallback(DSN, transport=own)])
    assert app_sentry.events == []
    (event,) = own.events
    assert "service" not in event["tags"]
    assert sentry_sdk.get_client().transport is app_sentry


@pytest.mark.parametrize("max_value_length", [None, 12])
async def test_its_own_clients_options_shape_the_exception(max_value_length: int | None) -> None:
    """The exception's frames are built with the handler's own client's options (here
    ``max_value_length``), whatever the application's client (none here) would use."""
    own = Capture()
    options = {} if max_value_length is None else {"max_value_length": max_value_length}
    await charging_workflow().run(
        {"amount": 3}, callbacks=[SentryCallback(DSN, transport=own, **options)]
    )
    (event,) = own.events
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    line = next(f for f in frames if f["function"] == "charge")["context_line"]
    if max_value_length is None:
        assert "raise RuntimeError" in line
    else:
        assert len(line) <= max_value_length


async def test_without_any_client_nothing_is_sent_and_nothing_fails() -> None:
    from flowhooks import CallbackManager

    manager = CallbackManager([SentryCallback()])
    result = await charging_workflow().run({"amount": 1}, callbacks=manager)
    assert result.status == "failed"
    assert manager.stats["SentryCallback"]["error"].errors == 0


# -- configuration -------------------------------------------------------------------------


def test_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="dsn"):
        SentryCallback("")
    with pytest.raises(TypeError, match=r"environment.*dsn="):
        SentryCallback(environment="prod")
    with pytest.raises(ValueError, match="max_breadcrumbs"):
        SentryCallback(max_breadcrumbs=-1)
    with pytest.raises(TypeError, match="flush_timeout"):
        SentryCallback(flush_timeout="2")  # type: ignore[arg-type]


async def test_aclose_flushes_the_handlers_own_client(
    sentry: SentryCallback, capture: Capture
) -> None:
    await charging_workflow().run({"amount": 1}, callbacks=[sentry])
    await sentry.aclose()
    assert len(capture.events) == 1


def test_without_the_extra_the_import_names_the_pip_install_line() -> None:
    code = (
        "import sys\n"
        "sys.modules['sentry_sdk'] = None\n"
        "try:\n"
        "    from flowhooks.handlers import SentryCallback\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=60, capture_output=True, text=True
    )
    assert "pip install 'flowhooks[sentry]'" in done.stdout
    assert "SentryCallback" in done.stdout


async def test_an_error_without_a_live_exception_is_reported_from_its_fields(
    sentry: SentryCallback, capture: Capture
) -> None:
    """An ErrorInfo rebuilt from JSON (durable delivery) has no exception: type and message go."""
    from flowhooks import CallbackManager, ErrorInfo

    manager = CallbackManager([sentry])
    ids = {"run_id": "r-1", "workflow_name": "replayed"}
    await manager.trigger("workflow_start", workflow_id="r-1", input_data={}, **ids)
    info = ErrorInfo(type="ValueError", message="bad row", node_id="parse", attempt=1, **ids)
    await manager.trigger("error", error_info=info, **ids)
    (event,) = capture.events
    assert exception_of(event) == ("ValueError", "bad row")
    assert event["tags"] == {
        "workflow": "replayed",
        "run_id": "r-1",
        "node_id": "parse",
        "attempt": "1",
    }
