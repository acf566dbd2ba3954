"""Handlers named by a ``"module:attribute"`` string, for integrations configured outside code.

A plugin that a framework loads by itself (Kedro's ``kedro.hooks`` entry
point) is never handed handlers: its configuration names them instead, as
``"my_project.observability:handlers"``. The attribute may be a
``CallbackManager``, a handler, a list of handlers, or something callable
without arguments that returns one of those (a class, a factory function),
called once per process so that handlers holding connections are made
where they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

from flowhooks._combined import as_manager
from flowhooks._handler import BaseCallbackHandler
from flowhooks._manager import CallbackManager


def load_handlers(spec: Any, *, where: str) -> CallbackManager:
    """The handlers ``spec`` (``"package.module:attr.path"``) names, as a manager.

    Args:
        spec: ``"module:attribute"``; the attribute may be dotted.
        where: what configured it, named in errors (an environment variable,
            a config key).

    Raises:
        ValueError: ``spec`` is not of the form ``"module:attribute"``.
        ImportError: the module cannot be imported.
        AttributeError: the module has no such attribute.
        TypeError: the attribute is no handler, list of handlers or manager.
    """
    if not isinstance(spec, str):
        msg = f"{where} takes a 'module:attribute' string, got {spec!r}"
        raise TypeError(msg)
    module_name, sep, attr_path = spec.strip().partition(":")
    if not sep or not module_name or not attr_path:
        msg = f"{where} takes 'module:attribute' (e.g. 'my_project.hooks:handlers'), got {spec!r}"
        raise ValueError(msg)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"{where}={spec!r}: cannot import {module_name!r}: {exc}"
        raise ImportError(msg, name=module_name) from exc
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            msg = f"{where}={spec!r}: {module_name!r} has no attribute {attr_path!r}"
            raise AttributeError(msg) from None
    if callable(target) and not isinstance(target, BaseCallbackHandler | CallbackManager):
        target = target()
    manager = as_manager(target, where=f"{where}={spec!r}")
    return manager if manager is not None else CallbackManager()
