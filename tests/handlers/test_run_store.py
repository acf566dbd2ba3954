"""The database RunStore: suspend in one process and resume in another, on SQLite and
PostgreSQL; one resume wins a race across processes; a resume that dies after its claim frees
the run when its lease runs out; expired suspensions are swept; `flowhooks resume`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from flowhooks import NotResumable
from flowhooks.handlers import SQLRunStore

from .test_sweep import cli, query

REPO = Path(__file__).resolve().parents[2]

FLOW = textwrap.dedent(
    """
    import os
    from flowhooks import Suspend, Workflow, current_run, node

    def mark(name):
        with open(os.environ["RAN"], "a") as out:
            out.write(f"{name} {os.getpid()}\\n")

    @node
    def quote(amount: int) -> dict:
        mark("quote")
        return {"total": amount}

    @node
    def approve(quote: dict) -> bool:
        mark("approve")
        ctx = current_run()
        if ctx.resume_data is None:
            raise Suspend("needs approval", payload={"amount": quote["total"]},
                          expires_in=float(os.environ.get("EXPIRES_IN", "3600")))
        if os.environ.get("DIE_AFTER_CLAIM"):
            os._exit(9)
        return ctx.resume_data["approved"]

    @node
    def ship(approve: bool) -> str:
        mark("ship")
        return "shipped" if approve else "held"

    workflow = Workflow("orders", nodes=[quote, approve, ship])
    """
)

SUSPEND = textwrap.dedent(
    """
    import sys
    from flow import workflow
    from flowhooks.handlers.history import HistoryCallback
    url = sys.argv[1]
    result = workflow.run_sync({"amount": 5}, store=url, callbacks=[HistoryCallback(url)])
    assert result.status == "suspended", result
    print(result.run_id)
    """
)

RESUME = textwrap.dedent(
    """
    import json, sys, time
    from flow import workflow
    from flowhooks import NotResumable
    from flowhooks.handlers import SQLRunStore
    from flowhooks.handlers.history import HistoryCallback
    url, run_id, start, lease = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    store = SQLRunStore(url, lease=lease)
    while time.time() < start:
        time.sleep(0.001)
    try:
        result = workflow.resume_sync(run_id, {"approved": True}, store=store,
                                      callbacks=[HistoryCallback(url)])
    except NotResumable as exc:
        print(json.dumps({"refused": str(exc)}))
    else:
        print(json.dumps({"status": result.status, "run_id": result.run_id,
                          "resumed_from": result.resumed_from, "outputs": result.outputs}))
    """
)


class Folder:
    """A directory with the flow and the scripts, and how to run them as processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "flow.py").write_text(FLOW)
        (path / "suspend.py").write_text(SUSPEND)
        (path / "resume.py").write_text(RESUME)
        self.ran = path / "ran.txt"
        self.env = {
            **os.environ,
            "PYTHONPATH": f"{REPO}{os.pathsep}{path}",
            "RAN": str(self.ran),
        }

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=self.path,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=self.path,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def suspend(self, url: str, **env: str) -> str:
        done = self.run("suspend.py", url, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def ran_nodes(self) -> list[str]:
        return [line.split()[0] for line in self.ran.read_text().splitlines()]


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    return Folder(tmp_path)


@pytest.mark.slow
def test_suspend_in_one_process_resume_in_another(db_url: str, folder: Folder) -> None:
    """The resumed run restores completed nodes (not run again) and reruns the suspended one."""
    run_id = folder.suspend(db_url)
    resumed = folder.run("resume.py", db_url, run_id, "0", "30")
    assert resumed.returncode == 0, resumed.stderr
    outcome = json.loads(resumed.stdout)
    assert outcome["status"] == "succeeded"
    assert outcome["resumed_from"] == run_id
    assert outcome["outputs"] == {"quote": {"total": 5}, "approve": True, "ship": "shipped"}
    assert folder.ran_nodes() == ["quote", "approve", "approve", "ship"]
    again = folder.run("resume.py", db_url, run_id, "0", "30")
    assert json.loads(again.stdout) == {
        "refused": f"run {run_id!r} was already resumed by run {outcome['run_id']!r}; "
        "a suspended run resumes once ('flowhooks runs --waiting' lists those still waiting)"
    }


@pytest.mark.slow
def test_two_processes_racing_to_resume_one_run(db_url: str, folder: Folder) -> None:
    """Two processes resuming the same run at the same instant: one resumes, one is refused
    naming the winner."""
    run_id = folder.suspend(db_url)
    start = str(time.time() + 2.0)
    procs = [folder.start("resume.py", db_url, run_id, start, "30") for _ in range(2)]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outcomes.append(json.loads(out))
    [won] = [o for o in outcomes if "status" in o]
    [lost] = [o for o in outcomes if "refused" in o]
    assert won["status"] == "succeeded"
    assert f"already resumed by run {won['run_id']!r}" in lost["refused"]
    assert folder.ran_nodes().count("ship") == 1


@pytest.mark.slow
def test_a_resume_that_dies_after_its_claim_frees_the_run_after_the_lease(
    tmp_path: Path, folder: Folder
) -> None:
    """A process killed after claiming a run stops renewing the claim: until the lease runs out
    the run stays taken; then a later resume proceeds."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    run_id = folder.suspend(url)
    died = folder.run("resume.py", url, run_id, "0", "3.0", env={"DIE_AFTER_CLAIM": "1"})
    assert died.returncode == 9
    [(status, claimant, lease_until)] = query(
        url, "SELECT status, resumed_by, lease_until FROM flowhooks_suspended_runs"
    )
    assert status == "claimed"
    with pytest.raises(NotResumable, match=f"already resumed by run {claimant!r}"):
        asyncio.run(SQLRunStore(url).claim(run_id, "too-early"))
    time.sleep(max(0.0, lease_until - time.time()) + 0.2)
    later = folder.run("resume.py", url, run_id, "0", "1.0")
    outcome = json.loads(later.stdout)
    assert outcome["status"] == "succeeded"
    assert outcome["resumed_from"] == run_id
    assert query(url, "SELECT status, resumed_by FROM flowhooks_suspended_runs") == [
        ("resumed", outcome["run_id"])
    ]
    assert folder.ran_nodes() == ["quote", "approve", "approve", "approve", "ship"]


@pytest.mark.slow
def test_an_expired_suspension_is_cancelled_by_the_sweep(tmp_path: Path, folder: Folder) -> None:
    """A run suspended with expires_in is cancelled by the sweep once expired, and refused."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    run_id = folder.suspend(url, EXPIRES_IN="0.2")
    time.sleep(0.5)
    swept = cli("sweep", "--db", url, cwd=tmp_path)
    assert f"cancelled 1 expired suspended run(s): {run_id}" in swept.stdout
    listed = json.loads(cli("runs", "--db", url, "--json", cwd=tmp_path).stdout)
    assert [(r["run_id"], r["status"]) for r in listed] == [(run_id, "cancelled")]
    refused = folder.run("resume.py", url, run_id, "0", "30")
    assert "expired" in json.loads(refused.stdout)["refused"]


@pytest.mark.slow
def test_cli_run_then_resume(tmp_path: Path, folder: Folder) -> None:
    """`flowhooks run` records the target; `flowhooks resume RUN_ID --data` continues the run;
    a second resume is refused in one line."""
    url = f"sqlite:///{tmp_path / 'h.db'}"

    def flowhooks(*args: str) -> subprocess.CompletedProcess[str]:
        return folder.run("-m", "flowhooks", *args)

    started = flowhooks("run", "flow.py:workflow", "-i", "amount=9", "--db", url)
    assert started.returncode == 1  # suspended is not succeeded
    [suspended] = json.loads(
        flowhooks("runs", "--db", url, "--status", "suspended", "--json").stdout
    )
    assert "suspended at node 'approve'" in started.stdout  # and how to go on:
    assert f"flowhooks resume {suspended['run_id'][:12]} --data JSON" in started.stdout
    wide = {"COLUMNS": "160"}
    table = folder.run("-m", "flowhooks", "runs", "--db", url, "--status", "suspended", env=wide)
    assert "waiting at approve" in table.stdout  # the node it is suspended at
    resumed = flowhooks(  # by the short id the summary shows
        "resume", suspended["run_id"][:12], "--data", '{"approved": false}', "--db", url, "--json"
    )
    assert resumed.returncode == 0, resumed.stderr
    result: dict[str, Any] = json.loads(resumed.stdout)
    assert result["status"] == "succeeded"
    assert result["outputs"]["ship"] == "held"
    again = flowhooks("resume", suspended["run_id"], "--db", url, "-q")
    assert again.returncode == 1
    assert "already resumed by run" in again.stderr
    assert "Traceback" not in again.stderr
    unknown = flowhooks("resume", "nope", "--db", url)
    assert unknown.returncode == 1
    assert "no suspended run 'nope'" in unknown.stderr

    # a run suspended outside the CLI has no recorded target: --workflow names it
    other = folder.suspend(url)
    missing = flowhooks("resume", other, "--db", url)
    assert missing.returncode == 2
    assert "--workflow" in missing.stderr
    named = flowhooks(
        "resume",
        other,
        "--db",
        url,
        "--workflow",
        "flow.py:workflow",
        "--data",
        '{"approved": true}',
    )
    assert named.returncode == 0, named.stderr
    assert "shipped" in named.stdout


@pytest.mark.slow
def test_cli_resume_refuses_invalid_json_data_and_keeps_the_run_resumable(
    tmp_path: Path, folder: Folder
) -> None:
    """`resume --data` takes JSON only: a malformed value exits 2 in one line, before the run
    is claimed (the node never sees it), so the resume with the intended JSON still works."""
    url = f"sqlite:///{tmp_path / 'h.db'}"

    def flowhooks(*args: str) -> subprocess.CompletedProcess[str]:
        return folder.run("-m", "flowhooks", *args)

    started = flowhooks("run", "flow.py:workflow", "-i", "amount=9", "--db", url)
    assert started.returncode == 1
    [suspended] = json.loads(
        flowhooks("runs", "--db", url, "--status", "suspended", "--json").stdout
    )
    run_id = suspended["run_id"]
    for bad in ('{"approved": true', "yes", "{'approved': True}", ""):
        refused = flowhooks("resume", run_id, "--data", bad, "--db", url)
        assert refused.returncode == 2, refused.stderr
        [line] = refused.stderr.splitlines()
        assert line.startswith("flowhooks: error: --data is not valid JSON (")
        assert "line 1 column" in line
        assert """--data '{"approved": true}'""" in line
        assert "Traceback" not in refused.stderr
    assert folder.ran_nodes() == ["quote", "approve"]  # the node was not run again
    assert query(url, "SELECT status, resumed_by FROM flowhooks_suspended_runs") == [
        ("suspended", None)
    ]
    resumed = flowhooks("resume", run_id, "--data", '{"approved": true}', "--db", url, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["outputs"]["ship"] == "shipped"
    text = flowhooks("resume", run_id, "--data", '"yes"', "--db", url)
    assert text.returncode == 1  # valid JSON text: the run is simply already resumed
    assert "already resumed by run" in text.stderr


@pytest.mark.parametrize("serializer", [object(), "pickle", 5])
def test_a_serializer_without_dumps_and_loads_is_refused_up_front(
    tmp_path: Path, serializer: Any
) -> None:
    with pytest.raises(TypeError, match=r"serializer=.*dumps\(\) and loads\(\)"):
        SQLRunStore(f"sqlite:///{tmp_path / 'runs.db'}", serializer=serializer)


def test_runs_resumed_or_kept_in_memory_are_told_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs suspended without ``store=`` (their state in the memory of the process that ran
    them) are recorded as suspended: ``runs`` shows which were resumed and by which run,
    ``resume`` says why neither can be resumed from the database, and ``history prune``
    deletes the resumed one only."""
    from flowhooks import Suspend, Workflow, current_run, node
    from flowhooks.handlers.history import HistoryCallback

    @node
    def approve() -> bool:
        if current_run().resume_data is None:
            raise Suspend("needs approval")
        return True

    monkeypatch.setenv("COLUMNS", "160")  # the table's notes unwrapped
    url = f"sqlite:///{tmp_path / 'h.db'}"
    history = HistoryCallback(url)
    workflow = Workflow("orders", nodes=[approve])
    resumed = workflow.run_sync(callbacks=[history])
    waiting = workflow.run_sync(callbacks=[history])
    later = workflow.resume_sync(resumed.run_id, {"ok": True}, callbacks=[history])
    assert later.status == "succeeded"
    asyncio.run(history.aclose())

    table = cli("runs", "--db", url, "--status", "suspended", cwd=tmp_path).stdout
    assert f"resumed by {later.run_id[:12]}" in table
    assert "waiting at approve" in table  # the other one
    again = cli("resume", resumed.run_id[:12], "--db", url, cwd=tmp_path)
    assert again.returncode == 1
    assert f"already resumed by run '{later.run_id}'" in again.stderr
    in_memory = cli("resume", waiting.run_id, "--db", url, cwd=tmp_path)
    assert in_memory.returncode == 1
    assert "its state is not saved" in in_memory.stderr
    assert "store=" in in_memory.stderr
    done = cli("resume", later.run_id, "--db", url, cwd=tmp_path)
    assert "is not suspended: it succeeded" in done.stderr

    time.sleep(1.1)
    pruned = cli("history", "prune", "--older-than", "1s", "--db", url, cwd=tmp_path)
    # the resumed run and the run that resumed it; the one still waiting is kept
    assert pruned.stdout.startswith("pruned 2 run(s)"), pruned.stdout
    left = query(url, "SELECT run_id FROM flowhooks_runs")
    assert left == [(waiting.run_id,)]
