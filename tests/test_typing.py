"""Handler code written as documented type-checks under ``mypy --strict`` as user code.

One ``mypy --strict`` run, in a temporary directory with no project
configuration (as in a user's project), checks:

- ``tests/user_code/handler_overrides.py``: every documented override shape
  of ``BaseCallbackHandler`` (``async def`` or ``def``, with or without
  ``*, event: Event``, annotated or not), which must produce no error at all;
- ``tests/user_code/bad_overrides.py``: overrides that cannot be called as
  documented, which must be reported exactly on the lines marked
  ``# expect: <code>``;
- every ```python block of README.md and docs/ that defines a
  ``BaseCallbackHandler`` subclass (``--8<--`` includes expanded, as the site
  shows it). These examples leave annotations out on purpose, and ``--strict``
  reports any unannotated function whatever it overrides (``no-untyped-def``,
  and ``no-untyped-call`` where typed code calls one): those two codes are
  allowed, every other error fails (but the ``KNOWN_ERRORS`` of two included
  example scripts, which are listed exactly).

mypy resolves ``flowhooks`` to the package these tests import, not to
whichever copy happens to be installed.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_docs_snippets import expand_includes, extract_snippets

import flowhooks

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
USER_CODE = Path(__file__).resolve().parent / "user_code"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
UNANNOTATED_CODES = frozenset({"no-untyped-def", "no-untyped-call"})
# A third-party library without type information (Hamilton ships none): user code
# importing it gets this from mypy whatever flowhooks does.
UNTYPED_LIBRARY_CODES = frozenset({"import-untyped"})
TIMEOUT = 300

_HANDLER_CLASS = re.compile(r"^class \w+\((?:[\w.]+,\s*)*BaseCallbackHandler\b", re.MULTILINE)
_ERROR = re.compile(
    r"^(?P<file>[^:\n]+):(?P<line>\d+): error: (?P<text>.*?)(?:  \[(?P<code>[\w-]+)\])?$"
)
_EXPECT = re.compile(r"# expect: (?P<code>[\w-]+)")
_INCLUDE = re.compile(r'^--8<-- "(?P<path>[^"]+)"$', re.MULTILINE)

KNOWN_ERRORS = {
    "examples/composites.py": [
        'Argument "severity" to "ErrorInfo" has incompatible type "str"; '
        'expected "Severity"  [arg-type]',
    ],
    "examples/composing_handlers.py": [
        'Returning Any from function declared to return "float"  [no-any-return]',
        'Item "None" of "ErrorInfo | None" has no attribute "message"  [union-attr]',
    ],
}
"""Example scripts included in the docs that do not type-check yet, and their errors (without
line numbers): a new error fails the check, and so does a fixed one until it leaves this list."""


@dataclass(frozen=True)
class Example:
    """A documentation block defining a handler, saved as its own module for mypy."""

    id: str
    module: str
    code: str
    includes: tuple[str, ...]


def handler_examples() -> list[Example]:
    """Return the README's and the docs' Python blocks that subclass ``BaseCallbackHandler``."""
    found: list[Example] = []
    for page in PAGES:
        name = page.relative_to(ROOT).as_posix()
        for snippet in extract_snippets(page.read_text(encoding="utf-8"), name):
            code = expand_includes(snippet.code)
            if snippet.fragment or not _HANDLER_CLASS.search(code):
                continue
            module = "example_" + re.sub(r"\W", "_", snippet.id).lower()
            includes = tuple(m["path"] for m in _INCLUDE.finditer(snippet.code))
            found.append(Example(snippet.id, module, code, includes))
    return found


EXAMPLES = handler_examples()


@dataclass(frozen=True)
class Error:
    """One error mypy reported: its line, error code and text."""

    line: int
    code: str
    text: str

    @property
    def message(self) -> str:
        return f"{self.text}  [{self.code}]"

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Error]]:
    """Run ``mypy --strict`` once over every file; map each module name to its errors."""
    workdir = tmp_path_factory.mktemp("user-code")
    for source in ("handler_overrides.py", "bad_overrides.py"):
        (workdir / source).write_text((USER_CODE / source).read_text(encoding="utf-8"))
    for example in EXAMPLES:
        (workdir / f"{example.module}.py").write_text(example.code, encoding="utf-8")
    config = workdir / "empty.ini"
    config.write_text("[mypy]\n", encoding="utf-8")
    package_parent = Path(flowhooks.__file__).resolve().parent.parent
    env = {**os.environ, "MYPYPATH": str(package_parent)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(config),
            "--cache-dir",
            str(workdir / ".mypy_cache"),
            "--no-error-summary",
            "--hide-error-context",
            "--no-pretty",
            "--show-error-codes",
            *sorted(p.name for p in workdir.glob("*.py")),
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode in (0, 1), f"mypy crashed:\n{proc.stdout}\n{proc.stderr}"
    errors: dict[str, list[Error]] = defaultdict(list)
    for line in proc.stdout.splitlines():
        match = _ERROR.match(line)
        if match:
            module = Path(match["file"]).stem
            errors[module].append(Error(int(match["line"]), match["code"] or "", match["text"]))
    return errors


def test_every_override_shape_type_checks(mypy_errors: dict[str, list[Error]]) -> None:
    """The documented shapes, annotated or not, give mypy --strict nothing to report."""
    assert [str(e) for e in mypy_errors["handler_overrides"]] == []


def test_overrides_that_cannot_be_called_are_still_rejected(
    mypy_errors: dict[str, list[Error]],
) -> None:
    """Too few or extra required arguments, a narrower type, a return value and a sync
    ``flush`` are each an ``[override]`` error, on the marked line."""
    lines = (USER_CODE / "bad_overrides.py").read_text(encoding="utf-8").splitlines()
    expected = Counter(
        (number, match["code"])
        for number, text in enumerate(lines, start=1)
        if (match := _EXPECT.search(text))
    )
    reported = Counter((e.line, e.code) for e in mypy_errors["bad_overrides"])
    assert len(expected) == 6
    assert reported == expected, [str(e) for e in mypy_errors["bad_overrides"]]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_documented_handler_example_type_checks(
    example: Example, mypy_errors: dict[str, list[Error]]
) -> None:
    """A handler example from the docs has no mypy --strict error but its missing annotations
    (and, for an included script listed in ``KNOWN_ERRORS``, exactly the errors listed)."""
    missing = _missing_libraries(example.code)
    if missing:
        pytest.skip(f"needs {', '.join(missing)}, not installed here")
    errors = [
        e
        for e in mypy_errors[example.module]
        if e.code not in UNANNOTATED_CODES | UNTYPED_LIBRARY_CODES
    ]
    known = [error for path in example.includes for error in KNOWN_ERRORS.get(path, [])]
    assert [e.message for e in errors] == known, [str(e) for e in errors]


def _missing_libraries(code: str) -> list[str]:
    """The top-level modules ``code`` imports that are not installed (an optional extra)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return sorted(n for n in names if importlib.util.find_spec(n) is None)


def test_handler_examples_are_found() -> None:
    """The README's Quick start and the Handlers guide are among the checked examples."""
    pages = {e.id.split(":")[0] for e in EXAMPLES}
    assert {"README.md", "docs/handlers.md", "docs/getting-started.md"} <= pages
    assert len(EXAMPLES) >= 20
    readme = next(e for e in EXAMPLES if e.id.startswith("README.md"))
    assert "*, event)" in readme.code


def test_every_override_shape_runs() -> None:
    """The shapes that type-check also run: each handler is called for its hooks."""
    spec = importlib.util.spec_from_file_location(
        "handler_overrides", USER_CODE / "handler_overrides.py"
    )
    assert spec is not None
    assert spec.loader is not None
    shapes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shapes)

    result = shapes.run_once()

    assert result.status == "succeeded"
    seen: dict[str, list[str]] = defaultdict(list)
    for handler, event_type in shapes.SEEN:
        seen[handler].append(event_type)
    every_hook = [
        "workflow_start",
        "node_start",
        "custom_event",
        "error",
        "node_start",
        "custom_event",
        "node_end",
        "workflow_end",
    ]
    assert seen["AsyncAnnotated"] == [*every_hook, "flush"]
    for name in ("AsyncWithEvent", "SyncAnnotated", "SyncWithEvent"):
        assert seen[name] == every_hook, name
    assert seen["Unannotated"] == ["workflow_start", "error", "node_end", "workflow_end"]
    assert seen["LooseShapes"] == [
        "node_start",
        "custom_event",
        "node_start",
        "custom_event",
        "node_end",
    ]
