"""Check the contents of a built wheel and sdist: ``python scripts/check_dist.py DIST_DIR``.

``make package-check`` builds both into a temporary directory, runs
``twine check --strict`` on them, then this script, which checks what twine
does not look at: the wheel ships the ``py.typed`` marker, the licence and the
pytest plugin module with its entry point, and no tests; the sdist ships the
licence. Prints one line per distribution, or every problem found and exits 1.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

WHEEL_MUST_HAVE = ("flowhooks/__init__.py", "flowhooks/py.typed", "pytest_flowhooks.py")
PLUGIN_ENTRY_POINT = "flowhooks = pytest_flowhooks"


def wheel_problems(wheel: Path) -> list[str]:
    """Return what is missing from, or should not be in, ``wheel``."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(
            (archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")),
            "",
        )
    problems = [f"{wheel.name}: {name} is missing" for name in WHEEL_MUST_HAVE if name not in names]
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append(f"{wheel.name}: the LICENSE file is missing from .dist-info/licenses/")
    tests = [n for n in names if n.startswith("tests/") or "/tests/" in n]
    if tests:
        problems.append(f"{wheel.name}: ships tests: {', '.join(tests[:5])}")
    if "[pytest11]" not in entry_points or PLUGIN_ENTRY_POINT not in entry_points:
        problems.append(f"{wheel.name}: no pytest11 entry point '{PLUGIN_ENTRY_POINT}'")
    return problems


def sdist_problems(sdist: Path) -> list[str]:
    """Return what is missing from ``sdist``."""
    with tarfile.open(sdist) as archive:
        names = {name.partition("/")[2] for name in archive.getnames()}
    return [
        f"{sdist.name}: {name} is missing"
        for name in ("LICENSE", "pyproject.toml", "pytest_flowhooks.py", "flowhooks/py.typed")
        if name not in names
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/check_dist.py DIST_DIR", file=sys.stderr)
        return 2
    dist = Path(argv[0])
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        found = ", ".join(p.name for p in dist.iterdir()) or "nothing"
        print(f"{dist}: expected one wheel and one sdist, found {found}", file=sys.stderr)
        return 1
    problems = wheel_problems(wheels[0]) + sdist_problems(sdists[0])
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{wheels[0].name}: py.typed, LICENSE, pytest plugin, no tests")
    print(f"{sdists[0].name}: LICENSE, pyproject.toml, py.typed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
