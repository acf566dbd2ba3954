"""FlowhooksHooks against real Kedro sessions on tiny projects made in the test's folder."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kedro")

from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.runner import ParallelRunner, SequentialRunner, ThreadRunner

from flowhooks import InvalidCallbackError
from flowhooks.integrations._configured import load_handlers
from flowhooks.integrations.kedro import FlowhooksHooks
from flowhooks.testing import RecordingCallback

from .kedro_projects import FILE_RECORDER, RECORDER, make_project

ROOT = Path(__file__).resolve().parents[2]


def _settle_dynaconf() -> None:
    """Set up dynaconf's global lazy settings (Kedro imports dynaconf) once, quietly.

    Its first touch warns that the global is deprecated, and any later scan
    of all live objects (``isinstance`` on each, as a leak check does) would
    be that first touch, under ``filterwarnings = error``.
    """
    import dynaconf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        isinstance(dynaconf.settings, type)


_settle_dynaconf()

# Kedro's own use of omegaconf's older resolver API warns; that is not flowhooks' to fix.
pytestmark = pytest.mark.filterwarnings("ignore:register_new_resolver:UserWarning")

EXPLICIT_SETTINGS = """
from flowhooks.integrations.kedro import FlowhooksHooks

from {package}.observe import RECORDER

HOOKS = (FlowhooksHooks(handlers=[RECORDER], metadata={{"team": "sales"}}),)
"""


@pytest.fixture(autouse=True)
def _quiet_kedro(monkeypatch: pytest.MonkeyPatch) -> None:
    """No telemetry; and what bootstrapping a project changes (paths) is undone after."""
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.syspath_prepend(str(ROOT))


def _package() -> str:
    return f"orders_{uuid.uuid4().hex[:10]}"


def _explicit_project(tmp_path: Path) -> tuple[Path, str]:
    package = _package()
    root = make_project(
        tmp_path / package,
        package,
        settings=EXPLICIT_SETTINGS.format(package=package),
        modules={"observe": RECORDER},
    )
    return root, package


def _run(
    root: Path,
    *,
    runner: Any = None,
    runtime_params: dict[str, Any] | None = None,
    pipeline: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Bootstrap ``root`` and run one session: its id and the run's free outputs."""
    bootstrap_project(root)
    with KedroSession.create(root, runtime_params=runtime_params) as session:
        session_id = session.session_id
        names = [pipeline] if pipeline else None
        outputs = session.run(runner=runner or SequentialRunner(), pipeline_names=names)
    return session_id, outputs


def _recorder(package: str) -> RecordingCallback:
    recorder: RecordingCallback = importlib.import_module(f"{package}.observe").RECORDER
    return recorder


def test_a_session_run_is_a_run_and_its_nodes_are_nodes(tmp_path: Path) -> None:
    root, package = _explicit_project(tmp_path)
    session_id, _ = _run(root)
    recorder = _recorder(package)
    assert recorder.types == [
        "workflow_start",
        "node_start",
        "node_end",
        "node_start",
        "node_end",
        "node_start",
        "node_end",
        "workflow_end",
    ]
    recorder.assert_no_duplicates()
    events = recorder.events
    assert {e.run_id for e in events} == {session_id}
    assert [e.seq for e in events] == list(range(1, 9))
    assert {e.workflow_name for e in events} == {f"{package}:__default__"}
    assert events[0].metadata == {"team": "sales"}
    start = events[0].payload
    assert start["runner"] == "SequentialRunner"
    assert start["project_path"] == root.resolve().as_posix()
    assert "run_id" not in start
    assert events[1].node_id == "parse"
    assert events[1].payload == {"params:orders": [10, 20, 60]}
    assert events[2].payload == {"parsed": [10.0, 20.0, 60.0]}
    ends = {e.node_id: e.payload for e in recorder.events_of("node_end")}
    assert ends["total"] == {"total": 90.0}
    assert ends["average"] == {"average": 30.0}
    end = events[-1]
    assert end.status == "succeeded"
    assert end.payload["average"] == {"average": 30.0}


def test_a_failing_node_sends_its_error_and_fails_the_run(tmp_path: Path) -> None:
    root, package = _explicit_project(tmp_path)
    with pytest.raises(ZeroDivisionError, match="no orders to average"):
        _run(root, runtime_params={"orders": []}, pipeline="orders")
    recorder = _recorder(package)
    assert recorder.types[-2:] == ["error", "workflow_end"]
    (error,) = recorder.errors
    assert error.node_id == "average"
    assert error.type == "ZeroDivisionError"
    assert error.message == "no orders to average"
    end = recorder.events[-1]
    assert end.status == "failed"
    assert end.workflow_name == f"{package}:orders"
    assert "parse" in end.payload  # the nodes that succeeded
    assert "average" not in end.payload
    recorder.assert_no_duplicates()


def test_thread_runner_nodes_share_one_run_in_one_order(tmp_path: Path) -> None:
    root, package = _explicit_project(tmp_path)
    session_id, _ = _run(root, runner=ThreadRunner(max_workers=2))
    recorder = _recorder(package)
    assert recorder.run_ids == [session_id]
    assert [e.seq for e in recorder.events] == list(range(1, 9))
    assert sorted(e.node_id for e in recorder.events_of("node_end")) == [
        "average",
        "parse",
        "total",
    ]
    assert recorder.events[-1].status == "succeeded"
    assert recorder.events[0].payload["runner"] == "ThreadRunner"


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_parallel_runner_nodes_are_runs_of_their_own_in_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ParallelRunner: the run from this process, each node a sub-run from its worker."""
    events_file = tmp_path / "events.jsonl"
    monkeypatch.setenv("KEDRO_EVENTS_FILE", str(events_file))
    monkeypatch.setenv("KEDRO_MP_CONTEXT", "fork")  # workers are copies of this process
    package = _package()
    settings = f"""
    from flowhooks.integrations.kedro import FlowhooksHooks

    from {package}.observe import FileRecorder

    HOOKS = (FlowhooksHooks(handlers=[FileRecorder()]),)
    """
    root = make_project(
        tmp_path / package, package, settings=settings, modules={"observe": FILE_RECORDER}
    )
    session_id, _ = _run(root, runner=ParallelRunner(max_workers=2))
    events = _events(events_file)
    main = [e for e in events if e["run_id"] == session_id]
    assert [e["type"] for e in main] == ["workflow_start", "workflow_end"]
    assert main[-1]["status"] == "succeeded"
    assert {e["pid"] for e in main} == {os.getpid()}
    nodes = [e for e in events if e["run_id"] != session_id]
    assert {e["parent_run_id"] for e in nodes} == {session_id}
    assert os.getpid() not in {e["pid"] for e in nodes}
    by_run: dict[str, list[str]] = {}
    for event in nodes:
        by_run.setdefault(event["run_id"], []).append(event["type"])
    assert sorted(e["workflow_name"] for e in nodes if e["type"] == "workflow_end") == [
        "average",
        "parse",
        "total",
    ]
    for types in by_run.values():
        assert types == ["workflow_start", "node_start", "node_end", "workflow_end"]


# -- the entry-point plugin: in a fresh interpreter, as `kedro run` would load it ------


def _entry_point_dist(folder: Path) -> Path:
    """A distribution declaring flowhooks' ``kedro.hooks`` entry point, as pyproject does.

    The development install may predate the entry point; this one is found
    the way Kedro finds every plugin (``importlib.metadata``). When the real
    one is installed too, Kedro loads the name ``flowhooks`` once.
    """
    dist = folder / "flowhooks_kedro_plugin-0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: flowhooks-kedro-plugin\nVersion: 0.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[kedro.hooks]\nflowhooks = flowhooks.integrations.kedro:hooks\n"
    )
    return folder


SESSION_SCRIPT = """
import sys
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.runner import ParallelRunner, SequentialRunner

if __name__ == "__main__":
    root, runner = sys.argv[1:]
    bootstrap_project(root)
    with KedroSession.create(root) as session:
        session.run(runner=ParallelRunner(2) if runner == "parallel" else SequentialRunner())
        print("session", session.session_id)
"""


def _run_in_subprocess(
    tmp_path: Path, root: Path, env: dict[str, str], runner: str = "sequential"
) -> subprocess.CompletedProcess[str]:
    site = _entry_point_dist(tmp_path / "site")
    paths = [str(ROOT), str(site), str(root / "src")]
    inherited = {k: v for k, v in os.environ.items() if k != "FLOWHOOKS_KEDRO_HANDLERS"}
    full_env = {**inherited, "DO_NOT_TRACK": "1", "PYTHONPATH": os.pathsep.join(paths), **env}
    script = tmp_path / "run_session.py"
    script.write_text(SESSION_SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), str(root), runner],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=full_env,
        cwd=root,
    )


def test_plugin_configured_by_environment_variable(tmp_path: Path) -> None:
    package = _package()
    root = make_project(tmp_path / package, package, modules={"observe": FILE_RECORDER})
    events_file = tmp_path / "events.jsonl"
    done = _run_in_subprocess(
        tmp_path,
        root,
        {
            "KEDRO_EVENTS_FILE": str(events_file),
            "FLOWHOOKS_KEDRO_HANDLERS": f"{package}.observe:FileRecorder",
        },
    )
    assert done.returncode == 0, done.stderr
    session_id = done.stdout.split()[-1]
    events = _events(events_file)
    assert [e["type"] for e in events] == ["workflow_start"] + ["node_start", "node_end"] * 3 + [
        "workflow_end"
    ]
    assert {e["run_id"] for e in events} == {session_id}
    assert events[-1]["status"] == "succeeded"


def test_plugin_reports_nodes_from_spawned_parallel_workers(tmp_path: Path) -> None:
    """Spawned workers load entry-point plugins (not the project's settings): the plugin works."""
    package = _package()
    root = make_project(tmp_path / package, package, modules={"observe": FILE_RECORDER})
    events_file = tmp_path / "events.jsonl"
    env = {
        "KEDRO_EVENTS_FILE": str(events_file),
        "FLOWHOOKS_KEDRO_HANDLERS": f"{package}.observe:FileRecorder",
        "KEDRO_MP_CONTEXT": "spawn",
    }
    done = _run_in_subprocess(tmp_path, root, env, runner="parallel")
    assert done.returncode == 0, done.stderr
    session_id = done.stdout.split()[-1]
    events = _events(events_file)
    main = [e for e in events if e["run_id"] == session_id]
    assert [e["type"] for e in main] == ["workflow_start", "workflow_end"]
    nodes = [e for e in events if e["run_id"] != session_id]
    assert {e["parent_run_id"] for e in nodes} == {session_id}
    assert sorted(e["node_id"] for e in nodes if e["type"] == "node_end") == [
        "average",
        "parse",
        "total",
    ]
    assert {e["pid"] for e in nodes}.isdisjoint({e["pid"] for e in main})


def test_plugin_configured_in_pyproject(tmp_path: Path) -> None:
    package = _package()
    root = make_project(
        tmp_path / package,
        package,
        modules={"observe": FILE_RECORDER},
        pyproject_extra=f'\n[tool.flowhooks.kedro]\nhandlers = "{package}.observe:FileRecorder"\n',
    )
    events_file = tmp_path / "events.jsonl"
    done = _run_in_subprocess(tmp_path, root, {"KEDRO_EVENTS_FILE": str(events_file)})
    assert done.returncode == 0, done.stderr
    events = _events(events_file)
    assert events[0]["type"] == "workflow_start"
    assert events[0]["workflow_name"] == f"{package}:__default__"
    assert events[-1]["status"] == "succeeded"


def test_plugin_is_silent_unconfigured_and_beside_explicit_hooks(tmp_path: Path) -> None:
    package = _package()
    settings = f"""
    from flowhooks.integrations.kedro import FlowhooksHooks

    from {package}.observe import FileRecorder

    HOOKS = (FlowhooksHooks(handlers=[FileRecorder()]),)
    """
    root = make_project(
        tmp_path / package, package, settings=settings, modules={"observe": FILE_RECORDER}
    )
    events_file = tmp_path / "events.jsonl"
    # Configured as well: the explicit hooks report the run, the plugin stays out.
    done = _run_in_subprocess(
        tmp_path,
        root,
        {
            "KEDRO_EVENTS_FILE": str(events_file),
            "FLOWHOOKS_KEDRO_HANDLERS": f"{package}.observe:FileRecorder",
        },
    )
    assert done.returncode == 0, done.stderr
    assert [e["type"] for e in _events(events_file)].count("workflow_start") == 1

    plain = make_project(tmp_path / "plain", "plain_orders")
    done = _run_in_subprocess(tmp_path, plain, {})
    assert done.returncode == 0, done.stderr


# -- arguments and configuration ---------------------------------------------------------


def test_arguments_are_checked_when_the_hooks_are_made() -> None:
    with pytest.raises(InvalidCallbackError, match=r"FlowhooksHooks\(handlers\)"):
        FlowhooksHooks(handlers="nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="workflow_name="):
        FlowhooksHooks(workflow_name="")
    with pytest.raises(TypeError, match="metadata="):
        FlowhooksHooks(metadata=["team"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="resource_id="):
        FlowhooksHooks(resource_id=7)  # type: ignore[arg-type]


def test_configured_handlers_name_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"FLOWHOOKS_KEDRO_HANDLERS takes 'module:attribute'"):
        load_handlers("flowhooks.testing", where="FLOWHOOKS_KEDRO_HANDLERS")
    with pytest.raises(ImportError, match="cannot import 'no_such_module_here'"):
        load_handlers("no_such_module_here:x", where="FLOWHOOKS_KEDRO_HANDLERS")
    with pytest.raises(AttributeError, match="has no attribute 'Missing'"):
        load_handlers("flowhooks.testing:Missing", where="FLOWHOOKS_KEDRO_HANDLERS")
    with pytest.raises(TypeError, match="takes a handler"):
        load_handlers("flowhooks.testing:__name__", where="FLOWHOOKS_KEDRO_HANDLERS")
    manager = load_handlers("flowhooks.testing:RecordingCallback", where="X")
    assert [type(h).__name__ for h in manager.handlers] == ["RecordingCallback"]


def test_the_entry_point_is_declared_in_pyproject() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = project["project"]["entry-points"]["kedro.hooks"]["flowhooks"]
    module, _, attr = declared.partition(":")
    assert declared == "flowhooks.integrations.kedro:hooks"
    assert type(getattr(importlib.import_module(module), attr)) is FlowhooksHooks


def test_importing_flowhooks_loads_neither_kedro_nor_prefect() -> None:
    code = (
        "import sys, flowhooks, flowhooks.integrations, flowhooks.handlers\n"
        "print(sorted(m for m in ('kedro', 'prefect') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert done.stdout.strip() == "[]"


_INTERRUPTED = """
import sys
from flowhooks import BaseCallbackHandler
from flowhooks.integrations.kedro import FlowhooksHooks

class Ends(BaseCallbackHandler):
    def on_workflow_end(self, workflow_id, output_data, *, event):
        with open(sys.argv[1], "a") as out:
            out.write(f"workflow_end {event.status}\\n")

class Node:
    name = "split"

hooks = FlowhooksHooks(handlers=[Ends()])
hooks.before_pipeline_run({"run_id": "sess-1"})
hooks.before_node_run(Node(), {"x": 1}, "sess-1")
raise KeyboardInterrupt  # Ctrl-C: Kedro calls no further hook
"""


def test_a_run_stopped_by_ctrl_c_still_sends_its_workflow_end(tmp_path: Path) -> None:
    out = tmp_path / "ends.txt"
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED, str(out)], capture_output=True, text=True, timeout=60
    )
    assert "KeyboardInterrupt" in done.stderr
    assert out.read_text() == "workflow_end cancelled\n"


def test_importing_the_plugin_prints_nothing() -> None:
    """Importing it (a script, a test) does not configure Kedro's logging as importing
    ``kedro.framework.project`` does, which printed an INFO banner."""
    done = subprocess.run(
        [sys.executable, "-c", "import flowhooks.integrations.kedro"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
