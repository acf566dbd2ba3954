"""The ``flowhooks`` console script (extra ``cli``) and ``python -m flowhooks``.

A package of small modules, each with one job, in import order:

* ``errors`` - the exit codes and ``CLIError``, the one-line problem report;
* ``load`` - turning a target (``FILE.py:WORKFLOW`` or ``package.module:WORKFLOW``)
  into a ``Workflow`` and ``--input KEY=VALUE`` items into the run's inputs;
* ``db`` - checking and reading the history database;
* ``render`` - everything printed: control characters escaped, summaries, tables,
  log lines and the one-line errors;
* ``app`` - the typer application, its commands and ``main``.

typer, rich and SQLAlchemy are imported only when a command runs, so importing
this package (and ``flowhooks``) stays free of them; without the extra,
``main()`` prints the ``pip install 'flowhooks[cli]'`` line and exits 1.
"""

from flowhooks._cli.app import main

__all__ = ["main"]
