"""NotificationCallback v2: chat-ready payloads, run links, dedup keys, the deadline, and
AppriseNotifier over real loopback servers."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

import pytest

from flowhooks import CallbackManager, CircuitBreaker, EventType, Workflow, node
from flowhooks.handlers import AppriseNotifier
from flowhooks.handlers.notification import NotificationCallback, WebhookNotifier, dedup_key

from .conftest import Receiver, Request

FAST = {"backoff": 0.01, "max_backoff": 0.02}


def like_slack(request: Request) -> Any:
    """Answer as a Slack incoming webhook does: 400 no_text unless the JSON has a text."""
    try:
        text = request.json().get("text")
    except ValueError:
        text = None
    if not isinstance(text, str) or not text:
        return (400, {}, b"no_text")
    return (200, {}, b"ok")


def failing_workflow() -> Workflow:
    @node(critical=True)
    def load() -> None:
        raise ValueError("bad row")

    return Workflow("etl", nodes=[load])


async def test_alerts_are_accepted_by_a_slack_like_webhook(receiver: Receiver) -> None:
    """Every alert carries a text field, so a Slack incoming webhook takes it as it is."""
    receiver.rule = like_slack
    handler = NotificationCallback(WebhookNotifier(receiver.url, **FAST))
    manager = CallbackManager([handler])
    result = await failing_workflow().run(callbacks=manager)
    assert result.status == "failed"
    kinds = [r.json()["fields"]["kind"] for r in receiver.requests]
    assert kinds == ["critical", "failure"]
    assert all(r.json()["text"].startswith(r.json()["message"]) for r in receiver.requests)
    stats = manager.stats[handler]
    assert stats[EventType.ERROR].errors == stats[EventType.WORKFLOW_END].errors == 0


async def test_a_body_without_text_is_what_slack_refuses(receiver: Receiver) -> None:
    """The loopback stand-in refuses what Slack refuses (so the test above means something)."""
    receiver.rule = like_slack
    import httpx

    async with httpx.AsyncClient() as client:
        response = await client.post(receiver.url, json={"message": "hi"})
    assert (response.status_code, response.text) == (400, "no_text")


async def test_run_url_and_dedup_keys_are_in_every_alert(receiver: Receiver) -> None:
    """run_url renders into each alert's text and fields; dedup keys go per run and node."""
    handler = NotificationCallback(
        WebhookNotifier(receiver.url, **FAST), run_url="https://ci.example/runs/{run_id}"
    )
    result = await failing_workflow().run(callbacks=[handler], run_id="r 1")
    link = "https://ci.example/runs/r%201"
    bodies = [r.json() for r in receiver.requests]
    assert [b["fields"]["run_url"] for b in bodies] == [link, link]
    assert all(b["text"].endswith("\n" + link) for b in bodies)
    assert [b["text"].count(link) for b in bodies] == [1, 1]  # once, not once per layer
    assert [b["fields"]["dedup_key"] for b in bodies] == [
        dedup_key(result.run_id, "load"),
        dedup_key(result.run_id, "load"),
    ]
    assert dedup_key("r", "n") != dedup_key("r") != dedup_key("s")


@pytest.mark.timeout(30)
async def test_deadline_bounds_the_inline_critical_alert(silent_url: str, logs: list[str]) -> None:
    """Against a notifier endpoint that never answers, each alert gives up at the deadline."""
    notifier = WebhookNotifier(silent_url, timeout=30, deadline=30, **FAST)
    handler = NotificationCallback(notifier, deadline=0.5)
    manager = CallbackManager([handler])
    started = time.monotonic()
    result = await failing_workflow().run(callbacks=manager)
    assert result.status == "failed"
    assert time.monotonic() - started < 2 * 0.5 + 5  # two alerts, plus a generous margin
    assert manager.stats[handler][EventType.ERROR].errors == 1
    assert manager.stats[handler][EventType.WORKFLOW_END].errors == 1
    assert any("within its deadline of 0.5s" in m for m in logs)


def test_options_are_checked() -> None:
    """A bad run_url template or deadline is refused with the parameter named."""
    notifier = WebhookNotifier("http://127.0.0.1/hook")
    with pytest.raises(ValueError, match="run_url"):
        NotificationCallback(notifier, run_url="https://ci/{build}")
    with pytest.raises(ValueError, match="deadline"):
        NotificationCallback(notifier, deadline=float("nan"))
    assert NotificationCallback.breaker == CircuitBreaker()


# -- Apprise -----------------------------------------------------------------------------------


def apprise_url(scheme: str, receiver: Receiver, path: str) -> str:
    return f"{scheme}://{receiver.host}{path}"


async def test_apprise_json_scheme_delivers_to_loopback(receiver: Receiver) -> None:
    """Through Apprise's json:// scheme the alert arrives with its title, body and type."""
    notifier = AppriseNotifier(apprise_url("json", receiver, "/alerts"))
    handler = NotificationCallback(notifier, run_url="https://ci.example/runs/{run_id}")
    result = await failing_workflow().run(callbacks=[handler])
    bodies = [r.json() for r in receiver.requests]
    assert [r.path for r in receiver.requests] == ["/alerts", "/alerts"]
    assert [b["title"] for b in bodies] == ["etl: critical", "etl: failure"]
    assert [b["type"] for b in bodies] == ["failure", "failure"]
    assert all(f"https://ci.example/runs/{result.run_id}" in b["message"] for b in bodies)


async def test_apprise_form_scheme_delivers_to_loopback(receiver: Receiver) -> None:
    """Through Apprise's form:// scheme the alert arrives as form fields."""
    notifier = AppriseNotifier([apprise_url("form", receiver, "/form")])
    handler = NotificationCallback(notifier, on_critical=False, on_completion=True)

    @node
    def ok() -> int:
        return 1

    await Workflow("etl", nodes=[ok]).run(callbacks=[handler])
    [request] = receiver.requests
    form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
    assert form["title"] == "etl: completion"
    assert form["type"] == "success"
    assert "succeeded" in form["message"]


async def test_apprise_refusal_is_the_handler_error(receiver: Receiver) -> None:
    """A target that refuses the alert makes the handler's call fail (logged and counted)."""
    receiver.answer(500, 500, 500, 500)
    handler = NotificationCallback(AppriseNotifier(apprise_url("json", receiver, "/x")))
    manager = CallbackManager([handler])
    await manager.trigger("workflow_end", workflow_id="r", output_data={}, status="failed")
    assert manager.stats[handler][EventType.WORKFLOW_END].errors == 1


def test_apprise_pagerduty_targets_carry_the_dedup_key() -> None:
    """A PagerDuty URL gets the alert's dedup key, as Apprise's own PagerDuty plugin reads it."""
    import apprise

    notifier = AppriseNotifier(["pagerduty://integration@apikey/flowhooks", "json://localhost"])
    key = dedup_key("run-7", "load")
    pagerduty, other = notifier.targets_for({"dedup_key": key})
    assert other == "json://localhost"
    plugin = apprise.Apprise.instantiate(pagerduty)
    assert plugin is not None
    assert plugin.dedup == key


def test_apprise_urls_are_checked_without_showing_secrets() -> None:
    """An URL Apprise does not know is a ValueError that does not print its secret part."""
    with pytest.raises(ValueError, match="does not understand") as info:
        AppriseNotifier("nosuchservice://user:hunter2@example.com")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValueError, match="one or more"):
        AppriseNotifier([])


async def test_a_crashed_run_alerts_as_a_failure(receiver: Receiver) -> None:
    """The sweep's ``crashed`` end of a run whose process died (delivered from the outbox,
    outside any live run) sends a failure alert: the point of sweeping is that it does."""
    from flowhooks.handlers._outbox import crash_event

    handler = NotificationCallback(
        WebhookNotifier(receiver.url, **FAST), run_url="https://ci.example/runs/{run_id}"
    )
    event = crash_event(
        run_id="r1",
        workflow_name="etl",
        seq=7,
        parent_run_id=None,
        resource_id=None,
        metadata={},
        duration=12.5,
    )
    await handler.on_workflow_end("r1", {}, event=event)
    (body,) = [r.json() for r in receiver.requests]
    assert body["channel"] == "alerts"
    assert body["fields"]["kind"] == "failure"
    assert body["fields"]["status"] == "crashed"
    assert "crashed" in body["message"]
    assert "12.50s" in body["message"]
    assert body["text"].count("https://ci.example/runs/r1") == 1
    quiet = NotificationCallback(WebhookNotifier(receiver.url, **FAST), on_failure=False)
    await quiet.on_workflow_end("r1", {}, event=event)
    assert len(receiver.requests) == 1
