"""Pieces every ``flowhooks`` command uses: typer's option and argument makers, the target
help text, and the guard that turns bad input into one line and an exit code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Final

from flowhooks._cli.errors import EXIT_INTERRUPTED, CLIError
from flowhooks._cli.render import fail


def _Opt(*names: str, **options: Any) -> Any:
    """``typer.Option``, imported when the annotations are read (typer builds the app)."""
    import typer as typer_mod

    return typer_mod.Option(*names, **options)


def _Arg(**options: Any) -> Any:
    """``typer.Argument``, imported when the annotations are read."""
    import typer as typer_mod

    return typer_mod.Argument(**options)


_TARGET_HELP: Final = (
    "FILE.py:WORKFLOW or package.module:WORKFLOW: where the Workflow is defined, and its name."
)


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """Turn ``CLIError`` and Ctrl-C into one line on stderr and an exit code."""
    try:
        yield
    except CLIError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
