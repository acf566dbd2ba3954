"""Tests for LoggingCallback: structured records, levels, redaction and truncation."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from loguru import logger

import flowhooks
from flowhooks import CallbackManager, ErrorInfo, Workflow, node
from flowhooks.handlers import LoggingCallback
from flowhooks.handlers.logging import DEFAULT_REDACT_KEYS, REDACTED, redact

BOUND = ("run_id", "workflow_name", "node_id", "attempt", "event_type", "duration", "status")


def capture(level: str) -> Iterator[list[dict[str, Any]]]:
    """Every loguru record at ``level`` or above emitted while the sink is in place."""
    captured: list[dict[str, Any]] = []
    sink_id = logger.add(lambda m: captured.append(m.record), level=level, format="{message}")
    yield captured
    logger.remove(sink_id)


@pytest.fixture
def records() -> Iterator[list[dict[str, Any]]]:
    """Every loguru record emitted during the test, at any level."""
    yield from capture("TRACE")


@pytest.fixture
def debug_records() -> Iterator[list[dict[str, Any]]]:
    """What a sink at DEBUG receives during the test."""
    yield from capture("DEBUG")


@pytest.fixture
def info_records() -> Iterator[list[dict[str, Any]]]:
    """What a sink at INFO receives during the test."""
    yield from capture("INFO")


class Watched(Mapping[str, Any]):
    """A read-only mapping that counts how often its items are read (by redaction)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.reads = 0

    def __getitem__(self, key: str) -> Any:
        self.reads += 1
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        self.reads += 1
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


async def run_events(manager: CallbackManager, run_id: str = "run-1", name: str = "etl") -> None:
    """Send one small run's worth of events by hand."""
    fields = {"run_id": run_id, "workflow_name": name}
    await manager.trigger("workflow_start", workflow_id=run_id, input_data={"n": 1}, **fields)
    await manager.trigger("node_start", node_id="a", input_data={"n": 1}, attempt=1, **fields)
    await manager.trigger(
        "node_end", node_id="a", output_data=2, attempt=1, duration=0.25, **fields
    )
    await manager.trigger("custom_event", name="progress", data={"pct": 50}, **fields)
    await manager.trigger(
        "workflow_end",
        workflow_id=run_id,
        output_data={"a": 2},
        workflow_name=name,
        status="succeeded",
        duration=1.5,
    )


async def test_one_record_per_event_with_bound_fields(info_records):
    """At INFO, each lifecycle event gives exactly one record bound with the run and node fields."""
    records = info_records
    await run_events(CallbackManager([LoggingCallback()]))
    assert [r["extra"]["event_type"] for r in records] == [
        "workflow_start",
        "node_start",
        "node_end",
        "custom_event",
        "workflow_end",
    ]
    for record in records:
        assert set(BOUND) <= set(record["extra"])
        assert record["extra"]["run_id"] == "run-1"
        assert record["level"].name == "INFO"
    node_end = records[2]
    assert node_end["extra"]["node_id"] == "a"
    assert node_end["extra"]["attempt"] == 1
    assert node_end["extra"]["duration"] == 0.25
    assert node_end["extra"]["workflow_name"] == "etl"
    assert node_end["message"] == "node 'a' (attempt 1) succeeded in 0.250s"
    assert records[-1]["extra"]["status"] == "succeeded"
    assert records[-1]["message"] == "workflow 'etl' run run-1 succeeded in 1.500s"


async def test_info_sink_gets_lifecycle_records_only(info_records):
    """A sink at INFO gets no inputs or outputs, in the messages or the extras."""
    manager = CallbackManager([LoggingCallback(level="INFO")])
    await manager.trigger(
        "node_end", node_id="a", output_data={"customer": "Alice Example"}, run_id="r"
    )
    (record,) = info_records
    assert record["level"].name == "INFO"
    assert "payload" not in record["extra"]
    assert "Alice" not in record["message"]


async def test_debug_sink_gets_payload_records_from_the_default_handler(
    debug_records, info_records
):
    """With level='INFO', each payload follows its lifecycle record as a DEBUG record.

    The payload record is bound with the same fields plus ``payload``; a sink at
    INFO, attached at the same time, gets exactly the lifecycle records.
    """
    await run_events(CallbackManager([LoggingCallback()]))
    assert [(r["level"].name, r["message"]) for r in debug_records] == [
        ("INFO", "workflow 'etl' run run-1 started"),
        ("DEBUG", "workflow 'etl' run run-1 inputs | {\"n\": 1}"),
        ("INFO", "node 'a' (attempt 1) started"),
        ("DEBUG", "node 'a' (attempt 1) inputs | {\"n\": 1}"),
        ("INFO", "node 'a' (attempt 1) succeeded in 0.250s"),
        ("DEBUG", "node 'a' (attempt 1) output | 2"),
        ("INFO", "custom event 'progress'"),
        ("DEBUG", "custom event 'progress' data | {\"pct\": 50}"),
        ("INFO", "workflow 'etl' run run-1 succeeded in 1.500s"),
        ("DEBUG", "workflow 'etl' run run-1 outputs | {\"a\": 2}"),
    ]
    lifecycle, payloads = debug_records[::2], debug_records[1::2]
    for record, payload in zip(lifecycle, payloads, strict=True):
        assert "payload" not in record["extra"]
        assert payload["extra"] == {**record["extra"], "payload": payload["extra"]["payload"]}
    assert [p["extra"]["payload"] for p in payloads] == [
        '{"n": 1}',
        '{"n": 1}',
        "2",
        '{"pct": 50}',
        '{"a": 2}',
    ]
    assert [r["message"] for r in info_records] == [r["message"] for r in lifecycle]
    assert [r["extra"] for r in info_records] == [r["extra"] for r in lifecycle]


async def test_payload_record_messages_keep_braces_in_names(debug_records):
    """Node ids with braces are logged as they are (loguru formats the lazy payload message)."""
    manager = CallbackManager([LoggingCallback()])
    await manager.trigger("node_start", node_id="load{0}", input_data={"x": "{y}"}, run_id="r")
    assert debug_records[1]["message"] == 'node \'load{0}\' inputs | {"x": "{y}"}'


async def test_payload_records_follow_warnings_at_debug(records):
    """At level='DEBUG', a failed run's end is a WARNING and its outputs a DEBUG record."""
    manager = CallbackManager([LoggingCallback(level="DEBUG")])
    await manager.trigger(
        "workflow_end", workflow_id="r", output_data={"a": 1}, status="failed", workflow_name="w"
    )
    assert [(r["level"].name, r["message"]) for r in records] == [
        ("WARNING", "workflow 'w' run r failed"),
        ("DEBUG", "workflow 'w' run r outputs | {\"a\": 1}"),
    ]


async def test_payloads_false_never_logs_or_renders_them(records):
    """payloads=False: no payload records even for a TRACE sink, and nothing is read."""
    watched = Watched({"password": "p", "rows": 3})
    manager = CallbackManager([LoggingCallback(payloads=False)])
    await manager.trigger("node_start", node_id="a", input_data=watched, run_id="r")
    debug = CallbackManager([LoggingCallback(level="DEBUG", payloads=False)])
    await debug.trigger("node_start", node_id="a", input_data=watched, run_id="r")
    assert [r["message"] for r in records] == ["node 'a' started", "node 'a' started"]
    assert all("payload" not in r["extra"] for r in records)
    assert watched.reads == 0


def test_payloads_are_not_rendered_unless_a_sink_takes_debug(tmp_path):
    """With only an INFO sink, payloads are never redacted or rendered; a DEBUG sink renders them.

    Runs in a fresh interpreter: this test process keeps loguru's default DEBUG sink.
    """
    script = tmp_path / "lazy.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            from collections.abc import Mapping

            from loguru import logger

            from flowhooks import CallbackManager
            from flowhooks.handlers import LoggingCallback


            class Watched(Mapping):
                def __init__(self, data):
                    self.data, self.reads = data, 0

                def __getitem__(self, key):
                    self.reads += 1
                    return self.data[key]

                def __iter__(self):
                    self.reads += 1
                    return iter(self.data)

                def __len__(self):
                    return len(self.data)


            async def main():
                logger.remove()
                info, debug = [], []
                logger.add(lambda m: info.append(m.record), level="INFO")
                manager = CallbackManager([LoggingCallback()])
                watched = Watched({"password": "p", "rows": 3})
                await manager.trigger("node_start", node_id="a", input_data=watched, run_id="r")
                assert watched.reads == 0, watched.reads
                assert [r["message"] for r in info] == ["node 'a' started"]

                logger.add(lambda m: debug.append(m.record), level="DEBUG")
                await manager.trigger("node_start", node_id="a", input_data=watched, run_id="r")
                assert watched.reads > 0
                assert debug[-1]["extra"]["payload"] == '{"password": "***", "rows": 3}'
                assert len(info) == 2
                print("ok")


            asyncio.run(main())
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


async def test_debug_level_renders_payloads(records):
    """At DEBUG, the node's inputs and outputs appear in the message and in extra['payload']."""
    manager = CallbackManager([LoggingCallback(level="DEBUG")])
    await manager.trigger("node_start", node_id="a", input_data={"city": "Lyon"}, run_id="r")
    await manager.trigger("node_end", node_id="a", output_data=[1, 2, 3], run_id="r")
    assert [r["level"].name for r in records] == ["DEBUG", "DEBUG"]
    assert records[0]["extra"]["payload"] == '{"city": "Lyon"}'
    assert records[0]["message"].endswith('| {"city": "Lyon"}')
    assert records[1]["extra"]["payload"] == "[1, 2, 3]"


async def test_secrets_are_redacted_at_any_depth(records):
    """Secret-looking keys are redacted in nested dicts, lists and headers; other keys stay."""
    manager = CallbackManager([LoggingCallback(level="DEBUG")])
    inputs = {
        "user": "bob",
        "password": "hunter2",
        "config": {"db": {"DB_PASSWORD": "pw-123"}, "retries": 3},
        "headers": [{"Authorization": "Bearer abc.def"}, {"X-API-Key": "key-999"}],
        "credentials": {"anything": "inside-creds"},
        "refreshToken": "rt-555",
        "total_tokens": 1234,
    }
    await manager.trigger("workflow_start", workflow_id="r", input_data=inputs)
    (record,) = records
    text = record["message"] + record["extra"]["payload"]
    for secret in ("hunter2", "pw-123", "abc.def", "key-999", "inside-creds", "rt-555"):
        assert secret not in text
    assert REDACTED in text
    assert '"user": "bob"' in text
    assert '"retries": 3' in text
    assert '"total_tokens": 1234' in text  # a count, not a token


async def test_default_handler_redacts_nested_secrets_in_debug_records(debug_records):
    """The DEBUG payload records of the default handler are redacted at any depth."""
    manager = CallbackManager([LoggingCallback()])
    inputs = {
        "user": "bob",
        "config": {"db": {"db_password": "pw-123"}, "retries": 3},
        "headers": [{"X-Api-Key": "key-999"}, {"accessToken": "at-777"}],
        "accounts": [{"name": "ci", "passwords": ["old-1", "new-2"]}],
    }
    await manager.trigger("workflow_start", workflow_id="r", input_data=inputs)
    await manager.trigger("node_end", node_id="login", output_data={"session": {"mytoken": "t-1"}})
    await manager.trigger("workflow_end", workflow_id="r", output_data={"refresh_tokens": ["rt"]})
    payloads = [r for r in debug_records if "payload" in r["extra"]]
    assert [r["level"].name for r in payloads] == ["DEBUG", "DEBUG", "DEBUG"]
    text = "".join(r["message"] + r["extra"]["payload"] for r in payloads)
    for secret in ("pw-123", "key-999", "at-777", "old-1", "new-2", "t-1", '"rt"'):
        assert secret not in text
    assert '"user": "bob"' in text
    assert '"retries": 3' in text
    assert '"name": "ci"' in text
    assert payloads[2]["extra"]["payload"] == '{"refresh_tokens": "***"}'


async def test_secrets_in_a_pydantic_model_are_redacted(records):
    """A pydantic model payload is walked like a dict, so its secret fields are redacted."""
    from pydantic import BaseModel

    class Login(BaseModel):
        username: str
        api_key: str

    manager = CallbackManager([LoggingCallback(level="DEBUG")])
    await manager.trigger(
        "node_end", node_id="login", output_data=Login(username="u", api_key="k1")
    )
    assert "k1" not in records[0]["message"]
    assert '"username": "u"' in records[0]["message"]


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("db_password", True),
        ("access_token", True),
        ("X-Auth-Token", True),
        ("apiKey", True),
        ("X-API-KEY", True),
        ("client_secret", True),
        ("Authorization", True),
        ("private_key", True),
        # plural and run-together keys
        ("passwords", True),
        ("api_keys", True),
        ("mytoken", True),
        ("accessToken", True),
        ("refresh_tokens", True),
        ("PASSWORD", True),
        ("X-Api-Key", True),
        ("client-secret", True),
        ("csrftoken", True),
        ("xapikey", True),
        ("MYAPIKEYS", True),
        ("oauth", True),
        ("session_cookies", True),
        ("total_tokens", True),  # as text; a number there is a count (see below)
        # words that only start with a secret name, or hold one inside
        ("tokenizer", False),
        ("tokenizer_name", False),
        ("secretary", False),
        ("passwordless", False),
        ("author", False),
        ("keyboard", False),
        ("keys", False),
        ("name", False),
    ],
)
def test_redact_matches_key_words(key, secret):
    """Keys match by words in any case style, plural or run together with a prefix."""
    out = redact({key: "v"})
    assert (out[key] == REDACTED) is secret


def test_a_plural_key_with_a_number_is_a_count():
    """A key matched only through a plural keeps a number (a count); a singular key never does."""
    payload = {
        "total_tokens": 1234,
        "tokens_used": 56.5,
        "passwords": 3,
        "refresh_tokens": ["rt-1"],
        "tokens": "t1,t2",
        "has_tokens": True,
        "token": 42,
        "token_count": 7,
        "cvv": 123,
    }
    assert redact(payload) == {
        "total_tokens": 1234,
        "tokens_used": 56.5,
        "passwords": 3,
        "refresh_tokens": REDACTED,
        "tokens": REDACTED,
        "has_tokens": REDACTED,
        "token": REDACTED,
        "token_count": REDACTED,
        "cvv": REDACTED,
    }


def test_custom_redaction_keys_follow_the_same_rule():
    """extra_redact_keys get the same plural and run-together matching as the defaults."""
    handler = LoggingCallback(level="DEBUG", extra_redact_keys=["ssn", "iban_number"])
    assert handler.render({"ssns": ["1"], "userssn": "2", "IbanNumbers": "3", "ssnotes": "n"}) == (
        '{"ssns": "***", "userssn": "***", "IbanNumbers": "***", "ssnotes": "n"}'
    )


def test_redact_leaves_the_original_untouched():
    """redact() returns a copy; the payload the node returned is not modified."""
    payload = {"token": "t", "items": [{"secret": "s"}]}
    out = redact(payload)
    assert payload == {"token": "t", "items": [{"secret": "s"}]}
    assert out == {"token": REDACTED, "items": [{"secret": REDACTED}]}


async def test_redaction_keys_are_configurable(records):
    """extra_redact_keys adds to the defaults; redact_keys replaces them."""
    extra = CallbackManager([LoggingCallback(level="DEBUG", extra_redact_keys=["ssn"])])
    await extra.trigger("node_end", node_id="a", output_data={"ssn": "123-45", "password": "p"})
    replaced = CallbackManager([LoggingCallback(level="DEBUG", redact_keys=["ssn"])])
    await replaced.trigger("node_end", node_id="a", output_data={"ssn": "123-45", "password": "p"})
    assert "123-45" not in records[0]["message"]
    assert '"password": "p"' not in records[0]["message"]
    assert "123-45" not in records[1]["message"]
    assert '"password": "p"' in records[1]["message"]
    assert "password" in DEFAULT_REDACT_KEYS


async def test_huge_outputs_are_truncated(records):
    """A very large output is cut to max_length with a marker giving the full size."""
    manager = CallbackManager([LoggingCallback(level="DEBUG", max_length=200)])
    await manager.trigger("node_end", node_id="big", output_data="x" * 1_000_000)
    await manager.trigger("node_end", node_id="many", output_data=list(range(1_000_000)))
    first, second = (r["extra"]["payload"] for r in records)
    assert len(first) < 260
    assert first.endswith("… [truncated, 1000002 chars]")
    assert len(second) < 260
    assert "truncated" in second


async def test_unrepresentable_payloads_do_not_break_logging(records):
    """Objects whose repr raises are logged with a placeholder instead of failing."""

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    manager = CallbackManager([LoggingCallback(level="DEBUG")])
    manager_stats_before = 0
    await manager.trigger("node_end", node_id="a", output_data={"obj": Broken()})
    assert "unrepresentable Broken" in records[0]["message"]
    errors = sum(s.errors for per in manager.stats.values() for s in per.values())
    assert errors == manager_stats_before


async def test_error_levels_follow_retry_and_severity(records):
    """Retried errors log at WARNING, final ones at ERROR with the traceback, critical CRITICAL."""
    manager = CallbackManager([LoggingCallback()])
    trace = "Traceback (most recent call last):\n  ...\nValueError: bad row"
    common = {"type": "ValueError", "message": "bad row", "node_id": "a", "run_id": "r"}
    await manager.trigger(
        "error",
        ErrorInfo(**common, will_retry=True, severity="warning", attempt=1, stack_trace=trace),
    )
    await manager.trigger("error", ErrorInfo(**common, attempt=2, stack_trace=trace))
    await manager.trigger("error", ErrorInfo(**common, severity="critical", attempt=3))
    assert [r["level"].name for r in records] == ["WARNING", "ERROR", "CRITICAL"]
    assert "Traceback" not in records[0]["message"]  # retried: no traceback noise
    assert records[1]["message"].endswith(trace)
    assert all(r["exception"] is None for r in records)  # text, never an attached exception
    assert records[1]["extra"]["error_type"] == "ValueError"
    assert records[1]["extra"]["will_retry"] is False
    assert records[1]["extra"]["attempt"] == 2
    assert records[0]["message"] == "node 'a' (attempt 1) failed: ValueError: bad row (will retry)"


async def test_run_level_error_and_failed_run_end(records):
    """The run timeout is logged as a run error and a failed run's end at WARNING."""
    manager = CallbackManager([LoggingCallback()])
    await manager.trigger(
        "error",
        ErrorInfo(type="TimeoutError", message="run timed out", run_id="r", severity="critical"),
    )
    await manager.trigger(
        "workflow_end", workflow_id="r", output_data={}, status="failed", workflow_name="etl"
    )
    assert records[0]["message"] == "run failed: TimeoutError: run timed out"
    assert records[0]["extra"]["node_id"] is None
    assert records[1]["level"].name == "WARNING"
    assert records[1]["message"] == "workflow 'etl' run r failed"


async def test_a_quieter_level_raises_every_record(records):
    """With level='ERROR', lifecycle records log at ERROR and retries are raised to it too.

    Payloads stay at DEBUG.
    """
    manager = CallbackManager([LoggingCallback(level="ERROR")])
    await manager.trigger("node_start", node_id="a", input_data={})
    await manager.trigger("error", ErrorInfo(type="E", message="m", node_id="a", will_retry=True))
    assert [r["level"].name for r in records] == ["ERROR", "DEBUG", "ERROR"]


async def test_custom_logger_keeps_its_bindings(records):
    """A pre-bound logger passed in keeps its own extras next to the event fields."""
    manager = CallbackManager([LoggingCallback(logger=logger.bind(service="billing"))])
    await manager.trigger("node_start", node_id="a", input_data={}, run_id="r")
    assert records[0]["extra"]["service"] == "billing"
    assert records[0]["extra"]["run_id"] == "r"


async def test_used_outside_a_run_without_an_event(info_records):
    """Calling the handler directly, outside any run and without an Event, still logs."""
    records = info_records
    handler = LoggingCallback()
    await handler.on_node_start("a", {})
    await handler.on_error(ErrorInfo(type="KeyError", message="'x'", node_id="a"))
    assert records[0]["message"] == "node 'a' started"
    assert records[0]["extra"]["run_id"] == ""
    assert records[1]["level"].name == "ERROR"


async def test_concurrent_runs_keep_their_own_run_ids(records):
    """Interleaved runs log records, payload records too, each bound to its own run id."""
    manager = CallbackManager([LoggingCallback()])
    await asyncio.gather(*(run_events(manager, run_id=f"run-{i}") for i in range(3)))
    for i in range(3):
        mine = [r for r in records if r["extra"]["run_id"] == f"run-{i}"]
        assert len(mine) == 10
        assert sum("payload" in r["extra"] for r in mine) == 5


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"level": "LOUD"}, ValueError),
        ({"level": True}, ValueError),
        ({"max_length": 0}, ValueError),
        ({"redact_keys": "password"}, TypeError),
    ],
    ids=["unknown-level", "bool-level", "zero-length", "string-keys"],
)
def test_bad_configuration_is_rejected(kwargs, error):
    """Invalid settings fail when the handler is created, not at the first event."""
    with pytest.raises(error):
        LoggingCallback(**kwargs)


def test_level_names_are_case_insensitive_and_numbers_work():
    """'debug' and 10 both select DEBUG."""
    assert LoggingCallback(level="debug").render({"a": 1}) == '{"a": 1}'
    assert LoggingCallback(level=10).level == 10


async def test_real_workflow_run_is_logged_with_secrets_redacted(records):
    """A real run logs its lifecycle bound to the run id, with secret inputs redacted."""
    from flowhooks import Workflow, node

    @node
    def login(user: str, password: str) -> dict[str, str]:
        return {"user": user, "session_token": "tok-" + password}

    @node
    def greet(login: dict[str, str]) -> str:
        return f"hello {login['user']}"

    wf = Workflow("onboarding", nodes=[login, greet])
    result = await wf.run(
        {"user": "ann", "password": "s3cret-pw"}, callbacks=[LoggingCallback(level="DEBUG")]
    )
    assert result.status == "succeeded"
    mine = [r for r in records if r["extra"].get("run_id") == result.run_id]
    assert [r["extra"]["event_type"] for r in mine] == [
        "workflow_start",
        "node_start",
        "node_end",
        "node_start",
        "node_end",
        "workflow_end",
    ]
    assert all(r["extra"]["workflow_name"] == "onboarding" for r in mine)
    assert all("s3cret-pw" not in r["message"] for r in mine)
    assert "hello ann" in mine[4]["message"]


async def test_node_error_logs_never_show_local_values():
    """A failing node's locals (here a password) never reach a diagnose=True sink."""
    from loguru import logger

    @node
    async def login(password: str) -> None:
        if password:
            raise PermissionError("login refused")

    messages: list[str] = []
    sink = logger.add(messages.append, format="{message}", diagnose=True, backtrace=True)
    try:
        await Workflow("login", nodes=[login]).run(
            {"password": "hunter2-SECRET"}, callbacks=[LoggingCallback()]
        )
    finally:
        logger.remove(sink)
    text = "".join(messages)
    assert "login refused" in text
    assert "Traceback" in text
    assert "hunter2-SECRET" not in text


async def test_a_huge_exception_message_gives_capped_records(records):
    """A 20 MB exception message: the error record, its bound fields and the manager's
    isolation record of a handler raising one are cut, the secret after the cut included."""
    # a user pattern's match that the cut at 64,000 characters runs through
    huge = "M" * 63_990 + " sk-" + "A1b2C3d4" * 3 + " " + "M" * 20_000_000

    @node
    def boom() -> None:
        raise ValueError(huge)

    class Raising(LoggingCallback):
        async def on_workflow_start(self, workflow_id: str, input_data: Any) -> None:
            raise ValueError(huge)

    flowhooks.redaction(patterns=[r"sk-[A-Za-z0-9]{24}"])
    try:
        await Workflow("w", nodes=[boom]).run(callbacks=[LoggingCallback(), Raising()])
    finally:
        flowhooks.reset_redaction()
    error = next(r for r in records if r["extra"].get("event_type") == "error")
    assert len(error["message"]) < 200_000
    assert "in boom" in error["message"]  # the traceback's frames are kept
    assert len(error["extra"]["error_message"]) < 70_000
    isolated = next(r for r in records if "Raising" in r["message"] and r["level"].name == "ERROR")
    assert len(isolated["message"]) < 200_000
    assert "__flowhooks_truncated__" in isolated["message"]
    assert not any("sk-A1b2" in r["message"] for r in records)
    assert not any("sk-A1b2" in r["extra"].get("error_message", "") for r in records)


async def test_a_cut_traceback_keeps_the_frames_that_raised(records):
    """A huge message of the cause fills the traceback's head: its tail, where the error
    was raised, is kept too."""

    @node
    def orders() -> None:
        try:
            raise ValueError("bad body: " + "B" * 100_000)
        except ValueError as cause:
            raise RuntimeError("orders API unusable") from cause

    await Workflow("w", nodes=[orders]).run(callbacks=[LoggingCallback()])
    error = next(r for r in records if r["extra"].get("event_type") == "error")
    assert 'raise RuntimeError("orders API unusable") from cause' in error["message"]
    assert "direct cause" in error["message"]
    assert len(error["message"]) < 140_000
