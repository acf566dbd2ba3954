"""Kedro pipeline runs reported to flowhooks handlers (extra ``kedro``).

Two ways to use it:

* explicitly, in the project's ``settings.py``::

      from flowhooks.handlers import LoggingCallback
      from flowhooks.integrations.kedro import FlowhooksHooks

      HOOKS = (FlowhooksHooks(handlers=[LoggingCallback()]),)

* as an installed plugin: flowhooks registers ``hooks`` (a ``FlowhooksHooks``
  without handlers) under Kedro's ``kedro.hooks`` entry point, so every Kedro
  project in the environment loads it. It stays silent until configured: the
  environment variable ``FLOWHOOKS_KEDRO_HANDLERS``, or else the project's
  ``pyproject.toml``::

      [tool.flowhooks.kedro]
      handlers = "my_project.observability:handlers"

  names (``"module:attribute"``) a ``CallbackManager``, a handler, a list of
  handlers, or a callable without arguments returning one. A project that
  makes its own ``FlowhooksHooks`` takes precedence: in a process where one
  was made, the plugin is silent.

A ``session.run()`` is a flowhooks run (``ExternalRun.sync``): its id is
Kedro's run id, its inputs the run parameters (pipeline names, tags, env,
runner ...), its name ``workflow_name=`` or ``"<package>:<pipelines>"``. Each
node Kedro runs is a node of it (``input_data``: the loaded inputs by dataset
name, ``output_data``: the outputs by dataset name); a node that raises sends
its ``error`` event and the pipeline's error fails the run.

Kedro calls its hooks synchronously, from the thread that runs the node
(``ThreadRunner``: several threads, one run). ``ParallelRunner`` runs nodes in
other processes, with hooks of their own: a node there is reported as a run
of its own (named after the node, ``parent_run_id`` = the pipeline run) to
the handlers configured in that process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import threading
import tomllib
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from flowhooks._external import ExternalRun
from flowhooks._external_sync import SyncExternalNode, SyncExternalRun
from flowhooks._manager import CallbackManager
from flowhooks._workflow import Callbacks
from flowhooks.integrations._configured import load_handlers
from flowhooks.integrations._options import RunOptions, manager_of

try:
    from kedro.framework.hooks import hook_impl
except ImportError as _missing:  # pragma: no cover - exercised without the extra only
    _msg = (
        "flowhooks.integrations.kedro needs kedro, which is not installed; "
        "install it with: pip install 'flowhooks[kedro]'"
    )
    raise ImportError(_msg, name=_missing.name) from _missing

__all__ = ["ENV_VAR", "FlowhooksHooks", "hooks"]

ENV_VAR: Final = "FLOWHOOKS_KEDRO_HANDLERS"
"""The environment variable naming the plugin's handlers, as ``"module:attribute"``."""

_PYPROJECT_KEY: Final = "[tool.flowhooks.kedro] handlers"

_EXPLICIT: weakref.WeakSet[FlowhooksHooks] = weakref.WeakSet()
_EVERY: weakref.WeakSet[FlowhooksHooks] = weakref.WeakSet()
"""Every instance: at exit, the runs Kedro never ended are ended (see ``_end_left_runs``)."""
"""The ``FlowhooksHooks`` made by hand in this process: while there is one, the plugin is silent."""


def _node_key(run_id: str | None, node: str) -> str:
    return f"{run_id}\x00{node}"


def _pyprojects(project_path: str | None) -> Iterator[Path]:
    """The project's ``pyproject.toml``; without a known project, the nearest Kedro one."""
    if project_path:
        yield Path(project_path) / "pyproject.toml"
        return
    here = Path.cwd()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            yield candidate
            return


def _configured_spec(project_path: str | None) -> tuple[str, str] | None:
    """``(spec, where it was found)`` from the environment or the project's pyproject.toml."""
    spec = os.environ.get(ENV_VAR, "").strip()
    if spec:
        return spec, ENV_VAR
    for path in _pyprojects(project_path):
        try:
            with path.open("rb") as file:
                tool = tomllib.load(file).get("tool", {})
        except (OSError, tomllib.TOMLDecodeError):
            return None
        table = tool.get("flowhooks", {}).get("kedro", {})
        if "handlers" in table and "kedro" in tool:
            return table["handlers"], f"{path}: {_PYPROJECT_KEY}"
    return None


def _run_name(run_params: Mapping[str, Any]) -> str:
    """``"<package>:<pipelines>"``, e.g. ``"spaceflights:__default__"``."""
    # Imported here: importing it configures Kedro's logging, which a session has done
    # already, and a script importing this module should not get.
    from kedro.framework import project as kedro_project

    package = kedro_project.PACKAGE_NAME or Path(str(run_params.get("project_path", "."))).name
    pipelines = run_params.get("pipeline_names") or ["__default__"]
    return f"{package or 'kedro'}:{'+'.join(map(str, pipelines))}"


_OBJECT_REPR: Final = re.compile(r"<(?:[\w.]+\.)?(\w+) object at 0x[0-9a-fA-F]+>")


def _run_inputs(run_params: Mapping[str, Any]) -> dict[str, Any]:
    """The run parameters that are set, but the run id; the runner as its class name.

    Kedro records a runner passed to ``session.run`` as its ``repr``
    (``<kedro.runner.thread_runner.ThreadRunner object at 0x...>``): an
    address that would make every run's inputs differ.
    """
    inputs = {k: v for k, v in run_params.items() if v is not None and k != "run_id"}
    runner = inputs.get("runner")
    if runner in (None, "None"):  # no runner given: Kedro runs its default
        inputs["runner"] = "SequentialRunner"
    elif isinstance(runner, str):
        inputs["runner"] = _OBJECT_REPR.sub(r"\1", runner)
    return inputs


class _PipelineRun:
    """A pipeline run being reported, and its nodes running now."""

    __slots__ = ("nodes", "pid", "run")

    def __init__(self, run: SyncExternalRun) -> None:
        self.run = run
        self.pid = os.getpid()  # a forked worker inherits this object, not the run's loop
        self.nodes: dict[str, SyncExternalNode] = {}


class FlowhooksHooks:
    """Kedro hooks that report pipeline runs and their nodes to flowhooks handlers.

    Args:
        handlers: a ``CallbackManager``, a handler or a list of handlers;
            ``None``: the handlers configured by ``FLOWHOOKS_KEDRO_HANDLERS``
            or the project's ``[tool.flowhooks.kedro] handlers`` (nothing is
            reported when neither is set).
        workflow_name: the runs' name (default ``"<package>:<pipelines>"``).
        resource_id: a tenant/user id carried by every run's events.
        metadata: run headers carried by every run's events.

    Raises:
        InvalidCallbackError: ``handlers`` is no handler, list of handlers or manager.
        TypeError: another argument of the wrong type, naming it.
    """

    def __init__(
        self,
        handlers: Callbacks = None,
        *,
        workflow_name: str | None = None,
        resource_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self._options = RunOptions("FlowhooksHooks", workflow_name, resource_id, metadata)
        self._manager = manager_of("FlowhooksHooks", "handlers", handlers)
        self._plugin = False  # the entry point's instance defers to explicit ones
        _EXPLICIT.add(self)
        self._loaded: dict[str, CallbackManager] = {}
        self._runs: dict[str, _PipelineRun] = {}
        self._alone: dict[str, tuple[SyncExternalRun, SyncExternalNode]] = {}
        self._lock = threading.Lock()
        _EVERY.add(self)

    def __repr__(self) -> str:
        source = "configured" if self._manager is None else "handlers"
        return f"FlowhooksHooks({source}, plugin={self._plugin})"

    # -- configuration --------------------------------------------------------------

    def _handlers(self, project_path: str | None) -> CallbackManager | None:
        """The handlers given, or those configured; ``None`` when there are none."""
        if self._manager is not None:
            return self._manager
        if self._plugin and len(_EXPLICIT):
            return None  # the project reports its runs with its own FlowhooksHooks
        found = _configured_spec(project_path)
        if found is None:
            return None
        spec, where = found
        with self._lock:
            manager = self._loaded.get(spec)
        if manager is None:
            manager = load_handlers(spec, where=where)
            with self._lock:
                manager = self._loaded.setdefault(spec, manager)
        return manager

    # -- pipeline runs ----------------------------------------------------------------

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """A pipeline run starts: ``workflow_start`` with the run parameters."""
        run_id = str(run_params.get("run_id") or "")
        manager = self._handlers(run_params.get("project_path"))
        if manager is None or not run_id:
            return
        options = self._options
        run = ExternalRun.sync(
            manager,
            workflow_name=options.workflow_name or _run_name(run_params),
            inputs=_run_inputs(run_params),
            run_id=run_id,
            resource_id=options.resource_id,
            metadata=options.metadata,
        )
        run.__enter__()
        with self._lock:
            self._runs[run_id] = _PipelineRun(run)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """The pipeline run succeeded: ``workflow_end``."""
        self._end_run(run_params, None)

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any]) -> None:
        """The pipeline run raised ``error``: ``workflow_end``, failed."""
        self._end_run(run_params, error)

    def _end_run(self, run_params: Mapping[str, Any], error: Exception | None) -> None:
        run_id = str(run_params.get("run_id") or "")
        with self._lock:
            report = self._runs.get(run_id)
            if report is None or report.pid != os.getpid():
                return
            del self._runs[run_id]
            report.nodes.clear()
        report.run.__exit__(*_exc_info(error))

    # -- nodes ------------------------------------------------------------------------

    @hook_impl
    def before_node_run(self, node: Any, inputs: dict[str, Any], run_id: str | None) -> None:
        """A node starts: ``node_start`` with its inputs by dataset name."""
        name = str(node.name)
        with self._lock:
            report = self._runs.get(str(run_id))
        if report is not None and report.pid == os.getpid():
            step = report.run.node(name, inputs)
            step.__enter__()
            with self._lock:
                report.nodes[name] = step
        else:
            self._start_alone(name, inputs, run_id)

    def _start_alone(self, name: str, inputs: dict[str, Any], run_id: str | None) -> None:
        """A node outside any run of this process (``ParallelRunner``'s workers): its own run."""
        manager = self._handlers(None)
        if manager is None:
            return
        options = self._options
        run = ExternalRun.sync(
            manager,
            workflow_name=name,
            inputs=inputs,
            resource_id=options.resource_id,
            metadata=options.metadata,
            parent_run_id=str(run_id) if run_id is not None else None,
        )
        run.__enter__()
        step = run.node(name, inputs)
        try:
            step.__enter__()
        except BaseException as exc:
            run.__exit__(type(exc), exc, exc.__traceback__)
            raise
        with self._lock:
            self._alone[_node_key(run_id, name)] = (run, step)

    @hook_impl
    def after_node_run(self, node: Any, outputs: dict[str, Any], run_id: str | None) -> None:
        """A node succeeded: ``node_end`` with its outputs by dataset name."""
        self._end_node(str(node.name), run_id, outputs, None)

    @hook_impl
    def on_node_error(self, error: Exception, node: Any, run_id: str | None) -> None:
        """A node raised ``error``: its ``error`` event."""
        self._end_node(str(node.name), run_id, None, error)

    def _end_node(
        self, name: str, run_id: str | None, outputs: Any, error: Exception | None
    ) -> None:
        exc_info = (
            (None, None, None) if error is None else (type(error), error, error.__traceback__)
        )
        with self._lock:
            report = self._runs.get(str(run_id))
            step = report.nodes.pop(name, None) if report is not None else None
            alone = self._alone.pop(_node_key(run_id, name), None) if step is None else None
        if step is not None:
            step.output = outputs
            step.__exit__(*exc_info)
            return
        if alone is None:
            return
        run, step = alone
        step.output = outputs
        try:
            step.__exit__(*exc_info)
        finally:
            run.__exit__(*exc_info)


def _end_left_runs() -> None:
    """At interpreter exit: end the pipeline runs Kedro left open, ``cancelled``.

    Kedro calls ``on_pipeline_error`` for an ``Exception`` only: a run stopped by
    Ctrl-C (``KeyboardInterrupt``) reaches no hook, and would end without its
    ``workflow_end``.
    """
    stopped = KeyboardInterrupt("the process exited while the pipeline ran")
    for hooks in list(_EVERY):
        with hooks._lock:
            left = [r for r in hooks._runs.values() if r.pid == os.getpid()]
            hooks._runs.clear()
        for report in left:
            report.nodes.clear()  # entered in Kedro's threads: the run's end cancels them
            with contextlib.suppress(BaseException):
                report.run.__exit__(KeyboardInterrupt, stopped, None)


atexit.register(_end_left_runs)


def _exc_info(
    error: BaseException | None,
) -> tuple[type[BaseException] | None, BaseException | None, TracebackType | None]:
    """What ``__exit__`` takes for an end by ``error`` (``None``: a normal end)."""
    if error is None:
        return None, None, None
    return type(error), error, error.__traceback__


def _plugin() -> FlowhooksHooks:
    plugin = FlowhooksHooks()
    plugin._plugin = True
    _EXPLICIT.discard(plugin)
    return plugin


hooks: Final = _plugin()
"""The instance Kedro loads through the ``kedro.hooks`` entry point (configured, see above)."""
