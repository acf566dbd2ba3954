"""The command line's input side: finding the workflow a target names, and parsing inputs.

A target is ``FILE.py:WORKFLOW`` (a Python file, imported with its own
directory first on ``sys.path``) or ``package.module:WORKFLOW`` (imported with
importlib, the working directory on ``sys.path`` as ``python -m`` puts it).
Every problem is a ``CLIError``: one line, never a traceback. Needs neither
typer nor rich.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from flowhooks._cli.errors import CLIError
from flowhooks._workflow import Workflow


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed target: where the workflow is defined, and the attribute naming it."""

    source: str
    """The file's path or the module's dotted name, as given."""
    attr: str
    """The name of the ``Workflow`` in that file or module."""
    is_file: bool
    """Whether ``source`` is a file's path (else a module's dotted name)."""

    @property
    def where(self) -> str:
        """How messages name the source: ``'pipeline.py'`` or ``module 'etl.flows'``."""
        return repr(self.source) if self.is_file else f"module {self.source!r}"


def _is_module_name(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def parse_target(target: str, what: str = "WORKFLOW") -> Target:
    """Split a target at its last ``:`` and tell a file's path from a module's name.

    The left side is a file when it ends in ``.py``, contains a path separator,
    names an existing file, or is not a dotted name; otherwise it is a module.
    ``what`` names what the attribute is (``WORKFLOW``, ``HANDLER``) in messages.

    Raises:
        CLIError: when there is no ``:`` or either side is empty.
    """
    source, sep, attr = target.rpartition(":")
    source, attr = source.strip(), attr.strip()
    if not sep or not source or not attr:
        name = what.lower()
        msg = (
            f"expected FILE.py:{what} or package.module:{what} (where the {name} is "
            f"defined, and its name), got {target!r}; e.g. 'pipeline.py:{name}' or "
            f"'etl.flows:{name}'"
        )
        raise CLIError(msg)
    is_file = (
        source.endswith(".py")
        or any(s in source for s in ("/", os.sep, os.altsep) if s)
        or Path(source).is_file()
        or not _is_module_name(source)
    )
    return Target(source, attr, is_file)


def _file_module_name(path: Path) -> str:
    stem = path.stem if path.stem.isidentifier() else "workflow_file"
    return stem if stem not in sys.modules else f"flowhooks_target_{stem}"


def _cannot_load(where: str, exc: BaseException) -> CLIError:
    if isinstance(exc, SyntaxError):
        return CLIError(f"cannot load {where}: SyntaxError: {exc.msg} (line {exc.lineno})")
    return CLIError(f"cannot load {where}: {type(exc).__name__}: {exc}")


def load_file(path: Path) -> ModuleType:
    """Import the Python file ``path`` as a module, with its directory first on ``sys.path``.

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
    name = _file_module_name(resolved)
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
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise _cannot_load(repr(str(path)), exc) from exc
    return module


def _missing_is_the_target(name: str, exc: ModuleNotFoundError) -> bool:
    """Whether ``exc`` says ``name`` (or a package above it) is missing, not one of its imports."""
    return exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}."))


def import_target_module(name: str) -> ModuleType:
    """Import the module ``name`` (dotted), the working directory on ``sys.path`` as for ``-m``.

    ``python -m flowhooks`` already has the working directory first on
    ``sys.path``; the ``flowhooks`` console script does not, so it is added.

    Raises:
        CLIError: when the module is not found, or raises while loading.
    """
    where = f"module {name!r}"
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # files written since this process last looked are seen
    try:
        return importlib.import_module(name)
    except KeyboardInterrupt:
        raise
    except ModuleNotFoundError as exc:
        if _missing_is_the_target(name, exc):
            msg = f"no module named {name!r} (looked in the working directory and on sys.path)"
            raise CLIError(msg) from None
        raise _cannot_load(where, exc) from exc
    except (Exception, SystemExit) as exc:
        raise _cannot_load(where, exc) from exc


def _kind(value: object) -> str:
    if isinstance(value, type):
        return "a class"
    if inspect.ismodule(value):
        return "a module"
    if callable(value):
        return "a function" if inspect.isfunction(value) else "a callable"
    return f"an object of type {type(value).__name__}"


def load_workflow(target: str) -> Workflow:
    """Return the ``Workflow`` a target (``FILE.py:WORKFLOW`` or ``module:WORKFLOW``) names.

    Raises:
        CLIError: for a malformed target, a missing or broken file or module, a
            missing attribute, or an attribute that is not a ``Workflow``.
    """
    parsed = parse_target(target)
    if parsed.is_file:
        module = load_file(Path(parsed.source))
    else:
        module = import_target_module(parsed.source)
    found = [k for k, v in vars(module).items() if isinstance(v, Workflow)]
    hint = f"; workflows defined there: {', '.join(found)}" if found else ""
    if not hasattr(module, parsed.attr):
        msg = f"{parsed.where} has no attribute {parsed.attr!r}{hint}"
        raise CLIError(msg)
    value = getattr(module, parsed.attr)
    if not isinstance(value, Workflow):
        msg = f"{parsed.source}:{parsed.attr} is {_kind(value)}, not a flowhooks.Workflow{hint}"
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
