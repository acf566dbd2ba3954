"""Packaging: the pytest plugin loads without flowhooks, and ``scripts/check_dist.py`` catches
a wheel or sdist that lacks what it must ship."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from types import ModuleType

import pytest

import flowhooks.testing
import pytest_flowhooks
from flowhooks.testing import RecordingCallback

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _check_dist() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_dist", ROOT / "scripts" / "check_dist.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loading_the_plugin_imports_no_flowhooks() -> None:
    """Importing the plugin module, as pytest does in every session, leaves flowhooks, pydantic
    and loguru unimported; asking for the fixture imports them."""
    code = (
        "import sys, json, pytest_flowhooks\n"
        "heavy = ('flowhooks', 'pydantic', 'loguru')\n"
        "before = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "recorder = pytest_flowhooks.callback_recorder.__wrapped__()\n"
        "after = 'flowhooks._manager' in sys.modules and 'pydantic' in sys.modules\n"
        "print(json.dumps([before, type(recorder).__name__, after]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    before, recorder, after = json.loads(proc.stdout)
    assert before == []
    assert recorder == "RecordingCallback"
    assert after is True


def test_the_entry_point_names_the_plugin_module() -> None:
    """pyproject.toml registers ``pytest_flowhooks`` under the plugin name ``flowhooks``."""
    assert PYPROJECT["project"]["entry-points"]["pytest11"] == {"flowhooks": "pytest_flowhooks"}


def test_the_installed_entry_point_matches_when_this_checkout_is_installed() -> None:
    """The environment's pytest11 entry point is the declared one, when it installed this tree."""
    try:
        dist = distribution("flowhooks")
    except PackageNotFoundError:
        pytest.skip("flowhooks is not installed")
    url = json.loads(dist.read_text("direct_url.json") or "{}").get("url")
    if url != ROOT.as_uri():
        pytest.skip(f"the installed flowhooks comes from {url}, not from {ROOT}")
    plugins = {ep.name: ep.value for ep in dist.entry_points if ep.group == "pytest11"}
    assert plugins == PYPROJECT["project"]["entry-points"]["pytest11"]


def test_callback_recorder_is_a_fresh_recording_callback(
    callback_recorder: RecordingCallback,
) -> None:
    """The fixture gives an empty ``RecordingCallback``."""
    assert isinstance(callback_recorder, RecordingCallback)
    assert callback_recorder.events == []


def test_flowhooks_testing_still_provides_the_fixture_as_a_plugin() -> None:
    """``-p flowhooks.testing`` keeps working: the module holds the same fixture."""
    assert flowhooks.testing.callback_recorder is pytest_flowhooks.callback_recorder
    assert flowhooks.testing.__all__ == ["RecordingCallback"]


def _wheel(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def _sdist(path: Path, root: str, files: list[str]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name in files:
            info = tarfile.TarInfo(f"{root}/{name}")
            archive.addfile(info)
    return path


GOOD_WHEEL = {
    "flowhooks/__init__.py": "",
    "flowhooks/py.typed": "",
    "pytest_flowhooks.py": "",
    "flowhooks-1.0.dist-info/licenses/LICENSE": "MIT",
    "flowhooks-1.0.dist-info/entry_points.txt": "[pytest11]\nflowhooks = pytest_flowhooks\n",
}
GOOD_SDIST = ["LICENSE", "pyproject.toml", "pytest_flowhooks.py", "flowhooks/py.typed"]


def test_check_dist_passes_a_complete_wheel_and_sdist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wheel and sdist with everything in place pass, one line each."""
    check = _check_dist()
    _wheel(tmp_path / "flowhooks-1.0-py3-none-any.whl", GOOD_WHEEL)
    _sdist(tmp_path / "flowhooks-1.0.tar.gz", "flowhooks-1.0", GOOD_SDIST)
    assert check.main([str(tmp_path)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_check_dist_names_every_problem(tmp_path: Path) -> None:
    """Missing py.typed, LICENSE and plugin entry point, and shipped tests, are each named."""
    check = _check_dist()
    files = {
        name: text
        for name, text in GOOD_WHEEL.items()
        if not name.endswith(("py.typed", "LICENSE", "entry_points.txt"))
    }
    wheel = _wheel(tmp_path / "w.whl", {**files, "tests/test_x.py": ""})
    problems = check.wheel_problems(wheel)
    assert problems == [
        "w.whl: flowhooks/py.typed is missing",
        "w.whl: the LICENSE file is missing from .dist-info/licenses/",
        "w.whl: ships tests: tests/test_x.py",
        "w.whl: no pytest11 entry point 'flowhooks = pytest_flowhooks'",
    ]
    sdist = _sdist(tmp_path / "s.tar.gz", "flowhooks-1.0", ["pyproject.toml"])
    assert check.sdist_problems(sdist) == [
        "s.tar.gz: LICENSE is missing",
        "s.tar.gz: pytest_flowhooks.py is missing",
        "s.tar.gz: flowhooks/py.typed is missing",
    ]


def test_check_dist_wants_one_of_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty directory is an error saying what was expected."""
    assert _check_dist().main([str(tmp_path)]) == 1
    assert "expected one wheel and one sdist, found nothing" in capsys.readouterr().err
