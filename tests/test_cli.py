"""Tests of the ``flowhooks`` command line, in-process (typer's CliRunner) and as processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowhooks import __version__
from flowhooks._cli import main
from flowhooks._cli.app import create_app
from flowhooks._cli.errors import EXIT_BAD_INPUT, EXIT_FAILED
from flowhooks._cli.load import Target, parse_inputs, parse_target

PIPELINE = """
from flowhooks import Workflow, node
from {helper} import double


@node
def extract(source: str, n: int = 3) -> list[int]:
    return list(range(n))


@node
def transform(extract: list[int]) -> list[int]:
    return [double(x) for x in extract]


@node
def load(transform: list[int], source: str) -> str:
    return f"{{sum(transform)}} rows to {{source}}"


workflow = Workflow("etl", nodes=[extract, transform, load])
answer = 42


@node(retries=1)
def explode(source: str) -> None:
    raise ValueError("bad row 7 in " + source)


@node
def after(explode: None) -> None:
    return None


failing = Workflow("breaks", nodes=[explode, after])


@node
def echo(n, ids, name, flag, nothing, quoted, text) -> dict:
    return {{"n": n, "ids": ids, "name": name, "flag": flag, "nothing": nothing,
             "quoted": quoted, "text": text}}


echoing = Workflow("echo", nodes=[echo])


@node(depends_on=["b"])
def a() -> int:
    return 1


@node(depends_on=["a"])
def b() -> int:
    return 2


cyclic = Workflow("loop", nodes=[a, b])
"""


@pytest.fixture(autouse=True)
def _isolated_imports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Work in tmp_path; undo the sys.path and sys.modules entries a loaded file adds."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        # Only the test's own files: a library's C extension imported twice can crash.
        where = getattr(sys.modules.get(name), "__file__", None) or ""
        if where.startswith(str(tmp_path)):
            sys.modules.pop(name, None)


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    """A workflow file with a helper module next to it, in the working directory."""
    helper = f"helper_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{helper}.py").write_text("def double(x):\n    return 2 * x\n")
    path = tmp_path / "pipeline.py"
    path.write_text(textwrap.dedent(PIPELINE.format(helper=helper)))
    return path


@pytest.fixture
def cli() -> CliRunner:
    """A CliRunner with stdout and stderr kept apart."""
    return CliRunner()


def invoke(runner: CliRunner, *args: str):
    """Run the app in-process; no exception may escape and no traceback reach stderr."""
    result = runner.invoke(create_app(), list(args), catch_exceptions=False)
    assert "Traceback" not in result.stderr
    return result


# -- run --------------------------------------------------------------------------------------


def test_run_succeeds_prints_summary_and_records_history(cli, pipeline, tmp_path):
    """A succeeding run exits 0, shows every node, and is listed and detailed by history."""
    result = invoke(cli, "run", "pipeline.py:workflow", "--input", "source=orders.csv")
    assert result.exit_code == 0, result.output
    for name in ("extract", "transform", "load"):
        assert name in result.stdout
    assert "succeeded" in result.stdout
    run_line = next(line for line in result.stdout.splitlines() if line.startswith("run "))
    run_id = run_line.split()[1]
    assert len(run_id) == 32
    assert "node 'extract' (attempt 1) started" in result.stderr  # logs go to stderr
    assert 'output of load: "6 rows to orders.csv"' in result.stdout
    assert (tmp_path / "flowhooks.db").exists()

    listing = invoke(cli, "history")
    assert listing.exit_code == 0, listing.output
    assert run_id[:12] in listing.stdout
    assert "etl" in listing.stdout

    detail = invoke(cli, "history", run_id)
    assert detail.exit_code == 0, detail.output
    assert run_id in detail.stdout
    for name in ("extract", "transform", "load"):
        assert name in detail.stdout


def test_run_failing_exits_nonzero_and_shows_the_error(cli, pipeline):
    """A failing run exits 1 and names the failing node and its error in the summary."""
    result = invoke(cli, "run", "pipeline.py:failing", "-i", "source=x.csv")
    assert result.exit_code == EXIT_FAILED
    assert "error in node 'explode': ValueError: bad row 7 in x.csv" in result.stdout
    assert "skipped" in result.stdout
    assert "retries: 1" in result.stdout
    assert "output of" not in result.stdout

    listing = invoke(cli, "history")
    assert "failed" in listing.stdout
    run_id = listing.stdout.split("breaks")[0].split()[-2]
    detail = invoke(cli, "history", run_id)
    assert "ValueError: bad row 7 in x.csv" in detail.stdout
    assert "warning (retried)" in detail.stdout


def test_run_json_prints_only_the_result(cli, pipeline):
    """--json writes the RunResult's to_dict() as the whole of stdout."""
    result = invoke(cli, "run", "pipeline.py:workflow", "-i", "source=a.csv", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "succeeded"
    assert data["outputs"]["load"] == "6 rows to a.csv"
    assert set(data["nodes"]) == {"extract", "transform", "load"}


def test_run_json_keeps_prints_of_the_workflow_off_stdout(cli, tmp_path):
    """With --json, what nodes and the workflow's handlers print goes to stderr."""
    (tmp_path / "noisy.py").write_text(
        textwrap.dedent(
            """
            from flowhooks import BaseCallbackHandler, Workflow, node

            class Shout(BaseCallbackHandler):
                def on_node_end(self, node_id, output_data):
                    print("handler says hi")

            @node
            def talk() -> int:
                print("node says hi")
                return 1

            wf = Workflow("noisy", nodes=[talk], callbacks=[Shout()])
            """
        )
    )
    result = invoke(cli, "run", "noisy.py:wf", "--json", "--no-history")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"] == {"talk": 1}
    assert "node says hi" in result.stderr
    assert "handler says hi" in result.stderr


def test_run_json_of_a_failed_run_has_its_error(cli, pipeline):
    """--json on a failing run still prints parseable JSON, with status failed, and exits 1."""
    result = invoke(cli, "run", "pipeline.py:failing", "-i", "source=a", "--json", "-q")
    assert result.exit_code == EXIT_FAILED
    data = json.loads(result.stdout)
    assert data["status"] == "failed"
    assert data["error"]["type"] == "ValueError"


def test_input_values_are_json_when_they_parse(cli, pipeline):
    """--input values that parse as JSON become numbers, lists, booleans, null; others stay text."""
    result = invoke(
        cli,
        "run",
        "pipeline.py:echoing",
        "--json",
        "--no-history",
        "-i",
        "n=3",
        "-i",
        "ids=[1,2]",
        "-i",
        "name=orders.csv",
        "-i",
        "flag=true",
        "-i",
        "nothing=null",
        "-i",
        'quoted="7"',
        "-i",
        "text=a=b",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"]["echo"] == {
        "n": 3,
        "ids": [1, 2],
        "name": "orders.csv",
        "flag": True,
        "nothing": None,
        "quoted": "7",
        "text": "a=b",
    }


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["n=3"], {"n": 3}),
        (["x=1.5"], {"x": 1.5}),
        (["ids=[1,2]"], {"ids": [1, 2]}),
        (['cfg={"a": 1}'], {"cfg": {"a": 1}}),
        (["s=orders.csv"], {"s": "orders.csv"}),
        (["empty="], {"empty": ""}),
        (["sp = spaced"], {"sp": " spaced"}),
    ],
    ids=["int", "float", "list", "object", "text", "empty", "key-trimmed"],
)
def test_parse_inputs(items, expected):
    """parse_inputs reads JSON when the value parses and keeps the text otherwise."""
    assert parse_inputs(items) == expected


def test_no_history_writes_no_database(cli, pipeline, tmp_path):
    """--no-history runs without creating the history database."""
    result = invoke(cli, "run", "pipeline.py:workflow", "-i", "source=a", "--no-history")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "flowhooks.db").exists()
    assert "history:" not in result.stdout


def test_db_option_chooses_the_database(cli, pipeline, tmp_path):
    """--db records the run in the given SQLite file, and history --db reads it back."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = invoke(cli, "run", "pipeline.py:workflow", "-i", "source=a", "--db", url, "-q")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs.db").exists()
    assert not (tmp_path / "flowhooks.db").exists()
    assert "etl" in invoke(cli, "history", "--db", url).stdout


def test_quiet_hides_logs_and_progress(cli, pipeline):
    """--quiet leaves stderr empty for a clean run while the summary still prints."""
    result = invoke(cli, "run", "pipeline.py:workflow", "-i", "source=a", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "extract" in result.stdout


def test_verbose_logs_payloads(cli, pipeline):
    """--verbose logs node inputs and outputs; without it they stay out of the DEBUG sink."""
    result = invoke(cli, "run", "pipeline.py:workflow", "-i", "source=a", "-v", "--no-history")
    assert result.exit_code == 0, result.output
    assert '"6 rows to a"' in result.stderr
    plain = invoke(cli, "run", "pipeline.py:workflow", "-i", "source=a", "--no-history")
    assert plain.exit_code == 0, plain.output
    assert "node 'load' (attempt 1) succeeded" in plain.stderr
    assert "rows to a" not in plain.stderr
    assert "DEBUG" not in plain.stderr


def test_unknown_input_is_a_warning(cli, pipeline):
    """An --input the workflow does not take is reported on stderr but the run goes on."""
    result = invoke(cli, "run", "pipeline.py:workflow", "-i", "source=a", "-i", "sorce=b", "-q")
    assert result.exit_code == 0, result.output
    assert "does not take input(s) sorce" in result.stderr


# -- package.module:WORKFLOW targets ---------------------------------------------------------

FLOWS = """
from flowpkg.steps import double
from flowhooks import Workflow, node


@node
def numbers(n: int) -> list[int]:
    return list(range(n))


@node
def doubled(numbers: list[int]) -> list[int]:
    return [double(x) for x in numbers]


workflow = Workflow("pkg-flow", nodes=[numbers, doubled])
"""


def make_package(root: Path) -> Path:
    """Write the package ``flowpkg`` (``flows`` defines the workflow, ``steps`` a helper)."""
    package = root / "flowpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "steps.py").write_text("def double(x):\n    return 2 * x\n")
    (package / "flows.py").write_text(textwrap.dedent(FLOWS))
    return package


def test_module_target_runs_the_workflow(cli, tmp_path):
    """package.module:WORKFLOW imports the module from the working directory and runs it."""
    make_package(tmp_path)
    result = invoke(cli, "run", "flowpkg.flows:workflow", "-i", "n=3", "--json", "-q")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["workflow_name"] == "pkg-flow"
    assert data["outputs"]["doubled"] == [0, 2, 4]
    graph = invoke(cli, "graph", "flowpkg.flows:workflow")
    assert graph.exit_code == 0, graph.output
    assert "numbers --> doubled" in graph.stdout


def test_module_target_is_found_without_the_working_directory_on_sys_path(cli, tmp_path):
    """The working directory is put on sys.path, as python -m does, when it is not there."""
    make_package(tmp_path)
    sys.path[:] = [p for p in sys.path if p not in ("", str(tmp_path))]
    result = invoke(cli, "run", "flowpkg.flows:workflow", "-i", "n=2", "--no-history", "-q")
    assert result.exit_code == 0, result.output
    assert "pkg-flow" in result.stdout
    assert sys.path[0] == str(tmp_path)


@pytest.mark.parametrize(
    ("target", "source", "attr", "is_file"),
    [
        ("pipeline.py:workflow", "pipeline.py", "workflow", True),
        ("flows/etl.py:wf", "flows/etl.py", "wf", True),
        ("flowpkg.flows:workflow", "flowpkg.flows", "workflow", False),
        ("flows:wf", "flows", "wf", False),
        ("my-flows:wf", "my-flows", "wf", True),
        (" etl.flows : wf ", "etl.flows", "wf", False),
    ],
)
def test_parse_target_tells_files_from_modules(target, source, attr, is_file):
    """A path (.py, a separator, not a dotted name) is a file; a dotted name is a module."""
    assert parse_target(target) == Target(source, attr, is_file)


def test_parse_target_takes_an_existing_file_without_suffix(tmp_path):
    """A dotted-looking name that is an existing file is loaded as that file."""
    (tmp_path / "flows").write_text("")
    assert parse_target("flows:wf").is_file


# -- graph ------------------------------------------------------------------------------------


def test_graph_prints_mermaid(cli, pipeline):
    """graph prints the workflow's to_mermaid() text."""
    result = invoke(cli, "graph", "pipeline.py:workflow")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "flowchart TD"
    assert "extract --> transform" in result.stdout
    assert "transform --> load" in result.stdout
    assert invoke(cli, "graph", "pipeline.py:workflow", "--format", "mermaid").exit_code == 0


# -- history ----------------------------------------------------------------------------------


def test_history_of_an_empty_database_is_friendly(cli, tmp_path):
    """history without a database file says no runs are recorded, and exits 0; a file in a
    directory that does not exist is a mistyped path, named as such."""
    result = invoke(cli, "history")
    assert result.exit_code == 0
    assert "No runs recorded" in result.stdout
    missing_dir = invoke(cli, "history", "--db", f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}")
    assert missing_dir.exit_code == EXIT_BAD_INPUT
    assert "does not exist" in missing_dir.stderr
    assert not (tmp_path / "flowhooks.db").exists()


def test_history_limit_and_json(cli, pipeline):
    """history --limit caps the listing; --json prints the records."""
    for _ in range(3):
        assert invoke(cli, "run", "pipeline.py:workflow", "-i", "source=a", "-q").exit_code == 0
    listing = json.loads(invoke(cli, "history", "--json").stdout)
    assert len(listing) == 3
    assert {r["status"] for r in listing} == {"succeeded"}
    assert len(json.loads(invoke(cli, "history", "--json", "--limit", "2").stdout)) == 2
    detail = json.loads(invoke(cli, "history", listing[0]["run_id"], "--json").stdout)
    assert [n["node_id"] for n in detail["nodes"]] == ["extract", "transform", "load"]


def test_history_unknown_run_is_one_line(cli, pipeline):
    """history with an unknown run id exits 1 with one line on stderr."""
    invoke(cli, "run", "pipeline.py:workflow", "-i", "source=a", "-q")
    result = invoke(cli, "history", "0000dead")
    assert result.exit_code == EXIT_FAILED
    assert result.stderr.count("\n") == 1
    assert "no run '0000dead'" in result.stderr


def test_version(cli):
    """--version prints the package version."""
    result = invoke(cli, "--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"flowhooks {__version__}"


# -- bad input --------------------------------------------------------------------------------

BAD_INPUT = {
    "missing-file": (["run", "nope.py:workflow"], "no such file: 'nope.py'"),
    "no-colon": (["run", "pipeline.py"], "expected FILE.py:WORKFLOW"),
    "no-attribute": (["run", "pipeline.py:nope", "-i", "source=a"], "has no attribute 'nope'"),
    "not-a-workflow": (["run", "pipeline.py:answer"], "not a flowhooks.Workflow"),
    "input-without-equals": (["run", "pipeline.py:workflow", "-i", "source"], "KEY=VALUE"),
    "input-twice": (["run", "pipeline.py:workflow", "-i", "a=1", "-i", "a=2"], "more than once"),
    "missing-input": (["run", "pipeline.py:workflow"], "missing required input(s): source"),
    "cycle": (["run", "pipeline.py:cyclic"], "has a cycle"),
    "invalid-db-url": (
        ["run", "pipeline.py:workflow", "-i", "source=a", "--db", "mysql://h/db"],
        "unsupported history database 'mysql' in 'mysql://h/db'; use 'sqlite:///PATH' or "
        "'postgresql://host/dbname' (with user:password@ before the host)",
    ),
    "db-directory-missing": (
        ["run", "pipeline.py:workflow", "-i", "source=a", "--db", "sqlite:///no/such/dir/x.db"],
        "does not exist",
    ),
    "db-unreachable": (
        [
            *("run", "pipeline.py:workflow", "-i", "source=a"),
            *("--db", "postgresql://u:pw@127.0.0.1:1/db"),
        ],
        "ConnectionRefusedError",
    ),
    "db-not-a-database": (
        ["run", "pipeline.py:workflow", "-i", "source=a", "--db", "sqlite:///garbage.db"],
        "file is not a database",
    ),
    "history-invalid-url": (["history", "--db", "not a url"], "cannot parse history database"),
    "history-not-a-database": (
        ["history", "--db", "sqlite:///garbage.db"],
        "file is not a database",
    ),
    "graph-unknown-format": (["graph", "pipeline.py:workflow", "--format", "dot"], "'dot'"),
    "graph-missing-file": (["graph", "gone.py:wf"], "no such file"),
    "broken-module": (["run", "broken.py:workflow"], "cannot load 'broken.py': RuntimeError"),
    "syntax-error": (["run", "syntax.py:workflow"], "SyntaxError"),
    "no-such-module": (["run", "nosuch.flows:workflow"], "no module named 'nosuch.flows'"),
    "no-such-submodule": (["graph", "flowpkg.nope:workflow"], "no module named 'flowpkg.nope'"),
    "module-no-attribute": (
        ["run", "flowpkg.flows:nope"],
        "module 'flowpkg.flows' has no attribute 'nope'; workflows defined there: workflow",
    ),
    "module-not-a-workflow": (
        ["run", "flowpkg.flows:double"],
        "flowpkg.flows:double is a function, not a flowhooks.Workflow",
    ),
    "module-missing-import": (
        ["run", "flowpkg.needs:workflow"],
        "cannot load module 'flowpkg.needs': ModuleNotFoundError: No module named 'not_installed",
    ),
    "module-raises": (
        ["graph", "flowpkg.raises:workflow"],
        "cannot load module 'flowpkg.raises': RuntimeError: cannot start",
    ),
}


@pytest.fixture
def bad_files(pipeline: Path, tmp_path: Path) -> Path:
    """Files for the bad-input cases: a module that raises, one with a syntax error, junk."""
    (tmp_path / "broken.py").write_text("raise RuntimeError('cannot start')\n")
    (tmp_path / "syntax.py").write_text("def (:\n")
    (tmp_path / "garbage.db").write_text("this is not a database\n" * 20)
    package = make_package(tmp_path)
    (package / "needs.py").write_text("import not_installed_x\n")
    (package / "raises.py").write_text("raise RuntimeError('cannot start')\n")
    return tmp_path


@pytest.mark.parametrize(("args", "expected"), BAD_INPUT.values(), ids=list(BAD_INPUT))
def test_bad_input_is_one_line(cli, bad_files, args, expected):
    """Each kind of bad input exits non-zero with one clear line on stderr and no traceback."""
    result = invoke(cli, *args)
    assert result.exit_code != 0
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("flowhooks: error: ")
    assert expected in result.stderr
    assert "pw@" not in result.stderr  # passwords are hidden


def test_bad_input_exit_code_is_2(cli, pipeline):
    """Bad input exits with code 2, which a failed run (code 1) never uses."""
    assert invoke(cli, "run", "nope.py:x").exit_code == EXIT_BAD_INPUT


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run"], "Missing argument"),
        (["history", "--limit", "0"], "--limit"),
        (["run", "pipeline.py:workflow", "--bogus"], "No such option: --bogus"),
        (["frobnicate"], "No such command"),
    ],
    ids=["missing-argument", "bad-limit", "unknown-option", "unknown-command"],
)
def test_usage_errors_from_main_are_one_line(capsys, pipeline, args, expected):
    """main() reports the parser's usage errors as one line and exit code 2."""
    with pytest.raises(SystemExit) as exc_info:
        main(args)
    assert exc_info.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert expected in err


# -- real processes ---------------------------------------------------------------------------


def _launchers() -> list[pytest.param]:
    script = Path(sys.executable).parent / "flowhooks"
    return [
        pytest.param([sys.executable, "-m", "flowhooks"], id="python-m"),
        pytest.param(
            [str(script)],
            id="script",
            marks=pytest.mark.skipif(not script.exists(), reason="flowhooks script not installed"),
        ),
    ]


def _run(launcher: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
    return subprocess.run(
        [*launcher, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("launcher", _launchers())
def test_process_run_and_history(launcher, pipeline, tmp_path):
    """As a real process: a run exits 0 with a summary, and history lists and shows it."""
    done = _run(
        launcher, "run", "pipeline.py:workflow", "--input", "source=orders.csv", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    run_id = next(line for line in done.stdout.splitlines() if line.startswith("run ")).split()[1]
    listing = _run(launcher, "history", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert run_id[:12] in listing.stdout
    detail = _run(launcher, "history", run_id, cwd=tmp_path)
    assert detail.returncode == 0, detail.stderr
    assert "transform" in detail.stdout


@pytest.mark.parametrize("launcher", _launchers())
def test_process_module_target(launcher, tmp_path):
    """As a real process: package.module:WORKFLOW is imported from the working directory."""
    make_package(tmp_path)
    done = _run(launcher, "run", "flowpkg.flows:workflow", "-i", "n=4", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"]["doubled"] == [0, 2, 4, 6]


@pytest.mark.parametrize("launcher", _launchers())
def test_process_failing_run(launcher, pipeline, tmp_path):
    """As a real process: a failing run exits 1 and shows its error."""
    done = _run(launcher, "run", "pipeline.py:failing", "-i", "source=f.csv", cwd=tmp_path)
    assert done.returncode == EXIT_FAILED
    assert "ValueError: bad row 7 in f.csv" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("launcher", _launchers())
def test_process_json_stdout_is_pure_json(launcher, pipeline, tmp_path):
    """As a real process: --json leaves logs and progress on stderr and only JSON on stdout."""
    done = _run(launcher, "run", "pipeline.py:workflow", "-i", "source=a", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert "started" in done.stderr


@pytest.mark.parametrize("launcher", _launchers())
def test_process_graph_and_version(launcher, pipeline, tmp_path):
    """As a real process: graph prints Mermaid and --version the version."""
    graph = _run(launcher, "graph", "pipeline.py:workflow", cwd=tmp_path)
    assert graph.returncode == 0, graph.stderr
    assert graph.stdout.startswith("flowchart TD\n")
    version = _run(launcher, "--version", cwd=tmp_path)
    assert version.stdout.strip() == f"flowhooks {__version__}"


PROCESS_BAD_INPUT = [
    "missing-file",
    "no-colon",
    "no-attribute",
    "not-a-workflow",
    "input-without-equals",
    "missing-input",
    "invalid-db-url",
    "db-unreachable",
    "broken-module",
    "history-invalid-url",  # a database that is not one exits 1: see the reading commands' test
    "no-such-module",
    "module-no-attribute",
    "module-missing-import",
]


@pytest.mark.parametrize("launcher", _launchers())
@pytest.mark.parametrize("case", PROCESS_BAD_INPUT)
def test_process_bad_input_is_one_line(launcher, case, bad_files):
    """As a real process, bad input gives one line on stderr, no traceback, a non-zero exit."""
    args, expected = BAD_INPUT[case]
    done = _run(launcher, *args, cwd=bad_files)
    assert done.returncode == EXIT_BAD_INPUT
    assert done.stderr.count("\n") == 1, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "etl_pipeline.py"


@pytest.mark.skipif(not DEMO.exists(), reason="examples/etl_pipeline.py is not there")
def test_demo_runs_the_etl_example_and_lists_it(tmp_path):
    """The `make demo` commands run examples/etl_pipeline.py and list the stored run."""
    launcher = [sys.executable, "-m", "flowhooks"]
    done = _run(launcher, "run", f"{DEMO}:workflow", "--input", "source=orders.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "report" in done.stdout
    assert (tmp_path / "flowhooks.db").exists()
    listing = _run(launcher, "history", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "etl_pipeline" in listing.stdout
    assert "succeeded" in listing.stdout


def test_process_usage_error_is_one_line(pipeline, tmp_path):
    """As a real process, a missing argument is one line and exit code 2."""
    done = _run([sys.executable, "-m", "flowhooks"], "graph", cwd=tmp_path)
    assert done.returncode == EXIT_BAD_INPUT
    assert done.stderr.count("\n") == 1
    assert "Missing argument" in done.stderr


def test_without_the_cli_extra_main_prints_the_install_line(tmp_path):
    """Without typer, main() prints the pip install line on stderr and exits 1."""
    code = (
        "import sys; sys.modules['typer'] = None\n"
        "from flowhooks._cli import main\n"
        "main(['--version'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1
    assert "pip install 'flowhooks[cli]'" in done.stderr
    assert done.stderr.count("\n") == 1


def test_without_the_sql_extra_run_says_how_to_proceed(pipeline, tmp_path):
    """Without SQLAlchemy, run names the sql extra and --no-history; --no-history still works."""
    code = (
        "import sys; sys.modules['sqlalchemy'] = None\n"
        "from flowhooks._cli import main\n"
        "main(sys.argv[1:])\n"
    )
    base = [sys.executable, "-c", code, "run", "pipeline.py:workflow", "-i", "source=a", "-q"]
    done = subprocess.run(base, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == EXIT_FAILED
    assert "pip install 'flowhooks[sql]' (or pass --no-history)" in done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.count("pip install") == 1  # said once
    history = [sys.executable, "-c", code, "history"]
    listed = subprocess.run(history, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert listed.returncode == EXIT_FAILED
    assert listed.stderr.count("pip install 'flowhooks[sql]'") == 1, listed.stderr
    plain = [*base, "--no-history"]
    done = subprocess.run(plain, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout


# -- exceptions that end a run, --quiet, --help -----------------------------------------------

GUARDED = """
from flowhooks import BaseCallbackHandler, Workflow, node


class Guard(BaseCallbackHandler):
    raise_error = True

    def on_workflow_end(self, workflow_id, output_data):
        raise RuntimeError("guard tripped")


@node
def step(n: int) -> int:
    return n + 1


guarded = Workflow("guarded", nodes=[step], callbacks=[Guard()])
"""


@pytest.fixture
def guarded(tmp_path: Path) -> Path:
    """A workflow file whose raise_error handler raises on workflow_end."""
    path = tmp_path / "guarded.py"
    path.write_text(textwrap.dedent(GUARDED))
    return path


def test_run_reraised_handler_error_is_one_line(cli, guarded):
    """A raise_error handler's exception re-raised by run ends in one error line, exit 1."""
    result = invoke(cli, "run", "guarded.py:guarded", "-i", "n=1", "--no-history", "-q")
    assert result.exit_code == EXIT_FAILED
    assert result.stderr == "flowhooks: error: RuntimeError: guard tripped\n"
    assert result.stdout == ""


def test_run_reraised_handler_error_traceback_with_verbose(cli, guarded):
    """With --verbose the traceback comes first, then the same one error line."""
    result = cli.invoke(
        create_app(),
        ["run", "guarded.py:guarded", "-i", "n=1", "--no-history", "-q", "-v"],
        catch_exceptions=False,
    )
    assert result.exit_code == EXIT_FAILED
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.endswith("flowhooks: error: RuntimeError: guard tripped\n")


def test_run_unexpected_exception_is_one_line(cli, pipeline, monkeypatch):
    """Anything else escaping the run is reported as one line with its type, exit 1."""

    async def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("flowhooks._cli.app._execute", broken)
    result = invoke(cli, "run", "pipeline.py:workflow", "-i", "source=a", "--no-history")
    assert result.exit_code == EXIT_FAILED
    assert result.stderr.endswith("flowhooks: error: OSError: disk full\n")
    assert result.stderr.count("flowhooks: error:") == 1


def test_process_reraised_handler_error_is_one_line(guarded, tmp_path):
    """As a real process, the re-raised exception gives one stderr line and exit code 1."""
    done = _run(
        [sys.executable, "-m", "flowhooks"],
        *("run", "guarded.py:guarded", "-i", "n=1", "--no-history", "-q"),
        cwd=tmp_path,
    )
    assert done.returncode == EXIT_FAILED
    assert done.stderr == "flowhooks: error: RuntimeError: guard tripped\n"


def test_quiet_still_shows_warnings_and_errors(cli, pipeline):
    """--quiet drops progress and info lines but keeps the failure's warning and error lines."""
    result = invoke(cli, "run", "pipeline.py:failing", "-i", "source=a", "-q", "--no-history")
    assert result.exit_code == EXIT_FAILED
    lines = result.stderr.splitlines()
    assert any("WARNING" in line and "will retry" in line for line in lines), result.stderr
    assert any("ERROR" in line and "bad row 7" in line for line in lines), result.stderr
    assert not any("INFO" in line for line in lines), result.stderr
    assert "started" not in result.stderr


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["history", "--help"]])
def test_help_shows_no_value_for_on_off_flags(cli, args):
    """On/off flags such as --quiet and --help show no value placeholder in --help."""
    result = cli.invoke(create_app(), args, env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.stdout
    assert "--help" in result.stdout


@pytest.mark.parametrize("command", [None, "run", "graph", "history"])
def test_each_help_ends_with_examples(cli, command):
    """flowhooks --help and each command's --help show example command lines."""
    args = [command, "--help"] if command else ["--help"]
    result = cli.invoke(create_app(), args, env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    examples = lines[lines.index("Examples:") + 1 :]
    prefix = f"flowhooks {command}" if command else "flowhooks "
    assert any(line.startswith(prefix) for line in examples), result.stdout


def test_run_help_says_quiet_keeps_warnings_and_errors(cli):
    """--help describes --quiet as the docs do: warnings and errors still show."""
    result = cli.invoke(create_app(), ["run", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert "warnings and errors still show" in " ".join(result.stdout.split())


def test_graph_option_error_points_to_graph_help(capsys, pipeline):
    """An option missing its value in graph points to 'flowhooks graph --help'."""
    with pytest.raises(SystemExit) as exc_info:
        main(["graph", "pipeline.py:workflow", "--format"])
    assert exc_info.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "(see 'flowhooks graph --help')" in err


SECRET = "sk-live-8080"

SECRET_PIPELINE = f'''
from flowhooks import Workflow, node


@node
def connect(api_key: str) -> dict:
    return {{"db_password": "{SECRET}", "ok": True}}


@node
def upload(connect: dict) -> None:
    raise RuntimeError("PUT https://bob:{SECRET}@files.example/x refused; Bearer {SECRET}")


workflow = Workflow("leaky", nodes=[connect, upload])
'''


def test_no_secret_reaches_the_terminal_the_json_or_the_history(cli, tmp_path, monkeypatch):
    """The summary, logs, --json and history show run data redacted (SPEC §2 Redaction)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "leaky.py").write_text(SECRET_PIPELINE)
    shown = invoke(cli, "run", "leaky.py:workflow", "--input", f"api_key={SECRET}")
    assert shown.exit_code == 1
    as_json = invoke(cli, "run", "leaky.py:workflow", "--input", f"api_key={SECRET}", "--json")
    assert as_json.exit_code == 1
    document = json.loads(as_json.stdout)
    assert document["inputs"]["api_key"] == "***"
    listing = invoke(cli, "history")
    run_id = document["run_id"]
    detail = invoke(cli, "history", run_id)
    for output in (shown.stdout, shown.stderr, as_json.stdout, as_json.stderr, listing.stdout):
        assert SECRET not in output
    assert SECRET not in detail.stdout
    assert "upload" in detail.stdout


def test_json_listings_redact_rows_stored_unredacted(cli, tmp_path):
    """A database may hold run data stored unredacted (a handler with ``redact=False``):
    ``runs --json``, ``history --json`` and ``history RUN_ID --json`` redact it, as
    their tables do."""
    import asyncio

    from flowhooks import Workflow, node
    from flowhooks.handlers import HistoryCallback

    db = f"sqlite:///{tmp_path / 'raw.db'}"

    @node
    def bad(x: int) -> int:
        raise ValueError(f"bad token={SECRET} at https://u:{SECRET}@host/")

    @node
    async def slow(x: int) -> int:
        await asyncio.sleep(5)
        return x

    async def record() -> list[str]:
        history = HistoryCallback(db, redact=False)
        failed = await Workflow("raw", nodes=[bad]).run(
            {"x": 1, "password": SECRET}, callbacks=[history]
        )
        handle = Workflow("stopped", nodes=[slow]).start({"x": 1}, callbacks=[history])
        await asyncio.sleep(0.1)
        handle.cancel(f"operator token={SECRET}")
        stopped = await handle
        await history.aclose()
        return [failed.run_id, stopped.run_id]

    run_ids = asyncio.run(record())
    outputs = [
        invoke(cli, "runs", "--db", db, "--json"),
        invoke(cli, "history", "--db", db, "--json"),
    ]
    outputs += [invoke(cli, "history", run_id, "--db", db, "--json") for run_id in run_ids]
    for output in outputs:
        assert output.exit_code == 0, output.output
        assert SECRET not in output.stdout
        assert "***" in output.stdout
    assert {row["run_id"] for row in json.loads(outputs[0].stdout)} == set(run_ids)


def test_listed_runs_whose_ids_begin_alike_are_shown_apart(cli, tmp_path):
    """Time-ordered ids of runs started together (LangChain's) share their first twelve
    characters: the listings show each one long enough to tell it apart, and that is
    what `history ID` takes."""
    import asyncio

    from flowhooks import Workflow, node
    from flowhooks.handlers import HistoryCallback

    db = f"sqlite:///{tmp_path / 'alike.db'}"
    ids = ["019af3c27d107a11b2c3d4e5f6a7b8c9", "019af3c27d107c4e9f1a0b9e3a1c2d3e"]

    @node
    async def step() -> int:
        return 1

    async def record() -> None:
        history = HistoryCallback(db)
        for run_id in ids:
            await Workflow("alike", nodes=[step]).run(run_id=run_id, callbacks=[history])
        await history.aclose()

    asyncio.run(record())
    for command in ("history", "runs"):
        listing = invoke(cli, command, "--db", db)
        assert listing.exit_code == 0, listing.output
        assert "019af3c27d107a" in listing.stdout
        assert "019af3c27d107c" in listing.stdout
    for run_id in ids:
        detail = invoke(cli, "history", "--db", db, run_id[:14])
        assert detail.exit_code == 0, detail.output
        assert run_id in detail.stdout


def test_every_reading_command_exits_1_on_a_database_it_cannot_read(cli, tmp_path):
    """A --db that exists but is no usable history database is the same failure for each
    reading command: exit 1, one line naming the database's own complaint."""
    (tmp_path / "garbage.db").write_text("this is not a database\n" * 20)
    db = f"sqlite:///{tmp_path / 'garbage.db'}"
    for args in (["history"], ["runs"], ["sweep"], ["dead-letters"]):
        result = invoke(cli, *args, "--db", db)
        assert result.exit_code == EXIT_FAILED, (args, result.stderr)
        assert "file is not a database" in result.stderr


def test_history_of_one_run_says_which_run_resumed_it_and_the_other_way(cli, tmp_path):
    import asyncio

    from flowhooks import Suspend, Workflow, current_run, node
    from flowhooks.handlers import HistoryCallback

    db = f"sqlite:///{tmp_path / 'resumed.db'}"

    @node
    async def approve() -> str:
        if current_run().resume_data is None:
            raise Suspend("waiting for approval")
        return "approved"

    async def suspend_then_resume() -> tuple[str, str]:
        history = HistoryCallback(db)
        wf = Workflow("approval", nodes=[approve], callbacks=[history])
        first = await wf.run(store=db)
        later = await wf.resume(first.run_id, {"ok": True}, store=db)
        await history.aclose()
        return first.run_id, later.run_id

    suspended, resumed = asyncio.run(suspend_then_resume())
    detail = invoke(cli, "history", "--db", db, suspended)
    assert detail.exit_code == 0, detail.output
    assert f"resumed by: {resumed}" in detail.stdout
    detail = invoke(cli, "history", "--db", db, resumed)
    assert detail.exit_code == 0, detail.output
    assert f"resumed from: {suspended}" in detail.stdout
