"""The command line against values that are well-formed but impossible: durations past any
date, NaN and infinite seconds, a database directory that does not exist, a database missing
its outbox table, and a handler target without its attribute. One line each, no traceback."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowhooks._cli.app import create_app
from flowhooks._cli.errors import EXIT_BAD_INPUT, EXIT_FAILED


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(create_app(), list(args), catch_exceptions=False)
    assert "Traceback" not in result.stderr
    return result.exit_code, result.stderr


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    code, err = invoke("db", "upgrade", "--db", url)
    assert code == 0, err
    return url


@pytest.mark.parametrize("duration", ["99999999999d", "9999999d"])
def test_a_duration_past_any_date_is_named(db: str, duration: str) -> None:
    code, err = invoke("history", "prune", "--older-than", duration, "--db", db)
    assert code == EXIT_BAD_INPUT
    assert "--older-than is out of range" in err


@pytest.mark.parametrize("seconds", ["nan", "inf", "1e400", "0", "-5"])
def test_seconds_must_be_positive_and_finite(db: str, seconds: str) -> None:
    code, err = invoke("sweep", "--stale-after", seconds, "--db", db)
    assert code == EXIT_BAD_INPUT
    assert "--stale-after takes a positive, finite number of seconds" in err
    code, err = invoke("deliver", "hooks:Ok", "--consumer", "c", "--lease", seconds, "--db", db)
    assert code == EXIT_BAD_INPUT
    assert "--lease takes a positive, finite number of seconds" in err


@pytest.mark.parametrize("command", [("runs",), ("history",)])
def test_reading_a_database_in_a_missing_directory_is_an_error(command: tuple[str, ...]) -> None:
    code, err = invoke(*command, "--db", "sqlite:////nonexistent-flowhooks-dir/x.db")
    assert code == EXIT_BAD_INPUT
    assert "the directory '/nonexistent-flowhooks-dir' does not exist" in err


def test_deliver_once_fails_when_it_cannot_claim(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hooks_once.py").write_text(
        "from flowhooks import BaseCallbackHandler\n"
        "class Ok(BaseCallbackHandler):\n"
        "    async def on_workflow_end(self, workflow_id, output_data):\n"
        "        return None\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        conn.execute("DROP TABLE flowhooks_outbox")
    code, err = invoke("deliver", "hooks_once.py:Ok", "--consumer", "c", "--once", "--db", db)
    assert code == EXIT_FAILED
    assert "cannot claim rows" in err
    assert "no such table: flowhooks_outbox" in err


def test_a_handler_target_without_its_attribute_names_a_handler(db: str) -> None:
    code, err = invoke("deliver", "hooks", "--consumer", "c", "--db", db)
    assert code == EXIT_BAD_INPUT
    assert "FILE.py:HANDLER or package.module:HANDLER" in err


@pytest.mark.parametrize("data", ['{"add": 4', "yes", "[1,", "{'a': 1}"])
def test_resume_data_must_be_json(db: str, data: str) -> None:
    """`resume --data` is strict JSON (a resume is one-shot): bad input, before any lookup."""
    code, err = invoke("resume", "0123abcd", "--data", data, "--db", db)
    assert code == EXIT_BAD_INPUT
    [line] = err.splitlines()
    assert line.startswith("flowhooks: error: --data is not valid JSON (")
    assert "quote it for the shell" in line.lower()


@pytest.mark.parametrize(
    ("command", "option"), [("history", "--older-than"), ("sweep", "--retention")]
)
def test_a_duration_without_a_unit_is_refused_with_the_units(
    db: str, command: str, option: str
) -> None:
    """``30`` meant as days would delete nearly everything as seconds: a unit is required."""
    args = ["history", "prune"] if command == "history" else ["sweep"]
    code, err = invoke(*args, option, "30", "--db", db)
    assert code == EXIT_BAD_INPUT
    assert f"{option} 30 has no unit: say 30d (days)" in err


def test_a_run_named_prune_is_shown_by_history(tmp_path: Path) -> None:
    """``flowhooks history prune`` without --older-than shows a run whose id is 'prune'
    (run ids are the caller's); with no such run it asks for --older-than."""
    import asyncio

    from flowhooks import Workflow, node
    from flowhooks.handlers.history import HistoryCallback

    @node
    def a() -> int:
        return 1

    url = f"sqlite:///{tmp_path / 'named.db'}"

    def record(run_id: str) -> None:
        async def go() -> None:
            history = HistoryCallback(url)
            await Workflow("w", nodes=[a]).run(callbacks=[history], run_id=run_id)
            await history.aclose()

        asyncio.run(go())

    code, err = invoke("history", "prune", "--db", url)
    assert code == EXIT_BAD_INPUT
    assert "history prune needs --older-than DURATION" in err
    record("prune-not")
    code, err = invoke("history", "prune", "--db", url)
    assert code == EXIT_BAD_INPUT  # a prefix of another run's id is not that run
    record("prune")
    result = CliRunner().invoke(create_app(), ["history", "prune", "--db", url, "--json"])
    assert result.exit_code == 0, result.stderr
    assert '"run_id": "prune"' in result.stdout


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
@pytest.mark.parametrize(
    "command",
    [("history",), ("runs",), ("sweep",), ("dead-letters",), ("resume", "r1", "--data", "{}")],
)
def test_an_in_memory_database_is_refused_by_the_commands_that_read(
    url: str, command: tuple[str, ...]
) -> None:
    """A command reading what runs recorded says an in-memory database holds nothing, with
    the URL as typed; no SQL statement in the message."""
    code, err = invoke(*command, "--db", url)
    assert code == EXIT_BAD_INPUT
    assert f"{url!r} is an in-memory SQLite database" in err
    assert "SELECT" not in err
