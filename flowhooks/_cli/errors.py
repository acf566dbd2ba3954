"""The command line's exit codes and ``CLIError``, shared by every command module.

Needs neither typer nor rich: any module of the command line can raise a
``CLIError``, and ``app`` turns it into one line on stderr and its exit code.
"""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
"""The command did what was asked; for ``run``, the run succeeded."""
EXIT_FAILED: Final = 1
"""The run failed or was cancelled, a requested run is not recorded, or an extra is missing."""
EXIT_BAD_INPUT: Final = 2
"""Bad input: the target, an ``--input``, the database URL, the workflow's inputs."""
EXIT_INTERRUPTED: Final = 130
"""Interrupted with Ctrl-C."""


class CLIError(Exception):
    """A problem reported as one line on stderr, ending the command with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code
