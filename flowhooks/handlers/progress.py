"""``ProgressCallback``: a live rich progress bar per run, or plain lines off a terminal.

Part of ``flowhooks.handlers`` (after the runner in the import chain); needs
the ``rich`` extra. ``import flowhooks.handlers`` does not import rich: this
module is only loaded when ``ProgressCallback`` is first used.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, final

from flowhooks import BaseCallbackHandler, ErrorInfo, Event, visible_text
from flowhooks.handlers._extras import require
from flowhooks.handlers._run_end import closing_status, finished_result, run_context_for
from flowhooks.handlers._validate import check_flag, positive_number

require("rich", extra="rich", handler="ProgressCallback")

from rich.console import Console, RenderableType  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from flowhooks.handlers._live import LogRedirect  # noqa: E402

__all__ = ["ProgressCallback"]


@dataclass(slots=True)
class _Row:
    """One run's progress."""

    run_id: str
    workflow_name: str
    parent_run_id: str | None
    depth: int
    total: int | None
    task_id: TaskID | None = None
    done: int = 0
    failed: int = 0
    running: dict[str, None] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def label(self) -> str:
        return f"{self.workflow_name or 'run'} [{_short(self.run_id)}]"

    def counts(self) -> str:
        """``3/5 nodes``: nodes ended (failed ones too, which are named), of how many."""
        ended = f"{self.done}/{self.total if self.total is not None else '?'} nodes"
        return f"{ended}, {self.failed} failed" if self.failed else ended


_HEX: Final = frozenset("0123456789abcdefABCDEF")


def _short(run_id: str) -> str:
    """Eight characters that tell runs apart: a random id's first, a version 7 UUID's last.

    A version 7 UUID (LangChain's run ids) begins with its time, so runs started
    within a minute share their first eight, and ends at random. (Versions 1
    and 6 begin with their time too but end with the machine's address, the
    same for every run: their first eight, the clock's fastest digits in
    version 1, are kept.)
    """
    plain = run_id.replace("-", "")
    if len(plain) == 32 and plain[12] == "7" and _HEX.issuperset(plain):
        return plain[-8:].lower()
    return run_id[:8]


class _TreeProgress(Progress):
    """A rich ``Progress`` that lists each sub-run's row right under its parent's."""

    def __init__(self, *columns: Any, parents: dict[TaskID, TaskID], **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self._parents = parents

    def get_renderables(self) -> Iterable[RenderableType]:
        """Render the rows parent first, each sub-run under the row that started it."""
        tasks = self.tasks
        children: dict[TaskID | None, list[Task]] = {}
        ids = {t.id for t in tasks}
        for task in tasks:
            parent = self._parents.get(task.id)
            children.setdefault(parent if parent in ids else None, []).append(task)
        ordered: list[Task] = []
        stack = list(reversed(children.get(None, [])))
        while stack:
            task = stack.pop()
            ordered.append(task)
            stack.extend(reversed(children.get(task.id, [])))
        yield self.make_tasks_table(ordered)


_FINISHED_SHOWN: Final = 50
"""Finished runs' rows kept on a display that other runs keep up."""


@final
class ProgressCallback(BaseCallbackHandler):
    """Shows a live progress bar per run: nodes done out of the workflow's nodes.

    On a terminal, one rich live display holds a row per run (runs that
    overlap share it); a sub-workflow run (``parent_run_id`` set) gets an
    indented row under its parent's. A row counts a node as done when it
    succeeds or fails for good (retried attempts do not count), names the
    nodes running, and ends with the run's status; a node still running at
    the run's end was cancelled (it sends no event) and is named as such
    (e.g. ``failed (slow cancelled)``). The display stops when no
    run is left under way (and on ``aclose()``); finished rows stay on screen
    unless ``transient`` is set.

    The number of nodes comes from ``current_run().node_count`` when the run
    provides it (inside runs of ``Workflow``); events sent by hand, or runs
    without it, get an indeterminate bar that counts up.

    When the console is not a terminal (CI logs, files, pipes) it prints one
    plain line per run start, finished node and run end instead, e.g.
    ``etl [1a2b3c4d] load succeeded (3/3 nodes)``.

    While the bars are live, log lines (``LoggingCallback``'s, loguru's and
    the standard library's stream handlers writing to the same terminal) are
    printed through the console, above the bars, instead of tearing them;
    the handlers get their streams back when the display stops. Pass
    ``redirect_logs=False`` to leave the handlers alone.

    Args:
        console: the rich ``Console`` to draw on; defaults to one on stderr.
        transient: remove the rows when the display stops.
        auto_refresh: redraw from rich's refresh thread; when false, the
            display is redrawn on every event instead.
        refresh_per_second: redraws per second with ``auto_refresh``.
        redirect_logs: print log lines above the live bars (see above).

    Raises:
        TypeError: for an argument of the wrong type (``transient="yes"``,
            ``refresh_per_second="10"``).
        ValueError: for a ``refresh_per_second`` that is not a positive number.
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        transient: bool = False,
        auto_refresh: bool = True,
        refresh_per_second: float = 10.0,
        redirect_logs: bool = True,
    ) -> None:
        if console is not None and not isinstance(console, Console):
            msg = f"ProgressCallback(console=...) takes a rich.console.Console, got {console!r}"
            raise TypeError(msg)
        self.console: Console = console if console is not None else Console(stderr=True)
        self.transient = check_flag("transient", transient)
        self.auto_refresh = check_flag("auto_refresh", auto_refresh)
        self.refresh_per_second = positive_number(
            "refresh_per_second", refresh_per_second, noun="number of redraws per second"
        )
        self._lock = threading.RLock()
        self._rows: dict[str, _Row] = {}
        self._progress: _TreeProgress | None = None
        self._parents: dict[TaskID, TaskID] = {}
        self._finished: deque[TaskID] = deque()  # finished rows still shown, oldest first
        self.redirect_logs = check_flag("redirect_logs", redirect_logs)
        self._redirect: LogRedirect | None = None

    @property
    def live(self) -> bool:
        """Whether progress is drawn as live bars (the console is a terminal)."""
        return self.console.is_terminal

    @property
    def active_runs(self) -> tuple[str, ...]:
        """The ids of the runs shown as under way, in the order they started."""
        with self._lock:
            return tuple(self._rows)

    @property
    def displaying(self) -> bool:
        """Whether a live display is running right now."""
        return self._progress is not None

    # -- display ------------------------------------------------------------------------

    def _display(self) -> _TreeProgress:
        if self._progress is None:
            self._parents = {}
            self._finished.clear()
            self._progress = _TreeProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[state]}"),
                TimeElapsedColumn(),
                parents=self._parents,
                console=self.console,
                transient=self.transient,
                auto_refresh=self.auto_refresh,
                refresh_per_second=self.refresh_per_second,
            )
            self._progress.start()
            if self.redirect_logs:
                self._redirect = LogRedirect(self.console)
                self._redirect.start()
        return self._progress

    def _update(self, row: _Row, state: str, *, finished: bool = False) -> None:
        progress = self._progress
        if progress is None or row.task_id is None:
            return
        total = row.total
        if finished and total is None:
            total = row.done
        progress.update(row.task_id, completed=row.done, total=total, state=visible_text(state))
        if finished:
            progress.stop_task(row.task_id)
            self._forget_old_rows(progress, row.task_id)
        if not self.auto_refresh:
            progress.refresh()

    def _forget_old_rows(self, progress: _TreeProgress, task_id: TaskID) -> None:
        """Keep the newest ``_FINISHED_SHOWN`` finished rows while other runs go on: each
        row costs every redraw, so a display kept up by one long run would slow down
        every later run."""
        finished = self._finished
        finished.append(task_id)
        while len(finished) > _FINISHED_SHOWN:
            old = finished.popleft()
            progress.remove_task(old)
            self._parents.pop(old, None)
            for child, parent in list(self._parents.items()):
                if parent == old:
                    del self._parents[child]

    def _print(self, row: _Row, text: str) -> None:
        self.console.print(
            visible_text(f"{'  ' * row.depth}{row.label} {text}"),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    def _row(
        self, run_id: str, event: Event | None, *, create: bool = True, starting: bool = False
    ) -> _Row | None:
        row = self._rows.get(run_id)
        if row is not None or not create:
            return row
        parent_id = event.parent_run_id if event is not None else None
        parent = self._rows.get(parent_id) if parent_id else None
        row = _Row(
            run_id=run_id,
            workflow_name=event.workflow_name if event is not None else "",
            parent_run_id=parent_id,
            depth=parent.depth + 1 if parent is not None else (1 if parent_id else 0),
            total=_node_count(run_id),
            # At its start a resumed run has done what its suspended run completed.
            done=_completed_before(run_id) if starting else 0,
        )
        self._rows[run_id] = row
        if self.live:
            progress = self._display()
            indent = "  " * (row.depth - 1) + "└ " if row.depth else ""
            row.task_id = progress.add_task(
                f"{indent}{escape(visible_text(row.label))}",
                total=row.total,
                completed=row.done,
                state="started",
            )
            if parent is not None and parent.task_id is not None:
                self._parents[row.task_id] = parent.task_id
            if not self.auto_refresh:
                progress.refresh()
        return row

    def _running(self, row: _Row) -> str:
        names = list(row.running)
        if not names:
            return "running"
        shown = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")
        return f"running {escape(shown)}"

    def _stop_if_idle(self) -> None:
        if self._rows or self._progress is None:
            return
        progress, self._progress = self._progress, None
        redirect, self._redirect = self._redirect, None
        if redirect is not None:
            redirect.stop()
        progress.stop()

    # -- events -------------------------------------------------------------------------

    async def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Add a row for the run (indented under its parent's for a sub-run)."""
        with self._lock:
            row = self._row(workflow_id, event, starting=True)
            if row is not None and not self.live:
                nodes = f" ({row.counts()})" if row.total is not None else ""
                self._print(row, f"started{nodes}")

    async def on_node_start(
        self, node_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Show the node as running in its run's row."""
        with self._lock:
            row = self._row(_run_id(event), event)
            if row is None:
                return
            row.running[node_id] = None
            if self.live:
                self._update(row, self._running(row))

    async def on_node_end(
        self, node_id: str, output_data: Any, *, event: Event | None = None
    ) -> None:
        """Count the node as done."""
        with self._lock:
            row = self._row(_run_id(event), event)
            if row is None:
                return
            row.running.pop(node_id, None)
            row.done += 1
            if self.live:
                self._update(row, self._running(row))
            else:
                self._print(row, f"{node_id} succeeded ({row.counts()})")

    async def on_error(self, error_info: ErrorInfo, *, event: Event | None = None) -> None:
        """Count a node that failed for good as done; show retries."""
        run_id = _run_id(event) or str(getattr(error_info, "run_id", ""))
        node_id = event.node_id if event is not None else getattr(error_info, "node_id", None)
        err_type = str(getattr(error_info, "type", "error"))
        with self._lock:
            row = self._row(run_id, event)
            if row is None:
                return
            if node_id is None:  # the run timeout
                text = f"failed: {err_type}"
                if self.live:
                    self._update(row, f"[red]{escape(text)}[/]")
                else:
                    self._print(row, text)
                return
            row.running.pop(node_id, None)
            if getattr(error_info, "will_retry", False):
                text = f"{node_id} failed ({err_type}), retrying"
            else:
                row.done += 1
                row.failed += 1
                text = f"{node_id} failed ({err_type})"
            if self.live:
                self._update(row, f"[red]{escape(text)}[/]")
            else:
                self._print(row, f"{text} ({row.counts()})")

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Finish the run's row with its status; stop the display when no run is left."""
        with self._lock:
            row = self._row(workflow_id, event)
            if row is None:
                return
            del self._rows[workflow_id]
            status = (event.status if event is not None else None) or "ended"
            closed = _close_running(row)
            seconds = (
                event.duration
                if event is not None and event.duration is not None
                else time.monotonic() - row.started
            )
            if self.live:
                color = {"succeeded": "green", "failed": "red"}.get(status, "yellow")
                extra = f" ({escape(closed)})" if closed else ""
                self._update(row, f"[{color}]{status}[/]{extra}", finished=True)
                self._stop_if_idle()
            else:
                if closed:
                    self._print(row, closed)
                self._print(row, f"{status} in {seconds:.2f}s ({row.counts()})")

    async def aclose(self) -> None:
        """Stop the live display, leaving unfinished rows as they are."""
        with self._lock:
            self._rows.clear()
            self._stop_if_idle()

    def __repr__(self) -> str:
        mode = "live" if self.live else "plain"
        return f"ProgressCallback({mode}, runs={len(self._rows)})"


def _run_id(event: Event | None) -> str:
    return event.run_id if event is not None else ""


def _close_running(row: _Row) -> str:
    """Clear the nodes still shown as running when the run ends; return how they ended.

    A cancelled attempt sends no event, so it is still listed as running.
    Inside the run its node's final status comes from the run's result;
    otherwise it is reported as cancelled. Returns e.g. ``"slow cancelled"``,
    or ``""`` when no node was left running.
    """
    if not row.running:
        return ""
    result = finished_result(row.run_id)
    names = list(row.running)
    row.running.clear()
    by_status: dict[str, list[str]] = {}
    for name in names:
        by_status.setdefault(closing_status(result, name).value, []).append(name)
    return "; ".join(f"{', '.join(nodes)} {status}" for status, nodes in by_status.items())


def _completed_before(run_id: str) -> int:
    """The nodes a resumed run's suspended run completed: done before its first event.

    They are the outputs the run starts with; 0 for a run that is not a resume.
    """
    ctx = run_context_for(run_id)
    if ctx is None or ctx.resumed_from is None:
        return 0
    return len(ctx.outputs)


def _node_count(run_id: str) -> int | None:
    """Return the node count the running workflow exposes, if this is its run."""
    ctx = run_context_for(run_id)
    if ctx is None:
        return None
    count = getattr(ctx, "node_count", None)
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:  # 0: not given
        return None
    return count
