"""What the logging, webhook, Prometheus, OpenTelemetry and OpenLineage handlers send of odd
text: lone surrogates escaped (never a lost record or a broken scrape), a run id a header
cannot hold encoded, credentials in error messages redacted, and every lineage event sent
even when one of them fails."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from loguru import logger
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

from flowhooks import Workflow, node
from flowhooks.handlers import (
    LoggingCallback,
    OpenLineageCallback,
    OpenTelemetryCallback,
    PrometheusCallback,
    WebhookCallback,
)

from .conftest import Receiver


@node
def one(x: str) -> str:
    return "ok"


async def test_log_records_with_a_lone_surrogate_are_all_written(tmp_path: Path) -> None:
    loguru_file, std_file = tmp_path / "loguru.log", tmp_path / "std.log"
    sink = logger.add(loguru_file, level="DEBUG", encoding="utf-8")
    std = logging.getLogger(f"flowhooks-test-{tmp_path.name}")
    std.setLevel(logging.DEBUG)
    std.propagate = False
    handler = logging.FileHandler(std_file, encoding="utf-8")
    std.addHandler(handler)
    try:
        await Workflow("w\ud800", nodes=[one]).run(
            {"x": "\ud800"}, callbacks=[LoggingCallback(), LoggingCallback(std)]
        )
    finally:
        logger.remove(sink)
        std.removeHandler(handler)
        handler.close()
    for path in (loguru_file, std_file):
        text = path.read_text(encoding="utf-8")
        assert text.count("inputs |") == 2, path.name  # the run's and the node's
        assert '"x": "\\ud800"' in text
        assert "workflow 'w\\ud800'" in text or "w\\ud800" in text


async def test_a_logger_adapter_keeps_its_extra_and_gets_the_fields() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    base = logging.getLogger("flowhooks-test-adapter")
    base.setLevel(logging.INFO)
    base.propagate = False
    keep = Keep()
    base.addHandler(keep)
    try:
        adapter = logging.LoggerAdapter(base, {"service": "billing"})
        result = await Workflow("w", nodes=[one]).run(
            {"x": "a"}, callbacks=[LoggingCallback(adapter)]
        )
    finally:
        base.removeHandler(keep)
    assert records
    assert all(getattr(r, "service", None) == "billing" for r in records)
    assert all(getattr(r, "run_id", None) == result.run_id for r in records)


async def test_a_run_id_a_header_cannot_hold_is_sent_encoded(receiver: Receiver) -> None:
    hook = WebhookCallback(receiver.url, deadline=5.0)
    await Workflow("w", nodes=[one]).run({"x": "a"}, run_id="run-é-1", callbacks=[hook])
    await Workflow("w", nodes=[one]).run({"x": "a"}, run_id="run\n2", callbacks=[hook])
    await hook.aclose()
    sent = [r.headers["Workflow-Run-Id"] for r in receiver.requests]
    assert sent == ["run-%C3%A9-1", "run%0A2"]
    assert [r.json()["run_id"] for r in receiver.requests] == ["run-é-1", "run\n2"]


async def test_a_workflow_named_with_a_lone_surrogate_does_not_break_the_scrape() -> None:
    registry = CollectorRegistry()
    await Workflow("w\ud800", nodes=[one]).run({"x": "a"}, callbacks=[PrometheusCallback(registry)])
    scraped = generate_latest(registry).decode()
    assert 'workflow="w\\\\ud800"' in scraped


async def test_spans_carry_error_messages_without_credentials() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    @node
    def connect() -> int:
        raise ConnectionError("cannot reach postgresql://admin:SEC_PW@db/x (Bearer SEC_TOKEN)")

    try:
        await Workflow("w", nodes=[connect]).run(
            callbacks=[OpenTelemetryCallback(tracer_provider=provider)]
        )
    finally:
        provider.shutdown()
    spans = exporter.get_finished_spans()
    assert len(spans) == 2
    shown = " ".join(
        f"{span.status.description} "
        + " ".join(str(v) for e in span.events for v in (e.attributes or {}).values())
        for span in spans
    )
    assert "db/x" in shown
    assert "SEC_PW" not in shown
    assert "SEC_TOKEN" not in shown


async def test_one_failed_lineage_send_costs_no_other_event() -> None:
    from openlineage.client.transport.transport import Transport

    sent: list[tuple[str, str]] = []

    class Flaky(Transport):  # type: ignore[misc]
        kind = "flaky"

        def emit(self, event: Any) -> Any:
            if event.eventType.value == "ABORT" and event.job.name == "w.slow1":
                raise ConnectionError("hiccup")
            sent.append((event.eventType.value, event.job.name))

    @node
    async def slow1() -> None:
        await asyncio.sleep(10)

    @node
    async def slow2() -> None:
        await asyncio.sleep(10)

    @node
    async def boom() -> None:
        await asyncio.sleep(0.05)
        raise ValueError("x")

    await Workflow("w", nodes=[slow1, slow2, boom]).run(
        callbacks=[OpenLineageCallback("ns", transport=Flaky())]
    )
    assert ("ABORT", "w.slow2") in sent
    assert sent[-1] == ("FAIL", "w")


def test_handlers_given_the_wrong_kind_of_argument_say_so_when_made() -> None:
    import pytest

    from flowhooks.handlers import ProgressCallback

    with pytest.raises(TypeError, match=r"takes a rich\.console\.Console"):
        ProgressCallback(console="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes an OpenTelemetry Tracer"):
        OpenTelemetryCallback("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"takes a prometheus_client\.CollectorRegistry"):
        PrometheusCallback("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes a mapping of header names"):
        WebhookCallback("http://127.0.0.1:9/hook", headers="x")  # type: ignore[arg-type]
