"""Tests for the public surface: ``__all__``, the testing kit and lazy optional imports."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from importlib.metadata import entry_points
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
    "current_run",
]

OPTIONAL_DEPENDENCIES = [
    "rich",
    "httpx",
    "sqlalchemy",
    "prometheus_client",
    "opentelemetry",
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


def test_pytest_plugin_entry_point_declared() -> None:
    """The pytest11 entry point points at flowhooks.testing."""
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("flowhooks") == "flowhooks.testing"


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
