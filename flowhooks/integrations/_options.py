"""The options every integration takes, checked when the integration object is made.

A plugin or hook object is created long before its first run; checking its
options there gives a wrong value a clear error at the line that made it,
not in the middle of someone else's pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowhooks._combined import as_manager
from flowhooks._manager import CallbackManager
from flowhooks._node import InvalidCallbackError


class RunOptions:
    """What each run an integration reports carries: a name, a tenant id, headers."""

    __slots__ = ("metadata", "resource_id", "workflow_name")

    def __init__(
        self,
        owner: str,
        workflow_name: object,
        resource_id: object,
        metadata: object,
    ) -> None:
        if workflow_name is not None and (not isinstance(workflow_name, str) or not workflow_name):
            msg = f"{owner}: workflow_name= takes a non-empty str or None, got {workflow_name!r}"
            raise TypeError(msg)
        if resource_id is not None and not isinstance(resource_id, str):
            msg = f"{owner}: resource_id= takes a str or None, got {resource_id!r}"
            raise TypeError(msg)
        if metadata is not None and not isinstance(metadata, Mapping):
            msg = f"{owner}: metadata= takes a mapping or None, got {metadata!r}"
            raise TypeError(msg)
        self.workflow_name: str | None = workflow_name
        self.resource_id: str | None = resource_id
        self.metadata: dict[str, Any] = dict(metadata) if metadata is not None else {}


def manager_of(owner: str, param: str, handlers: Any) -> CallbackManager | None:
    """``handlers`` (a manager, a handler, a list of handlers, ``None``) as a manager.

    Raises:
        InvalidCallbackError: naming ``owner(param)`` and what is wrong.
    """
    where = f"{owner}({param})"
    try:
        return as_manager(handlers, where=where)
    except TypeError as exc:
        text = str(exc) if where in str(exc) else f"{where}: {exc}"
        raise InvalidCallbackError(text) from None
