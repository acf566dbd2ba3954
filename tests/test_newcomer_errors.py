"""The mistakes a newcomer makes first get errors that say what was wrong and how to fix it.

A typo in a parameter meant to take a node's result, a workflow input passed
as a keyword, a short run id given to the Python API, a mistyped ``--db``, an
ambiguous id prefix, and listing the suspended runs that can still be resumed.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from flowhooks import MissingInputError, NotResumable, Suspend, Workflow, current_run, node
from flowhooks._cli.app import create_app
from flowhooks._cli.errors import EXIT_BAD_INPUT, EXIT_FAILED

pytest.importorskip("sqlalchemy")


@node
def extract(source: str) -> list[int]:
    return [1, 2, 3]


@node
def total(extrct: list[int]) -> int:  # a typo for the node "extract"
    return sum(extrct)


def test_a_typo_for_a_node_is_named_as_such() -> None:
    wf = Workflow("etl", nodes=[extract, total])
    with pytest.raises(
        MissingInputError, match=r"'extrct' \(needed by total\) \(a typo for the node 'extract'\?\)"
    ):
        wf.run_sync({"source": "orders.csv"})


def test_an_input_passed_as_a_keyword_says_where_inputs_go() -> None:
    wf = Workflow("etl", nodes=[extract])
    where = r"; the workflow's inputs go in a mapping: run_sync\(\{'source': \.\.\.\}\)"
    with pytest.raises(TypeError, match=r"got an unexpected keyword argument 'source'" + where):
        wf.run_sync(source="orders.csv")
    with pytest.raises(TypeError, match=r"'callbaks' \(it takes callbacks, runner, "):
        wf.run_sync({"source": "x"}, callbaks=[])


@node
def approve(source: str) -> str:
    if current_run().resume_data is None:
        raise Suspend("waiting for a manager")
    return "approved"


def test_a_short_run_id_given_to_resume_names_the_runs_it_begins(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    wf = Workflow("approval", nodes=[approve])
    suspended = wf.run_sync({"source": "x"}, store=store, run_id="3a8497fb11fc-4e2d-full-id")
    assert suspended.status == "suspended"
    with pytest.raises(
        NotResumable, match=r"begins '3a8497fb11fc-4e2d-full-id': pass the whole run id"
    ):
        wf.resume_sync("3a8497fb11fc", {"ok": True}, store=store)
    with pytest.raises(NotResumable, match=r"it never suspended"):
        wf.resume_sync("ffff", {"ok": True}, store=store)


def test_resume_sync_takes_what_resume_takes(tmp_path: Path) -> None:
    """``resume`` passes options it does not name (``timeout=``) on: so does resume_sync."""
    wf = Workflow("approval", nodes=[approve])
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    suspended = wf.run_sync({"source": "x"}, store=store)
    resumed = wf.resume_sync(suspended.run_id, True, store=store, timeout=30)
    assert resumed.status == "succeeded"


# -- the command line ----------------------------------------------------------------------------

PIPELINE = """
from flowhooks import Suspend, Workflow, node

@node
def extract(source: str) -> list[int]:
    return [1, 2, 3]

workflow = Workflow("etl", nodes=[extract])

@node
def wait(source: str) -> str:
    raise Suspend("approval")

waiting = Workflow("waiting", nodes=[wait])
"""


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "newcomer_pipeline.py").write_text(textwrap.dedent(PIPELINE))
    return tmp_path


def _cli(*args: str) -> Result:
    result = CliRunner().invoke(create_app(), list(args), catch_exceptions=False)
    assert "Traceback" not in result.stderr
    return result


def test_run_names_the_input_a_typo_was_given_as(here: Path) -> None:
    result = _cli("run", "newcomer_pipeline.py:workflow", "--input", "sourec=orders.csv")
    assert result.exit_code == EXIT_BAD_INPUT
    assert "source (given as 'sourec'?)" in result.stderr


def test_a_mistyped_db_is_an_error_but_the_default_may_not_exist_yet(here: Path) -> None:
    for command in ("history", "runs"):
        fresh = _cli(command)
        assert fresh.exit_code == 0
        assert "No runs" in fresh.stdout
        typo = _cli(command, "--db", "sqlite:///histroy.db")
        assert typo.exit_code == EXIT_BAD_INPUT
        assert "no history database at 'histroy.db'" in typo.stderr
    assert not (here / "histroy.db").exists()


def _record(here: Path, wf: Workflow, run_id: str) -> None:
    from flowhooks.handlers import HistoryCallback

    url = f"sqlite:///{here / 'flowhooks.db'}"
    wf.run_sync({"source": "x"}, callbacks=[HistoryCallback(url)], store=url, run_id=run_id)


def test_history_says_whether_a_prefix_matches_no_run_or_several(here: Path) -> None:
    for run_id in ("abc-1", "abc-2"):
        _record(here, Workflow("etl", nodes=[extract]), run_id)
    several = _cli("history", "abc")
    assert several.exit_code == EXIT_FAILED
    expected = "'abc' begins several runs ('abc-1', 'abc-2'); give more of the run id"
    assert expected in several.stderr
    none = _cli("history", "zzz")
    assert "no run 'zzz' in 'sqlite:///flowhooks.db'" in none.stderr
    assert _cli("history", "ABC").exit_code == EXIT_FAILED
    assert _cli("history", "abc-2").exit_code == 0


def test_runs_waiting_lists_only_suspended_runs_not_resumed(here: Path) -> None:
    from flowhooks.handlers import HistoryCallback

    url = f"sqlite:///{here / 'flowhooks.db'}"
    wf = Workflow("approval", nodes=[approve])
    for run_id in ("first", "second"):
        _record(here, wf, run_id)
    wf.resume_sync("first", True, store=url, callbacks=[HistoryCallback(url)])
    listed = _cli("runs", "--waiting", "--json")
    waiting = [run["run_id"] for run in json.loads(listed.stdout)]
    assert waiting == ["second"]
    suspended = _cli("runs", "--status", "suspended", "--json")
    statuses = {run["run_id"] for run in json.loads(suspended.stdout)}
    assert statuses >= {"first", "second"}
    with pytest.raises(NotResumable, match=r"'flowhooks runs --waiting' lists those still"):
        wf.resume_sync("first", True, store=url)
    wrong = _cli("runs", "--waiting", "--status", "failed")
    assert wrong.exit_code == EXIT_BAD_INPUT


def test_an_input_no_node_takes_is_a_warning_naming_the_close_one(logs: list[str]) -> None:
    @node
    def load(source: str, region: str = "eu") -> str:
        return f"{source}@{region}"

    wf = Workflow("etl", nodes=[extract, load])
    result = wf.run_sync({"source": "x", "regoin": "us"})
    assert result.status == "succeeded"
    assert result.outputs["load"] == "x@eu"
    [warning] = [line for line in logs if line.startswith("WARNING")]
    assert "workflow 'etl' takes no input 'regoin' (did you mean 'region'?)" in warning
    logs.clear()
    wf.run_sync({"source": "x", "region": "us"}, outputs=["extract"])  # taken, not selected
    assert not [line for line in logs if line.startswith("WARNING")]
