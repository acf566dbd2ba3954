"""NotificationCallback and WebhookNotifier against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import pytest

from flowhooks import CallbackManager, ErrorInfo, EventType, Workflow, node
from flowhooks.handlers.notification import (
    NotificationCallback,
    Notifier,
    WebhookNotifier,
)
from flowhooks.handlers.webhook import verify_signature

from .conftest import Receiver

FAST = {"backoff": 0.01, "max_backoff": 0.02}


def error(severity: str, *, node_id: str | None = "load", will_retry: bool = False) -> ErrorInfo:
    return ErrorInfo(
        type="ValueError",
        message="bad row",
        severity=severity,
        node_id=node_id,
        run_id="run-1",
        workflow_name="etl",
        attempt=1,
        will_retry=will_retry,
    )


async def end(manager: CallbackManager, status: str, run_id: str = "run-1") -> None:
    await manager.trigger(
        "workflow_end",
        workflow_id=run_id,
        output_data={},
        workflow_name="etl",
        status=status,
        duration=2.0,
    )


async def test_critical_error_alerts_at_once(receiver: Receiver) -> None:
    """A critical error is POSTed as {channel, message, fields} when it happens."""
    async with CallbackManager([NotificationCallback(WebhookNotifier(receiver.url, **FAST))]) as m:
        await m.trigger("error", error_info=error("critical"))
        assert len(receiver.requests) == 1
    body = receiver.requests[0].json()
    assert body["channel"] == "alerts"
    assert "Critical error in workflow 'etl' (run run-1), node 'load'" in body["message"]
    assert "ValueError: bad row" in body["message"]
    fields = body["fields"]
    assert fields["kind"] == "critical"
    assert fields["node_id"] == "load"
    assert fields["severity"] == "critical"
    assert fields["error_type"] == "ValueError"
    assert receiver.requests[0].header("Content-Type") == "application/json"


async def test_non_critical_errors_do_not_alert_by_default(receiver: Receiver) -> None:
    """Warnings (retried attempts) and plain errors do not alert with the default rules."""
    async with CallbackManager([NotificationCallback(WebhookNotifier(receiver.url, **FAST))]) as m:
        await m.trigger("error", error_info=error("warning", will_retry=True))
        await m.trigger("error", error_info=error("error"))
    assert receiver.requests == []


async def test_configured_severities_and_channels(receiver: Receiver) -> None:
    """severities= chooses which errors alert, channels= where each kind goes."""
    handler = NotificationCallback(
        WebhookNotifier(receiver.url, **FAST),
        severities=["error", "critical"],
        channels={"critical": "#pager", "failure": "#ops"},
    )
    async with CallbackManager([handler]) as m:
        await m.trigger("error", error_info=error("warning", will_retry=True))
        await m.trigger("error", error_info=error("error"))
        await end(m, "failed")
    assert [r.json()["channel"] for r in receiver.requests] == ["#pager", "#ops"]


async def test_failure_alert_at_workflow_end(receiver: Receiver) -> None:
    """A failed run sends a failure alert naming the workflow, run and duration."""
    async with CallbackManager([NotificationCallback(WebhookNotifier(receiver.url, **FAST))]) as m:
        await end(m, "failed")
    [request] = receiver.requests
    body = request.json()
    assert body["channel"] == "alerts"
    assert body["message"].startswith("Workflow 'etl' run run-1 failed after 2.00s")
    assert body["fields"]["kind"] == "failure"
    assert body["fields"]["status"] == "failed"


async def test_completion_alerts_by_default_and_can_be_switched_off(receiver: Receiver) -> None:
    """A succeeded run alerts on the 'runs' channel by default; on_completion=False silences it."""
    quiet = NotificationCallback(WebhookNotifier(receiver.url, **FAST), on_completion=False)
    loud = NotificationCallback(WebhookNotifier(receiver.url, **FAST))
    async with CallbackManager([quiet]) as m:
        await end(m, "succeeded")
    assert receiver.requests == []
    async with CallbackManager([loud]) as m:
        await end(m, "succeeded")
    [request] = receiver.requests
    assert request.json()["channel"] == "runs"
    assert request.json()["fields"]["kind"] == "completion"
    assert "succeeded in 2.00s" in request.json()["message"]


async def test_cancel_alerts_by_default_and_can_be_switched_off(receiver: Receiver) -> None:
    """A cancelled run alerts by default; on_cancel=False silences it."""
    quiet = NotificationCallback(WebhookNotifier(receiver.url, **FAST), on_cancel=False)
    async with CallbackManager([quiet]) as m:
        await end(m, "cancelled")
    assert receiver.requests == []
    async with CallbackManager([NotificationCallback(WebhookNotifier(receiver.url, **FAST))]) as m:
        await end(m, "cancelled")
    [request] = receiver.requests
    assert request.json()["fields"]["kind"] == "cancel"
    assert request.json()["channel"] == "alerts"


async def test_subworkflow_runs_alert_once_per_top_level_run(receiver: Receiver) -> None:
    """A child run's end does not alert unless subworkflows=True; its critical errors do."""
    child = Workflow("child", nodes=[node(lambda: 1, name="inner")])

    @node(critical=True)
    async def shaky() -> None:
        raise ValueError("disk full")

    failing_child = Workflow("failing-child", nodes=[shaky])
    parent = Workflow("parent", nodes=[child.as_node(name="sub")])
    await parent.run(callbacks=[NotificationCallback(WebhookNotifier(receiver.url, **FAST))])
    assert [r.json()["fields"]["kind"] for r in receiver.requests] == ["completion"]
    assert "Workflow 'parent'" in receiver.requests[0].json()["message"]

    receiver.requests.clear()
    everything = NotificationCallback(WebhookNotifier(receiver.url, **FAST), subworkflows=True)
    await parent.run(callbacks=[everything])
    assert [r.json()["message"].split(" run ")[0] for r in receiver.requests] == [
        "Workflow 'child'",
        "Workflow 'parent'",
    ]

    receiver.requests.clear()
    broken = Workflow("broken", nodes=[failing_child.as_node(name="sub")])
    result = await broken.run(
        callbacks=[NotificationCallback(WebhookNotifier(receiver.url, **FAST))]
    )
    assert result.status == "failed"
    kinds = [
        (r.json()["fields"]["kind"], r.json()["fields"]["workflow_name"]) for r in receiver.requests
    ]
    assert kinds == [("critical", "failing-child"), ("failure", "broken")]


async def test_a_handler_on_the_child_workflow_only_alerts_on_its_runs(receiver: Receiver) -> None:
    """Attached to the child workflow alone, the handler reports the child's runs."""

    @node
    async def shaky() -> None:
        raise ValueError("disk full")

    child = Workflow(
        "child",
        nodes=[shaky],
        callbacks=[NotificationCallback(WebhookNotifier(receiver.url, **FAST))],
    )
    parent = Workflow("parent", nodes=[child.as_node(name="sub")])
    result = await parent.run()
    assert result.status == "failed"
    [request] = receiver.requests
    fields = request.json()["fields"]
    assert (fields["kind"], fields["workflow_name"]) == ("failure", "child")


async def test_everything_can_be_switched_off(receiver: Receiver) -> None:
    """With on_critical and on_failure off, nothing is sent."""
    handler = NotificationCallback(
        WebhookNotifier(receiver.url, **FAST), on_critical=False, on_failure=False
    )
    async with CallbackManager([handler]) as m:
        await m.trigger("error", error_info=error("critical"))
        await end(m, "failed")
    assert receiver.requests == []


async def test_notifier_retries_5xx_and_not_4xx(receiver: Receiver, logs: list[str]) -> None:
    """WebhookNotifier retries a 500 and stops at a 400, which is logged and isolated."""
    receiver.answer(500, 200, 400)
    handler = NotificationCallback(WebhookNotifier(receiver.url, retries=2, **FAST))
    manager = CallbackManager([handler])
    await end(manager, "failed", run_id="a")
    await end(manager, "failed", run_id="b")
    await manager.aclose()
    assert len(receiver.requests) == 3
    assert manager.stats["NotificationCallback"][EventType.WORKFLOW_END].errors == 1
    assert any("refused with HTTP 400" in m for m in logs)


async def test_unreachable_notifier_is_isolated(closed_port_url: str, logs: list[str]) -> None:
    """An unreachable alert endpoint is retried, then logged; the dispatch goes on."""
    notifier = WebhookNotifier(closed_port_url, retries=1, **FAST)
    manager = CallbackManager([NotificationCallback(notifier)])
    await manager.trigger("error", error_info=error("critical"))
    await manager.aclose()
    assert manager.stats["NotificationCallback"][EventType.ERROR].errors == 1
    assert any("WebhookNotifier could not POST" in m for m in logs)


async def test_notifier_signs_when_given_a_secret(receiver: Receiver) -> None:
    """WebhookNotifier signs its body like WebhookCallback when a secret is set."""
    notifier = WebhookNotifier(receiver.url, secret="k", **FAST)
    await notifier.send("ops", "hello", answer=42)
    await notifier.aclose()
    [request] = receiver.requests
    assert request.json() == {
        "text": "hello",
        "channel": "ops",
        "message": "hello",
        "fields": {"answer": 42},
    }
    assert verify_signature(request.body, request.header("X-Flowhooks-Signature"), "k")


async def test_custom_notifier_receives_channel_message_and_fields() -> None:
    """Any object with an async send(channel, message, **fields) is a Notifier."""

    class Memory:
        def __init__(self) -> None:
            self.sent: list[tuple[str, str, dict[str, Any]]] = []

        async def send(self, channel: str, message: str, **fields: Any) -> None:
            self.sent.append((channel, message, fields))

    memory = Memory()
    assert isinstance(memory, Notifier)
    async with CallbackManager([NotificationCallback(memory, on_completion=True)]) as m:
        await m.trigger("error", error_info=error("critical", node_id=None))
        await end(m, "succeeded")
    assert [(c, f["kind"]) for c, _, f in memory.sent] == [
        ("alerts", "critical"),
        ("runs", "completion"),
    ]
    assert "node" not in memory.sent[0][1]


def test_rejects_a_notifier_without_async_send() -> None:
    """A notifier without an async send method is a TypeError that says what is expected."""

    class SyncSend:
        def send(self, channel: str, message: str) -> None: ...

    with pytest.raises(TypeError, match="async def send"):
        NotificationCallback(SyncSend())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="did you mean WebhookNotifier"):
        NotificationCallback(WebhookNotifier)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"severities": ["fatal"]}, "unknown severities \\['fatal'\\]"),
        ({"channels": {"oops": "#x"}}, "unknown alert kinds in channels"),
    ],
    ids=["severity", "channel-kind"],
)
def test_bad_rules_are_value_errors(kwargs: dict[str, Any], message: str) -> None:
    """Unknown severities or alert kinds are ValueErrors naming the accepted values."""
    with pytest.raises(ValueError, match=message):
        NotificationCallback(WebhookNotifier("http://127.0.0.1/x"), **kwargs)


def test_bad_notifier_url() -> None:
    """WebhookNotifier rejects a URL that is not absolute http(s) at construction."""
    with pytest.raises(ValueError, match="WebhookNotifier url"):
        WebhookNotifier("mailto:ops@example.com")
