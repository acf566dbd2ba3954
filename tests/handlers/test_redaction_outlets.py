"""One secret through a real run, and every place run data leaves the process.

The secret travels as an ``api_key`` input, a ``password`` in a nested
dataclass and a named tuple, inside an object's repr, in a header pair list, under a ``bytes``
key, in a URL's user information and query, and in an exception message
(``Authorization: Bearer ...``). It must be absent from loguru output, stdlib
log records, webhook and notification bodies received over loopback HTTP,
Sentry envelopes and OpenLineage events, while the nodes and handlers still
see the real values in memory; with ``redact=False`` it gets through.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from loguru import logger
from openlineage.client.transport.file import FileConfig, FileTransport

import flowhooks
from flowhooks import BaseCallbackHandler, ErrorInfo, Redaction, RunResult, Workflow, node
from flowhooks.handlers import (
    LoggingCallback,
    NotificationCallback,
    OpenLineageCallback,
    SentryCallback,
    WebhookCallback,
)
from flowhooks.handlers.notification import WebhookNotifier
from flowhooks.handlers.webhook import verify_signature, verify_webhook

from .conftest import Receiver
from .test_sentry import DSN, Capture

SECRET = "sk-live-123"
URL = f"https://bob:{SECRET}@db.example/x?token={SECRET}"
SIGNING = "signing-key"


@dataclasses.dataclass
class Database:
    host: str
    password: str


@dataclasses.dataclass
class Settings:
    env: str
    db: Database


class Creds(NamedTuple):
    user: str
    token: str


class Client:
    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"Client(api_key={self.key!r})"


def secret_workflow() -> Workflow:
    """configure (returns the secret in many shapes) -> call (fails naming it)."""

    @node
    def configure(api_key: str, url: str) -> dict[Any, Any]:
        return {
            "settings": Settings("prod", Database("db.example", api_key)),
            "client": Client(api_key),
            "creds": Creds("bob", api_key),
            "headers": [("Authorization", f"Bearer {api_key}"), ("X-Api-Key", api_key)],
            b"api_key": api_key,
            "url": url,
        }

    @node(critical=True)
    def call(configure: dict[Any, Any], api_key: str) -> None:
        raise PermissionError(f"refused {configure['url']}: Authorization: Bearer {api_key}")

    return Workflow("payments", nodes=[configure, call])


class Keeper(BaseCallbackHandler):
    """Keeps what it is handed, to show that redaction never changes it."""

    def __init__(self) -> None:
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []
        self.errors: list[ErrorInfo] = []

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        self.inputs.append(input_data)

    async def on_node_end(self, node_id: str, output_data: Any) -> None:
        self.outputs.append(output_data)

    async def on_error(self, error_info: ErrorInfo) -> None:
        self.errors.append(error_info)


@dataclasses.dataclass
class Outlets:
    """Everything the run let out, as text, and what stayed in memory."""

    loguru: str
    stdlib: str
    webhook: str
    notifications: str
    sentry: str
    lineage: str
    keeper: Keeper
    result: RunResult

    def texts(self) -> dict[str, str]:
        return {
            "loguru": self.loguru,
            "stdlib": self.stdlib,
            "webhook": self.webhook,
            "notification": self.notifications,
            "sentry": self.sentry,
            "openlineage": self.lineage,
        }


@pytest.fixture
def loguru_text() -> Iterator[list[str]]:
    """Every loguru record, formatted with its message and all its extra fields."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="TRACE", format="{message} {extra}")
    yield lines
    logger.remove(sink)


async def run_through_every_outlet(
    redact: bool,
    receiver: Receiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    loguru_text: list[str],
) -> Outlets:
    std = logging.getLogger("flowhooks.tests.redaction")
    caplog.set_level(logging.DEBUG, logger=std.name)
    capture = Capture()
    sentry = SentryCallback(DSN, transport=capture, redact=redact)
    lineage_file = tmp_path / "lineage.jsonl"
    transport = FileTransport(FileConfig(log_file_path=str(lineage_file), append=True))
    keeper = Keeper()
    handlers: list[BaseCallbackHandler] = [
        keeper,
        LoggingCallback(level="DEBUG", redact=redact),
        LoggingCallback(std, level="DEBUG", redact=redact),
        WebhookCallback(f"{receiver.url}/hook", secret=SIGNING, redact=redact),
        NotificationCallback(WebhookNotifier(f"{receiver.url}/alert"), redact=redact),
        sentry,
        OpenLineageCallback("shop", transport, redact=redact),
    ]
    result = await secret_workflow().run(
        {"api_key": SECRET, "url": URL}, callbacks=handlers, metadata={"password": SECRET}
    )
    for handler in handlers:
        await handler.aclose()
    hooks = [r for r in receiver.requests if r.path == "/hook"]
    alerts = [r for r in receiver.requests if r.path == "/alert"]
    assert len(hooks) == 1
    assert len(alerts) == 2  # the critical error, then the failed run
    for hook in hooks:  # the signatures cover the body that was sent
        assert verify_webhook(hook.body, hook.headers, SIGNING)
        assert verify_signature(hook.body, hook.header("X-Flowhooks-Signature"), SIGNING)
    assert len(capture.events) == 1
    stdlib = "\n".join(repr(vars(r)) for r in caplog.records)
    return Outlets(
        loguru="\n".join(loguru_text),
        stdlib=stdlib,
        webhook="\n".join(h.body.decode() for h in hooks),
        notifications="\n".join(a.body.decode() for a in alerts),
        sentry=json.dumps(capture.events, default=str),
        lineage=lineage_file.read_text(),
        keeper=keeper,
        result=result,
    )


async def test_the_secret_leaves_through_no_outlet(
    receiver: Receiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    loguru_text: list[str],
) -> None:
    """Logs, webhook, alerts, Sentry and OpenLineage carry no trace of the secret."""
    out = await run_through_every_outlet(True, receiver, tmp_path, caplog, loguru_text)
    for outlet, text in out.texts().items():
        assert text, outlet
        assert SECRET not in text, f"{outlet} let the secret out"
        assert "***" in text, outlet
    body = json.loads(out.webhook)
    configure = body["nodes"]["configure"]
    assert configure["inputs"] == {"api_key": "***", "url": "https://***@db.example/x?token=***"}
    assert configure["output"]["settings"]["db"] == {"host": "db.example", "password": "***"}
    assert body["metadata"] == {"password": "***"}
    assert body["error"]["type"] == "PermissionError"
    assert "Authorization: ***" in body["error"]["message"]
    alert = json.loads(out.notifications.splitlines()[0])
    assert "Authorization: ***" in alert["text"]
    assert alert["fields"]["error_message"].startswith("refused https://***@db.example/x?token=***")
    event = json.loads(out.sentry)[0]
    assert event["exception"]["values"][-1]["value"].endswith("Authorization: ***")
    assert "PermissionError" in out.lineage


async def test_nodes_and_handlers_keep_the_real_values(
    receiver: Receiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    loguru_text: list[str],
) -> None:
    """Redaction works on copies: the run's objects and what handlers got hold the secret."""
    out = await run_through_every_outlet(True, receiver, tmp_path, caplog, loguru_text)
    keeper, result = out.keeper, out.result
    assert keeper.inputs[0] == {"api_key": SECRET, "url": URL}
    produced = keeper.outputs[0]
    assert produced["settings"].db.password == SECRET
    assert produced["client"].key == SECRET
    assert produced["headers"] == [("Authorization", f"Bearer {SECRET}"), ("X-Api-Key", SECRET)]
    assert produced[b"api_key"] == SECRET
    assert produced["url"] == URL
    assert f"Bearer {SECRET}" in keeper.errors[0].message
    assert result.nodes["configure"].output is produced
    assert result.error is not None
    assert SECRET in result.error.message
    assert result.metadata == {"password": SECRET}


async def test_redact_false_lets_the_secret_through(
    receiver: Receiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    loguru_text: list[str],
) -> None:
    """With redact=False on each handler, each outlet sends what it was given."""
    out = await run_through_every_outlet(False, receiver, tmp_path, caplog, loguru_text)
    for outlet, text in out.texts().items():
        assert SECRET in text, f"{outlet} redacted although redact=False"


@pytest.fixture
def extra_policy() -> Iterator[None]:
    flowhooks.redaction(keys=["iban"], patterns=[r"acct-\d+"])
    yield
    flowhooks.reset_redaction()


@node
def pay(iban: str, memo: str) -> str:
    return f"paid {memo} from iban={iban}"


async def test_process_wide_keys_and_patterns_reach_every_handler(
    extra_policy: None, receiver: Receiver, loguru_text: list[str]
) -> None:
    """flowhooks.redaction() applies to handlers made before it and to every outlet."""
    handlers = [LoggingCallback(level="DEBUG"), WebhookCallback(f"{receiver.url}/hook")]
    await Workflow("pay", nodes=[pay]).run(
        {"iban": "DE89370400", "memo": "invoice acct-55"}, callbacks=handlers
    )
    body = receiver.requests[0].body.decode()
    for text in (body, "\n".join(loguru_text)):
        assert "DE89370400" not in text
        assert "acct-55" not in text
    assert json.loads(body)["outputs"] == {"pay": "paid invoice *** from iban=***"}


async def test_per_handler_keys_and_policies(receiver: Receiver, loguru_text: list[str]) -> None:
    """redact=[keys] adds to the process-wide policy for one handler; a Redaction replaces it."""
    inputs = {"iban": "DE89370400", "memo": "invoice acct-55", "password": "pw-1"}
    with_keys = WebhookCallback(f"{receiver.url}/keys", redact=["iban"])
    own = WebhookCallback(
        f"{receiver.url}/own", redact=Redaction(keys=["memo"], patterns=[r"DE\d+"])
    )
    plain = LoggingCallback(level="DEBUG")
    await Workflow("pay", nodes=[pay]).run(inputs, callbacks=[with_keys, own, plain])
    bodies = {r.path: json.loads(r.body) for r in receiver.requests}
    assert bodies["/keys"]["inputs"] == {
        "iban": "***",
        "memo": "invoice acct-55",
        "password": "***",
    }
    assert bodies["/own"]["inputs"] == {"iban": "***", "memo": "***", "password": "pw-1"}
    logged = "\n".join(loguru_text)
    assert "DE89370400" in logged  # the logging handler was not given the extra key
    assert "pw-1" not in logged


MAKERS: list[Any] = [
    lambda option: WebhookCallback("https://example.com/h", redact=option),
    lambda option: NotificationCallback(WebhookNotifier("https://example.com/a"), redact=option),
    lambda option: LoggingCallback(redact=option),
    lambda option: SentryCallback(DSN, transport=Capture(), redact=option),
    lambda option: OpenLineageCallback("ns", redact=option),
]


@pytest.mark.parametrize("make", MAKERS)
@pytest.mark.parametrize("option", ["yes", 1, None, [1]])
def test_bad_redact_options_name_the_parameter(make: Any, option: Any) -> None:
    with pytest.raises(TypeError, match="redact"):
        make(option)
