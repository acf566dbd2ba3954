"""Tests for the public surface: ``__all__``, the testing kit and lazy optional imports."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import flowhooks
import flowhooks.testing

CORE_NAMES = [
    "BaseCallbackHandler",
    "CallbackManager",
    "CycleError",
    "ErrorInfo",
    "Event",
    "EventType",
    "ExternalRun",
    "FlowhooksError",
    "MissingInputError",
    "NodeResult",
    "NodeStatus",
    "PriorityCallbackManager",
    "RunContext",
    "RunResult",
    "RunStatus",
    "WorkflowCancelled",
    "WorkflowError",
    "WorkflowFailed",
    "add_hook_monitor",
    "current_run",
]

OPTIONAL_DEPENDENCIES = [
    "rich",
    "httpx",
    "sqlalchemy",
    "prometheus_client",
    "opentelemetry",
    "sentry_sdk",
    "openlineage",
    "dask",
    "typer",
    "langchain_core",
    "langgraph",
    "hamilton",
]


def test_all_is_sorted() -> None:
    """flowhooks.__all__ lists its names sorted (dunders aside) with no duplicates."""
    names = [name for name in flowhooks.__all__ if not name.startswith("__")]
    assert names == sorted(names)
    assert len(set(flowhooks.__all__)) == len(flowhooks.__all__)


def test_all_names_exist() -> None:
    """Every name in flowhooks.__all__ is importable from flowhooks."""
    missing = [name for name in flowhooks.__all__ if not hasattr(flowhooks, name)]
    assert missing == []


def test_all_matches_public_objects() -> None:
    """The package namespace holds no public name beyond __all__ and its own submodules."""
    public = {
        name
        for name, value in vars(flowhooks).items()
        if not name.startswith(("_", "@"))  # "@py_*": pytest rewrites the plugin's package
        and not (inspect.ismodule(value) and value.__name__.startswith("flowhooks."))
    }
    assert public - set(flowhooks.__all__) == set()


@pytest.mark.parametrize("name", CORE_NAMES)
def test_spec_names_are_exported(name: str) -> None:
    """The names fixed by the specification are exported from flowhooks."""
    assert name in flowhooks.__all__


def test_version_is_a_string() -> None:
    """flowhooks.__version__ is a non-empty string."""
    assert isinstance(flowhooks.__version__, str)
    assert flowhooks.__version__


def test_testing_kit_is_separate() -> None:
    """RecordingCallback lives in flowhooks.testing, not in the package root."""
    assert flowhooks.testing.__all__ == ["RecordingCallback"]
    assert "RecordingCallback" not in flowhooks.__all__
    assert issubclass(flowhooks.testing.RecordingCallback, flowhooks.BaseCallbackHandler)


def test_package_is_typed() -> None:
    """The package ships a py.typed marker."""
    assert Path(flowhooks.__file__).with_name("py.typed").is_file()


def test_import_does_not_load_optional_dependencies() -> None:
    """`import flowhooks` imports none of the optional dependencies (checked in a fresh process)."""
    code = (
        "import json, sys\n"
        "import flowhooks\n"
        f"names = {OPTIONAL_DEPENDENCIES!r}\n"
        "loaded = sorted({m.partition('.')[0] for m in sys.modules} & set(names))\n"
        "print(json.dumps(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == []


def test_public_exceptions_show_their_public_path() -> None:
    """Exceptions print as flowhooks.X (not a private module) and survive pickling."""
    import pickle

    exceptions = [
        obj
        for name in flowhooks.__all__
        if isinstance(obj := getattr(flowhooks, name), type) and issubclass(obj, BaseException)
    ]
    assert flowhooks.WorkflowFailed in exceptions
    assert flowhooks.HookNameWarning in exceptions
    for exc_type in exceptions:
        assert exc_type.__module__ == "flowhooks", exc_type
    error = flowhooks.WorkflowError("bad graph")
    assert type(pickle.loads(pickle.dumps(error))) is flowhooks.WorkflowError


# -- the built-in handlers use the public seam only -------------------------------------

HANDLERS_DIR = Path(flowhooks.__file__).with_name("handlers")


def _private_imports(source: str, module: str) -> list[str]:
    """Return the private flowhooks imports in ``source`` (the module ``module``), as written.

    Allowed: public ``flowhooks`` names, ``flowhooks.handlers`` and its
    ``_*`` helpers. Anything else under ``flowhooks._*``, or a private name
    imported from ``flowhooks``, is reported; relative imports are resolved.
    """
    package = module.rpartition(".")[0]
    found: list[str] = []
    for stmt in ast.walk(ast.parse(source)):
        if isinstance(stmt, ast.Import):
            targets = [(alias.name, None) for alias in stmt.names]
        elif isinstance(stmt, ast.ImportFrom):
            base = stmt.module or ""
            if stmt.level:
                parent = package.rsplit(".", stmt.level - 1)[0] if stmt.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            targets = [(base, alias.name) for alias in stmt.names]
        else:
            continue
        for target, name in targets:
            parts = target.split(".")
            if parts[0] != "flowhooks":
                continue
            if parts[1:2] == ["handlers"]:
                continue
            if len(parts) > 1 and parts[1].startswith("_"):
                found.append(f"line {stmt.lineno}: {target}")
            elif len(parts) == 1 and name is not None and name.startswith("_"):
                found.append(f"line {stmt.lineno}: {target}.{name}")
    return found


@pytest.mark.parametrize(
    ("source", "private"),
    [
        ("from flowhooks import Event, current_run", False),
        ("from flowhooks.handlers._extras import require", False),
        ("from . import _run_end", False),
        ("from ._retry import retry_async", False),
        ("import flowhooks", False),
        ("from flowhooks._context import current_run_var", True),
        ("import flowhooks._manager", True),
        ("from flowhooks import _monitors", True),
        ("from .. import _events", True),
        ("from .._hooks import HookCall", True),
        ("def f():\n    from flowhooks._results import RunResult", True),
        ("if TYPE_CHECKING:\n    from flowhooks._results import RunResult", True),
    ],
    ids=repr,
)
def test_private_import_check_tells_public_from_private(source: str, private: bool) -> None:
    """The import check below flags private flowhooks imports, wherever they are written."""
    assert bool(_private_imports(source, "flowhooks.handlers.example")) is private


@pytest.mark.parametrize(
    "path", sorted(HANDLERS_DIR.rglob("*.py")), ids=lambda p: p.relative_to(HANDLERS_DIR).as_posix()
)
def test_builtin_handlers_import_only_public_names(path: Path) -> None:
    """Modules under flowhooks/handlers import public flowhooks names and their _* helpers only."""
    relative = path.relative_to(HANDLERS_DIR.parent.parent).with_suffix("")
    module = ".".join(relative.parts).removesuffix(".__init__")
    if path.name == "__init__.py":
        module += ".__init__"  # so relative imports resolve against the package itself
    assert _private_imports(path.read_text(encoding="utf-8"), module) == []


NODE_OPTIONS = {
    "name": None,
    "depends_on": (),
    "retries": 0,
    "retry_delay": 0.0,
    "backoff": 2.0,
    "timeout": None,
    "critical": False,
    "on_success": None,
    "on_failure": None,
}


@pytest.mark.parametrize(
    "function", [flowhooks.node, flowhooks.Workflow.node, flowhooks.Workflow("w").node]
)
def test_node_signature_names_its_options_and_defaults(function: object) -> None:
    """``inspect.signature(node)`` is the one SPEC writes: ``fn`` positional-only, then
    the options keyword-only with their defaults (not ``**options``)."""
    parameters = inspect.signature(function).parameters  # type: ignore[arg-type]
    fn = parameters["fn"]
    assert fn.kind is inspect.Parameter.POSITIONAL_ONLY
    assert fn.default is None
    options = {name: p.default for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert options == NODE_OPTIONS
    assert not any(p.kind is p.VAR_KEYWORD for p in parameters.values())
