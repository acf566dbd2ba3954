"""A Kedro project reported to flowhooks handlers: ``FlowhooksHooks`` in ``settings.py``.

The script writes a small Kedro project into a temporary folder — the files
``kedro new`` would make, with one pipeline that parses order amounts and
computes their total and average — and runs it twice with ``KedroSession``:
once with the default parameters, once with no orders, where ``average``
fails. The project's ``settings.py`` registers ``FlowhooksHooks`` with a
printing handler and ``MetricsCallback``, both defined in the project's
``observe`` module.

Run it with ``python examples/kedro_pipeline.py`` (needs the ``kedro`` extra).
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
import textwrap
from pathlib import Path

PACKAGE = "orders_report"

FILES = {
    "pyproject.toml": f"""
        [tool.kedro]
        package_name = "{PACKAGE}"
        project_name = "Orders report"
        kedro_init_version = "1.0.0"
        source_dir = "src"
        """,
    "conf/base/parameters.yml": "orders: [10, 20, 60]\n",
    "conf/base/catalog.yml": "{}\n",  # every dataset in memory
    "conf/local/.gitkeep": "",
    f"src/{PACKAGE}/__init__.py": "",
    f"src/{PACKAGE}/nodes.py": """
        def parse(orders):
            return [float(amount) for amount in orders]


        def total(parsed):
            return sum(parsed)


        def average(parsed):
            if not parsed:
                raise ZeroDivisionError("no orders to average")
            return sum(parsed) / len(parsed)
        """,
    f"src/{PACKAGE}/pipeline_registry.py": f"""
        from kedro.pipeline import Pipeline, node

        from {PACKAGE}.nodes import average, parse, total


        def register_pipelines():
            orders = Pipeline(
                [
                    node(parse, "params:orders", "parsed", name="parse"),
                    node(total, "parsed", "total", name="total"),
                    node(average, "parsed", "average", name="average"),
                ]
            )
            return {{"__default__": orders}}
        """,
    # The project's handlers, in a module of its own.
    f"src/{PACKAGE}/observe.py": """
        from flowhooks import BaseCallbackHandler
        from flowhooks.handlers import MetricsCallback


        class Printer(BaseCallbackHandler):
            def on_workflow_start(self, workflow_id, input_data, *, event):
                print(f"  {event.seq:>2} {event.workflow_name} started ({input_data['runner']})")

            def on_node_end(self, node_id, output_data, *, event):
                print(f"  {event.seq:>2} {node_id} -> {output_data!r}")

            def on_error(self, error_info, *, event):
                print(f"  {event.seq:>2} error: {error_info}")

            def on_workflow_end(self, workflow_id, output_data, *, event):
                print(f"  {event.seq:>2} {event.workflow_name}: {event.status}")


        METRICS = MetricsCallback()
        HANDLERS = [Printer(), METRICS]
        """,
    f"src/{PACKAGE}/settings.py": f"""
        from flowhooks.integrations.kedro import FlowhooksHooks

        from {PACKAGE}.observe import HANDLERS

        HOOKS = (FlowhooksHooks(handlers=HANDLERS),)
        DISABLE_HOOKS_FOR_PLUGINS = ("kedro-telemetry",)  # this demo sends nothing anywhere
        """,
}


def write_project(root: Path) -> None:
    """Write the project's files under ``root``."""
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


def run(root: Path, runtime_params: dict[str, object] | None = None) -> None:
    """One ``session.run()``; a failing pipeline is reported, not raised."""
    from kedro.framework.session import KedroSession

    with KedroSession.create(root, runtime_params=runtime_params) as session:
        try:
            outputs = session.run()
            print(f"  outputs: {sorted(outputs)}")
        except ZeroDivisionError as exc:
            print(f"  the pipeline raised: {exc}")


def main() -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    logging.disable(logging.CRITICAL)  # Kedro's own log of every step
    from kedro.framework.startup import bootstrap_project  # after: it logs when imported

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "orders-report"
        write_project(root)
        bootstrap_project(root)
        print("run 1:")
        run(root)
        print("run 2 (no orders):")
        run(root, {"orders": []})
        report = importlib.import_module(f"{PACKAGE}.observe").METRICS.get_report()
        print(f"metrics: {report['total_workflows']} runs, {report['failed_workflows']} failed")


if __name__ == "__main__":
    main()
