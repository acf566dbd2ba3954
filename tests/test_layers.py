"""The package's import layers: each private module imports, at run time, only modules
below it (docs/internals.md draws the same map). An import inside a function (the
``Workflow.run`` façade's) or under ``TYPE_CHECKING`` does not count."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import flowhooks

PACKAGE = Path(flowhooks.__file__).parent

LAYERS = [
    # vocabulary
    "_ids",
    "_redact_keys",
    "_redact_json",
    "_redact_urls",
    "_redact_text",
    "_redact",
    "_logs",
    "_errors",
    "_validate",
    "_breaker",
    "_serialize",
    "_retry",
    "_threads",
    "_eager",
    "_events",
    # handlers and dispatch
    "_handler",
    "_hook_names",
    "_hooks",
    "_plan_cache",
    "_monitors",
    "_invoke",
    "_dispatcher",
    "_context",
    "_manager",
    "_combined",
    "_sequencer",
    # composites
    "_composites",
    "_delivery_scope",
    "_delivery_end",
    "_delivery",
    "_batched",
    "_background",
    # definition
    "_node",
    "_graph",
    "_results",
    "_resume",
    # execution
    "_blocking",
    "_function_callbacks",
    "_node_outcomes",
    "_execution",
    "_runner",
    "_ending",
    "_workflow",
    "_launch",
    # pipelines that are not Workflows
    "_external_state",
    "_external_base",
    "_external_sync",
    "_external",
]


def _module_level_statements_only(path: Path) -> set[str]:
    """Like ``_runtime_imports`` but ignoring imports nested in functions anywhere."""
    tree = ast.parse(path.read_text())
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            nested.update(id(sub) for sub in ast.walk(node) if sub is not node)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in nested or not isinstance(node, ast.ImportFrom):
            continue
        if node.module and node.module.startswith("flowhooks._"):
            found.add(node.module.split(".")[1])
    type_checking: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
            type_checking |= {
                n.module.split(".")[1]
                for n in ast.walk(stmt)
                if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("flowhooks._")
            }
    return found - type_checking


def test_every_private_module_has_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("_*.py") if p.stem not in {"__init__", "__main__"}}
    assert modules == set(LAYERS)


def test_modules_import_only_the_layers_below_them() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [
        f"{name} imports {imported}"
        for name in LAYERS
        for imported in sorted(_module_level_statements_only(PACKAGE / f"{name}.py"))
        if imported in rank and rank[imported] >= rank[name]
    ]
    assert upward == []


def test_every_module_imports_in_layer_order() -> None:
    for name in LAYERS:
        assert importlib.import_module(f"flowhooks.{name}")
