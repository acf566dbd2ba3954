"""Shared test configuration: hypothesis profiles ("ci" when the CI variable is set, else "dev"),
a memory cap for tests that serialise endless iterators, one Dask cluster per session,
flowhooks' own log switches put back to their defaults after every test, and ``logs``: the
loguru messages of a test."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

settings.register_profile("dev", deadline=None)
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def default_log_switches() -> Iterator[None]:
    """Put loguru's switches for flowhooks back as the library sets them on import: a test
    that silences flowhooks and then calls ``logger.enable("flowhooks")`` turns its DEBUG
    diagnostics on too, for every later test."""
    yield
    from loguru import logger

    logger.enable("flowhooks")
    logger.disable("flowhooks._logs")
    logger.disable("flowhooks.handlers._diagnostics")


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """The loguru messages emitted during the test, each as ``"LEVEL message"``."""
    from loguru import logger

    messages: list[str] = []
    handler_id = logger.add(messages.append, level="DEBUG", format="{level} {message}")
    yield messages
    logger.remove(handler_id)


@pytest.fixture
def capped_memory() -> Iterator[None]:
    """Cap this process's address space at its current size plus 1 GiB, for one test.

    An endless iterator that gets consumed (by pydantic-core, in native code
    that no timeout interrupts) then ends in a MemoryError, or an abort,
    within seconds: the test fails instead of filling the machine's memory.
    """
    resource = pytest.importorskip("resource")
    statm = Path("/proc/self/statm")
    if not statm.exists():
        pytest.skip("needs /proc/self/statm to measure the process size")
    size = int(statm.read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + 2**30
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    """One real Dask ``LocalCluster`` (2 worker processes) for the whole test session.

    Started on first use; tests needing it are marked ``slow``. Workers get 4
    threads each so a test's lingering sync body cannot starve the next test.
    """
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=4,
        dashboard_address=":0",
    )
    try:
        yield cluster
    finally:
        cluster.close()
