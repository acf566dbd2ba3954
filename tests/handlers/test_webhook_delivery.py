"""WebhookCallback v2 delivery: Standard Webhooks signing, retries, Retry-After, deadline,
redirects and the circuit breaker, against real loopback servers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from email.utils import formatdate
from typing import Any

import pytest

from flowhooks import CallbackManager, CircuitBreaker, EventType, Workflow, node
from flowhooks.handlers.webhook import WebhookCallback, verify_webhook
from flowhooks.testing import RecordingCallback

from .conftest import Receiver

FAST = {"backoff": 0.01, "max_backoff": 0.02}


def independent_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The Standard Webhooks signature, computed here from the scheme's text, not the handler."""
    key = base64.b64decode(secret.split("_", 1)[1]) if secret.startswith("whsec_") else secret
    key_bytes = key if isinstance(key, bytes) else key.encode("utf-8")
    to_sign = msg_id + "." + timestamp + "." + body.decode("utf-8")
    mac = hmac.new(key_bytes, to_sign.encode("utf-8"), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


async def run_once(handler: WebhookCallback) -> tuple[Any, RecordingCallback, CallbackManager]:
    """Run a one-node workflow with the handler; return the result, a recorder and the manager."""

    @node
    def load() -> int:
        return 3

    recorder = RecordingCallback()
    manager = CallbackManager([handler, recorder])
    result = await Workflow("etl", nodes=[load]).run(callbacks=manager)
    return result, recorder, manager


def webhook_stats(manager: CallbackManager) -> Any:
    return manager.stats["WebhookCallback"][EventType.WORKFLOW_END]


@pytest.mark.parametrize(
    "secret",
    ["s3cret", "whsec_" + base64.b64encode(b"\x00binary key \xff").decode()],
    ids=["text-secret", "whsec-secret"],
)
async def test_standard_webhooks_signature(receiver: Receiver, secret: str) -> None:
    """webhook-id is the workflow_end Event.id; the v1 signature matches the scheme."""
    handler = WebhookCallback(receiver.url, secret=secret, **FAST)
    _, recorder, _ = await run_once(handler)
    [request] = receiver.requests
    [end] = [e for e in recorder.events if e.type == "workflow_end"]
    msg_id = request.header("webhook-id")
    stamp = request.header("webhook-timestamp")
    assert msg_id == end.id
    assert stamp is not None
    assert abs(int(stamp) - time.time()) < 60
    assert request.header("webhook-signature") == independent_signature(
        secret, msg_id, stamp, request.body
    )
    assert verify_webhook(request.body, request.headers, secret)
    assert not verify_webhook(request.body + b" ", request.headers, secret)
    assert not verify_webhook(request.body, request.headers, secret, now=int(stamp) + 3600)
    assert request.header("Workflow-Run-Id") == end.run_id
    assert request.header("Workflow-Run-Status") == "succeeded"


async def test_webhook_id_without_secret_and_stable_across_retries(receiver: Receiver) -> None:
    """Every try carries the same webhook-id, with or without a secret; no signature then."""
    receiver.answer(503, 502)
    handler = WebhookCallback(receiver.url, **FAST)
    await run_once(handler)
    ids = {r.header("webhook-id") for r in receiver.requests}
    assert len(receiver.requests) == 3
    assert len(ids) == 1
    assert None not in ids
    assert all(r.header("webhook-signature") is None for r in receiver.requests)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 503])
async def test_retried_statuses(receiver: Receiver, status: int) -> None:
    """Connection errors, 5xx, 408, 425 and 429 are retried."""
    receiver.answer(status)
    _, _, manager = await run_once(WebhookCallback(receiver.url, **FAST))
    assert len(receiver.requests) == 2
    assert webhook_stats(manager).errors == 0


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
async def test_other_4xx_are_not_retried(receiver: Receiver, status: int) -> None:
    """Any other 4xx ends the delivery at once, counted as the handler's error."""
    receiver.answer(status)
    result, _, manager = await run_once(WebhookCallback(receiver.url, **FAST))
    assert result.status == "succeeded"
    assert len(receiver.requests) == 1
    assert webhook_stats(manager).errors == 1


async def test_retry_after_seconds_is_honoured(receiver: Receiver) -> None:
    """A 429 with Retry-After: 1 waits about a second before the next try."""
    receiver.answer((429, {"Retry-After": "1"}))
    started = time.monotonic()
    _, _, manager = await run_once(WebhookCallback(receiver.url, **FAST))
    assert len(receiver.requests) == 2
    assert time.monotonic() - started >= 0.9
    assert webhook_stats(manager).errors == 0


async def test_retry_after_http_date_is_honoured(receiver: Receiver) -> None:
    """Retry-After given as an HTTP date is a wait until then."""
    receiver.answer((503, {"Retry-After": formatdate(time.time() + 2, usegmt=True)}))
    started = time.monotonic()
    await run_once(WebhookCallback(receiver.url, **FAST))
    assert len(receiver.requests) == 2
    assert time.monotonic() - started >= 0.5


async def test_retry_after_beyond_the_deadline_gives_up_at_once(
    receiver: Receiver, logs: list[str]
) -> None:
    """A Retry-After longer than the time left ends the delivery now, not at the deadline."""
    receiver.answer((429, {"Retry-After": "3600"}))
    started = time.monotonic()
    _, _, manager = await run_once(WebhookCallback(receiver.url, deadline=5.0, **FAST))
    assert time.monotonic() - started < 4
    assert len(receiver.requests) == 1
    assert webhook_stats(manager).errors == 1
    assert any("would pass the deadline" in m for m in logs)


@pytest.mark.timeout(30)
async def test_deadline_bounds_a_server_that_never_answers(
    silent_url: str, logs: list[str]
) -> None:
    """Against a server that accepts and never answers, the run ends near the deadline."""
    handler = WebhookCallback(silent_url, request_timeout=0.5, deadline=1.0, **FAST)
    started = time.monotonic()
    result, _, manager = await run_once(handler)
    assert result.status == "succeeded"
    assert time.monotonic() - started < 1.0 + 5  # deadline plus a generous margin
    assert webhook_stats(manager).errors + webhook_stats(manager).timeouts == 1
    assert any("WebhookCallback" in m and "ERROR" in m for m in logs)


async def test_redirect_to_allowed_host_and_port_is_followed(receiver: Receiver) -> None:
    """A 307 to the URL's own host and port is followed with the same body."""
    receiver.answer((307, {"Location": receiver.url + "/moved"}))
    _, _, manager = await run_once(WebhookCallback(receiver.url + "/hook", **FAST))
    assert [r.path for r in receiver.requests] == ["/hook", "/moved"]
    assert receiver.requests[0].body == receiver.requests[1].body
    assert webhook_stats(manager).errors == 0


async def test_redirect_to_another_port_is_not_followed(
    receiver: Receiver, logs: list[str]
) -> None:
    """A redirect to a host:port that is not allowed is refused, not fetched."""
    receiver.answer((308, {"Location": "http://127.0.0.1:9/elsewhere"}))
    _, _, manager = await run_once(WebhookCallback(receiver.url + "/hook", **FAST))
    assert [r.path for r in receiver.requests] == ["/hook"]
    assert webhook_stats(manager).errors == 1
    assert any("not followed" in m for m in logs)


async def test_metadata_url_on_an_unlisted_port_is_refused(
    receiver: Receiver, logs: list[str]
) -> None:
    """allowed_hosts=["127.0.0.1"] admits only the default port, not the receiver's."""

    @node
    def load() -> int:
        return 3

    handler = WebhookCallback(allowed_hosts=["127.0.0.1"], **FAST)
    await Workflow("etl", nodes=[load]).run(
        callbacks=[handler], metadata={"callback_url": receiver.url}
    )
    assert receiver.requests == []
    assert any("not in allowed_hosts" in m for m in logs)


def test_timeout_names_say_which_is_which() -> None:
    """request_timeout is per try, deadline for all; timeout= is request_timeout's old name."""
    handler = WebhookCallback("http://127.0.0.1/hook", timeout=1, deadline=7)
    assert (handler.request_timeout, handler.deadline) == (1.0, 7.0)
    assert handler.timeout == 8.0  # the manager's backstop: the deadline plus a second
    default = WebhookCallback("http://127.0.0.1/hook")
    assert (default.request_timeout, default.deadline) == (5.0, 10.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"deadline": 0}, "deadline"),
        ({"deadline": float("nan")}, "deadline"),
        ({"deadline": float("inf")}, "deadline"),
        ({"deadline": True}, "deadline"),
        ({"request_timeout": -1}, "request_timeout"),
        ({"timeout": float("nan")}, "timeout"),
    ],
    ids=repr,
)
def test_bad_times_name_the_parameter(kwargs: dict[str, Any], name: str) -> None:
    """NaN, infinities, bools and non-positive times are refused by name."""
    with pytest.raises(ValueError, match=f"^{name} must be a positive number"):
        WebhookCallback("http://127.0.0.1/hook", **kwargs)


async def test_a_dead_endpoint_trips_the_default_breaker(closed_port_url: str) -> None:
    """After 5 failed deliveries the webhook is skipped instead of costing time per run."""
    assert WebhookCallback.breaker == CircuitBreaker(failures=5, reset_after=30.0)
    handler = WebhookCallback(closed_port_url, retries=0, **FAST)
    manager = CallbackManager([handler])
    for i in range(7):
        await manager.trigger("workflow_end", workflow_id=f"r{i}", output_data={}, status="failed")
    stats = webhook_stats(manager)
    assert (stats.errors, stats.skipped) == (5, 2)


def test_verify_webhook_refuses_malformed_headers() -> None:
    """Missing headers, a non-numeric timestamp or a bad whsec_ secret never verify."""
    body = b"{}"
    stamp = str(int(time.time()))
    good = {
        "webhook-id": "m1",
        "webhook-timestamp": stamp,
        "webhook-signature": independent_signature("k", "m1", stamp, body),
    }
    assert verify_webhook(body, good, "k")
    assert verify_webhook(
        body, {**good, "webhook-signature": "v1,AAAA " + good["webhook-signature"]}, "k"
    )
    assert not verify_webhook(body, {**good, "webhook-timestamp": "soon"}, "k")
    assert not verify_webhook(body, {k: v for k, v in good.items() if k != "webhook-id"}, "k")
    assert not verify_webhook(body, good, "whsec_!!!")
