"""Cluster runners: node bodies run on a Dask or Ray cluster, events stay in the driver.

``DaskRunner`` (extra ``dask``) and ``RayRunner`` (extra ``ray``) are
``Runner``s: every semantic of a run (events in ``seq`` order, retries,
timeouts, cancellation) is the driver's, and only node bodies travel.
Importing this package imports neither engine; each loads on first use of
its runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowhooks.runners._errors import WorkerError

if TYPE_CHECKING:
    from flowhooks.runners._dask import DaskRunner
    from flowhooks.runners._ray import RayRunner

__all__ = ["DaskRunner", "RayRunner", "WorkerError"]

_LAZY = {
    "DaskRunner": ("flowhooks.runners._dask", "dask"),
    "RayRunner": ("flowhooks.runners._ray", "ray"),
}


def __getattr__(name: str) -> Any:
    """Import a runner's module (and its engine) only when the runner is asked for."""
    if name not in _LAZY:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib

    module_name, extra = _LAZY[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.startswith("flowhooks"):
            raise
        msg = (
            f"{name} needs the {extra!r} extra, which is not installed "
            f"(missing module {exc.name!r}): pip install 'flowhooks[{extra}]'"
        )
        raise ImportError(msg) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
