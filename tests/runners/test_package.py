"""``flowhooks.runners`` loads an engine only when its runner is asked for."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_importing_the_package_loads_no_engine() -> None:
    """`import flowhooks.runners` imports neither dask nor ray (checked in a fresh process)."""
    code = (
        "import json, sys\n"
        "import flowhooks.runners\n"
        "from flowhooks.runners import WorkerError\n"
        "engines = {'dask', 'distributed', 'ray', 'cloudpickle'}\n"
        "print(json.dumps(sorted({m.partition('.')[0] for m in sys.modules} & engines)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == []


def test_unknown_names_are_attribute_errors() -> None:
    import flowhooks.runners

    with pytest.raises(AttributeError, match="no attribute 'SparkRunner'"):
        _ = flowhooks.runners.SparkRunner
    assert dir(flowhooks.runners) == ["DaskRunner", "RayRunner", "WorkerError"]
