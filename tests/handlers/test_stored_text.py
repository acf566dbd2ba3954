"""What the history database and the outbox keep of hostile text: secrets redacted in outbox
rows, recorded metadata and dead letters (and the CLI's JSON of them), lone surrogates stored
escaped instead of losing the event's transaction, and error messages capped."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from flowhooks import BaseCallbackHandler, DurableCallback, Workflow, node
from flowhooks.handlers.history import HistoryCallback

from .conftest import Receiver
from .test_sweep import cli, query


class Quiet(BaseCallbackHandler):
    async def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
        return None


@node
def leaky(password: str) -> dict[str, str]:
    return {"api_key": "SEKRIT_OUT"}


async def test_outbox_rows_and_recorded_metadata_are_redacted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    durable = DurableCallback(Quiet(), name="c", url=url, deliver=False)
    wf = Workflow("w", nodes=[leaky], callbacks=[durable])
    result = await wf.run({"password": "SEKRIT_IN"}, metadata={"db_password": "SEKRIT_MD"})
    assert result.outputs["leaky"] == {"api_key": "SEKRIT_OUT"}  # the run itself is untouched
    rows = [row[0] for row in query(url, "SELECT event FROM flowhooks_outbox")]
    assert len(rows) == 4
    assert not any("SEKRIT" in row for row in rows)
    stored = {json.loads(row)["type"]: json.loads(row) for row in rows}
    assert stored["workflow_start"]["payload"] == {"password": "***"}
    assert stored["node_end"]["payload"] == {"api_key": "***"}
    assert stored["workflow_start"]["metadata"] == {"db_password": "***"}
    (metadata,) = query(url, "SELECT run_metadata FROM flowhooks_runs")[0]
    assert "SEKRIT" not in str(metadata)


async def test_redact_false_keeps_the_outbox_rows_as_sent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    durable = DurableCallback(Quiet(), name="c", url=url, deliver=False, redact=False)
    await Workflow("w", nodes=[leaky], callbacks=[durable]).run({"password": "SEKRIT_IN"})
    rows = [row[0] for row in query(url, "SELECT event FROM flowhooks_outbox")]
    assert any("SEKRIT_IN" in row for row in rows)


async def test_dead_letters_keep_and_list_their_error_without_credentials(
    tmp_path: Path, logs: list[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"

    class Failing(BaseCallbackHandler):
        async def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            raise RuntimeError("POST https://u:SEKRIT_ERR@hooks.example failed")

    durable = DurableCallback(Failing(), name="c", url=url, max_attempts=1, events=["workflow_end"])
    await Workflow("w", nodes=[leaky], callbacks=[durable]).run(
        {"password": "x"}, metadata={"api_token": "SEKRIT_MD"}
    )
    await durable.drain(timeout=10)
    await durable.aclose()
    (error,) = query(url, "SELECT last_error FROM flowhooks_outbox WHERE status = 'dead'")[0]
    assert "hooks.example" in error
    assert "SEKRIT_ERR" not in error
    assert not any("SEKRIT" in line for line in logs)
    listed = await asyncio.to_thread(cli, "dead-letters", "--db", url, "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "SEKRIT" not in listed.stdout
    assert json.loads(listed.stdout)[0]["event_type"] == "workflow_end"


async def test_a_lone_surrogate_in_an_error_is_stored_escaped_with_the_outbox_rows(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    got: list[str] = []

    class Alerts(BaseCallbackHandler):
        async def on_error(self, error_info: Any) -> None:
            got.append("error")

        async def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            got.append("workflow_end")

    @node
    def listing() -> int:
        raise ValueError("bad file name \udcff.csv")  # as os.listdir gives undecodable names

    durable = DurableCallback(Alerts(), name="alerts", url=url)
    result = await Workflow("w", nodes=[listing], callbacks=[HistoryCallback(url), durable]).run()
    await durable.drain(timeout=10)
    await durable.aclose()
    assert result.status == "failed"
    assert sorted(got) == ["error", "workflow_end"]
    assert query(url, "SELECT status FROM flowhooks_runs") == [("failed",)]
    (message,) = query(url, "SELECT message FROM flowhooks_errors")[0]
    assert message == "bad file name \\udcff.csv"


async def test_error_messages_are_capped_in_the_history(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"

    @node
    def huge() -> int:
        raise ValueError("M" * 2_000_000)

    await Workflow("w", nodes=[huge], callbacks=[HistoryCallback(url)]).run()
    for table, column in [
        ("flowhooks_errors", "message"),
        ("flowhooks_runs", "error_message"),
        ("flowhooks_node_executions", "error_message"),
    ]:
        ((length,),) = query(url, f"SELECT length({column}) FROM {table}")
        assert length < 100_000, table
    (message,) = query(url, "SELECT message FROM flowhooks_errors")[0]
    assert "__flowhooks_truncated__" in message


async def test_alerts_and_log_lines_with_a_lone_surrogate_are_sent_escaped(
    receiver: Receiver, tmp_path: Path
) -> None:
    from loguru import logger

    from flowhooks.handlers import LoggingCallback, NotificationCallback
    from flowhooks.handlers.notification import WebhookNotifier

    @node(critical=True)
    def odd() -> int:
        raise ValueError("bad \ud800 name")

    log_file = tmp_path / "run.log"
    sink = logger.add(log_file, level="INFO", encoding="utf-8")
    try:
        notifier = WebhookNotifier(receiver.url, backoff=0.01, max_backoff=0.02)
        alerts = NotificationCallback(notifier)
        result = await Workflow("w", nodes=[odd]).run({}, callbacks=[alerts, LoggingCallback()])
        await alerts.aclose()
    finally:
        logger.remove(sink)
    assert result.status == "failed"
    bodies = [request.json() for request in receiver.requests]
    assert [body["fields"]["kind"] for body in bodies] == ["critical", "failure"]
    assert "bad \\ud800 name" in bodies[0]["message"]
    assert "node 'odd' (attempt 1) failed" in log_file.read_text(encoding="utf-8")


def test_the_database_file_alone_holds_the_history_once_the_process_exits(
    tmp_path: Path,
) -> None:
    """At exit the writer closes its database: SQLite folds the write-ahead log into the file
    and removes ``-wal``/``-shm``, so copying the file copies the history."""
    import shutil
    import subprocess
    import sys

    script = (
        "from flowhooks import Workflow, node\n"
        "from flowhooks.handlers import HistoryCallback\n"
        "@node\n"
        "def a() -> int:\n"
        "    return 1\n"
        "Workflow('w', nodes=[a], callbacks=[HistoryCallback('sqlite:///h.db')]).run_sync()\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, timeout=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.db"]
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(tmp_path / "h.db", copy / "h.db")
    assert query(f"sqlite:///{copy / 'h.db'}", "SELECT status FROM flowhooks_runs") == [
        ("succeeded",)
    ]


async def test_a_cancel_reason_is_stored_without_credentials(tmp_path: Path) -> None:
    from flowhooks import current_run

    @node
    async def stop() -> None:
        current_run().cancel("operator: retry with https://ops:hunter2@db.example/x token=abc123")
        await asyncio.sleep(10)

    url = f"sqlite:///{tmp_path / 'h.db'}"
    history = HistoryCallback(url)
    result = await Workflow("etl", nodes=[stop]).run(callbacks=[history])
    await history.aclose()
    assert result.status == "cancelled"
    [(reason,)] = query(url, "SELECT cancel_reason FROM flowhooks_runs")
    assert "hunter2" not in reason
    assert "abc123" not in reason
    assert reason.startswith("operator: retry with https://***@db.example/x")
