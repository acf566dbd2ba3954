"""Secrets in run data larger than the size cap, and in flowhooks' own failure logs.

A payload over the cap is kept as a prefix of its JSON text; a message over
it is cut with a marker. Both must leave without the secret: a secret key's
value of any shape (a list, an object) in the preview, a URL's password the
cut parted from its ``@``. Checked on the bytes of real SQLite files (WAL
included), on bodies received over loopback HTTP, on the command line's
output, and on log records of failing sinks and dead-letter hooks.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from flowhooks import BaseCallbackHandler, BatchedCallback, DurableCallback, Event, Workflow, node
from flowhooks.handlers import HistoryCallback, LoggingCallback, WebhookCallback

from .conftest import Receiver

SECRET = "pw-S3CR3T-cut"
ROWS = [{"id": i, "name": f"item {i}"} for i in range(4_000)]  # some 100,000 chars of JSON
URL_IN_TEXT = f"postgresql://bob:{SECRET}@db.internal/app"


def big_output() -> dict[str, Any]:
    """Secrets under secret-named keys, in shapes text rules cannot see, then many rows."""
    return {
        "auth": ["bob", SECRET + "-in-a-list"],
        "credentials": {"user": "bob", "pass": SECRET + "-in-an-object"},
        "token": SECRET,
        "log": f"connected with {SECRET}",  # a secret key's string, hidden here too
        "rows": ROWS,
    }


@node
def fetch() -> dict[str, Any]:
    return big_output()


BIG = Workflow("big", nodes=[fetch])


def file_bytes(path: Path) -> bytes:
    """Every byte of a SQLite database: its file, WAL and shared memory."""
    return b"".join(
        Path(f"{path}{suffix}").read_bytes()
        for suffix in ("", "-wal", "-shm", "-journal")
        if Path(f"{path}{suffix}").exists()
    )


async def test_history_keeps_no_secret_of_a_payload_over_the_cap(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    history = HistoryCallback(f"sqlite:///{db}")
    await BIG.run(callbacks=[history])
    await history.aclose()
    data = file_bytes(db)
    assert b"__flowhooks_truncated__" in data  # the output was cut: the case under test
    assert SECRET.encode() not in data


async def test_history_cuts_an_error_after_redacting_it(tmp_path: Path) -> None:
    """A message cut between a URL's password and its '@' keeps no part of the password."""
    cap = 2_000

    @node
    def boom() -> None:
        raise RuntimeError("x" * (cap - 30) + f" {URL_IN_TEXT} failed")

    db = tmp_path / "h.db"
    history = HistoryCallback(f"sqlite:///{db}", max_payload_chars=cap)
    await Workflow("w", nodes=[boom]).run(callbacks=[history])
    await history.aclose()
    data = file_bytes(db)
    assert b"__flowhooks_truncated__" in data
    assert b"pw-S3C" not in data


async def test_history_stores_names_without_credentials(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    history = HistoryCallback(f"sqlite:///{db}")
    named = Workflow(f"sync {URL_IN_TEXT}", nodes=[node(lambda: 1, name="one")])
    await named.run(callbacks=[history], resource_id=f"https://x/?token={SECRET}")
    await history.aclose()
    assert SECRET.encode() not in file_bytes(db)


async def test_webhook_body_keeps_no_secret_of_an_output_over_the_cap(receiver: Receiver) -> None:
    hook = WebhookCallback(receiver.url, retries=0)
    await BIG.run(callbacks=[hook])
    await hook.aclose()
    [request] = receiver.requests
    assert b"__flowhooks_truncated__" in request.body
    assert SECRET.encode() not in request.body


async def test_outbox_rows_keep_no_secret_of_a_payload_over_the_cap(tmp_path: Path) -> None:
    db = tmp_path / "o.db"

    class Quiet(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            pass

    durable = DurableCallback(Quiet(), name="quiet", url=f"sqlite:///{db}", deliver=False)
    await BIG.run(callbacks=[durable])
    await durable.aclose()
    data = file_bytes(db)
    assert b"__flowhooks_truncated__" in data
    assert SECRET.encode() not in data


# -- the command line ---------------------------------------------------------------------


PIPELINE = """
from flowhooks import Workflow, node

@node
def fetch() -> dict:
    secret = "pw-S3CR3T" + "-cut"
    return {"auth": ["bob", secret], "rows": [{"id": i} for i in range(%d)]}

big = Workflow("big", nodes=[fetch])
"""


def flowhooks_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), *sys.path]), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "flowhooks", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(("rows", "json_output"), [(8_000, True), (8_000, False), (3, False)])
def test_cli_run_output_keeps_no_secret(tmp_path: Path, rows: int, json_output: bool) -> None:
    """``flowhooks run`` (``--json``, and the summary's final output) over the cap and under."""
    (tmp_path / "pipe.py").write_text(PIPELINE % rows)
    done = flowhooks_cli("run", "pipe.py:big", *(["--json"] if json_output else []), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "auth" in done.stdout
    assert SECRET not in done.stdout + done.stderr


def test_cli_history_json_redacts_what_redact_false_stored(tmp_path: Path) -> None:
    """A record shown whole, its stored preview read as JSON: no secret, and no cut of the
    record itself into one preview."""
    history = HistoryCallback(f"sqlite:///{tmp_path / 'raw.db'}", redact=False)
    result = BIG.run_sync(callbacks=[history])
    asyncio.run(history.aclose())
    shown = flowhooks_cli(
        "history", result.run_id, "--db", "sqlite:///raw.db", "--json", cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["run"]["run_id"] == result.run_id
    assert SECRET not in shown.stdout


# -- flowhooks' own failure logs ----------------------------------------------------------


FAILURE = f"POST https://bob:{SECRET}@collector.example/v1 failed; Authorization: Bearer {SECRET}"


@pytest.fixture
def records() -> Iterator[list[str]]:
    """Every loguru record in full: message, bound fields and exception, as JSON."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="TRACE", serialize=True)
    logger.enable("flowhooks")
    try:
        yield lines
    finally:
        logger.remove(sink)


async def test_batched_retry_and_dead_letter_logs_keep_no_secret(records: list[str]) -> None:
    async def sink(batch: list[Event]) -> None:
        raise ConnectionError(FAILURE)

    batched = BatchedCallback(sink, batch_size=1, retry_attempts=2, retry_backoff=0.0)
    await Workflow("w", nodes=[node(lambda: 1, name="one")]).run(callbacks=[batched])
    await batched.aclose()
    text = "\n".join(records)
    assert "retry 1 of" in text
    assert "dead-lettered" in text
    assert SECRET not in text


async def test_a_failing_dead_letter_hook_is_logged_without_secret(
    tmp_path: Path, records: list[str]
) -> None:
    class Refusing(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            raise RuntimeError("refused")

        async def on_dead_letter(self, event: Event, error: str) -> None:
            raise ConnectionError(FAILURE)

    durable = DurableCallback(
        Refusing(), name="refusing", url=f"sqlite:///{tmp_path / 'd.db'}", max_attempts=1
    )
    await Workflow("w", nodes=[node(lambda: 1, name="one")]).run(callbacks=[durable])
    assert await durable.drain(timeout=30)
    await durable.aclose()
    text = "\n".join(records)
    assert "on_dead_letter raised ConnectionError" in text
    assert SECRET not in text


async def test_logging_binds_names_and_ids_without_credentials(records: list[str]) -> None:
    named = Workflow(f"sync {URL_IN_TEXT}", nodes=[node(lambda: 1, name="one")])
    await named.run(callbacks=[LoggingCallback()])
    text = "\n".join(records)
    assert '"workflow_name": "sync postgresql://***@db.internal/app"' in text
    assert SECRET not in text
