"""The suspended-run store is an outlet like any other (SPEC §2 redaction, §12): in a real
SQLite file, a suspension's reason and payload are redacted, a sub-workflow's child run id
survives any policy, and what a resume gives back to the nodes (inputs, completed outputs,
``ctx.state``) is kept whole, so the resumed run gets the real values."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import flowhooks
from flowhooks import Redaction, RunStatus, Suspend, SuspendedRun, Workflow, current_run, node
from flowhooks.handlers import SQLRunStore

BEARER = "abcdef123456"
API_KEY = "sk-live-999"
TOKEN = "tok-XYZ-987"
DB_PASSWORD = "s3cretpw"


@pytest.fixture(autouse=True)
def default_policy() -> Iterator[None]:
    flowhooks.reset_redaction()
    yield
    flowhooks.reset_redaction()


@node
def ask(api_token: str, amount: int) -> tuple[str, str, Any]:
    ctx = current_run()
    ctx.state["db_password"] = DB_PASSWORD
    if ctx.resume_data is None:
        raise Suspend(
            f"call back with Bearer {BEARER}",
            payload={"api_key": API_KEY, "amount": amount, "account": "acct-1234"},
        )
    return (api_token, ctx.state["db_password"], ctx.resume_data)


def rows(url: str) -> list[Any]:
    """The stored suspended runs, read with the standard driver."""
    with sa.create_engine(url).connect() as conn:
        return list(
            conn.execute(
                sa.text("SELECT run_id, node_id, reason, data FROM flowhooks_suspended_runs")
            ).all()
        )


def stored(url: str, run_id: str) -> tuple[str, bytes, SuspendedRun]:
    [(reason, data)] = [(r.reason, r.data) for r in rows(url) if r.run_id == run_id]
    saved = pickle.loads(data)
    assert isinstance(saved, SuspendedRun)
    return reason, data, saved


async def test_the_reason_and_payload_are_stored_redacted_and_the_resume_gets_real_values(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    wf = Workflow("approvals", nodes=[ask])
    first = await wf.run({"api_token": TOKEN, "amount": 5}, store=url)
    assert first.status is RunStatus.SUSPENDED
    # in memory, nothing is redacted
    assert first.suspension is not None
    assert first.suspension.payload["api_key"] == API_KEY
    assert BEARER in first.suspension.reason

    reason, data, saved = stored(url, first.run_id)
    assert reason == "call back with Bearer ***"
    assert BEARER.encode() not in data
    assert API_KEY.encode() not in data
    assert saved.suspension.reason == "call back with Bearer ***"
    assert saved.suspension.payload == {"api_key": "***", "amount": 5, "account": "acct-1234"}
    assert saved.suspension.node_id == "ask"
    # what the resume restores is kept: the database is trusted
    assert saved.inputs == {"api_token": TOKEN, "amount": 5}
    assert saved.state == {"db_password": DB_PASSWORD}

    later = await wf.resume(first.run_id, {"ok": True}, store=url)
    assert later.status is RunStatus.SUCCEEDED, later.error
    assert later.outputs == {"ask": (TOKEN, DB_PASSWORD, {"ok": True})}


async def test_redact_option_of_the_store(tmp_path: Path) -> None:
    """`SQLRunStore(redact=...)`: extra keys, a policy of its own, or off; and the
    process-wide policy as it is when the run suspends."""
    wf = Workflow("approvals", nodes=[ask])
    inputs = {"api_token": TOKEN, "amount": 5}

    keys = SQLRunStore(f"sqlite:///{tmp_path / 'keys.db'}", redact=["amount"])
    run = await wf.run(inputs, store=keys)
    _, _, saved = stored(f"sqlite:///{tmp_path / 'keys.db'}", run.run_id)
    assert saved.suspension.payload == {"api_key": "***", "amount": "***", "account": "acct-1234"}

    own = SQLRunStore(f"sqlite:///{tmp_path / 'own.db'}", redact=Redaction(keys=["amount"]))
    run = await wf.run(inputs, store=own)
    reason, _, saved = stored(f"sqlite:///{tmp_path / 'own.db'}", run.run_id)
    assert reason == "call back with Bearer ***"  # credentials in text: every policy
    assert saved.suspension.payload == {"api_key": API_KEY, "amount": "***", "account": "acct-1234"}

    off = SQLRunStore(f"sqlite:///{tmp_path / 'off.db'}", redact=False)
    run = await wf.run(inputs, store=off)
    reason, _, saved = stored(f"sqlite:///{tmp_path / 'off.db'}", run.run_id)
    assert BEARER in reason
    assert saved.suspension.payload["api_key"] == API_KEY
    resumed = await wf.resume(run.run_id, {"ok": 1}, store=off)
    assert resumed.status is RunStatus.SUCCEEDED

    flowhooks.redaction(patterns=[r"(?<=acct-)\d+"])
    url = f"sqlite:///{tmp_path / 'policy.db'}"
    run = await wf.run(inputs, store=url)
    _, _, saved = stored(url, run.run_id)
    assert saved.suspension.payload["account"] == "acct-***"

    with pytest.raises(TypeError, match="redact"):
        SQLRunStore(f"sqlite:///{tmp_path / 'bad.db'}", redact="yes")  # type: ignore[arg-type]


@node
async def approve(x: int) -> int:
    ctx = current_run()
    if ctx.resume_data is None:
        raise Suspend(f"approval, Bearer {BEARER}", payload={"x": x, "api_key": API_KEY})
    return x + int(ctx.resume_data["add"])


@node
async def after(sub: dict[str, Any]) -> int:
    return int(sub["approve"]) * 10


async def test_a_parent_suspended_by_its_child_keeps_the_child_run_id_and_resumes(
    tmp_path: Path,
) -> None:
    """The parent's stored payload names the child run: that id survives even a policy whose
    pattern matches run ids; the child's payload in it, and the child's own row, are redacted."""
    flowhooks.redaction(patterns=[r"\b[0-9a-f]{32}\b"])  # would hide every run id
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    child = Workflow("child", nodes=[approve])
    parent = Workflow("parent", nodes=[child.as_node(name="sub"), after])
    first = await parent.run({"x": 1}, store=url)
    assert first.status is RunStatus.SUSPENDED
    assert first.suspension is not None
    child_run_id = first.suspension.payload["child_run_id"]

    reason, data, saved = stored(url, first.run_id)
    assert reason == "approval, Bearer ***"
    assert API_KEY.encode() not in data
    assert saved.suspension.payload == {
        "child_run_id": child_run_id,
        "node_id": "approve",
        "payload": {"x": 1, "api_key": "***"},
    }
    reason, data, saved = stored(url, child_run_id)
    assert reason == "approval, Bearer ***"
    assert saved.suspension.payload == {"x": 1, "api_key": "***"}

    later = await parent.resume(first.run_id, {"add": 5}, store=url)
    assert later.status is RunStatus.SUCCEEDED, later.error
    assert later.outputs == {"sub": {"approve": 6}, "after": 60}
