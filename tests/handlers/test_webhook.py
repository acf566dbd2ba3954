"""WebhookCallback against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import math
from typing import Any

import httpx
import pytest
from json_checks import strict_json

from flowhooks import CallbackManager, EventType, Workflow, node
from flowhooks.handlers.notification import WebhookNotifier
from flowhooks.handlers.webhook import (
    WebhookCallback,
    WebhookDeliveryError,
    sign_body,
    verify_signature,
)

from .conftest import Receiver

FAST = {"backoff": 0.01, "max_backoff": 0.02}


async def end_run(
    handler: WebhookCallback,
    *,
    run_id: str = "run-1",
    status: str = "succeeded",
    metadata: dict[str, Any] | None = None,
) -> CallbackManager:
    """Send one workflow_end through a real manager, then close it; return the manager."""
    manager = CallbackManager([handler])
    await manager.trigger(
        "workflow_end",
        workflow_id=run_id,
        output_data={"load": 3},
        workflow_name="etl",
        status=status,
        duration=1.5,
        metadata=metadata or {},
    )
    await manager.aclose()
    return manager


def errors(manager: CallbackManager) -> int:
    """Errors counted for the webhook's workflow_end."""
    return manager.stats["WebhookCallback"][EventType.WORKFLOW_END].errors


async def test_posts_json_with_run_headers(receiver: Receiver) -> None:
    """A finished run is POSTed as JSON with the run id and status headers."""
    manager = await end_run(WebhookCallback(receiver.url + "/hooks/run", **FAST), status="failed")
    assert errors(manager) == 0
    [request] = receiver.requests
    assert request.path == "/hooks/run"
    assert request.header("Content-Type") == "application/json"
    assert request.header("Workflow-Run-Id") == "run-1"
    assert request.header("Workflow-Run-Status") == "failed"
    assert request.header("Idempotency-Key")
    assert request.header("X-Flowhooks-Signature") is None
    body = request.json()
    assert body["run_id"] == "run-1"
    assert body["workflow_name"] == "etl"
    assert body["status"] == "failed"
    assert body["outputs"] == {"load": 3}
    assert body["duration"] == 1.5


async def test_signature_matches_the_exact_body(receiver: Receiver) -> None:
    """With a secret, the signature header is the HMAC-SHA256 of the exact body bytes."""
    await end_run(WebhookCallback(receiver.url, secret="s3cret", **FAST))
    [request] = receiver.requests
    header = request.header("X-Flowhooks-Signature")
    expected = hmac.new(b"s3cret", request.body, hashlib.sha256).hexdigest()
    assert header == f"sha256={expected}"
    assert verify_signature(request.body, header, "s3cret")
    assert not verify_signature(request.body + b" ", header, "s3cret")
    assert not verify_signature(request.body, header, "other")


def test_verify_signature_edge_cases() -> None:
    """verify_signature rejects missing or malformed headers and accepts str bodies."""
    body = '{"a":1}'
    header = sign_body(body.encode(), b"k")
    assert verify_signature(body, header, "k")
    assert not verify_signature(body, None, "k")
    assert not verify_signature(body, "", "k")
    assert not verify_signature(body, header.removeprefix("sha256="), "k")
    assert not verify_signature(body, "sha1=" + header[7:], "k")


async def test_retries_on_5xx_then_succeeds(receiver: Receiver, logs: list[str]) -> None:
    """A 500 answer is retried with backoff, and the next 200 ends the delivery."""
    receiver.answer(500, 503)
    manager = await end_run(WebhookCallback(receiver.url, retries=3, **FAST))
    assert errors(manager) == 0
    assert len(receiver.requests) == 3
    ids = {r.header("Idempotency-Key") for r in receiver.requests}
    assert len(ids) == 1
    assert sum("retry" in m and "HTTP 50" in m for m in logs) == 2


async def test_gives_up_after_retries_on_5xx(receiver: Receiver, logs: list[str]) -> None:
    """A server that keeps answering 500 gets 1 + retries tries, then the error is logged."""
    receiver.answer(500, 500, 500, 500, 500)
    manager = await end_run(WebhookCallback(receiver.url, retries=2, **FAST))
    assert len(receiver.requests) == 3
    assert errors(manager) == 1
    assert any("WebhookDeliveryError" in m and "after 3 tries: HTTP 500" in m for m in logs)


async def test_no_retry_on_4xx(receiver: Receiver, logs: list[str]) -> None:
    """A 400 answer is not retried; the refusal is logged with the status."""
    receiver.answer(400)
    manager = await end_run(WebhookCallback(receiver.url, retries=3, **FAST))
    assert len(receiver.requests) == 1
    assert errors(manager) == 1
    assert any("refused with HTTP 400" in m and "not retried" in m for m in logs)


async def test_retries_on_connection_refused(closed_port_url: str, logs: list[str]) -> None:
    """A refused connection is retried, then reported; the caller is not interrupted."""
    manager = await end_run(WebhookCallback(closed_port_url, retries=2, **FAST))
    assert errors(manager) == 1
    retried = [m for m in logs if m.startswith("WARNING") and "ConnectError" in m]
    assert [m.split("); ")[1].split(" in ")[0] for m in retried] == ["retry 1 of 2", "retry 2 of 2"]
    assert any("after 3 tries" in m for m in logs)


async def test_raise_error_propagates_delivery_error(receiver: Receiver) -> None:
    """With raise_error set, a refused delivery propagates as WebhookDeliveryError."""

    class Strict(WebhookCallback):
        raise_error = True

    receiver.answer(404)
    with pytest.raises(WebhookDeliveryError, match="HTTP 404"):
        await end_run(Strict(receiver.url, **FAST))


async def test_metadata_url_on_allowed_host_is_used(receiver: Receiver) -> None:
    """A callback_url in the run's metadata is used when its host is allow-listed."""
    handler = WebhookCallback(allowed_hosts=[receiver.host], **FAST)
    manager = await end_run(handler, metadata={"callback_url": receiver.url + "/per-run"})
    assert errors(manager) == 0
    assert [r.path for r in receiver.requests] == ["/per-run"]
    assert receiver.requests[0].json()["metadata"] == {"callback_url": receiver.url + "/per-run"}


async def test_metadata_url_on_other_host_is_refused(receiver: Receiver, logs: list[str]) -> None:
    """A callback_url whose host is not allow-listed is refused, logged and never fetched."""
    handler = WebhookCallback(allowed_hosts=["hooks.example.com"], **FAST)
    manager = await end_run(handler, metadata={"callback_url": receiver.url})
    assert receiver.requests == []
    assert errors(manager) == 0
    assert any("not in allowed_hosts" in m and "'127.0.0.1'" in m for m in logs)


async def test_metadata_url_without_allow_list_is_refused(receiver: Receiver) -> None:
    """With no allowed_hosts, metadata URLs are never used."""
    await end_run(WebhookCallback(**FAST), metadata={"callback_url": receiver.url})
    assert receiver.requests == []


@pytest.mark.parametrize(
    "bad", ["file:///etc/passwd", "ftp://127.0.0.1/x", "not a url", 42], ids=repr
)
async def test_bad_metadata_url_is_refused(bad: Any, receiver: Receiver, logs: list[str]) -> None:
    """A metadata callback_url that is not an http(s) URL is refused and logged."""
    handler = WebhookCallback(allowed_hosts=[receiver.host], **FAST)
    manager = await end_run(handler, metadata={"callback_url": bad})
    assert errors(manager) == 0
    assert receiver.requests == []
    assert any("refused the callback URL" in m for m in logs)


async def test_explicit_url_needs_no_allow_listing(receiver: Receiver) -> None:
    """A configured url is used even with an allow-list that does not name its host."""
    handler = WebhookCallback(receiver.url, allowed_hosts=["hooks.example.com"], **FAST)
    await end_run(handler, metadata={"callback_url": "http://evil.example.net/x"})
    assert len(receiver.requests) == 1


async def test_no_url_at_all_does_nothing(receiver: Receiver) -> None:
    """Without a configured url or a metadata url, nothing is sent and nothing fails."""
    manager = await end_run(WebhookCallback(allowed_hosts=[receiver.host], **FAST))
    assert errors(manager) == 0
    assert receiver.requests == []


async def test_subworkflow_runs_post_only_with_subworkflows_true(receiver: Receiver) -> None:
    """A child run inherits the parent's callback_url; only the top-level run is POSTed."""
    child = Workflow("child", nodes=[node(lambda: 1, name="inner")])
    parent = Workflow("parent", nodes=[child.as_node(name="sub")])
    metadata = {"callback_url": receiver.url + "/runs"}
    handler = WebhookCallback(allowed_hosts=[receiver.host], **FAST)
    result = await parent.run(callbacks=[handler], metadata=metadata)
    assert [r.header("Workflow-Run-Id") for r in receiver.requests] == [result.run_id]
    assert receiver.requests[0].json()["outputs"] == {"sub": {"inner": 1}}

    receiver.requests.clear()
    every_run = WebhookCallback(allowed_hosts=[receiver.host], subworkflows=True, **FAST)
    result = await parent.run(callbacks=[every_run], metadata=metadata)
    bodies = [r.json() for r in receiver.requests]
    assert [b["workflow_name"] for b in bodies] == ["child", "parent"]
    assert bodies[0]["parent_run_id"] == result.run_id
    assert bodies[1]["parent_run_id"] is None


async def test_a_webhook_on_the_child_workflow_only_posts_its_runs(receiver: Receiver) -> None:
    """Attached to the child workflow alone, the webhook posts each child run."""
    child = Workflow(
        "child",
        nodes=[node(lambda: 1, name="inner")],
        callbacks=[WebhookCallback(receiver.url + "/child", **FAST)],
    )
    parent = Workflow("parent", nodes=[child.as_node(name="sub")])
    result = await parent.run()
    [request] = receiver.requests
    body = request.json()
    assert (request.path, body["workflow_name"], body["parent_run_id"]) == (
        "/child",
        "child",
        result.run_id,
    )


def test_wildcard_allowed_hosts() -> None:
    """'*.example.com' allows subdomains; hosts compare case-insensitively."""
    from flowhooks.handlers._http import host_allowed, parse_allowed

    allowed = parse_allowed(["*.example.com", "hooks.test"])
    assert host_allowed(httpx.URL("https://a.example.com/x"), allowed)
    assert host_allowed(httpx.URL("http://HOOKS.test/x"), allowed)
    assert not host_allowed(httpx.URL("https://example.com.evil.net/x"), allowed)
    assert not host_allowed(httpx.URL("https://other.test/x"), allowed)


@pytest.mark.parametrize(
    ("url", "entries", "allowed"),
    [
        ("https://hooks.test/x", ["hooks.test"], True),
        ("https://hooks.test:443/x", ["hooks.test"], True),
        ("http://hooks.test/x", ["hooks.test"], True),
        ("https://hooks.test:8443/x", ["hooks.test"], False),
        ("https://hooks.test:8443/x", ["hooks.test:8443"], True),
        ("https://hooks.test/x", ["hooks.test:8443"], False),
        ("https://a.hooks.test:8443/x", ["*.hooks.test:8443"], True),
        ("http://[::1]:8080/x", ["[::1]:8080"], True),
        ("http://[::1]:8081/x", ["[::1]:8080"], False),
    ],
)
def test_allow_list_entries_admit_a_port(url: str, entries: list[str], allowed: bool) -> None:
    """'host' admits the scheme's default port only; 'host:port' admits that port."""
    from flowhooks.handlers._http import host_allowed, parse_allowed

    assert host_allowed(httpx.URL(url), parse_allowed(entries)) is allowed


@pytest.mark.parametrize("entry", ["hooks.test:http", "hooks.test:0", "", "[::1]:x"])
def test_malformed_allow_list_entries_are_refused(entry: str) -> None:
    """An allow-list entry that is not a host or host:port is a ValueError naming it."""
    with pytest.raises(ValueError, match="allowed_hosts"):
        WebhookCallback(allowed_hosts=[entry])


async def test_concurrent_runs_each_post_once(receiver: Receiver) -> None:
    """Concurrent runs through one handler each deliver exactly one request."""
    handler = WebhookCallback(receiver.url, **FAST)
    manager = CallbackManager([handler])
    await asyncio.gather(
        *(
            manager.trigger("workflow_end", workflow_id=f"r{i}", output_data={}, status="succeeded")
            for i in range(8)
        )
    )
    await manager.aclose()
    assert sorted(r.header("Workflow-Run-Id") or "" for r in receiver.requests) == [
        f"r{i}" for i in range(8)
    ]


def test_works_across_successive_event_loops(receiver: Receiver) -> None:
    """One handler delivers from two asyncio.run calls in a row."""
    handler = WebhookCallback(receiver.url, **FAST)
    manager = CallbackManager([handler])

    async def end(run_id: str) -> None:
        await manager.trigger("workflow_end", workflow_id=run_id, output_data={}, status="failed")
        await manager.aclose()

    asyncio.run(end("a"))
    asyncio.run(end("b"))
    assert [r.header("Workflow-Run-Id") for r in receiver.requests] == ["a", "b"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:8080/hook", "absolute http:// or https:// URL"),
        ("ftp://127.0.0.1/hook", "absolute http:// or https:// URL"),
        ("http://", "absolute http:// or https:// URL"),
        (b"http://127.0.0.1", "must be an http\\(s\\) URL string"),
    ],
    ids=["no-scheme", "ftp", "no-host", "bytes"],
)
def test_bad_url_at_construction(url: Any, message: str) -> None:
    """A configured url that is not an absolute http(s) URL is a ValueError at construction."""
    with pytest.raises(ValueError, match=message):
        WebhookCallback(url)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"retries": -1}, "retries must be an int >= 0"),
        ({"secret": ""}, "secret must be a non-empty"),
    ],
    ids=["timeout", "retries", "secret"],
)
def test_bad_options_at_construction(kwargs: dict[str, Any], message: str) -> None:
    """Out-of-range options are ValueErrors that name the option."""
    with pytest.raises(ValueError, match=message):
        WebhookCallback("http://127.0.0.1/hook", **kwargs)


def open_clients() -> set[int]:
    """The ids of the httpx.AsyncClient objects alive and not closed."""
    gc.collect()
    return {
        id(obj)
        for obj in gc.get_objects()
        if isinstance(obj, httpx.AsyncClient) and not obj.is_closed
    }


def test_no_client_is_left_open_after_runs_in_successive_loops(receiver: Receiver) -> None:
    """Deliveries from two asyncio.run calls leave no HTTP client open, without aclose()."""
    before = open_clients()
    handler = WebhookCallback(receiver.url, **FAST)
    manager = CallbackManager([handler])

    async def end(run_id: str) -> None:
        await manager.trigger("workflow_end", workflow_id=run_id, output_data={}, status="failed")

    asyncio.run(end("a"))
    asyncio.run(end("b"))
    assert [r.header("Workflow-Run-Id") for r in receiver.requests] == ["a", "b"]
    assert open_clients() - before == set()


async def test_webhook_notifier_leaves_no_client_open(receiver: Receiver) -> None:
    """WebhookNotifier.send opens and closes its own client; nothing waits for aclose()."""
    before = open_clients()
    notifier = WebhookNotifier(receiver.url, **FAST)
    await notifier.send("alerts", "run failed", run_id="r1")
    assert len(receiver.requests) == 1
    assert open_clients() - before == set()


async def test_webhook_notifier_body_is_strict_json(receiver: Receiver) -> None:
    """Alert fields holding NaN, a generator or a cycle still make a strict JSON body."""
    rows = (i for i in range(2))
    loop: list[Any] = ["x"]
    loop.append(loop)
    notifier = WebhookNotifier(receiver.url, **FAST)
    await notifier.send("alerts", "odd", ratio=math.nan, rows=rows, loop=loop)
    [request] = receiver.requests
    assert strict_json(request.body)["fields"] == {
        "ratio": "NaN",
        "rows": repr(rows),
        "loop": ["x", "<circular reference>"],
    }
    assert list(rows) == [0, 1]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("webhook-timestamp", "\u00b2"),  # a digit to str.isdigit, not to int()
        ("webhook-timestamp", "1" * 5000),  # past int()'s digit limit
        ("webhook-timestamp", "\u0661\u0667"),  # Arabic-Indic digits
        ("webhook-signature", "v1,\u00e9"),  # compare_digest refuses non-ASCII text
    ],
)
def test_hostile_headers_fail_verification_instead_of_raising(name: str, value: str) -> None:
    from flowhooks.handlers._signing import signing_key, standard_headers
    from flowhooks.handlers.webhook import verify_webhook

    body = b'{"run_id": "r"}'
    headers = standard_headers(signing_key("s3cret"), "msg_1", body)
    assert verify_webhook(body, headers, "s3cret")
    assert verify_webhook(body, {**headers, name: value}, "s3cret") is False
    assert verify_signature(body, "sha256=\u00e9", "s3cret") is False
