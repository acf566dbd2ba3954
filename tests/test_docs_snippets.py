"""Every ```python block in README.md and docs/*.md runs as shown, each in a fresh directory.

- Each block runs with this interpreter in its own temporary working directory, in parallel
  threads; its test id is ``<page>:<line of the opening fence>``.
- A ``--8<-- "path"`` line (an mkdocs include) is replaced by the file it includes.
- A block whose first line is ``# test_<name>.py`` is a test module: it runs under pytest.
- A block written as a deliberate fragment is marked with a ``<!-- fragment -->`` line right
  before its fence and is skipped.

Handler pages under docs/handlers/ are collected once each has a complete example
(``HANDLER_PAGES``); the others join the list as their examples are completed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest

ROOT = Path(__file__).resolve().parent.parent
HANDLER_PAGES = [
    "history.md",
    "logging.md",
    "metrics.md",
    "notification.md",
    "openlineage.md",
    "otel.md",
    "progress.md",
    "prometheus.md",
    "sentry.md",
    "webhook.md",
]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *(ROOT / "docs" / "handlers" / name for name in HANDLER_PAGES),
]
FRAGMENT_MARK = "<!-- fragment -->"
TIMEOUT = 60

_FENCE = re.compile(r"^(?P<indent> *)(?P<ticks>`{3,})(?P<info>[^`]*)$")
_INCLUDE = re.compile(r'^--8<-- "(?P<path>[^"]+)"$', re.MULTILINE)
_TEST_FILE = re.compile(r"^# (?P<name>test_\w+\.py)\b")


@dataclass(frozen=True)
class Snippet:
    """One ```python block: where it is and its code, dedented to column 0."""

    page: str
    line: int
    code: str
    fragment: bool

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def extract_snippets(text: str, page: str) -> list[Snippet]:
    """Return the ```python blocks of a Markdown text, in order, with their fence line numbers."""
    lines = text.splitlines()
    snippets: list[Snippet] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, ticks = len(opening["indent"]), opening["ticks"]
        language = opening["info"].strip().split(" ")[0].lower()
        end = i + 1
        while end < len(lines) and lines[end].strip() != ticks:
            end += 1
        if language in {"python", "py"}:
            body = [line[indent:] for line in lines[i + 1 : end]]
            previous = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
            snippets.append(Snippet(page, i + 1, "\n".join(body) + "\n", previous == FRAGMENT_MARK))
        i = end + 1
    return snippets


SNIPPETS = [
    snippet
    for path in PAGES
    for snippet in extract_snippets(
        path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix()
    )
]
RUNNABLE = [snippet for snippet in SNIPPETS if not snippet.fragment]


def expand_includes(code: str) -> str:
    """Replace each ``--8<-- "path"`` line with the file it includes, as the built site shows it."""
    return _INCLUDE.sub(lambda m: (ROOT / m["path"]).read_text(encoding="utf-8"), code)


def command_for(snippet: Snippet, script_dir: Path) -> list[str]:
    """Write the snippet into ``script_dir`` and return the command that runs it.

    A block whose first line is a ``# test_<name>.py`` comment is a test module: it is saved
    under that name and run with pytest, with no configuration of the project's own.
    """
    code = expand_includes(snippet.code)
    test_file = _TEST_FILE.match(code)
    script = script_dir / (test_file["name"] if test_file else "snippet.py")
    script.write_text(code, encoding="utf-8")
    if test_file:
        return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", script.name]
    return [sys.executable, script.name]


def _run(snippet: Snippet) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1"}
    with TemporaryDirectory(prefix="flowhooks-snippet-") as cwd:
        return subprocess.run(
            command_for(snippet, Path(cwd)),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=cwd,
            env=env,
            check=False,
        )


@pytest.fixture(scope="module")
def snippet_runs() -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    """Start every runnable snippet at once in a thread pool; each test waits for its own."""
    pool = ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2))
    futures = {snippet.id: pool.submit(_run, snippet) for snippet in RUNNABLE}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("snippet", RUNNABLE, ids=[s.id for s in RUNNABLE])
def test_snippet_runs(
    snippet: Snippet, snippet_runs: dict[str, Future[subprocess.CompletedProcess[str]]]
) -> None:
    """The block runs on its own with this interpreter and exits 0."""
    proc = snippet_runs[snippet.id].result(timeout=TIMEOUT * 2)
    assert proc.returncode == 0, (
        f"{snippet.id} exited {proc.returncode}\n--- code ---\n{snippet.code}"
        f"--- stdout ---\n{proc.stdout}--- stderr ---\n{proc.stderr}"
    )


def test_snippets_are_found() -> None:
    """The extractor sees the pages' blocks, and fragments stay the exception."""
    assert len(SNIPPETS) >= 30
    fragments = [s.id for s in SNIPPETS if s.fragment]
    assert len(fragments) <= len(SNIPPETS) // 4, fragments


def test_extractor_reads_marks_and_line_numbers() -> None:
    """A fragment mark right before a fence is honoured; other fences are ignored."""
    text = (
        "# Probe\n\n```python\nprint(1)\n```\n\n"
        "<!-- fragment -->\n```python\nx.y\n```\n\n```text\nnot code\n```\n"
        "- item\n\n    ```python\n    print(2)\n    ```\n"
    )
    found = extract_snippets(text, "docs/probe.md")
    assert [(s.line, s.code, s.fragment) for s in found] == [
        (3, "print(1)\n", False),
        (8, "x.y\n", True),
        (17, "print(2)\n", False),
    ]
    assert found[0].id == "docs/probe.md:3"


def test_includes_and_test_modules_get_their_own_command(tmp_path: Path) -> None:
    """An include is expanded from the repository; a ``# test_x.py`` block runs under pytest."""
    included = Snippet("docs/probe.md", 1, '--8<-- "examples/composites.py"\n', False)
    assert command_for(included, tmp_path) == [sys.executable, "snippet.py"]
    expected = (ROOT / "examples" / "composites.py").read_text(encoding="utf-8")
    assert (tmp_path / "snippet.py").read_text(encoding="utf-8").rstrip() == expected.rstrip()

    module = Snippet("docs/probe.md", 1, "# test_probe.py\ndef test_ok():\n    pass\n", False)
    command = command_for(module, tmp_path)
    assert command[:3] == [sys.executable, "-m", "pytest"]
    assert command[-1] == "test_probe.py"
    assert (tmp_path / "test_probe.py").exists()
