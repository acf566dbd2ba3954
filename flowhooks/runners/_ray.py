"""``RayRunner``: node bodies run as Ray tasks; events stay in the driver.

Each attempt of a node is one Ray task running ``run_attempt`` on a worker;
an ``ObjectRef`` is awaitable, so the run's loop awaits it directly. Ray
retries a task whose worker process died (``max_retries``): bodies run at
least once per attempt. ``ray.cancel`` interrupts a running Python body with
``KeyboardInterrupt``, which ``run_attempt`` catches like any other.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import ray
from loguru import logger

from flowhooks._validate import check_count
from flowhooks.runners._driver import ClusterRunner, check_resources
from flowhooks.runners._remote import run_attempt

if TYPE_CHECKING:
    from flowhooks._node import Node


class RayRunner(ClusterRunner):
    """Run node bodies on a Ray cluster's workers; events stay in the driver.

    Args:
        address: the cluster to connect to (``"ray://head:10001"``, ``"auto"``),
            or ``None``: use the Ray instance this process already joined, or
            start a local one in ``open()`` (then ``aclose()`` shuts it down).
            A Ray instance the runner did not start is never shut down by it.
        max_concurrency: most node bodies running at once; ``None`` for no limit.
        fail_fast: as for every runner (see ``Runner``).
        resources: custom Ray resources each node's task needs, e.g. ``{"GPU": 1}``.
        num_cpus: CPUs each node's task reserves (Ray's default is 1).
        max_retries: how often Ray reruns a task whose worker died (Ray's ``max_retries``).
        init_options: keyword arguments for ``ray.init`` when the runner connects or
            starts Ray (``runtime_env=...``, ``num_cpus=...``).

    Raises:
        TypeError, ValueError: for an option of the wrong type or value, naming it.
    """

    engine = "Ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        max_concurrency: int | None = None,
        fail_fast: bool = True,
        resources: Mapping[str, float] | None = None,
        num_cpus: float | None = None,
        max_retries: int = 3,
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(max_concurrency=max_concurrency, fail_fast=fail_fast)
        if address is not None and (not isinstance(address, str) or not address.strip()):
            msg = f"RayRunner(address=...) takes a non-empty str or None, got {address!r}"
            raise TypeError(msg)
        if num_cpus is not None and (
            isinstance(num_cpus, bool)
            or not isinstance(num_cpus, int | float)
            or not math.isfinite(num_cpus)
            or num_cpus < 0
        ):
            msg = f"num_cpus= takes a finite number >= 0 or None, got {num_cpus!r}"
            raise ValueError(msg)
        if init_options is not None and not isinstance(init_options, Mapping):
            msg = (
                f"init_options= takes a mapping of ray.init keyword arguments, got {init_options!r}"
            )
            raise TypeError(msg)
        self.address = address
        self.resources = check_resources(resources)
        self.num_cpus = num_cpus
        self.max_retries = check_count("max_retries", max_retries, allow_none=True) or 0
        self.init_options = dict(init_options) if init_options is not None else {}
        self._started_ray = False
        self._remote: Any = None

    async def open(self) -> None:
        """Connect to Ray (or start a local instance). Idempotent."""
        if self.is_open:
            return
        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_options)
            self._started_ray = True
        options: dict[str, Any] = {"max_retries": self.max_retries, "retry_exceptions": False}
        if self.resources is not None:
            options["resources"] = self.resources
        if self.num_cpus is not None:
            options["num_cpus"] = self.num_cpus
        self._remote = ray.remote(ray_attempt).options(**options)
        self.is_open = True

    async def aclose(self) -> None:
        """Shut down the Ray instance ``open`` started, if it started one. Idempotent."""
        if not self.is_open:
            return
        self.is_open = False
        self._remote = None
        if self._started_ray:
            self._started_ray = False
            ray.shutdown()

    async def _execute(self, node: Node, task: bytes) -> bytes:
        ref = self._remote.remote(node.fn, task, node.is_async)
        try:
            payload: bytes = await ref
        except asyncio.CancelledError:  # a timeout or the run's stop: free the run at once
            try:
                ray.cancel(ref)
            except Exception as exc:  # the task may be gone already
                logger.debug(
                    "could not cancel Ray task of node {node}: {exc}", node=node.name, exc=exc
                )
            raise
        return payload

    def __repr__(self) -> str:
        return (
            f"RayRunner({self.address!r}, max_concurrency={self.max_concurrency!r}, "
            f"fail_fast={self.fail_fast!r})"
        )


def ray_attempt(fn: Callable[..., Any], task: bytes, is_async: bool) -> bytes:
    """The task a Ray worker runs: one attempt of a node body (see ``run_attempt``)."""
    return run_attempt(fn, task, is_async)
