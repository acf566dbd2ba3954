"""Tiny but complete Kedro projects, written into a test's temporary folder.

A project has what ``kedro new`` would give it and no more: ``pyproject.toml``
with its ``[tool.kedro]`` table, ``conf/base`` and ``conf/local``, and a
package under ``src/`` with ``settings.py``, ``pipeline_registry.py`` and the
node functions. Its one pipeline parses a list of order amounts (the
``orders`` parameter) and computes their total and their average; an empty
list makes ``average`` raise ``ZeroDivisionError``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

NODES = """
def parse(orders):
    return [float(amount) for amount in orders]


def total(parsed):
    return sum(parsed)


def average(parsed):
    if not parsed:
        raise ZeroDivisionError("no orders to average")
    return sum(parsed) / len(parsed)
"""

REGISTRY = """
from kedro.pipeline import Pipeline, node

from {package}.nodes import average, parse, total


def register_pipelines():
    orders = Pipeline(
        [
            node(parse, "params:orders", "parsed", name="parse"),
            node(total, "parsed", "total", name="total"),
            node(average, "parsed", "average", name="average"),
        ]
    )
    return {{"__default__": orders, "orders": orders}}
"""

RECORDER = """
from flowhooks.testing import RecordingCallback

RECORDER = RecordingCallback()
"""

FILE_RECORDER = '''
import json
import os

from flowhooks import BaseCallbackHandler

PATH = os.environ["KEDRO_EVENTS_FILE"]


class FileRecorder(BaseCallbackHandler):
    """Appends one JSON line per event, with the process that sent it."""

    def _write(self, event):
        line = {
            "pid": os.getpid(),
            "type": str(event.type),
            "run_id": event.run_id,
            "parent_run_id": event.parent_run_id,
            "workflow_name": event.workflow_name,
            "node_id": event.node_id,
            "status": event.status,
        }
        with open(PATH, "a", encoding="utf-8") as file:
            file.write(json.dumps(line, default=str) + "\\n")

    def on_workflow_start(self, workflow_id, input_data, *, event):
        self._write(event)

    def on_workflow_end(self, workflow_id, output_data, *, event):
        self._write(event)

    def on_node_start(self, node_id, input_data, *, event):
        self._write(event)

    def on_node_end(self, node_id, output_data, *, event):
        self._write(event)

    def on_error(self, error_info, *, event):
        self._write(event)
'''


def make_project(
    root: Path,
    package: str,
    *,
    settings: str = "",
    pyproject_extra: str = "",
    modules: dict[str, str] | None = None,
) -> Path:
    """Write a Kedro project for package ``package`` into ``root``; return ``root``.

    Args:
        settings: the body of ``settings.py`` (Kedro's telemetry plugin is
            always disabled: it would ask the network).
        pyproject_extra: TOML appended to ``pyproject.toml``.
        modules: more modules of the package, by name, as source.
    """
    (root / "conf" / "base").mkdir(parents=True)
    (root / "conf" / "local").mkdir()
    (root / "conf" / "base" / "parameters.yml").write_text("orders: [10, 20, 60]\n")
    (root / "conf" / "base" / "catalog.yml").write_text("{}\n")  # every dataset in memory
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
            [tool.kedro]
            package_name = "{package}"
            project_name = "{package}"
            kedro_init_version = "1.0.0"
            source_dir = "src"
            """)
        + pyproject_extra
    )
    src = root / "src" / package
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "nodes.py").write_text(NODES)
    (src / "pipeline_registry.py").write_text(REGISTRY.format(package=package))
    (src / "settings.py").write_text(
        'DISABLE_HOOKS_FOR_PLUGINS = ("kedro-telemetry",)\n' + textwrap.dedent(settings)
    )
    for name, source in (modules or {}).items():
        (src / f"{name}.py").write_text(textwrap.dedent(source))
    return root
