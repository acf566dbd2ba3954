"""The command line's input side: finding the workflow a target names, and parsing inputs.

It turns ``FILE.py:WORKFLOW`` into a ``Workflow`` and ``--input KEY=VALUE``
items into the run's inputs, and reports every problem as a ``CLIError``.
Needs neither typer nor rich.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from flowhooks._cli.errors import CLIError
from flowhooks._workflow import Workflow


def parse_target(target: str) -> tuple[Path, str]:
    """Split ``FILE.py:WORKFLOW`` into the file's path and the attribute name.

    Raises:
        CLIError: when there is no ``:`` or either side is empty.
    """
    path, sep, attr = target.rpartition(":")
    if not sep or not path or not attr.strip():
        msg = (
            f"expected FILE.py:WORKFLOW (a Python file and the name of the Workflow in it), "
            f"got {target!r}; e.g. 'pipeline.py:workflow'"
        )
        raise CLIError(msg)
    return Path(path), attr.strip()


def _module_name(path: Path) -> str:
    stem = path.stem if path.stem.isidentifier() else "workflow_file"
    return stem if stem not in sys.modules else f"flowhooks_target_{stem}"


def load_module(path: Path) -> ModuleType:
    """Import the Python file ``path`` as a module, with its directory on ``sys.path``.

    Raises:
        CLIError: when the file is missing, not importable, or raises while loading.
    """
    if not path.exists():
        msg = f"no such file: {str(path)!r}"
        raise CLIError(msg)
    if not path.is_file():
        msg = f"{str(path)!r} is not a file; expected a Python file such as 'pipeline.py'"
        raise CLIError(msg)
    resolved = path.resolve()
    name = _module_name(resolved)
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        msg = f"cannot import {str(path)!r} as a Python module; expected a .py file"
        raise CLIError(msg)
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # the file's own imports resolve next to it
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        msg = f"cannot load {str(path)!r}: SyntaxError: {exc.msg} (line {exc.lineno})"
        raise CLIError(msg) from exc
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        msg = f"cannot load {str(path)!r}: {type(exc).__name__}: {exc}"
        raise CLIError(msg) from exc
    return module


def load_workflow(target: str) -> Workflow:
    """Return the ``Workflow`` named by ``FILE.py:WORKFLOW``.

    Raises:
        CLIError: for a malformed target, a missing or broken file, a missing
            attribute, or an attribute that is not a ``Workflow``.
    """
    path, attr = parse_target(target)
    module = load_module(path)
    found = [k for k, v in vars(module).items() if isinstance(v, Workflow)]
    hint = f"; workflows defined there: {', '.join(found)}" if found else ""
    if not hasattr(module, attr):
        msg = f"{str(path)!r} has no attribute {attr!r}{hint}"
        raise CLIError(msg)
    value = getattr(module, attr)
    if not isinstance(value, Workflow):
        if isinstance(value, type):
            kind = "a class"
        elif callable(value):
            kind = "a function" if inspect.isfunction(value) else "a callable"
        else:
            kind = f"an object of type {type(value).__name__}"
        msg = f"{path!s}:{attr} is {kind}, not a flowhooks.Workflow{hint}"
        raise CLIError(msg)
    return value


def parse_inputs(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``KEY=VALUE`` strings into a dict; a value is JSON when it parses, else text.

    ``n=3`` gives the int 3, ``ids=[1,2]`` a list, ``flag=true`` ``True`` and
    ``source=orders.csv`` the string ``"orders.csv"``.

    Raises:
        CLIError: for an item without ``=``, an empty key, or a key given twice.
    """
    inputs: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            msg = f"--input expects KEY=VALUE, got {item!r}; e.g. --input source=orders.csv"
            raise CLIError(msg)
        if not key:
            msg = f"--input {item!r} has an empty key; expected KEY=VALUE"
            raise CLIError(msg)
        if key in inputs:
            msg = f"--input {key!r} is given more than once"
            raise CLIError(msg)
        try:
            inputs[key] = json.loads(raw)
        except ValueError:
            inputs[key] = raw
    return inputs
