"""Running ``examples/*.py`` as a user would: a subprocess with the test's interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(
    name: str, cwd: Path = ROOT, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` in ``cwd`` and return the finished process (never raises)."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
