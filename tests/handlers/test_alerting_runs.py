"""History, webhook and notification handlers around real workflow runs."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from json_checks import strict_json

import flowhooks
from flowhooks.handlers.history import HistoryCallback, HistoryStore
from flowhooks.handlers.notification import NotificationCallback, WebhookNotifier
from flowhooks.handlers.webhook import WebhookCallback, verify_signature

from .conftest import Receiver, free_port

if not hasattr(flowhooks, "Workflow"):
    pytest.skip("flowhooks.Workflow is not available yet", allow_module_level=True)

from flowhooks import Workflow, node

FAST = {"backoff": 0.01, "max_backoff": 0.02}


def make_workflow(*, fail_times: int = 0, fail_for_good: bool = False) -> Workflow:
    """extract -> transform (retried once, critical) -> load."""
    calls = {"transform": 0}

    @node
    def extract(rows: int) -> list[int]:
        return list(range(rows))

    @node(retries=1, critical=True)
    def transform(extract: list[int]) -> list[int]:
        calls["transform"] += 1
        if fail_for_good or calls["transform"] <= fail_times:
            raise ValueError(f"bad row (call {calls['transform']})")
        return [v * 2 for v in extract]

    @node
    def load(transform: list[int]) -> int:
        return len(transform)

    return Workflow("etl", nodes=[extract, transform, load])


def odd_outputs_workflow() -> Workflow:
    """Outputs JSON cannot hold as they are: a generator the next node consumes, an endless
    iterator, NaN and infinities, and a tree that contains itself."""

    @node
    def numbers() -> Iterator[int]:
        return (i for i in range(3))

    @node
    def total(numbers: Iterator[int]) -> list[int]:
        return list(numbers)

    @node
    def ticker() -> Iterator[int]:
        return itertools.count()

    @node
    def stats() -> dict[str, float]:
        return {"mean": 1.5, "ratio": math.nan, "max": math.inf, "min": -math.inf}

    @node
    def tree() -> dict[str, Any]:
        root: dict[str, Any] = {"name": "root", "children": [{"name": "leaf"}]}
        root["children"].append(root)
        return root

    return Workflow("odd", nodes=[numbers, total, ticker, stats, tree])


def assert_odd_outputs(outputs: dict[str, Any]) -> None:
    """The serialised outputs of ``odd_outputs_workflow``."""
    assert outputs["numbers"].startswith("<generator object")
    assert outputs["total"] == [0, 1, 2]
    assert outputs["ticker"] == "count(0)"
    assert outputs["stats"] == {
        "mean": 1.5,
        "ratio": "NaN",
        "max": "Infinity",
        "min": "-Infinity",
    }
    assert outputs["tree"] == {
        "name": "root",
        "children": [{"name": "leaf"}, "<circular reference>"],
    }


@pytest.mark.usefixtures("capped_memory")
async def test_history_of_odd_outputs(db_url: str) -> None:
    """Recording a run leaves a generator whole for the next node and does not hang on
    count(); NaN is stored as strict JSON and a cycle is cut only where it closes."""
    history = HistoryCallback(db_url)
    run = odd_outputs_workflow().run({}, callbacks=[history])
    result = await asyncio.wait_for(run, timeout=60)
    await history.aclose()
    assert result.status == "succeeded"
    assert result.outputs["total"] == [0, 1, 2]
    async with HistoryStore(db_url) as store:
        detail = await store.get_run(result.run_id)
    assert detail is not None
    assert_odd_outputs(detail.run.outputs)
    assert {n.node_id: n.output_data for n in detail.nodes} == detail.run.outputs
    inputs = {n.node_id: n.input_data for n in detail.nodes}
    assert inputs["total"] == {"numbers": detail.run.outputs["numbers"]}
    if db_url.startswith("sqlite:///"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            [(text,)] = conn.execute(
                "SELECT outputs FROM flowhooks_runs WHERE run_id = ?", (result.run_id,)
            )
        assert_odd_outputs(strict_json(text))
    assert_odd_outputs(strict_json(json.dumps(result.to_dict()))["outputs"])


async def test_history_of_real_runs(db_url: str) -> None:
    """A retried success and a failure are stored with attempts, errors and the run's result."""
    history = HistoryCallback(db_url)
    ok = await make_workflow(fail_times=1).run({"rows": 2}, callbacks=[history])
    bad = await make_workflow(fail_for_good=True).run(
        {"rows": 2}, callbacks=[history], metadata={"team": "data"}
    )
    await history.aclose()
    assert (ok.status, bad.status) == ("succeeded", "failed")
    async with HistoryStore(db_url) as store:
        runs = await store.list_runs()
        good = await store.get_run(ok.run_id)
        failed = await store.get_run(bad.run_id)
    assert [r.run_id for r in runs] == [bad.run_id, ok.run_id]
    assert good is not None
    assert failed is not None
    assert good.run.status == "succeeded"
    assert good.run.final_node == "load"
    assert good.run.outputs == {"extract": [0, 1], "transform": [0, 2], "load": 2}
    assert [(n.node_id, n.attempt, n.status) for n in good.nodes] == [
        ("extract", 1, "succeeded"),
        ("transform", 1, "failed"),
        ("transform", 2, "succeeded"),
        ("load", 1, "succeeded"),
    ]
    assert [(e.severity, e.will_retry) for e in good.errors] == [("warning", True)]
    assert failed.run.status == "failed"
    assert failed.run.final_node == "transform"
    assert failed.run.error_type == "ValueError"
    assert failed.run.metadata == {"team": "data"}
    assert failed.run.duration == pytest.approx(bad.duration)
    assert [e.severity for e in failed.errors] == ["warning", "critical"]


def test_run_sync_twice_with_all_three_handlers(receiver: Receiver, tmp_path: Any) -> None:
    """The handlers work across two run_sync calls (two event loops) in a row."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    handlers = [
        HistoryCallback(url),
        WebhookCallback(receiver.url + "/runs", **FAST),
        NotificationCallback(WebhookNotifier(receiver.url + "/alerts", **FAST), on_completion=True),
    ]
    wf = make_workflow()
    first = wf.run_sync({"rows": 1}, callbacks=handlers)
    second = wf.run_sync({"rows": 2}, callbacks=handlers)
    assert [p.path for p in receiver.requests] == ["/runs", "/alerts"] * 2
    assert [r.header("Workflow-Run-Id") for r in receiver.requests[::2]] == [
        first.run_id,
        second.run_id,
    ]

    async def read() -> list[str]:
        async with HistoryStore(url) as store:
            return [r.status for r in await store.list_runs()]

    assert asyncio.run(read()) == ["succeeded", "succeeded"]


async def test_webhook_posts_the_run_result(receiver: Receiver) -> None:
    """The webhook body of a real run is its RunResult.to_dict(), signed, with run headers."""
    handler = WebhookCallback(secret="k", allowed_hosts=[receiver.host], **FAST)
    result = await make_workflow(fail_for_good=True).run(
        {"rows": 1},
        callbacks=[handler],
        metadata={"callback_url": receiver.url + "/cb"},
        resource_id="tenant-7",
    )
    await handler.aclose()
    [request] = receiver.requests
    assert request.path == "/cb"
    assert request.header("Workflow-Run-Id") == result.run_id
    assert request.header("Workflow-Run-Status") == "failed"
    assert verify_signature(request.body, request.header("X-Flowhooks-Signature"), "k")
    assert request.json() == result.to_dict()
    assert request.json()["nodes"]["transform"]["status"] == "failed"


@pytest.mark.usefixtures("capped_memory")
async def test_webhook_body_of_odd_outputs_is_strict_json(receiver: Receiver) -> None:
    """The webhook of a run with a generator, count(), NaN and a cycle in its outputs is
    posted at once, as strict JSON, and the generator still reaches the next node whole."""
    handler = WebhookCallback(receiver.url, **FAST)
    run = odd_outputs_workflow().run({}, callbacks=[handler])
    result = await asyncio.wait_for(run, timeout=60)
    await handler.aclose()
    assert result.outputs["total"] == [0, 1, 2]
    [request] = receiver.requests
    body = strict_json(request.body)
    assert_odd_outputs(body["outputs"])
    assert {name: n["output"] for name, n in body["nodes"].items()} == body["outputs"]
    assert body == result.to_dict()


async def test_refused_metadata_url_does_not_change_the_run(
    receiver: Receiver, logs: list[str]
) -> None:
    """A run whose callback_url is not allow-listed succeeds and the URL is never fetched."""
    handler = WebhookCallback(allowed_hosts=["hooks.example.com"], **FAST)
    result = await make_workflow().run(
        {"rows": 1}, callbacks=[handler], metadata={"callback_url": receiver.url}
    )
    assert result.status == "succeeded"
    assert receiver.requests == []
    assert any("not in allowed_hosts" in m for m in logs)


async def test_notifications_for_a_critical_failure(receiver: Receiver) -> None:
    """A critical node failing for good sends a critical alert, then a failure alert."""
    notifier = WebhookNotifier(receiver.url, **FAST)
    handler = NotificationCallback(notifier, channels={"critical": "#pager"})
    result = await make_workflow(fail_for_good=True).run({"rows": 1}, callbacks=[handler])
    await handler.aclose()
    bodies = [r.json() for r in receiver.requests]
    assert [(b["channel"], b["fields"]["kind"]) for b in bodies] == [
        ("#pager", "critical"),
        ("alerts", "failure"),
    ]
    assert bodies[1]["fields"]["run_id"] == result.run_id
    assert "failed at node 'transform'" in bodies[1]["message"]
    assert bodies[1]["fields"]["error_message"] == "bad row (call 2)"


async def test_broken_destinations_do_not_change_the_outcome(
    closed_port_url: str, logs: list[str]
) -> None:
    """An unreachable database, webhook and notifier are logged; the run still succeeds."""
    handlers = [
        HistoryCallback(f"postgresql://u@127.0.0.1:{free_port()}/h", connect_timeout=5),
        WebhookCallback(closed_port_url, retries=1, **FAST),
        NotificationCallback(WebhookNotifier(closed_port_url, retries=0), on_completion=True),
    ]
    result = await make_workflow().run({"rows": 1}, callbacks=handlers)
    for handler in handlers:
        await handler.aclose()
    assert result.status == "succeeded"
    assert result.outputs["load"] == 1
    text = "\n".join(logs)
    assert "HistoryError" in text
    assert "WebhookCallback could not POST" in text
    assert "WebhookNotifier could not POST" in text
