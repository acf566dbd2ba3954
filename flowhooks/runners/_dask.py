"""``DaskRunner``: node bodies run as tasks on a Dask cluster; events stay in the driver.

The runner talks to the scheduler through an asynchronous ``distributed.Client``
in the run's event loop. Each attempt of a node is one task (``pure=False``,
a fresh key) running ``run_attempt`` on a worker. Sync bodies run in a
worker's thread pool; async bodies run in an event loop of their own in that
thread (``asyncio.run``), so they cannot block the worker's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from distributed import Client, get_worker
from distributed.client import FutureCancelledError
from distributed.worker import thread_state  # type: ignore[attr-defined]
from loguru import logger

from flowhooks._ids import new_id
from flowhooks.runners._driver import ClusterRunner, check_resources
from flowhooks.runners._remote import run_attempt

if TYPE_CHECKING:
    from distributed import Future

    from flowhooks._node import Node

_CANCEL_WAIT = 5.0
"""Seconds ``aclose`` waits for the scheduler to acknowledge pending task cancellations."""


_CLOSING: set[asyncio.Future[Any]] = set()
"""Closings of what a failed or cancelled ``open`` started, kept until they are done."""


async def _awaited(awaitable: Any) -> Any:
    """``await awaitable`` (``None`` as it is: an engine's close may return nothing)."""
    if awaitable is not None:
        return await awaitable
    return None


async def _started_then_closed(starting: asyncio.Future[Any], cluster: Any) -> None:
    """Wait for a cluster's start to finish (however it ends), then close it."""
    with contextlib.suppress(BaseException):
        await starting
    await _awaited(cluster.close())


async def _close_for_good(closing: Awaitable[Any]) -> None:
    """Close what an ``open`` started, even when it was cancelled: the closing goes on in a
    task of its own (a cancellation of the caller does not stop it) and its errors are
    dropped, as the caller raises what made it close."""
    task = asyncio.ensure_future(closing)
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)
    with contextlib.suppress(BaseException):
        await asyncio.shield(task)


class DaskRunner(ClusterRunner):
    """Run node bodies on a Dask cluster's workers; events stay in the driver.

    Args:
        address_or_client: where the cluster is: a scheduler address
            (``"tcp://scheduler:8786"``), a ``distributed.Client``, a cluster
            object (``LocalCluster``, a ``dask_jobqueue`` cluster, ...), or
            ``None`` for a local cluster the runner starts in ``open()`` and
            closes in ``aclose()``. A client or cluster passed in is never
            closed by the runner.
        max_concurrency: most node bodies running at once; ``None`` for no limit.
        fail_fast: as for every runner (see ``Runner``).
        resources: abstract worker resources each node's task needs, e.g.
            ``{"GPU": 1}`` (Dask's ``resources=``; workers must declare them).

    Raises:
        TypeError: for an ``address_or_client`` or ``resources`` of the wrong type.
        ValueError: for a negative or non-finite resource amount.
    """

    engine = "Dask"

    def __init__(
        self,
        address_or_client: str | Client | Any | None = None,
        *,
        max_concurrency: int | None = None,
        fail_fast: bool = True,
        resources: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(max_concurrency=max_concurrency, fail_fast=fail_fast)
        if not (
            address_or_client is None
            or isinstance(address_or_client, str | Client)
            or isinstance(getattr(address_or_client, "scheduler_address", None), str)
        ):
            msg = (
                "DaskRunner(address_or_client=...) takes a scheduler address (str), a "
                "distributed.Client, a cluster object (with .scheduler_address) or None, "
                f"got {address_or_client!r}"
            )
            raise TypeError(msg)
        if isinstance(address_or_client, str) and not address_or_client.strip():
            msg = "DaskRunner(address_or_client=...) got an empty scheduler address"
            raise ValueError(msg)
        self.address_or_client = address_or_client
        self.resources = check_resources(resources)
        self._client: Client | None = None
        self._own_client = False
        self._cluster: Any = None
        self._lock = asyncio.Lock()
        self._cancelling: set[asyncio.Future[Any]] = set()

    @property
    def client(self) -> Client:
        """The asynchronous client the runner submits through (only while open).

        Raises:
            RuntimeError: when the runner is not open.
        """
        if self._client is None:
            msg = "DaskRunner is not open: use 'async with runner:' or pass it to a run"
            raise RuntimeError(msg)
        return self._client

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Connect to the cluster (or start a local one). Idempotent."""
        async with self._lock:
            if self.is_open:
                return
            target = self.address_or_client
            if target is None:
                from distributed import LocalCluster

                cluster = LocalCluster(  # type: ignore[no-untyped-call]
                    asynchronous=True, dashboard_address=":0"
                )
                # Started in a task of its own: a cluster interrupted while it starts its
                # worker processes cannot close them, so a stop lets it finish, then closes it.
                starting = asyncio.ensure_future(_awaited(cluster))
                try:
                    await asyncio.shield(starting)
                except BaseException:  # failed, or cancelled (a run's stop) while starting
                    await _close_for_good(_started_then_closed(starting, cluster))
                    raise
                self._cluster = cluster
                target = cluster.scheduler_address
            client = _usable_client(target)
            if client is None:
                made = Client(  # type: ignore[no-untyped-call]
                    _address_of(target), asynchronous=True, set_as_default=False
                )
                try:
                    client = await made
                except BaseException:  # do not leave a client or cluster nobody can close
                    await _close_for_good(_awaited(made.close()))  # type: ignore[no-untyped-call]
                    if self._cluster is not None:
                        cluster, self._cluster = self._cluster, None
                        await _close_for_good(_awaited(cluster.close()))
                    raise
                self._own_client = True
            self._client = client
            self.is_open = True

    async def aclose(self) -> None:
        """Close what ``open`` started: its own client and local cluster. Idempotent."""
        async with self._lock:
            if not self.is_open:
                return
            self.is_open = False
            client, self._client = self._client, None
            cluster, self._cluster = self._cluster, None
            if self._cancelling:
                await asyncio.wait(list(self._cancelling), timeout=_CANCEL_WAIT)
            if client is not None and self._own_client:
                self._own_client = False
                await client.close()  # type: ignore[no-untyped-call]
            if cluster is not None:
                await cluster.close()

    # -- one attempt -------------------------------------------------------------------

    async def _execute(self, node: Node, task: bytes) -> bytes:
        client = self.client
        future: Future[bytes] = client.submit(
            dask_attempt,
            node.fn,
            task,
            node.is_async,
            key=f"{node.name}-{new_id()}",
            pure=False,
            resources=self.resources,
        )
        try:
            payload: bytes = await future
        except FutureCancelledError as exc:  # by someone else (the client closed, ...)
            msg = f"the Dask task of node {node.name!r} was cancelled on the cluster: {exc}"
            raise RuntimeError(msg) from None
        except asyncio.CancelledError:  # a timeout or the run's stop: free the run at once
            self._cancel_later(client, future)
            raise
        return payload

    def _cancel_later(self, client: Client, future: Future[bytes]) -> None:
        """Ask the scheduler to drop ``future``'s task, without waiting for it."""

        async def cancel() -> None:
            try:
                await client.cancel([future], force=True)  # type: ignore[no-untyped-call]
            except Exception as exc:  # a closing client: the task is dropped anyway
                logger.debug("could not cancel Dask task {key}: {exc}", key=future.key, exc=exc)

        task = asyncio.ensure_future(cancel())
        self._cancelling.add(task)
        task.add_done_callback(self._cancelling.discard)

    def __repr__(self) -> str:
        return (
            f"DaskRunner({self.address_or_client!r}, max_concurrency={self.max_concurrency!r}, "
            f"fail_fast={self.fail_fast!r})"
        )


def dask_attempt(fn: Callable[..., Any], task: bytes, is_async: bool) -> bytes:
    """The task a worker runs: one attempt of a node body (see ``run_attempt``).

    An async body is cancelled at its next ``await`` once the scheduler has
    dropped the task.
    """
    return run_attempt(fn, task, is_async, _task_still_wanted())


def _task_still_wanted() -> Callable[[], bool] | None:
    try:
        worker = get_worker()
        key = thread_state.key
    except (ValueError, AttributeError):  # not in a worker's task thread
        return None

    def still_wanted() -> bool:
        task = worker.state.tasks.get(key)
        return task is not None and task.state not in ("cancelled", "released", "forgotten")

    return still_wanted


def _usable_client(target: Any) -> Client | None:
    """``target`` when it is an asynchronous client of the running loop, else ``None``."""
    if not isinstance(target, Client) or not target.asynchronous:
        return None
    loop = getattr(target.loop, "asyncio_loop", None)
    if loop is not None and loop is not asyncio.get_running_loop():
        return None
    return target


def _address_of(target: Any) -> Any:
    """The scheduler address to open a client of our own to."""
    if isinstance(target, str):
        return target
    if isinstance(target, Client):
        return getattr(target.scheduler, "address", None) or target.scheduler_info()["address"]
    return target.scheduler_address
