"""``AppriseNotifier``: alerts to Slack, Teams, PagerDuty, email, Discord... (extra ``notify``).

A ``Notifier`` for ``NotificationCallback`` on the Apprise library, which
knows how to reach some hundred services from one URL each
(``slack://``, ``msteams://``, ``pagerduty://``, ``mailtos://``, ``json://``,
...). Apprise is imported when the first ``AppriseNotifier`` is made, so the
``notify`` extra is needed only by those who use it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flowhooks import FlowhooksError
from flowhooks.handlers._extras import require
from flowhooks.handlers._validate import check_str, reject_type

__all__ = ["AlertDeliveryError", "AppriseNotifier"]

_PAGERDUTY: Final = frozenset({"pagerduty"})
"""Apprise schemes of PagerDuty, whose URLs get the alert's ``dedup`` key."""

# How an alert kind reads as an Apprise notification type.
_TYPES: Final = {
    "critical": "failure",
    "failure": "failure",
    "cancel": "warning",
    "completion": "success",
}


class AlertDeliveryError(FlowhooksError):
    """Apprise could not deliver an alert to every target."""


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower()


def _redacted(url: str) -> str:
    """The URL's scheme and host only: Apprise URLs carry tokens and passwords."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}/..." if host else f"{parts.scheme}://..."


def with_dedup(url: str, key: str) -> str:
    """``url`` with PagerDuty's ``dedup`` query parameter set to ``key``."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "dedup"]
    query.append(("dedup", key))
    return urlunsplit(parts._replace(query=urlencode(query)))


class AppriseNotifier:
    """A ``Notifier`` that delivers every alert to each Apprise URL.

    The alert's message is the notification body; its title is
    ``"<workflow>: <kind>"`` (``critical``, ``failure``, ``cancel``,
    ``completion``), and its Apprise type is ``failure`` for critical errors
    and failed runs, ``warning`` for cancelled runs, ``success`` for
    completed ones. A PagerDuty URL gets the alert's ``dedup_key`` field as
    its ``dedup`` key, so the alerts of one run and node make one incident.

    Args:
        urls: one Apprise URL or several, e.g.
            ``"slack://T000/B000/XXXX"``, ``"msteams://..."``,
            ``"pagerduty://integration@apikey"``, ``"mailtos://user:pass@example.com"``.
        title: the title template; ``{workflow_name}``, ``{kind}``,
            ``{status}``, ``{run_id}`` and ``{channel}`` are filled in.

    Raises:
        ImportError: when Apprise is not installed (``pip install 'flowhooks[notify]'``).
        TypeError: when ``urls`` is not a str or a list of str, or ``title``
            not a str (also a ``ValueError``, what a bad ``urls`` raised before).
        ValueError: when no URL is given, or Apprise does not understand one
            (the message shows its scheme and host, never its secrets).
    """

    def __init__(
        self,
        urls: str | Iterable[str],
        *,
        title: str = "{workflow_name}: {kind}",
    ) -> None:
        if not isinstance(urls, str) and (
            isinstance(urls, bytes | Mapping) or not isinstance(urls, Iterable)
        ):
            reject_type("AppriseNotifier urls", "one Apprise URL string or a list of them", urls)
        listed = [urls] if isinstance(urls, str) else list(urls)
        for url in listed:
            if not isinstance(url, str):
                reject_type("AppriseNotifier urls entries", "Apprise URL strings", url)
        if not listed or not all(listed):
            msg = f"AppriseNotifier needs one or more Apprise URL strings, got {urls!r}"
            raise ValueError(msg)
        check_str("title", title)
        # Apprise loads its plugins on the first lookup, and some import modules
        # Python deprecates (imghdr): not the application's warning to act on.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self._apprise = require("apprise", extra="notify", handler="AppriseNotifier")
            unknown = [u for u in listed if self._apprise.Apprise.instantiate(u) is None]
        if unknown:
            msg = (
                f"AppriseNotifier: Apprise does not understand the URL {_redacted(unknown[0])!r}; "
                "see https://github.com/caronc/apprise/wiki for the URL of each service"
            )
            raise ValueError(msg)
        self.urls: tuple[str, ...] = tuple(listed)
        self.title = title

    def __repr__(self) -> str:
        targets = ", ".join(sorted({_scheme(u) for u in self.urls}))
        return f"AppriseNotifier([{targets}])"

    def targets_for(self, fields: dict[str, Any]) -> tuple[str, ...]:
        """The URLs one alert goes to: PagerDuty ones carry its ``dedup_key``."""
        key = fields.get("dedup_key")
        if not isinstance(key, str) or not key:
            return self.urls
        return tuple(with_dedup(u, key) if _scheme(u) in _PAGERDUTY else u for u in self.urls)

    async def send(self, channel: str, message: str, **fields: Any) -> None:
        """Deliver the alert to every URL.

        Raises:
            AlertDeliveryError: when some target did not take it.
        """
        apprise = self._apprise
        notifier = apprise.Apprise()
        for url in self.targets_for(fields):
            notifier.add(url)
        kind = str(fields.get("kind") or "alert")
        values = {
            "workflow_name": fields.get("workflow_name") or "workflow",
            "kind": kind,
            "status": fields.get("status") or "",
            "run_id": fields.get("run_id") or "",
            "channel": channel,
        }
        title = self.title.format_map(values)
        notify_type = apprise.NotifyType(_TYPES.get(kind, "info"))
        result = await notifier.async_notify(body=message, title=title, notify_type=notify_type)
        if not result:
            msg = (
                f"AppriseNotifier could not deliver the {kind} alert for run "
                f"{values['run_id'] or '-'} to every target "
                f"({', '.join(_redacted(u) for u in self.urls)}): {result!r}"
            )
            raise AlertDeliveryError(msg)
