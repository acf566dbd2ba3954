"""LoggingCallback writing to a standard library logger, seen through pytest's caplog."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from flowhooks import Workflow, node
from flowhooks.handlers import LoggingCallback


def etl() -> Workflow:
    @node
    def extract(password: str) -> list[int]:
        return [1, 2]

    @node(retries=1)
    def load(extract: list[int]) -> int:
        raise ValueError("disk full")

    return Workflow("etl", nodes=[extract, load])


async def test_records_carry_run_fields_in_extra(caplog: pytest.LogCaptureFixture) -> None:
    """Each record has run_id, node_id, attempt and event_type as attributes (extra)."""
    caplog.set_level(logging.INFO, logger="app.runs")
    handler = LoggingCallback(logger=logging.getLogger("app.runs"))
    result = await etl().run({"password": "hunter2"}, callbacks=[handler])
    records = [r for r in caplog.records if r.name == "app.runs"]
    assert [(r.event_type, r.node_id, r.attempt) for r in records] == [  # type: ignore[attr-defined]
        ("workflow_start", None, None),
        ("node_start", "extract", 1),
        ("node_end", "extract", 1),
        ("node_start", "load", 1),
        ("error", "load", 1),
        ("node_start", "load", 2),
        ("error", "load", 2),
        ("workflow_end", None, None),
    ]
    assert {r.run_id for r in records} == {result.run_id}  # type: ignore[attr-defined]
    levels = [r.levelname for r in records if r.event_type == "error"]  # type: ignore[attr-defined]
    assert levels == ["WARNING", "ERROR"]
    assert records[-1].levelname == "WARNING"  # the run failed
    assert "disk full" in records[-2].getMessage()
    assert all("hunter2" not in r.getMessage() for r in caplog.records)


async def test_payloads_only_at_debug_and_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """Inputs follow at DEBUG, redacted, only when the logger is enabled for DEBUG."""
    logger = logging.getLogger("app.debug")
    caplog.set_level(logging.DEBUG, logger="app.debug")
    await etl().run({"password": "hunter2"}, callbacks=[LoggingCallback(logger=logger)])
    debug = [r for r in caplog.records if r.name == "app.debug" and r.levelno == logging.DEBUG]
    assert debug
    assert any('"password": "***"' in r.getMessage() for r in debug)
    assert all("hunter2" not in r.getMessage() for r in caplog.records)
    assert all(hasattr(r, "payload") for r in debug)


async def test_nothing_rendered_below_the_logger_level(caplog: pytest.LogCaptureFixture) -> None:
    """At WARNING, only the retry, the failure and the failed run's end are logged."""
    logger = logging.getLogger("app.quiet")
    caplog.set_level(logging.WARNING, logger="app.quiet")
    await etl().run({"password": "x"}, callbacks=[LoggingCallback(logger=logger)])
    records = [r for r in caplog.records if r.name == "app.quiet"]
    assert [r.levelname for r in records] == ["WARNING", "ERROR", "WARNING"]


def test_a_logger_adapter_works_and_junk_is_refused() -> None:
    """A LoggerAdapter is a standard logger too; other objects are a TypeError."""
    adapter = logging.LoggerAdapter(logging.getLogger("app.adapter"), {})
    assert LoggingCallback(logger=adapter).logger is adapter
    with pytest.raises(TypeError, match=r"logging\.Logger"):
        LoggingCallback(logger=object())  # type: ignore[arg-type]


async def test_flowhooks_debug_chatter_is_off_until_enabled(receiver: Any) -> None:
    """Library DEBUG records stay off the application's sinks until logger.enable("flowhooks")."""
    from loguru import logger as loguru_logger

    from flowhooks import CallbackManager
    from flowhooks.handlers import WebhookCallback

    seen: list[str] = []
    sink = loguru_logger.add(lambda m: seen.append(m.record["message"]), level="DEBUG")

    async def deliver(run_id: str) -> None:
        manager = CallbackManager([WebhookCallback(receiver.url)])
        await manager.trigger("workflow_end", workflow_id=run_id, output_data={}, status="failed")

    try:
        await deliver("quiet")
        assert not [m for m in seen if "delivered" in m]
        loguru_logger.enable("flowhooks")
        await deliver("loud")
        assert [m for m in seen if "delivered" in m] == [
            f"WebhookCallback delivered run loud to {receiver.url} (HTTP 200)"
        ]
    finally:
        loguru_logger.remove(sink)
        loguru_logger.disable("flowhooks._logs")
        loguru_logger.disable("flowhooks.handlers._diagnostics")
