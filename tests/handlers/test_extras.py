"""A handler whose extra is not installed says which ``pip install`` line provides it."""

from __future__ import annotations

import subprocess
import sys

import pytest

MISSING = [
    ("ProgressCallback", "rich", "rich"),
    ("PrometheusCallback", "prometheus_client", "prometheus"),
    ("OpenTelemetryCallback", "opentelemetry", "otel"),
    ("HistoryCallback", "sqlalchemy", "sql"),
    ("HistoryStore", "sqlalchemy", "sql"),
    ("WebhookCallback", "httpx", "http"),
    ("NotificationCallback", "httpx", "http"),
    ("WebhookNotifier", "httpx", "http"),
]


@pytest.mark.parametrize(("name", "module", "extra"), MISSING, ids=[m[0] for m in MISSING])
def test_a_missing_extra_names_the_pip_install_line(name: str, module: str, extra: str) -> None:
    """Importing the handler without its dependency is an ImportError with the install line."""
    code = (
        "import sys\n"
        f"sys.modules[{module!r}] = None  # as if it were not installed\n"
        "try:\n"
        f"    from flowhooks.handlers import {name}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    print('imported')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=60, capture_output=True, text=True
    )
    message = done.stdout.strip()
    assert f"pip install 'flowhooks[{extra}]'" in message
    assert f"optional dependency {module!r}" in message
    assert "Callback" in message or "HistoryStore" in message


def test_apprise_notifier_without_apprise_names_the_notify_extra() -> None:
    """AppriseNotifier imports without Apprise and says which extra it needs when made."""
    code = (
        "import sys\n"
        "sys.modules['apprise'] = None  # as if it were not installed\n"
        "from flowhooks.handlers import AppriseNotifier\n"
        "try:\n"
        "    AppriseNotifier('json://localhost')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=60, capture_output=True, text=True
    )
    assert "pip install 'flowhooks[notify]'" in done.stdout
